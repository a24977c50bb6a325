/* eng_sessions.c - resident sessions, prefix reuse, LRU (see eng_sessions.h). */
#include "eng_sessions.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

void eng_pool_init(eng_pool *p, const eng_backend_ops *ops, eng_backend *b, uint32_t max_idle,
                   ds4_stats *stats)
{
    memset(p, 0, sizeof *p);
    p->ops = ops;
    p->b = b;
    p->max_idle = max_idle;
    p->stats = stats;
}

static void update_gauges(eng_pool *p)
{
    if (!p->stats)
        return;
    ds4_stats_set(p->stats, DS4S_ENG_sessions_resident, p->n);
    ds4_stats_set(p->stats, DS4S_ENG_device_mem_bytes, p->ops->mem_used(p->b));
}

/* Drop entry i (its session is freed by the caller or here). */
static void remove_at(eng_pool *p, uint32_t i, int free_it)
{
    if (free_it)
        p->ops->session_free(p->v[i].s);
    p->v[i] = p->v[--p->n];
}

void eng_pool_fini(eng_pool *p)
{
    for (uint32_t i = 0; i < p->n; i++) {
        if (p->src && p->src->offer && !p->v[i].owner)
            p->src->offer(p->src->ud, p->ops->fingerprint(p->b), p->ops, p->v[i].s, "shutdown");
        p->ops->session_free(p->v[i].s);
    }
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
    update_gauges(p);
}

int eng_pool_evict_lru(eng_pool *p)
{
    int best = -1;
    for (uint32_t i = 0; i < p->n; i++)
        if (!p->v[i].owner && (best < 0 || p->v[i].last_used < p->v[best].last_used))
            best = (int)i;
    if (best < 0)
        return -1;
    eng_session *s = p->v[best].s;
    ds4_debug("evicting an idle session of %u tokens (%llu bytes)", p->ops->session_len(s),
              (unsigned long long)p->ops->session_bytes(s));
    if (p->src && p->src->offer)
        p->src->offer(p->src->ud, p->ops->fingerprint(p->b), p->ops, s, "evict");
    remove_at(p, (uint32_t)best, 1);
    if (p->stats)
        ds4_stats_add(p->stats, DS4S_ENG_session_evictions, 1);
    update_gauges(p);
    return 0;
}

static void push(eng_pool *p, eng_session *s, void *owner)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->v = ds4_xrealloc(p->v, p->cap * sizeof *p->v);
    }
    p->v[p->n++] = (eng_resident){.s = s, .owner = owner, .last_used = ++p->tick};
    update_gauges(p);
}

/* Retry a backend allocation after evicting LRU idle sessions while the
 * failure is ENG_E_NOMEM. kind 0: new, 1: fork of src, 2: restore. */
static int alloc_session(eng_pool *p, int kind, const eng_session *src, const void *blob,
                         size_t len, eng_session **out, char *err, size_t errlen)
{
    for (;;) {
        int rc = kind == 0   ? p->ops->session_new(p->b, out, err, errlen)
                 : kind == 1 ? p->ops->fork(src, out, err, errlen)
                             : p->ops->restore(p->b, blob, len, out, err, errlen);
        if (rc == 0)
            return 0;
        if (eng_backend_errcode() != ENG_E_NOMEM || eng_pool_evict_lru(p) != 0)
            return -1;
    }
}

/* Index of the longest resident session that is a prefix of ids, or -1. */
static int best_prefix(const eng_pool *p, const int32_t *ids, uint32_t n, uint32_t *len)
{
    int best = -1;
    uint32_t bl = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t l = p->ops->session_len(p->v[i].s);
        if (l == 0 || l > n || l <= bl)
            continue;
        if (memcmp(p->ops->session_tokens(p->v[i].s), ids, (size_t)l * sizeof *ids) != 0)
            continue;
        /* prefer an idle one of the same length (no fork needed) */
        best = (int)i;
        bl = l;
    }
    if (best >= 0 && p->v[best].owner)
        for (uint32_t i = 0; i < p->n; i++)
            if (!p->v[i].owner && p->ops->session_len(p->v[i].s) == bl &&
                memcmp(p->ops->session_tokens(p->v[i].s), ids, (size_t)bl * sizeof *ids) == 0) {
                best = (int)i;
                break;
            }
    *len = bl;
    return best;
}

