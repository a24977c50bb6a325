/* fuzz_gguf.c - libFuzzer target for the GGUF reader (and writer).
 *
 * Parses the input; a rejected input must carry a non-empty error. An
 * accepted one is walked completely (every kv through every getter, every
 * array element, first and last byte of every string and tensor) so ASan
 * sees any out-of-bounds pointer, then re-encoded with the writer and
 * parsed again: the second parse must succeed and give the same values.
 * Any inconsistency aborts, which the fuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "util.h"

#define FZ_ASSERT(c)                                                        \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "fuzz_gguf: %s:%d: %s\n", __FILE__, __LINE__,   \
                    #c);                                                    \
            abort();                                                        \
        }                                                                   \
    } while (0)

static volatile uint64_t sink;

/* Touch the first and last byte of a string. */
static void touch_str(gguf_str s)
{
    if (s.len)
        sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
}

/* NUL-terminated copy of s, or NULL if s holds a NUL (not reachable by
 * the C-string lookup API). */
static char *cstr(gguf_str s)
{
    if (memchr(s.ptr, 0, s.len))
        return NULL;
    return ds4_xstrndup(s.ptr, s.len);
}

/* Every getter on one kv, every array element. */
static void walk_kv(const gguf_file *f, const gguf_kv *kv)
{
    uint32_t u32; uint64_t u64; int64_t i64; float x; int b; gguf_str s;
    touch_str(kv->key);
    sink += strlen(gguf_kv_type_name(kv)) + strlen(gguf_vtype_name(kv->type));
    char *key = cstr(kv->key);
    if (key) {
        FZ_ASSERT(gguf_find_kv(f, key) == kv);
        sink += gguf_get_u32(f, key, &u32) + gguf_get_u64(f, key, &u64) +
                gguf_get_i64(f, key, &i64) + gguf_get_f32(f, key, &x) +
                gguf_get_bool(f, key, &b);
        if (gguf_get_str(f, key, &s) == 0)
            touch_str(s);
        free(key);
    }
    if (kv->type != GGUF_VT_ARRAY)
        return;
    for (uint64_t i = 0; i <= kv->arr_n; i++) {
        int r = gguf_arr_str(kv, i, &s);
        if (r == 0)
            touch_str(s);
        FZ_ASSERT(i < kv->arr_n || r != 0);
        sink += gguf_arr_u32(kv, i, &u32) + gguf_arr_i64(kv, i, &i64) +
                gguf_arr_f32(kv, i, &x);
    }
}

/* First and last byte of every tensor, and the placement invariants. */
static void walk_tensor(const gguf_file *f, const gguf_tensor *t)
{
    const uint8_t *d = t->data;
    touch_str(t->name);
    FZ_ASSERT(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS && t->nbytes > 0);
    FZ_ASSERT(t->offset % f->alignment == 0);
    FZ_ASSERT(d >= f->base + f->data_offset &&
              (uint64_t)(d - f->base) + t->nbytes <= f->size);
    sink += d[0] + d[t->nbytes - 1];
    char *name = cstr(t->name);
    if (name) {
        FZ_ASSERT(gguf_find_tensor(f, name) == t);
        free(name);
    }
}

/* Size of a scalar value type (the reader validated it). */
static size_t vsize(uint32_t t)
{
    static const uint8_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz ? sz[t] : 0;
}

/* Add kv to the writer; 0 if the kv cannot be expressed via the C-string
 * API (a NUL inside a key or a string). */
static int copy_kv(gguf_writer *w, const gguf_kv *kv)
{
    char *key = cstr(kv->key);
    if (!key)
        return 0;
    int ok = 1;
    const uint8_t *d = kv->data;
    if (kv->type == GGUF_VT_ARRAY && kv->arr_type == GGUF_VT_STRING) {
        const char **v = ds4_xcalloc(kv->arr_n + 1, sizeof *v);
        uint64_t *lens = ds4_xcalloc(kv->arr_n + 1, sizeof *lens);
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            gguf_str s;
            FZ_ASSERT(gguf_arr_str(kv, i, &s) == 0);
            v[i] = s.ptr;
            lens[i] = s.len;
        }
        gguf_w_arr_str(w, key, v, lens, kv->arr_n);
        free(v);
        free(lens);
    } else if (kv->type == GGUF_VT_ARRAY) {
        gguf_w_arr(w, key, kv->arr_type, d, kv->arr_n);
    } else if (kv->type == GGUF_VT_STRING) {
        gguf_str s = {(const char *)d + 8, 0};
        memcpy(&s.len, d, 8);
        char *v = cstr(s);
        if (v)
            gguf_w_str(w, key, v);
        ok = v != NULL;
        free(v);
    } else {
        uint64_t u = 0;
        memcpy(&u, d, vsize(kv->type));
        switch (kv->type) {
        case GGUF_VT_UINT8: gguf_w_u8(w, key, (uint8_t)u); break;
        case GGUF_VT_INT8: gguf_w_i8(w, key, (int8_t)u); break;
        case GGUF_VT_UINT16: gguf_w_u16(w, key, (uint16_t)u); break;
        case GGUF_VT_INT16: gguf_w_i16(w, key, (int16_t)u); break;
        case GGUF_VT_UINT32: gguf_w_u32(w, key, (uint32_t)u); break;
        case GGUF_VT_INT32: gguf_w_i32(w, key, (int32_t)u); break;
        case GGUF_VT_UINT64: gguf_w_u64(w, key, u); break;
        case GGUF_VT_INT64: gguf_w_i64(w, key, (int64_t)u); break;
        case GGUF_VT_BOOL: gguf_w_bool(w, key, (int)u); break;
        case GGUF_VT_FLOAT32: {
            float x;
            memcpy(&x, d, 4);
            gguf_w_f32(w, key, x);
            break;
        }
        case GGUF_VT_FLOAT64: {
            double x;
            memcpy(&x, d, 8);
            gguf_w_f64(w, key, x);
            break;
        }
        default: FZ_ASSERT(!"reader accepted an unknown value type");
        }
    }
    free(key);
    return ok;
}

