/* kv_store.h - a kvd storage directory: the checkpoint files, their index,
 * crash-safe writes, the space budget and eviction, quarantine.
 *
 * Directory contents:
 *   <key>.kv           complete checkpoints (kv_format.h)
 *   .tmp-<key>-<pid>-<n>  a write in progress; never served, removed at
 *                      open (a crash left it)
 *   .kvd.lock          flock'd while a kvd uses the directory (two kvds
 *                      never share one)
 *   quarantine/        corrupt, truncated or foreign files, renamed to
 *                      "<name>.<unix-ns>"; never served
 *
 * Writes (kv_store_put): temp file (O_EXCL), space reserved with fallocate,
 * ids and payload written, header last, fsync, rename to <key>.kv, fsync of
 * the directory, and only then the entry is in the index and the caller may
 * acknowledge it. A crash at any point leaves the old state or the new
 * entry, never a file that is served half-written.
 *
 * Budget: the sum over entries and quarantined files of their sizes rounded
 * up to 4 KiB never exceeds budget_bytes (0: no limit): before a write,
 * quarantined files (oldest first) then entries (lowest kv_index_value
 * first) are deleted until the new file fits; a file larger than the whole
 * budget is refused. The temporary file counts while it exists.
 *
 * Hits and last use are kept on the file itself, best effort: last use as
 * its mtime (futimens), hits in the xattr user.ds4kv.hits; both are
 * re-read at open, so eviction order survives a restart.
 *
 * Not thread-safe: one thread drives a store. */
#ifndef DS4_KV_STORE_H
#define DS4_KV_STORE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_index.h"
#include "stats.h"

#define KV_LOCK_NAME ".kvd.lock"
#define KV_TMP_PREFIX ".tmp-"
#define KV_QUARANTINE "quarantine"

typedef struct kv_store_cfg {
    uint64_t budget_bytes;  /* 0: unlimited */
    double halflife_s;      /* recency half-life of the eviction value */
    int verify_on_open;     /* check every file's ids and payload at open */
    ds4_stats *stats;       /* kvd counters (DS4S_KV_*), may be NULL */
} kv_store_cfg;

typedef struct kv_store {
    char dir[PATH_MAX];
    int dir_fd, lock_fd, qdir_fd; /* qdir_fd -1 until needed */
    kv_index idx;
    kv_store_cfg cfg;
    uint64_t quarantine_bytes;
    unsigned opened_quarantined, opened_tmp_removed, opened_evicted;
    uint64_t seq;
    struct kv_pending {
        char key[KV_KEY_LEN + 1];
        uint64_t bytes;
    } *pend;                      /* writes begun, not ended */
    size_t npend, cappend;
    uint64_t pend_bytes;
} kv_store;

/* Results of kv_store_put and its parts. */
enum {
    KV_OK = 0,
    KV_DONE = -1,         /* put_begin: nothing to write (same checkpoint) */
    KV_ERR_TOO_LARGE = 1, /* larger than the whole budget */
    KV_ERR_IO = 2,        /* disk error (full, read-only...): nothing stored */
    KV_ERR_CHECKSUM = 3,  /* payload differs from its declared checksum, or
                             the source could not be read */
};

/* Open dir (created with parents when create is set), lock it, rebuild the
 * index from its files (temp leftovers removed, bad files quarantined, all
 * logged), then evict down to the budget. 0, or -1 + err (nothing held). */
int kv_store_open(kv_store *s, const char *dir, int create, const kv_store_cfg *cfg, char *err,
                  size_t errlen);
void kv_store_close(kv_store *s);

/* Bytes counted against the budget. */
uint64_t kv_store_used(const kv_store *s);
/* Refresh the stats gauges (entries, disk_bytes, disk_budget_bytes). */
void kv_store_gauges(const kv_store *s);

/* Where a lookup puts a payload: alloc returns room for size bytes (NULL:
 * failure, message in err); discard undoes it when the bytes turned out
 * bad. */
typedef struct kv_sink {
    void *(*alloc)(void *arg, uint64_t size, char *err, size_t errlen);
    void (*discard)(void *arg, void *dest);
    void *arg;
} kv_sink;

