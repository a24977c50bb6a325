/* kv_index.h - kvd's in-memory index of the checkpoints in its directory.
 *
 * Each entry is a file's header plus bookkeeping (size on disk, hits, last
 * use). Lookup of the longest stored prefix of a query: the distinct stored
 * prefix lengths are kept sorted; one pass over the query's ids computes the
 * running prefix hash (kv_ids_step), and at each stored length L <= n the
 * finished hash of the first L ids is probed in a hash table keyed by
 * (ids_hash, n_tokens). Cost: O(n + distinct lengths + matches), so a
 * 100k-token query against thousands of entries is a fraction of a
 * millisecond. Hashes only nominate candidates: the store reads the
 * candidate's ids from its file and compares them with the query before
 * serving anything. */
#ifndef DS4_KV_INDEX_H
#define DS4_KV_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "kv_format.h"

typedef struct kv_entry {
    char key[KV_KEY_LEN + 1];
    kv_hdr h;                /* as read from the file */
    uint64_t disk_bytes;     /* file size rounded up to 4 KiB (budget unit) */
    uint64_t hits;
    uint64_t last_used_ns;   /* wall clock (unix ns): creation or last hit */
    int32_t next;            /* hash chain (index into entries), -1 ends */
} kv_entry;

typedef struct kv_len {
    uint32_t len;
    uint32_t count;          /* entries with this many tokens */
} kv_len;

typedef struct kv_index {
    kv_entry *e;
    size_t n, cap;
    int32_t *bucket;         /* heads of hash chains */
    size_t nbucket;          /* power of two */
    kv_len *lens;            /* sorted by len */
    size_t nlens, caplens;
    uint64_t bytes;          /* sum of disk_bytes */
} kv_index;

/* What a lookup is allowed to match. */
typedef struct kv_query {
    const char *fingerprint;   /* exact model, required */
    const char *family;        /* NULL or "" if unknown */
    int allow_cross_quant;     /* accept a family match */
    uint32_t min_tokens;       /* ignore shorter prefixes */
} kv_query;

/* One acceptable candidate (longest first, exact before family). */
typedef struct kv_cand {
    int32_t idx;
    uint32_t len;
    int exact;
} kv_cand;

void kv_index_init(kv_index *x);
void kv_index_free(kv_index *x);
/* Add an entry (a copy); an entry with the same key is replaced. Returns
 * its index. */
int32_t kv_index_put(kv_index *x, const kv_entry *e);
/* Index of the entry with this key, or -1. */
int32_t kv_index_find(const kv_index *x, const char *key);
/* Remove entry i (the last entry moves into its slot). */
void kv_index_remove(kv_index *x, int32_t i);

/* Candidates for the longest stored prefix of ids[0..n) under q, longest
 * first; at most max of them into out. Returns how many. *fp_mismatch (if
 * non-NULL) is set when some entry matched the ids' hash but not the
 * fingerprint rules (for KV_MISS reason "fingerprint"). */
size_t kv_index_lookup(const kv_index *x, const int32_t *ids, size_t n, const kv_query *q,
                       kv_cand *out, size_t max, int *fp_mismatch);

/* Eviction order: the entry with the lowest value
 *   (cost_ms / disk_bytes) * (1 + hits) * 2^(-age / halflife)
 * where cost_ms is the prefill cost recorded at KV_PUT (or, if unknown,
 * tokens x the mean cost per token of the entries that have one, 1 ms if
 * none) and age is the time since the last use; ties go to the least
 * recently used. Skips the entry whose key is protect (may be NULL).
 * Returns the index, or -1 if there is nothing to evict. */
int32_t kv_index_victim(const kv_index *x, uint64_t now_ns, double halflife_s,
                        const char *protect);
/* The same, skipping the entries for which skip(arg, e) is true. */
int32_t kv_index_victim_skip(const kv_index *x, uint64_t now_ns, double halflife_s,
                             int (*skip)(void *arg, const kv_entry *e), void *arg);
/* The value above for one entry (exposed for tests). */
double kv_index_value(const kv_index *x, const kv_entry *e, uint64_t now_ns, double halflife_s,
                      double ms_per_token);
/* Mean recorded prefill cost per token over entries that have one (1.0 if
 * none). */
double kv_index_ms_per_token(const kv_index *x);

/* Bytes an entry of file_size occupies for the budget. */
static inline uint64_t kv_disk_bytes(uint64_t file_size)
{
    return (file_size + 4095) / 4096 * 4096;
}

#endif
