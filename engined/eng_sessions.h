/* eng_sessions.h - the resident sessions of engined: KV states kept on the
 * device after their job ended, so that a later job whose prompt extends
 * one of them only computes the new tokens (SPEC §4 "Sessions").
 *
 * Policy (driven by the scheduler thread, the only user of the backend):
 *   acquire  the longest resident session whose tokens are a prefix of the
 *            new prompt (all of it: the backend cannot truncate a state) is
 *            taken over when idle ("continue": it becomes the job's
 *            session), or forked when another running job owns it. With no
 *            match, a new empty session. When the backend refuses for
 *            memory (ENG_E_NOMEM: the --state-budget-mb budget), idle
 *            sessions are evicted least-recently-used first and the call
 *            retried.
 *   release  a finished job's session becomes idle and stays resident
 *            (most recently used); beyond max_idle idle sessions, the LRU
 *            ones are evicted.
 *   prefix source hook: when the best resident prefix is shorter than the
 *            prompt, an external source (kvd, later) may offer a longer
 *            prefix as a snapshot blob, which is restored instead. The hook
 *            is also told about sessions being evicted (a chance to
 *            checkpoint them). No source is wired in yet.
 * Not thread-safe: one thread (the scheduler) owns the pool. */
#ifndef DS4_ENG_SESSIONS_H
#define DS4_ENG_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "common/stats.h"
#include "eng_backend.h"

/* An external store of session prefixes (e.g. kvd checkpoints). */
typedef struct eng_prefix_source {
    /* A stored prefix of ids[0..n) longer than `have` tokens, as a
     * backend snapshot blob (malloc'd, caller frees) of *ntok tokens.
     * 0 found, 1 none, -1 failed (logged by the source). */
    int (*lookup)(void *ud, const char *fingerprint, const int32_t *ids,
                  uint32_t n, uint32_t have, void **blob, size_t *len,
                  uint32_t *ntok);
    /* A session is about to be evicted (reason "evict") or the daemon is
     * stopping ("shutdown"): the source may snapshot and keep it. */
    void (*offer)(void *ud, const char *fingerprint, const eng_backend_ops *ops,
                  const eng_session *s, const char *reason);
    void *ud;
} eng_prefix_source;

typedef struct eng_resident {
    eng_session *s;
    void *owner;        /* the running job using it, NULL when idle */
    uint64_t last_used; /* pool tick of the last release */
} eng_resident;

typedef struct eng_pool {
    const eng_backend_ops *ops;
    eng_backend *b;
    eng_resident *v;
    uint32_t n, cap;
    uint32_t max_idle;  /* idle sessions kept at most */
    uint64_t tick;
    ds4_stats *stats;   /* may be NULL */
    const eng_prefix_source *src; /* may be NULL */
} eng_pool;

void eng_pool_init(eng_pool *p, const eng_backend_ops *ops, eng_backend *b,
                   uint32_t max_idle, ds4_stats *stats);
/* Free every session (offering each to the source with "shutdown"). */
void eng_pool_fini(eng_pool *p);

/* A session for owner whose tokens are a prefix of ids[0..n): *cached is
 * how many of the n it already holds (0..n). reuse 0: always a new empty
 * session, left out of the pool (LOGITS_GET without cache). 0, or -1 with
 * the backend's error in err (eng_backend_errcode() tells which). */
int eng_pool_acquire(eng_pool *p, void *owner, const int32_t *ids, uint32_t n,
                     int reuse, eng_session **out, uint32_t *cached,
                     char *err, size_t errlen);

/* The owner is done with s: keep it resident (keep 1) or free it. */
void eng_pool_release(eng_pool *p, eng_session *s, int keep);

/* Evict the least recently used idle session; 0, or -1 if none is idle. */
int eng_pool_evict_lru(eng_pool *p);

/* Resident sessions (idle + in use) and their bytes. */
uint32_t eng_pool_count(const eng_pool *p);
uint64_t eng_pool_bytes(const eng_pool *p);

#endif
