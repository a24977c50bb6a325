/* eng_weights.c - the shared weights manifest (see eng_weights.h). */
#include "eng_weights.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "common/dsv4_layout.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/model_fp.h"
#include "common/shm.h"
#include "common/util.h"

#define PATH_FIELD 1024u

struct eng_weights {
    int reattached;
    char stale[96];
    char exact[65];
    char shm_name[DS4_SHM_NAME_MAX + 1];
    double ms;
};

/* The manifest payload, host form. */
struct manifest {
    uint32_t flags;
    uint64_t size, mtime_ns, ino, dev, tensor_bytes, n_tensors, prepare_ns;
    char exact[65], family[65], path[PATH_FIELD + 1];
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void encode(const struct manifest *m, uint8_t *p)
{
    memset(p, 0, ENG_WEIGHTS_PAYLOAD);
    memcpy(p, ENG_WEIGHTS_MAGIC, 8);
    put32(p + 8, ENG_WEIGHTS_VERSION);
    put32(p + 12, m->flags);
    put64(p + 16, m->size);
    put64(p + 24, m->mtime_ns);
    put64(p + 32, m->ino);
    put64(p + 40, m->dev);
    put64(p + 48, m->tensor_bytes);
    put64(p + 56, m->n_tensors);
    put64(p + 64, m->prepare_ns);
    memcpy(p + 72, m->exact, 64);
    memcpy(p + 136, m->family, 64);
    memcpy(p + 200, m->path, strnlen(m->path, PATH_FIELD));
}

/* Parse a payload; -1 with a reason when it is not a manifest we wrote. */
static int decode(const uint8_t *p, uint64_t len, struct manifest *m, char *why, size_t wl)
{
    if (len != ENG_WEIGHTS_PAYLOAD || memcmp(p, ENG_WEIGHTS_MAGIC, 8) != 0) {
        snprintf(why, wl, "not a weights manifest");
        return -1;
    }
    if (get32(p + 8) != ENG_WEIGHTS_VERSION) {
        snprintf(why, wl, "manifest version %u", get32(p + 8));
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->flags = get32(p + 12);
    m->size = get64(p + 16);
    m->mtime_ns = get64(p + 24);
    m->ino = get64(p + 32);
    m->dev = get64(p + 40);
    m->tensor_bytes = get64(p + 48);
    m->n_tensors = get64(p + 56);
    m->prepare_ns = get64(p + 64);
    memcpy(m->exact, p + 72, 64);
    memcpy(m->family, p + 136, 64);
    memcpy(m->path, p + 200, PATH_FIELD);
    if (memchr(p + 200, 0, PATH_FIELD) == NULL) {
        snprintf(why, wl, "manifest path unterminated");
        return -1;
    }
    for (int i = 0; i < 64; i++)
        if (!((m->exact[i] >= '0' && m->exact[i] <= '9') ||
              (m->exact[i] >= 'a' && m->exact[i] <= 'f'))) {
            snprintf(why, wl, "manifest fingerprint malformed");
            return -1;
        }
    return 0;
}

/* Identity of the file now. */
static int identify(const char *path, struct manifest *m, char *err, size_t errlen)
{
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path, real) || stat(real, &st) != 0) {
        ds4_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        ds4_seterr(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    if (strlen(real) >= PATH_FIELD) {
        ds4_seterr(err, errlen, "%s: path longer than %u bytes", path, PATH_FIELD - 1);
        return -1;
    }
    memset(m, 0, sizeof *m);
    memcpy(m->path, real, strlen(real) + 1); /* length checked above */
    m->size = (uint64_t)st.st_size;
    m->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
    m->ino = (uint64_t)st.st_ino;
    m->dev = (uint64_t)st.st_dev;
    return 0;
}

/* Try the published manifest; 0 when it matches the file (m filled). */
static int try_reattach(const char *name, const struct manifest *id, struct manifest *m,
                        char *why, size_t wl)
{
    ds4_shm sh;
    char e[256];
    if (ds4_shm_attach(&sh, name, DS4_SHM_RDONLY | DS4_SHM_VERIFY, e, sizeof e) != 0) {
        snprintf(why, wl, "%s", errno == ENOENT   ? "absent"
                                : errno == EAGAIN ? "incompletely published"
                                                  : "invalid");
        if (errno != ENOENT)
            ds4_debug("weights manifest %s: %s", name, e);
        return -1;
    }
    int rc = decode(sh.payload, sh.payload_size, m, why, wl);
    ds4_shm_detach(&sh);
    if (rc)
        return -1;
    if (strcmp(m->path, id->path) != 0)
        snprintf(why, wl, "another file (%.60s)", m->path);
    else if (m->size != id->size || m->mtime_ns != id->mtime_ns || m->ino != id->ino ||
             m->dev != id->dev)
        snprintf(why, wl, "the file changed (size, mtime or inode)");
    else if ((m->flags & 3u) != 3u)
        snprintf(why, wl, "preparation not recorded as complete");
    else
        return 0;
    return -1;
}

/* Read every page of the mapping once (page cache warm, I/O errors now). */
static uint64_t prefault(const uint8_t *base, uint64_t size)
{
    madvise((void *)base, size, MADV_WILLNEED);
    volatile uint64_t sum = 0;
    for (uint64_t o = 0; o < size; o += 4096)
        sum += base[o];
    return sum;
}

/* The cold path: validate, fingerprint, read. */
static int prepare(const char *path, struct manifest *m, char *err, size_t errlen)
{
    gguf_file *f = NULL;
    if (gguf_open(path, &f, err, errlen))
        return -1;
    dsv4_hparams hp;
    dsv4_validation res;
    if (dsv4_check_file(f, &hp, &res, err, errlen)) {
        gguf_close(f);
        return -1;
    }
    ds4_model_fp fp;
    ds4_model_fingerprint(f, &fp);
    memcpy(m->exact, fp.exact, 65);
    memcpy(m->family, fp.family, 65);
    m->tensor_bytes = res.tensor_bytes;
    m->n_tensors = res.n_tensors;
    prefault(f->base, f->size);
    m->flags = 3;
    gguf_close(f);
    return 0;
}

/* Publish m under our pid (a dead creator's segment is replaced). */
static int publish(const char *name, const struct manifest *m, char *err, size_t errlen)
{
    ds4_shm sh;
    if (ds4_shm_create(&sh, name, ENG_WEIGHTS_PAYLOAD, DS4_SHM_F_CHECKSUM, err, errlen) != 0)
        return -1;
    encode(m, sh.payload);
    ds4_shm_publish(&sh);
    ds4_shm_detach(&sh);
    return 0;
}

int eng_weights_attach(const char *path, const char *instance, int use_manifest,
                       eng_weights **out, char *err, size_t errlen)
{
    *out = NULL;
    uint64_t t0 = ds4_now_ns();
    eng_weights *w = ds4_xcalloc(1, sizeof *w);
    struct manifest id, m;
    if (identify(path, &id, err, errlen)) {
        free(w);
        return -1;
    }
    if (use_manifest &&
        ds4_shm_name(w->shm_name, sizeof w->shm_name, instance ? instance : "default",
                     ENG_WEIGHTS_PURPOSE, err, errlen) != 0) {
        free(w);
        return -1;
    }
    if (use_manifest &&
        try_reattach(w->shm_name, &id, &m, w->stale, sizeof w->stale) == 0) {
        w->reattached = 1;
        memcpy(w->exact, m.exact, 64);
        char e2[256];
        if (publish(w->shm_name, &m, e2, sizeof e2))
            ds4_warn("weights manifest %s matched but cannot be republished: %s", w->shm_name,
                     e2);
    } else {
        if (use_manifest)
            ds4_info("weights manifest %s: %s; preparing %s", w->shm_name,
                     w->stale[0] ? w->stale : "absent", id.path);
        m = id;
        uint64_t t1 = ds4_now_ns();
        if (prepare(path, &m, err, errlen)) {
            free(w);
            return -1;
        }
        m.prepare_ns = ds4_now_ns() - t1;
        memcpy(w->exact, m.exact, 64);
        char e2[256];
        if (use_manifest && publish(w->shm_name, &m, e2, sizeof e2))
            ds4_warn("cannot publish the weights manifest %s: %s", w->shm_name, e2);
    }
    w->exact[64] = 0;
    w->ms = (double)(ds4_now_ns() - t0) / 1e6;
    ds4_info("weights: %s %s in %.1f ms (%s)", id.path,
             w->reattached ? "re-attached" : "prepared", w->ms,
             w->reattached ? "manifest matched" : "cold");
    *out = w;
    return 0;
}

int eng_weights_reattached(const eng_weights *w) { return w && w->reattached; }
const char *eng_weights_stale_reason(const eng_weights *w) { return w ? w->stale : ""; }
const char *eng_weights_fingerprint(const eng_weights *w) { return w ? w->exact : ""; }
double eng_weights_ms(const eng_weights *w) { return w ? w->ms : 0; }
const char *eng_weights_shm_name(const eng_weights *w) { return w ? w->shm_name : ""; }
void eng_weights_close(eng_weights *w) { free(w); }
