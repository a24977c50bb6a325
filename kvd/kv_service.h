/* kv_service.h - kvd's request handlers as plain functions: a decoded
 * request (ds4w_msg) in, a reply (ds4w_out) or an error code with a message
 * out (like tok_service.h). The daemon loop only receives, dispatches and
 * sends; the unit test drives every handler directly.
 *
 * Requests served (docs/PROTOCOL.md §5.1, §5.4):
 *   PING        -> PONG
 *   STATS_GET   -> STATS   (every kvd counter; info: dir, budget, ...)
 *   KV_STATS    -> STATS   (the same)
 *   KV_LOOKUP   -> KV_FOUND | KV_MISS
 *                  the payload goes into a transfer segment (kv_xfer.h:
 *                  data at offset KV_XFER_DATA_OFF, page-aligned; pooled
 *                  for reuse), SHMREF checksum = the file's payload
 *                  checksum (verified while reading); or inline bytes
 *                  when the request has flag INLINE
 *   KV_PUT      -> KV_STORED; payload from the sender's segment (SHMREF:
 *                  read with pread, checksum checked if given) or inline;
 *                  with a writer thread the file I/O runs there and the
 *                  reply is deferred, lookups go on meanwhile
 *   KV_RELEASE  -> OK (segment back to the pool) | ERROR not_found
 *   KV_SET_DIR  -> OK {dir, entries} | ERROR invalid_request (old dir kept)
 *
 * Handed-out transfer segments live until KV_RELEASE (then pooled), or
 * --kv-transfer-ttl-ms, or until their total would pass
 * --kv-transfer-max-mb (oldest unlinked first). Unlinking never disturbs
 * a reader that has already mapped a segment. */
#ifndef DS4_KV_SERVICE_H
#define DS4_KV_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "kv_store.h"
#include "kv_writer.h"
#include "kv_xfer.h"
#include "shm.h"
#include "stats.h"
#include "wire.h"

#ifndef KVD_VERSION
#define KVD_VERSION "0.1.0"
#endif

#define KV_SVC_FIELD_MAX 64
/* kv_service_handle: the reply comes later, through cfg.reply. */
#define KV_SVC_DEFERRED (-2)

/* How a deferred reply is sent: m carries the route and request id; rc 0
 * with the reply in *out (the callee sends or frees it), or an error code
 * with err (and field). */
typedef void (*kv_reply_fn)(void *arg, const ds4w_msg *m, int rc, ds4w_out *out,
                            const char *field, const char *err);

typedef struct kv_service_cfg {
    const char *instance;     /* names transfer segments */
    kv_store_cfg store;       /* budget, half-life, verify, stats */
    uint64_t xfer_ttl_ms;     /* 0: until released */
    uint64_t xfer_max_bytes;  /* 0: no cap on handed-out segments */
    uint64_t xfer_pool_bytes; /* released segments kept for reuse */
    int test_mode;
    kv_writer *writer;        /* NULL: KV_PUT writes before it returns */
    kv_reply_fn reply;        /* deferred replies (with a writer) */
    void *reply_arg;
} kv_service_cfg;

typedef struct kv_service {
    kv_service_cfg cfg;
    kv_store store;
    int have_store;
    uint64_t start_ns;
    kv_xfer xf;              /* transfer segments (kv_xfer.h) */
    char field[KV_SVC_FIELD_MAX];
} kv_service;

/* Open the storage directory (created when create is set) and start the
 * service. 0, or -1 + err. */
int kv_service_init(kv_service *s, const char *dir, int create, const kv_service_cfg *cfg,
                    char *err, size_t errlen);
/* Unlink outstanding transfer segments, close the store. */
void kv_service_fini(kv_service *s);

/* Handle one decoded request (see above). DS4W_OK with the reply in *out,
 * or an error code with a message in err and, for invalid_request, the
 * field in *field; KV_SVC_DEFERRED: a KV_PUT went to the writer thread,
 * its reply will come through cfg.reply from kv_service_complete_writes. */
int kv_service_handle(kv_service *s, const ds4w_msg *m, ds4w_out *out, const char **field,
                      char *err, size_t errlen);
/* End the writes the writer has finished and send their replies; with
 * wait, every write in flight (before a directory switch, at shutdown). */
void kv_service_complete_writes(kv_service *s, int wait);

/* Housekeeping (expire transfer segments); call about once a second. */
void kv_service_tick(kv_service *s);

#endif
