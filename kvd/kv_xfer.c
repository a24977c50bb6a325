/* kv_xfer.c - transfer segments and their pool (see kv_xfer.h). */
#include "kv_xfer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Room in a segment before the payload (the shm header is 128 bytes). */
#define PAD (KV_XFER_DATA_OFF - DS4_SHM_HEADER_SIZE)

int kv_xfer_init(kv_xfer *x, const char *instance, uint64_t ttl_ms, uint64_t max_out,
                 uint64_t pool_cap, char *err, size_t errlen)
{
    memset(x, 0, sizeof *x);
    snprintf(x->instance, sizeof x->instance, "%s", instance ? instance : "default");
    x->ttl_ms = ttl_ms;
    x->max_out = max_out;
    x->pool_cap = pool_cap;
    /* the longest name this process can make must fit a SHMREF */
    char name[DS4_SHM_NAME_MAX + 1];
    if (ds4_shm_name(name, sizeof name, x->instance, "kvx.4194304.4294967295", err, errlen))
        return -1;
    if (strlen(name) >= DS4W_SHM_NAME_MAX) {
        ds4_seterr(err, errlen, "instance name \"%s\" is too long for transfer segment names",
                   x->instance);
        return -1;
    }
    return 0;
}

uint64_t kv_xfer_class(uint64_t size)
{
    uint64_t min = 1u << 20;
    if (size <= min)
        return min;
    unsigned lg = 63 - (unsigned)__builtin_clzll(size);
    uint64_t step = 1ull << (lg - 3);
    return (size + step - 1) / step * step;
}

static uint64_t seg_bytes(const kv_xseg *g)
{
    return g->shm.map_size;
}

/* Unlink, unmap and forget segment i (the last one moves into its slot). */
static void drop(kv_xfer *x, size_t i, const char *why)
{
    kv_xseg *g = &x->seg[i];
    char name[DS4_SHM_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s", g->shm.name);
    if (g->state == KV_XS_OUT)
        x->out_bytes -= seg_bytes(g);
    else if (g->state == KV_XS_POOL)
        x->pool_bytes -= seg_bytes(g);
    ds4_shm_detach(&g->shm);
    if (ds4_shm_unlink(name) && errno != ENOENT)
        ds4_warn("cannot unlink %s: %s", name, strerror(errno));
    ds4_debug("transfer segment %s unlinked (%s)", name, why);
    x->seg[i] = x->seg[--x->n];
}

void kv_xfer_fini(kv_xfer *x)
{
    while (x->n)
        drop(x, x->n - 1, "shutdown");
    free(x->seg);
    x->seg = NULL;
    x->cap = 0;
}

/* Put segment i in the pool, then trim the pool to its cap (least
 * recently pooled first). */
static void to_pool(kv_xfer *x, size_t i)
{
    kv_xseg *g = &x->seg[i];
    g->state = KV_XS_POOL;
    g->since_ns = ds4_now_ns();
    x->pool_bytes += seg_bytes(g);
    while (x->pool_bytes > x->pool_cap) {
        size_t old = x->n;
        for (size_t k = 0; k < x->n; k++)
            if (x->seg[k].state == KV_XS_POOL &&
                (old == x->n || x->seg[k].since_ns < x->seg[old].since_ns))
                old = k;
        if (old == x->n)
            break;
        drop(x, old, "pool over its cap");
    }
}

int kv_xfer_get(kv_xfer *x, uint64_t size, uint8_t **dest, char *err, size_t errlen)
{
    uint64_t need = PAD + size;
    /* the smallest pooled segment that fits */
    size_t best = x->n;
    for (size_t i = 0; i < x->n; i++)
        if (x->seg[i].state == KV_XS_POOL && x->seg[i].shm.payload_size >= need &&
            (best == x->n || x->seg[i].shm.payload_size < x->seg[best].shm.payload_size))
            best = i;
    if (best < x->n) {
        kv_xseg *g = &x->seg[best];
        x->pool_bytes -= seg_bytes(g);
        g->state = KV_XS_FILLING;
        ds4_shm_begin_update(&g->shm);
        *dest = g->shm.payload + PAD;
        x->reused++;
        return (int)best;
    }
    /* a new one; the oldest handed-out ones go if the cap says so */
    uint64_t cls = kv_xfer_class(need);
    while (x->max_out && x->out_bytes + DS4_SHM_HEADER_SIZE + cls > x->max_out) {
        size_t old = x->n;
        for (size_t k = 0; k < x->n; k++)
            if (x->seg[k].state == KV_XS_OUT &&
                (old == x->n || x->seg[k].since_ns < x->seg[old].since_ns))
                old = k;
        if (old == x->n)
            break;
        ds4_warn("unreleased transfer segments over --kv-transfer-max-mb: unlinking %s",
                 x->seg[old].shm.name);
        drop(x, old, "over the cap");
    }
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 16;
        x->seg = ds4_xrealloc(x->seg, x->cap * sizeof *x->seg);
    }
    char purpose[64], name[DS4_SHM_NAME_MAX + 1];
    snprintf(purpose, sizeof purpose, "kvx.%ld.%u", (long)getpid(), ++x->seq);
    if (ds4_shm_name(name, sizeof name, x->instance, purpose, err, errlen))
        return -1;
    /* A full /dev/shm must give an error, never a SIGBUS on a page that
     * cannot be allocated: look first, then reserve every page. */
    struct statvfs vs;
    if (statvfs("/dev/shm", &vs) == 0 &&
        (uint64_t)vs.f_bavail * vs.f_frsize < cls + DS4_SHM_HEADER_SIZE + (1u << 20)) {
        ds4_seterr(err, errlen, "not enough shared memory for %llu bytes (%llu free in /dev/shm)",
                   (unsigned long long)cls,
                   (unsigned long long)((uint64_t)vs.f_bavail * vs.f_frsize));
        return -1;
    }
    kv_xseg *g = &x->seg[x->n];
    memset(g, 0, sizeof *g);
    if (ds4_shm_create(&g->shm, name, cls, 0, err, errlen))
        return -1;
    if (fallocate(g->shm.fd, 0, 0, (off_t)g->shm.map_size) && errno != EOPNOTSUPP) {
        ds4_seterr(err, errlen, "cannot reserve %llu bytes of shared memory: %s",
                   (unsigned long long)g->shm.map_size, strerror(errno));
        ds4_shm_detach(&g->shm);
        ds4_shm_unlink(name);
        return -1;
    }
    /* one call to fault every page in, instead of one fault per page */
    (void)madvise(g->shm.hdr, g->shm.map_size, MADV_POPULATE_WRITE);
    g->state = KV_XS_FILLING;
    *dest = g->shm.payload + PAD;
    x->created++;
    return (int)x->n++;
}

