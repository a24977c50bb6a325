/* kv_xfer.h - kvd's KV_FOUND transfer segments, with a pool for reuse.
 *
 * A lookup's payload is read from its file straight into a transfer
 * segment "/ds4-<uid>-<instance>-kvx.<pid>.<n>" at offset KV_XFER_DATA_OFF
 * (page-aligned) and handed out by SHMREF. Filling fresh shared memory
 * costs a page fault per 4 KiB page (on virtual machines more than the
 * copy itself), so segments are reused: a released segment stays mapped in
 * kvd, in a pool capped at pool_cap bytes (least recently used ones are
 * unlinked beyond it, and any idle for KV_XFER_POOL_IDLE_S), and the next
 * lookup that fits takes it (generation + 1, so an old SHMREF never matches
 * the new contents). A reader that keeps its mapping of the same segment
 * (kv_client does) then pays no faults either. New segments are sized in
 * steps of 1/8 of a power of two (at least 1 MiB) so they fit later
 * payloads of similar size, and are populated in one call.
 *
 * Rules for readers (PROTOCOL §5.4): read only after KV_FOUND, release
 * when done; after KV_RELEASE the contents may change. A segment not
 * released within ttl_ms is unlinked (never reused: its reader may still
 * be on it), as are the oldest handed-out ones when their total would pass
 * max_out. */
#ifndef DS4_KV_XFER_H
#define DS4_KV_XFER_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"
#include "wire.h"

#define KV_XFER_DATA_OFF 4096u
#define KV_XFER_POOL_IDLE_S 600

enum { KV_XS_FILLING = 1, KV_XS_OUT = 2, KV_XS_POOL = 3 };

typedef struct kv_xseg {
    ds4_shm shm;         /* mapped read-write by kvd */
    uint64_t since_ns;   /* handed out / pooled at */
    int state;
} kv_xseg;

typedef struct kv_xfer {
    char instance[65];
    uint64_t ttl_ms, max_out, pool_cap;
    kv_xseg *seg;
    size_t n, cap;
    uint64_t out_bytes, pool_bytes;
    uint32_t seq;
    uint64_t reused, created; /* lookups served from the pool / new segments */
} kv_xfer;

/* instance must give segment names that fit a SHMREF (checked: -1 + err). */
int kv_xfer_init(kv_xfer *x, const char *instance, uint64_t ttl_ms, uint64_t max_out,
                 uint64_t pool_cap, char *err, size_t errlen);
/* Unlink every segment. */
void kv_xfer_fini(kv_xfer *x);

/* A segment with room for size payload bytes (pooled, else new); *dest is
 * where the payload goes. Its index, or -1 + err. */
int kv_xfer_get(kv_xfer *x, uint64_t size, uint8_t **dest, char *err, size_t errlen);
/* Filling failed: the segment goes back to the pool. */
void kv_xfer_abandon(kv_xfer *x, int i);
/* Filled: publish it and describe it (length bytes, checksum) in *ref. */
void kv_xfer_publish(kv_xfer *x, int i, uint64_t length, uint64_t checksum, ds4w_shmref *ref);
/* The reader is done: 0, or -1 if no handed-out segment matches. */
int kv_xfer_release(kv_xfer *x, const ds4w_shmref *ref);
/* Expire handed-out segments past the TTL and idle pooled ones. */
void kv_xfer_tick(kv_xfer *x, uint64_t now_ns);
/* Handed-out segments (count). */
size_t kv_xfer_out(const kv_xfer *x);
/* Payload capacity of a new segment for size bytes (exposed for tests). */
uint64_t kv_xfer_class(uint64_t size);

#endif