/* Two parsed kvs hold the same key, type and value bytes. */
static void same_kv(const gguf_kv *a, const gguf_kv *b)
{
    FZ_ASSERT(a->key.len == b->key.len &&
              memcmp(a->key.ptr, b->key.ptr, a->key.len) == 0);
    FZ_ASSERT(a->type == b->type);
    if (a->type == GGUF_VT_STRING) {
        FZ_ASSERT(memcmp(a->data, b->data, 8) == 0);
        uint64_t n;
        memcpy(&n, a->data, 8);
        FZ_ASSERT(memcmp(a->data + 8, b->data + 8, n) == 0);
    } else if (a->type == GGUF_VT_ARRAY) {
        FZ_ASSERT(a->arr_type == b->arr_type && a->arr_n == b->arr_n);
        for (uint64_t i = 0; a->arr_type == GGUF_VT_STRING && i < a->arr_n;
             i++) {
            gguf_str x, y;
            FZ_ASSERT(gguf_arr_str(a, i, &x) == 0 &&
                      gguf_arr_str(b, i, &y) == 0);
            FZ_ASSERT(x.len == y.len && memcmp(x.ptr, y.ptr, x.len) == 0);
        }
        if (a->arr_type != GGUF_VT_STRING && a->arr_n)
            FZ_ASSERT(memcmp(a->data, b->data,
                             a->arr_n * vsize(a->arr_type)) == 0);
    } else {
        FZ_ASSERT(memcmp(a->data, b->data, vsize(a->type)) == 0);
    }
}

/* Re-encode f with the writer and check the reparse matches. */
static void round_trip(const gguf_file *f)
{
    gguf_writer *w = gguf_writer_new();
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (!copy_kv(w, &f->kv[i]))
            goto out;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char *name = cstr(t->name);
        if (!name)
            goto out;
        gguf_w_tensor(w, name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
        free(name);
    }
    uint8_t *buf;
    uint64_t len;
    char err[512];
    int rc = gguf_writer_to_mem(w, &buf, &len, err, sizeof err);
    if (rc)
        fprintf(stderr, "fuzz_gguf: writer refused a parsed file: %s\n", err);
    FZ_ASSERT(rc == 0);
    gguf_file *g;
    rc = gguf_parse(buf, len, &g, err, sizeof err);
    if (rc)
        fprintf(stderr, "fuzz_gguf: reparse failed: %s\n", err);
    FZ_ASSERT(rc == 0);
    FZ_ASSERT(g->n_kv == f->n_kv && g->n_tensors == f->n_tensors &&
              g->alignment == f->alignment);
    for (uint64_t i = 0; i < f->n_kv; i++)
        same_kv(&f->kv[i], &g->kv[i]);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *a = &f->tensors[i], *b = &g->tensors[i];
        FZ_ASSERT(a->type == b->type && a->n_dims == b->n_dims &&
                  a->nbytes == b->nbytes &&
                  memcmp(a->ne, b->ne, sizeof a->ne) == 0);
        FZ_ASSERT(memcmp(a->data, b->data, a->nbytes) == 0);
    }
    gguf_close(g);
    free(buf);
out:
    gguf_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    char err[512];
    if (gguf_parse(data, size, &f, err, sizeof err) != 0) {
        FZ_ASSERT(f == NULL && err[0] != 0 && memchr(err, 0, sizeof err));
        return 0;
    }
    for (uint64_t i = 0; i < f->n_kv; i++)
        walk_kv(f, &f->kv[i]);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        walk_tensor(f, &f->tensors[i]);
    round_trip(f);
    gguf_close(f);
    return 0;
}
