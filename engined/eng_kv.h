/* eng_kv.h - engined's link to kvd (SPEC §5): the prefix source of the
 * session pool (eng_sessions.h) backed by kvd checkpoints, and the
 * checkpoint writer.
 *
 * Threads:
 *   scheduler  (the only user of the backend) looks prefixes up with a short
 *              deadline (kvc_lookup on its own client), snapshots sessions at
 *              token boundaries and queues the blobs;
 *   writer     a dedicated thread with its own client that sends the queued
 *              snapshots with kvc_put (which blocks until kvd has them on
 *              disk). The queue is bounded: a snapshot that finds it full is
 *              dropped and counted (kv_save_drops), never waited for.
 * kvd down or slow: a lookup fails after lookup_timeout_ms and the job is
 * prefilled in full (logged); after a failure lookups are skipped for a
 * back-off period (doubling from 1 s up to 30 s) so that a missing kvd
 * costs the scheduler one deadline per period, not one per job.
 *
 * Policy (ds4-like defaults, each a flag of engined):
 *   cold      the first time a prompt of >= min_tokens is prefilled, the
 *             session is snapshotted at align_down(n - trim, align) when that
 *             is >= min_tokens and beyond what the job found cached;
 *   periodic  during a long prefill, at every multiple of `periodic` tokens;
 *   evict     a resident session (>= min_tokens) about to be evicted;
 *   shutdown  every idle resident session (>= min_tokens) when engined stops.
 * Prefixes already stored or restored recently are not sent again. */
#ifndef DS4_ENG_KV_H
#define DS4_ENG_KV_H

#include <stddef.h>
#include <stdint.h>

#include "common/stats.h"
#include "eng_backend.h"
#include "eng_sessions.h"

typedef struct eng_kv_opts {
    const char *endpoint;        /* kvd's endpoint (required) */
    const char *instance;        /* names the put segment */
    const char *model_path;      /* for the family fingerprint */
    int cross_quant;             /* allow family-fingerprint matches */
    uint32_t min_tokens;         /* 512 */
    uint32_t align;              /* 2048 */
    uint32_t trim;               /* 32 */
    uint32_t periodic;           /* 10240; 0: off */
    uint32_t cold_max;           /* prompts longer than this get no cold save (0: no limit) */
    int lookup_timeout_ms;       /* 300 */
    int put_timeout_ms;          /* 10000 */
    uint32_t queue_max;          /* snapshots waiting for the writer (4) */
    ds4_stats *stats;            /* may be NULL */
} eng_kv_opts;

typedef struct eng_kv eng_kv;

/* Connect (kvd need not be up) and start the writer. NULL + err. */
eng_kv *eng_kv_open(const eng_kv_opts *o, char *err, size_t errlen);
/* Send what is queued (each put bounded by put_timeout_ms), stop the writer,
 * close. NULL is fine. */
void eng_kv_close(eng_kv *k);

/* The pool's prefix source (lookup + offer) of k. */
eng_prefix_source eng_kv_source(eng_kv *k);

/* A prefill of `tokens` took ns (the running per-token cost that weighs
 * evict and shutdown checkpoints). */
void eng_kv_note_prefill(eng_kv *k, uint32_t tokens, uint64_t ns);

/* The next token boundary of a prefill at which a checkpoint is due: the
 * smallest b with have < b <= n_prompt (and b > cached) that is the cold
 * store length or a multiple of the periodic step; 0 when none.
 * *reason gets "cold" or "periodic". */
uint32_t eng_kv_next_boundary(const eng_kv *k, uint32_t n_prompt, uint32_t cached,
                              uint32_t have, const char **reason);

/* Snapshot s (on the scheduler thread) and queue it for kvd. prefill_ms is
 * what computing its tokens cost (eviction weight). 0 queued, 1 skipped
 * (short, or stored already), -1 dropped or failed. */
int eng_kv_save(eng_kv *k, const char *fingerprint, const eng_backend_ops *ops,
                const eng_session *s, const char *reason, double prefill_ms);

#endif