int eng_pool_acquire(eng_pool *p, void *owner, const int32_t *ids, uint32_t n, int reuse,
                     eng_session **out, uint32_t *cached, char *err, size_t errlen)
{
    *out = NULL;
    *cached = 0;
    if (!reuse)
        return alloc_session(p, 0, NULL, NULL, 0, out, err, errlen);
    uint32_t len = 0;
    int i = best_prefix(p, ids, n, &len);
    if (p->src && p->src->lookup && len < n) {
        void *blob = NULL;
        size_t blen = 0;
        uint32_t ntok = 0;
        if (p->src->lookup(p->src->ud, p->ops->fingerprint(p->b), ids, n, len, &blob, &blen,
                           &ntok) == 0) {
            eng_session *s = NULL;
            char e2[256] = "";
            uint64_t t0 = ds4_now_ns();
            int ok = ntok > len && ntok <= n &&
                     alloc_session(p, 2, NULL, blob, blen, &s, e2, sizeof e2) == 0 &&
                     p->ops->session_len(s) == ntok &&
                     memcmp(p->ops->session_tokens(s), ids, (size_t)ntok * sizeof *ids) == 0;
            if (p->stats)
                ds4_stats_add(p->stats, DS4S_ENG_kv_restore_ns, ds4_now_ns() - t0);
            if (ok) {
                free(blob);
                push(p, s, owner);
                *out = s;
                *cached = ntok;
                if (p->stats)
                    ds4_stats_add(p->stats, DS4S_ENG_kv_restores, 1);
                return 0;
            }
            ds4_warn("stored prefix of %u tokens not restored (%s): prefilling instead", ntok,
                     e2[0] ? e2 : "its tokens differ");
            if (s)
                p->ops->session_free(s);
            free(blob);
            if (p->stats)
                ds4_stats_add(p->stats, DS4S_ENG_kv_restore_failures, 1);
        }
    }
    if (i >= 0 && !p->v[i].owner) {
        p->v[i].owner = owner;
        *out = p->v[i].s;
        *cached = len;
        return 0;
    }
    eng_session *s = NULL;
    if (i >= 0) {
        /* in use by another job: fork it (eviction never touches owned ones) */
        eng_session *src = p->v[i].s;
        if (alloc_session(p, 1, src, NULL, 0, &s, err, errlen) == 0) {
            push(p, s, owner);
            *out = s;
            *cached = len;
            return 0;
        }
        if (eng_backend_errcode() != ENG_E_NOMEM)
            return -1;
        /* no memory for a fork: fall back to a fresh session */
    }
    if (alloc_session(p, 0, NULL, NULL, 0, &s, err, errlen) != 0)
        return -1;
    push(p, s, owner);
    *out = s;
    return 0;
}

void eng_pool_release(eng_pool *p, eng_session *s, int keep)
{
    if (!s)
        return;
    uint32_t i;
    for (i = 0; i < p->n; i++)
        if (p->v[i].s == s)
            break;
    if (i == p->n) { /* not resident (uncached diagnostics) */
        p->ops->session_free(s);
        update_gauges(p);
        return;
    }
    if (!keep || p->ops->session_len(s) == 0) {
        remove_at(p, i, 1);
        update_gauges(p);
        return;
    }
    p->v[i].owner = NULL;
    p->v[i].last_used = ++p->tick;
    uint32_t idle = 0;
    for (uint32_t j = 0; j < p->n; j++)
        idle += !p->v[j].owner;
    while (idle-- > p->max_idle && eng_pool_evict_lru(p) == 0)
        ;
    update_gauges(p);
}

uint32_t eng_pool_count(const eng_pool *p) { return p->n; }

uint64_t eng_pool_bytes(const eng_pool *p)
{
    uint64_t b = 0;
    for (uint32_t i = 0; i < p->n; i++)
        b += p->ops->session_bytes(p->v[i].s);
    return b;
}
