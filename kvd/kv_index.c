/* kv_index.c - kvd's in-memory index: hash chains keyed by the prefix hash,
 * the sorted set of stored lengths, longest-prefix lookup, eviction order
 * (see kv_index.h). */
#include "kv_index.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void kv_index_init(kv_index *x)
{
    memset(x, 0, sizeof *x);
    x->nbucket = 64;
    x->bucket = ds4_xmalloc(x->nbucket * sizeof *x->bucket);
    for (size_t i = 0; i < x->nbucket; i++)
        x->bucket[i] = -1;
}

void kv_index_free(kv_index *x)
{
    free(x->e);
    free(x->bucket);
    free(x->lens);
    memset(x, 0, sizeof *x);
}

static size_t bucket_of(const kv_index *x, uint64_t ids_hash)
{
    return (size_t)(ids_hash & (x->nbucket - 1));
}

/* Rebuild every chain (after a removal or a resize). */
static void rechain(kv_index *x)
{
    for (size_t i = 0; i < x->nbucket; i++)
        x->bucket[i] = -1;
    for (size_t i = 0; i < x->n; i++) {
        size_t b = bucket_of(x, x->e[i].h.ids_hash);
        x->e[i].next = x->bucket[b];
        x->bucket[b] = (int32_t)i;
    }
}

/* Position of len in the sorted set (or where it would go). */
static size_t len_pos(const kv_index *x, uint32_t len)
{
    size_t lo = 0, hi = x->nlens;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (x->lens[mid].len < len)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void len_add(kv_index *x, uint32_t len)
{
    size_t p = len_pos(x, len);
    if (p < x->nlens && x->lens[p].len == len) {
        x->lens[p].count++;
        return;
    }
    if (x->nlens == x->caplens) {
        x->caplens = x->caplens ? 2 * x->caplens : 16;
        x->lens = ds4_xrealloc(x->lens, x->caplens * sizeof *x->lens);
    }
    memmove(x->lens + p + 1, x->lens + p, (x->nlens - p) * sizeof *x->lens);
    x->lens[p] = (kv_len){len, 1};
    x->nlens++;
}

static void len_del(kv_index *x, uint32_t len)
{
    size_t p = len_pos(x, len);
    DS4_ASSERT(p < x->nlens && x->lens[p].len == len && x->lens[p].count > 0);
    if (--x->lens[p].count)
        return;
    memmove(x->lens + p, x->lens + p + 1, (x->nlens - p - 1) * sizeof *x->lens);
    x->nlens--;
}

int32_t kv_index_find(const kv_index *x, const char *key)
{
    /* The key starts with the ids hash in hex: use it to pick the chain. */
    uint64_t h = strtoull(key, NULL, 16);
    for (int32_t i = x->bucket[bucket_of(x, h)]; i >= 0; i = x->e[i].next)
        if (!strcmp(x->e[i].key, key))
            return i;
    return -1;
}

int32_t kv_index_put(kv_index *x, const kv_entry *e)
{
    int32_t old = kv_index_find(x, e->key);
    if (old >= 0)
        kv_index_remove(x, old);
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 64;
        x->e = ds4_xrealloc(x->e, x->cap * sizeof *x->e);
    }
    int32_t i = (int32_t)x->n++;
    x->e[i] = *e;
    x->bytes += e->disk_bytes;
    len_add(x, e->h.n_tokens);
    if (x->n > x->nbucket) {
        x->nbucket *= 4;
        x->bucket = ds4_xrealloc(x->bucket, x->nbucket * sizeof *x->bucket);
        rechain(x);
    } else {
        size_t b = bucket_of(x, e->h.ids_hash);
        x->e[i].next = x->bucket[b];
        x->bucket[b] = i;
    }
    return i;
}

void kv_index_remove(kv_index *x, int32_t i)
{
    DS4_ASSERT(i >= 0 && (size_t)i < x->n);
    x->bytes -= x->e[i].disk_bytes;
    len_del(x, x->e[i].h.n_tokens);
    x->e[i] = x->e[x->n - 1];
    x->n--;
    rechain(x);
}