void kv_xfer_abandon(kv_xfer *x, int i)
{
    DS4_ASSERT(i >= 0 && (size_t)i < x->n && x->seg[i].state == KV_XS_FILLING);
    to_pool(x, (size_t)i);
}

void kv_xfer_publish(kv_xfer *x, int i, uint64_t length, uint64_t checksum, ds4w_shmref *ref)
{
    DS4_ASSERT(i >= 0 && (size_t)i < x->n && x->seg[i].state == KV_XS_FILLING);
    kv_xseg *g = &x->seg[i];
    ds4_shm_publish(&g->shm);
    g->state = KV_XS_OUT;
    g->since_ns = ds4_now_ns();
    x->out_bytes += seg_bytes(g);
    memset(ref, 0, sizeof *ref);
    memcpy(ref->name, g->shm.name, strnlen(g->shm.name, sizeof ref->name - 1)); /* fits: init */
    ref->offset = KV_XFER_DATA_OFF;
    ref->length = length;
    ref->generation = ds4_shm_generation(&g->shm);
    ref->checksum = checksum;
}

int kv_xfer_release(kv_xfer *x, const ds4w_shmref *ref)
{
    for (size_t i = 0; i < x->n; i++) {
        kv_xseg *g = &x->seg[i];
        if (g->state == KV_XS_OUT && !strcmp(g->shm.name, ref->name) &&
            ds4_shm_generation(&g->shm) == ref->generation) {
            x->out_bytes -= seg_bytes(g);
            to_pool(x, i);
            return 0;
        }
    }
    return -1;
}

void kv_xfer_tick(kv_xfer *x, uint64_t now)
{
    for (size_t i = 0; i < x->n;) {
        kv_xseg *g = &x->seg[i];
        uint64_t age = now > g->since_ns ? now - g->since_ns : 0;
        if (g->state == KV_XS_OUT && x->ttl_ms && age > x->ttl_ms * 1000000ull) {
            ds4_warn("transfer segment %s was not released within %llu ms: unlinked",
                     g->shm.name, (unsigned long long)x->ttl_ms);
            drop(x, i, "expired");
        } else if (g->state == KV_XS_POOL && age > KV_XFER_POOL_IDLE_S * 1000000000ull) {
            drop(x, i, "idle in the pool");
        } else {
            i++;
        }
    }
}

size_t kv_xfer_out(const kv_xfer *x)
{
    size_t n = 0;
    for (size_t i = 0; i < x->n; i++)
        n += x->seg[i].state == KV_XS_OUT;
    return n;
}