typedef struct kv_found {
    char key[KV_KEY_LEN + 1];
    kv_hdr h;
    int exact;         /* exact fingerprint (else a family match) */
    void *dest;        /* what sink.alloc returned, now holding the payload */
    unsigned quarantined; /* bad candidates set aside on the way */
} kv_found;

/* Longest stored prefix of ids[0..n) under q. Each candidate's file is
 * re-read and checked (header as indexed, ids equal to the query's,
 * payload checksum while reading into the sink); a bad one is quarantined
 * and the next shorter candidate tried. 1 found (*out filled), 0 miss
 * (*miss_reason: "none", "fingerprint", "corrupt"), -1 on a failure that is
 * not the file's fault (sink, I/O) with err. */
int kv_store_lookup(kv_store *s, const int32_t *ids, size_t n, const kv_query *q,
                    const kv_sink *sink, kv_found *out, const char **miss_reason, char *err,
                    size_t errlen);

typedef struct kv_put_req {
    const int32_t *ids;
    size_t n;
    const void *payload;      /* the payload in memory, or */
    int src_fd;               /* >= 0: read it from this fd (a sender's shm
                                 segment: pread, so a segment that shrinks
                                 under us gives an error, never SIGBUS) */
    uint64_t src_off;         /* where it starts in src_fd */
    uint64_t len;
    uint64_t expect_checksum; /* ds4_hash64 of the payload, 0: unknown */
    const char *fingerprint;  /* 64 hex */
    const char *family;       /* 64 hex or NULL/"" */
    const char *quant;        /* may be NULL */
    uint32_t reason;
    uint64_t prefill_us;
} kv_put_req;

typedef struct kv_put_res {
    char key[KV_KEY_LEN + 1];
    uint64_t bytes;     /* file size on disk */
    unsigned evicted;   /* entries and quarantined files deleted for room */
    int unchanged;      /* the same checkpoint was already stored */
} kv_put_res;

/* Store a checkpoint durably (see above). KV_OK, or a KV_ERR_* with err;
 * on failure nothing new is left in the directory. */
int kv_store_put(kv_store *s, const kv_put_req *r, kv_put_res *res, char *err, size_t errlen);

/* kv_store_put in three parts, so the file I/O can run on another thread
 * while the store's thread serves lookups:
 *   begin (store thread): key, budget and eviction, the write registered as
 *     pending (its bytes count against the budget, its key is neither
 *     evicted nor served until it ends). KV_OK: run write then end;
 *     KV_DONE: the same checkpoint is already stored (*res filled);
 *     KV_ERR_*: refused (err).
 *   write (any thread): temp file, data, fsync, rename, directory fsync;
 *     touches nothing but the directory (job->rc, job->err).
 *   end (store thread): the entry enters the index; returns job->rc.
 * Every begun write must end before the store is closed. */
typedef struct kv_put_job {
    int dir_fd;
    char dir[PATH_MAX];
    char key[KV_KEY_LEN + 1];
    char tmp[NAME_MAX + 1];
    char name[KV_KEY_LEN + 8];
    kv_hdr h;
    uint64_t disk, t0;
    int rc, renamed;
    char err[512];
} kv_put_job;
int kv_store_put_begin(kv_store *s, const kv_put_req *r, kv_put_job *job, kv_put_res *res,
                       char *err, size_t errlen);
int kv_put_write(kv_put_job *job, const kv_put_req *r);
int kv_store_put_end(kv_store *s, kv_put_job *job, kv_put_res *res, char *err, size_t errlen);
/* A write of this key is in flight. */
int kv_store_pending(const kv_store *s, const char *key);

/* Delete entries (lowest value first) until at most target bytes are
 * used. Returns how many files were deleted. */
unsigned kv_store_shrink(kv_store *s, uint64_t target);

/* Move a file of the directory into quarantine/ (logged with why). 0 or
 * -1 (then it is deleted instead, so it is never served). */
int kv_store_quarantine(kv_store *s, const char *name, const char *why);

/* Fault injection (kvd --test-mode): kv_crashpoint(name) counts the points
 * whose name starts with filter (NULL: all) and SIGKILLs the process at the
 * at-th one (0: never). */
void kv_crash_setup(uint64_t at, const char *filter);
void kv_crashpoint(const char *name);
/* Points counted so far. */
uint64_t kv_crash_count(void);

#endif