/* The fingerprint rules: 2 exact, 1 family (cross-quant allowed), 0 no. */
static int fp_class(const kv_entry *e, const kv_query *q)
{
    if (!strcmp(e->h.fingerprint, q->fingerprint))
        return 2;
    if (q->allow_cross_quant && q->family && q->family[0] && e->h.family[0] &&
        !strcmp(e->h.family, q->family))
        return 1;
    return 0;
}

static int cand_cmp(const void *a, const void *b)
{
    const kv_cand *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    if (x->exact != y->exact)
        return x->exact ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

size_t kv_index_lookup(const kv_index *x, const int32_t *ids, size_t n, const kv_query *q,
                       kv_cand *out, size_t max, int *fp_mismatch)
{
    if (fp_mismatch)
        *fp_mismatch = 0;
    kv_cand *c = NULL;
    size_t nc = 0, capc = 0;
    uint64_t h = KV_IDS_SEED;
    size_t pos = 0;
    for (size_t k = 0; k < x->nlens; k++) {
        uint32_t L = x->lens[k].len;
        if (L > n)
            break;
        for (; pos < L; pos++)
            h = kv_ids_step(h, ids[pos]);
        if (L < q->min_tokens)
            continue;
        uint64_t fh = kv_ids_final(h, L);
        for (int32_t i = x->bucket[bucket_of(x, fh)]; i >= 0; i = x->e[i].next) {
            const kv_entry *e = &x->e[i];
            if (e->h.ids_hash != fh || e->h.n_tokens != L)
                continue;
            int cls = fp_class(e, q);
            if (!cls) {
                if (fp_mismatch)
                    *fp_mismatch = 1;
                continue;
            }
            if (nc == capc) {
                capc = capc ? 2 * capc : 16;
                c = ds4_xrealloc(c, capc * sizeof *c);
            }
            c[nc++] = (kv_cand){i, L, cls == 2};
        }
    }
    if (nc > 1)
        qsort(c, nc, sizeof *c, cand_cmp);
    size_t m = nc < max ? nc : max;
    if (m)
        memcpy(out, c, m * sizeof *c);
    free(c);
    return m;
}

double kv_index_ms_per_token(const kv_index *x)
{
    double ms = 0, tok = 0;
    for (size_t i = 0; i < x->n; i++)
        if (x->e[i].h.prefill_us) {
            ms += (double)x->e[i].h.prefill_us / 1000.0;
            tok += x->e[i].h.n_tokens;
        }
    return tok > 0 ? ms / tok : 1.0;
}

double kv_index_value(const kv_index *x, const kv_entry *e, uint64_t now_ns, double halflife_s,
                      double ms_per_token)
{
    (void)x;
    double cost = e->h.prefill_us ? (double)e->h.prefill_us / 1000.0
                                  : (double)e->h.n_tokens * ms_per_token;
    double age = now_ns > e->last_used_ns ? (double)(now_ns - e->last_used_ns) / 1e9 : 0.0;
    double decay = halflife_s > 0 ? exp2(-age / halflife_s) : 1.0;
    double bytes = e->disk_bytes ? (double)e->disk_bytes : 1.0;
    return cost / bytes * (1.0 + (double)e->hits) * decay;
}

static int skip_key(void *arg, const kv_entry *e)
{
    return arg && !strcmp(e->key, (const char *)arg);
}

int32_t kv_index_victim(const kv_index *x, uint64_t now_ns, double halflife_s,
                        const char *protect)
{
    return kv_index_victim_skip(x, now_ns, halflife_s, skip_key, (void *)protect);
}

int32_t kv_index_victim_skip(const kv_index *x, uint64_t now_ns, double halflife_s,
                             int (*skip)(void *arg, const kv_entry *e), void *arg)
{
    double mpt = kv_index_ms_per_token(x);
    int32_t best = -1;
    double bv = 0;
    for (size_t i = 0; i < x->n; i++) {
        const kv_entry *e = &x->e[i];
        if (skip && skip(arg, e))
            continue;
        double v = kv_index_value(x, e, now_ns, halflife_s, mpt);
        if (best < 0 || v < bv ||
            (v == bv && e->last_used_ns < x->e[best].last_used_ns)) {
            best = (int32_t)i;
            bv = v;
        }
    }
    return best;
}
