/* kv_client.h - the client side of kvd, linked by engined (libkvd.a).
 *
 * One kv_client is one DEALER connection to kvd, used by one thread. Every
 * call has a deadline (opts.timeout_ms): kvd down or stuck gives a clean
 * error (DS4W_E_UNAVAILABLE), never a hang, and a kvd that dies while a call
 * waits fails it at once (a socket monitor sees the connection close); after
 * a failure the socket is
 * replaced, so a late reply can never be taken for the answer to a later
 * request (replies are also matched by request id).
 *
 * Bulk data: on an ipc:// endpoint (same host) payloads travel through
 * shared memory. kvc_put copies the blob into the client's own transfer
 * segment ("/ds4-<uid>-<instance>-kvput.<pid>.<n>", reused and grown as
 * needed) and sends a SHMREF with its checksum; kvd reads it from there and
 * answers once it is on disk. kvc_lookup maps the segment kvd filled, checks
 * it (generation, complete, bounds, optionally the checksum) and hands out
 * a pointer into the mapping: no copy on the restore path. kvc_found_free
 * sends KV_RELEASE, after which kvd may reuse the segment for another
 * lookup; the client keeps its mappings of recent segments (KVC_MAPS), so
 * a reused segment costs neither side any page faults. On tcp:// (or
 * force_inline) the bytes travel inline in the message. */
#ifndef DS4_KV_CLIENT_H
#define DS4_KV_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kv_format.h"
#include "shm.h"
#include "wire.h"

typedef struct kvc_opts {
    const char *endpoint;   /* "ipc://<run-dir>/kvd.sock" (ds4d_endpoint(d,
                               "kvd", ...) gives it) or "tcp://host:port" */
    const char *instance;   /* names the put segment; NULL: "default" */
    int timeout_ms;         /* per request; 0: 10000 */
    int force_inline;       /* never use shared memory */
    int verify;             /* recompute the checksum of found payloads */
    void *zmq_ctx;          /* a context to share; NULL: the client owns one */
} kvc_opts;

typedef struct kv_client kv_client;

/* kvd's endpoint as the daemons agree on it (ds4d_endpoint): env
 * DS4_KVD_ENDPOINT, else "ipc://<run dir>/kvd.sock" with the run directory
 * of ds4d_run_dir_resolve(run_dir) (--run-dir, $DS4_RUN_DIR,
 * $XDG_RUNTIME_DIR/ds4, /tmp/ds4-$UID). 0, or -1 if it does not fit. */
int kvc_default_endpoint(const char *run_dir, char *out, size_t outlen);

/* Connect (does not wait for kvd to be up). NULL + err on a bad option. */
kv_client *kvc_open(const kvc_opts *o, char *err, size_t errlen);
/* Close the connection and unlink the put segment. */
void kvc_close(kv_client *c);
/* Wire error code of the last failure (DS4W_E_*), 0 after a success. */
int kvc_errcode(const kv_client *c);

/* What describes a checkpoint. */
typedef struct kvc_meta {
    const char *fingerprint;  /* exact model, 64 hex (required) */
    const char *family;       /* family fingerprint or NULL */
    const char *quant;        /* e.g. "q2", or NULL */
    const char *reason;       /* "cold", "periodic", "evict", "shutdown" or NULL */
    double prefill_ms;        /* what computing the prefix cost (eviction) */
} kvc_meta;

typedef struct kvc_stored {
    char key[KV_KEY_LEN + 1];
    uint64_t bytes;
    unsigned evicted;
} kvc_stored;

/* Store blob[0..len) as the checkpoint of ids[0..n). Returns once kvd has
 * it on disk: 0, or -1 + err (kvc_errcode: too_large, internal (disk
 * error, nothing stored), unavailable (kvd down or timed out), ...). */
int kvc_put(kv_client *c, const int32_t *ids, size_t n, const void *blob, size_t len,
            const kvc_meta *m, kvc_stored *out, char *err, size_t errlen);

typedef struct kvc_query {
    const char *fingerprint;  /* required */
    const char *family;       /* NULL: exact matches only */
    int allow_cross_quant;
    uint32_t min_tokens;
} kvc_query;

typedef struct kvc_found {
    uint32_t tokens;                 /* length of the stored prefix */
    char key[KV_KEY_LEN + 1];
    char fingerprint[KV_FP_LEN + 1]; /* of the entry (differs from the
                                        query's on a cross-quant match) */
    char quant[KV_QUANT_MAX + 1];
    char miss_reason[32];            /* on a miss */
    const uint8_t *data;             /* the payload, valid until kvc_found_free */
    size_t len;
    /* private */
    kv_client *c;                    /* set while a segment is held */
    int slot;                        /* the client's mapping, or -1 */
    ds4_shm shm;                     /* own mapping when no slot was free */
    ds4w_shmref ref;
    uint8_t *buf;                    /* inline payload (malloc'd) */
} kvc_found;

/* Longest stored prefix of ids[0..n). 1 found (*f holds the payload; free
 * it with kvc_found_free), 0 miss (f->miss_reason), -1 error + err. */
int kvc_lookup(kv_client *c, const int32_t *ids, size_t n, const kvc_query *q, kvc_found *f,
               char *err, size_t errlen);
/* Done with the payload: releases the segment to kvd (before kvc_close of
 * the client that found it). Safe on a zeroed or missed *f. */
void kvc_found_free(kvc_found *f);

/* Segment mappings a client keeps for reuse. */
#define KVC_MAPS 4

/* PING: 0 once kvd answers ready, -1 + err. */
int kvc_ping(kv_client *c, char *err, size_t errlen);
/* KV_SET_DIR: 0, or -1 + err (kvd keeps its old directory). */
int kvc_set_dir(kv_client *c, const char *dir, int create, char *err, size_t errlen);
/* KV_STATS: the STATS object (caller decrefs), or NULL + err. */
json_t *kvc_stats(kv_client *c, char *err, size_t errlen);

#endif
