/* gguf.c - GGUF reader (versions 2 and 3, identical little-endian encoding)
 * over mmap or a caller's buffer, and the matching writer.
 *
 * Reader policy (everything in the file is hostile):
 *  - every length, count and offset is checked against the bytes that are
 *    left before it is used; a count is also bounded by the smallest size
 *    its elements can take, so nothing is allocated from an unchecked count;
 *  - keys and tensor names are 1..65535 bytes; duplicates are rejected;
 *  - bools are 0 or 1; nested arrays are rejected (no known model uses
 *    them and ggml does not write them);
 *  - general.alignment, when present, is a u32 nonzero power of two;
 *  - a tensor has 1..4 dims, none zero, a known ggml type, a row length
 *    that is a multiple of the type's block, an aligned offset, data inside
 *    the file and not overlapping another tensor.
 * Errors read "at byte N: what: problem".
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant.h"
#include "util.h"

#define GGUF_MAX_NAME_LEN 65535u
/* Smallest encodings, used to bound counts before allocating: a kv is a
 * key (8 + 1) + type (4) + a 1-byte value; a tensor info is a name (8 + 1)
 * + n_dims (4) + one dim (8) + type (4) + offset (8). */
#define GGUF_MIN_KV_BYTES 14u
#define GGUF_MIN_TENSOR_BYTES 33u

/* ---- shared helpers ---------------------------------------------------- */

/* Sorted index over names, for lookup and duplicate checks. Sorting
 * (rather than hashing) keeps the worst case O(n log n) on hostile names
 * crafted to collide. */
typedef struct gguf_index {
    size_t *order; /* entry indexes, sorted by name */
    size_t n;
} gguf_index;

/* The parsed file plus private lookup indexes; pub comes first so a
 * gguf_file pointer handed out is also a gguf_impl pointer. */
typedef struct gguf_impl {
    gguf_file pub;
    gguf_index kv_ix;
    gguf_index tensor_ix;
} gguf_impl;

/* Format an error into err (if any room), always NUL-terminated. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int str_eq2(gguf_str a, const char *p, uint64_t n)
{
    return a.len == n && (n == 0 || memcmp(a.ptr, p, n) == 0);
}

/* Total order on byte strings: bytes first, then length. */
static int name_cmp(const char *a, uint64_t na, const char *b, uint64_t nb)
{
    uint64_t n = na < nb ? na : nb;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return na < nb ? -1 : na > nb;
}

typedef gguf_str (*name_at_fn)(const void *arr, size_t i);

typedef struct sort_ctx {
    const void *arr;
    name_at_fn name_at;
} sort_ctx;

static int order_cmp(const void *a, const void *b, void *ctx)
{
    const sort_ctx *c = ctx;
    gguf_str x = c->name_at(c->arr, *(const size_t *)a);
    gguf_str y = c->name_at(c->arr, *(const size_t *)b);
    return name_cmp(x.ptr, x.len, y.ptr, y.len);
}

/* Build an index over n names; on a duplicate, return -1 with the earlier
 * and later entry indexes in *dup_a / *dup_b. */
static int index_build(gguf_index *ix, const void *arr, size_t n,
                       name_at_fn name_at, size_t *dup_a, size_t *dup_b)
{
    sort_ctx c = {arr, name_at};
    ix->order = ds4_xmalloc((n ? n : 1) * sizeof *ix->order);
    ix->n = n;
    for (size_t i = 0; i < n; i++)
        ix->order[i] = i;
    qsort_r(ix->order, n, sizeof *ix->order, order_cmp, &c);
    for (size_t i = 1; i < n; i++) {
        size_t a = ix->order[i - 1], b = ix->order[i];
        if (order_cmp(&a, &b, &c) == 0) {
            *dup_a = a < b ? a : b;
            *dup_b = a < b ? b : a;
            return -1;
        }
    }
    return 0;
}

/* Entry index of name in the index (binary search), or SIZE_MAX. */
static size_t index_find(const gguf_index *ix, const void *arr,
                         name_at_fn name_at, const char *name)
{
    if (!ix->order || !name)
        return SIZE_MAX;
    uint64_t len = strlen(name);
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        gguf_str s = name_at(arr, ix->order[mid]);
        int c = name_cmp(s.ptr, s.len, name, len);
        if (c == 0)
            return ix->order[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

static gguf_str kv_name_at(const void *arr, size_t i)
{
    return ((const gguf_kv *)arr)[i].key;
}

static gguf_str tensor_name_at(const void *arr, size_t i)
{
    return ((const gguf_tensor *)arr)[i].name;
}

/* Little-endian loads (the file format is little-endian on every host). */
static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Encoded size of a scalar value type; 0 for string, array or unknown. */
static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

static int is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Round v up to a multiple of the power of two a; UINT64_MAX on overflow. */
static uint64_t align_up(uint64_t v, uint64_t a)
{
    if (v > UINT64_MAX - (a - 1))
        return UINT64_MAX;
    return (v + a - 1) & ~(a - 1);
}

const char *gguf_vtype_name(uint32_t type)
{
    static const char *const names[] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
        "str", "arr", "u64", "i64", "f64",
    };
    return type < DS4_ARRAY_LEN(names) ? names[type] : "unknown";
}

const char *gguf_kv_type_name(const gguf_kv *kv)
{
    static const char *const arr_names[] = {
        "arr[u8]", "arr[i8]", "arr[u16]", "arr[i16]", "arr[u32]",
        "arr[i32]", "arr[f32]", "arr[bool]", "arr[str]", "arr[arr]",
        "arr[u64]", "arr[i64]", "arr[f64]",
    };
    if (!kv)
        return "absent";
    if (kv->type != GGUF_VT_ARRAY)
        return gguf_vtype_name(kv->type);
    return kv->arr_type < DS4_ARRAY_LEN(arr_names) ? arr_names[kv->arr_type]
                                                   : "arr[unknown]";
}

int gguf_str_eq(gguf_str s, const char *c)
{
    return c && str_eq2(s, c, strlen(c));
}

/* ---- parser ------------------------------------------------------------ */

typedef struct pctx {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;          /* start of the field being read */
    char *err;
    size_t errlen;
    char what[160];        /* item being parsed: "kv 3 'general.name'" */
} pctx;

/* Copy a name into dst for messages: at most 96 bytes, non-printable bytes
 * as \xNN, so a hostile name cannot garble the message. */
static void name_for_msg(char *dst, size_t cap, const char *p, uint64_t n)
{
    size_t o = 0;
    uint64_t lim = n > 96 ? 96 : n;
    for (uint64_t i = 0; i < lim && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\'')
            dst[o++] = (char)c;
        else
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
    }
    if (n > lim && o + 4 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o < cap ? o : cap - 1] = 0;
}

/* Record a parse error at the current byte offset; returns -1. */
static int fail(pctx *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(pctx *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(p->err, p->errlen, "gguf: at byte %llu: %s%s%s",
            (unsigned long long)p->pos, p->what, p->what[0] ? ": " : "", msg);
    return -1;
}

static uint64_t left(const pctx *p)
{
    return p->size - p->pos;
}

/* Check that n bytes of field remain. */
static int need(pctx *p, uint64_t n, const char *field)
{
    if (n > left(p))
        return fail(p, "%s needs %llu bytes but only %llu remain "
                       "(truncated file?)",
                    field, (unsigned long long)n, (unsigned long long)left(p));
    return 0;
}

static int rd_u32(pctx *p, const char *field, uint32_t *v)
{
    if (need(p, 4, field))
        return -1;
    *v = le32(p->base + p->pos);
    p->pos += 4;
    return 0;
}

static int rd_u64(pctx *p, const char *field, uint64_t *v)
{
    if (need(p, 8, field))
        return -1;
    *v = le64(p->base + p->pos);
    p->pos += 8;
    return 0;
}

/* Read a GGUF string (u64 length + bytes) that must lie inside the file. */
static int rd_str(pctx *p, const char *field, gguf_str *s)
{
    uint64_t n;
    if (rd_u64(p, field, &n))
        return -1;
    if (n > left(p)) {
        p->pos -= 8;
        return fail(p, "%s length %llu exceeds the %llu bytes left in the "
                       "file", field, (unsigned long long)n,
                    (unsigned long long)(left(p) - 8));
    }
    s->ptr = (const char *)p->base + p->pos;
    s->len = n;
    p->pos += n;
    return 0;
}

/* Read a key or tensor name: a string of 1..GGUF_MAX_NAME_LEN bytes. */
static int rd_name(pctx *p, const char *field, gguf_str *s)
{
    uint64_t at = p->pos;
    if (rd_str(p, field, s))
        return -1;
    if (s->len == 0 || s->len > GGUF_MAX_NAME_LEN) {
        p->pos = at;
        return fail(p, "%s length %llu is outside 1..%u", field,
                    (unsigned long long)s->len, GGUF_MAX_NAME_LEN);
    }
    return 0;
}

/* Check that a run of n bool bytes holds only 0 and 1. */
static int check_bools(pctx *p, const uint8_t *b, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (b[i] > 1)
            return fail(p, "bool element %llu has value %u (must be 0 or 1)",
                        (unsigned long long)i, b[i]);
    return 0;
}

/* Parse an array of strings, building the per-element offset table. */
static int parse_str_array(pctx *p, gguf_kv *kv)
{
    if (kv->arr_n > left(p) / 8)
        return fail(p, "array of %llu strings cannot fit in the %llu bytes "
                       "left in the file", (unsigned long long)kv->arr_n,
                    (unsigned long long)left(p));
    uint64_t *off = ds4_xmalloc(kv->arr_n ? kv->arr_n * sizeof *off : 1);
    uint64_t start = p->pos;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        gguf_str s;
        off[i] = p->pos - start;
        if (rd_str(p, "string element", &s)) {
            free(off);
            return -1;
        }
    }
    kv->str_off = off;
    return 0;
}

/* Parse the body of an array value (after the kv's type field). */
static int parse_array(pctx *p, gguf_kv *kv)
{
    if (rd_u32(p, "array element type", &kv->arr_type) ||
        rd_u64(p, "array count", &kv->arr_n))
        return -1;
    kv->data = p->base + p->pos;
    if (kv->arr_type == GGUF_VT_STRING)
        return parse_str_array(p, kv);
    if (kv->arr_type == GGUF_VT_ARRAY) {
        p->pos -= 12;
        return fail(p, "nested arrays are not supported");
    }
    uint64_t es = scalar_size(kv->arr_type);
    if (es == 0) {
        p->pos -= 12;
        return fail(p, "unknown array element type %u", kv->arr_type);
    }
    if (kv->arr_n > left(p) / es) {
        p->pos -= 8;
        return fail(p, "array count %llu of %s needs %llu bytes per element "
                       "but only %llu bytes remain",
                    (unsigned long long)kv->arr_n,
                    gguf_vtype_name(kv->arr_type), (unsigned long long)es,
                    (unsigned long long)left(p));
    }
    if (kv->arr_type == GGUF_VT_BOOL && check_bools(p, kv->data, kv->arr_n))
        return -1;
    p->pos += kv->arr_n * es;
    return 0;
}

/* Parse one kv pair at p->pos. */
static int parse_kv(pctx *p, uint64_t i, gguf_kv *kv)
{
    snprintf(p->what, sizeof p->what, "kv %llu", (unsigned long long)i);
    if (rd_name(p, "key", &kv->key))
        return -1;
    char nm[128];
    name_for_msg(nm, sizeof nm, kv->key.ptr, kv->key.len);
    snprintf(p->what, sizeof p->what, "kv %llu '%s'", (unsigned long long)i,
             nm);
    if (rd_u32(p, "value type", &kv->type))
        return -1;
    kv->data = p->base + p->pos;
    if (kv->type == GGUF_VT_ARRAY)
        return parse_array(p, kv);
    if (kv->type == GGUF_VT_STRING) {
        gguf_str s;
        return rd_str(p, "string value", &s);
    }
    uint64_t sz = scalar_size(kv->type);
    if (sz == 0) {
        p->pos -= 4;
        return fail(p, "unknown value type %u", kv->type);
    }
    if (need(p, sz, gguf_vtype_name(kv->type)))
        return -1;
    if (kv->type == GGUF_VT_BOOL && check_bools(p, kv->data, 1))
        return -1;
    p->pos += sz;
    return 0;
}

/* Parse the fixed header; fills version and the two counts. */
static int parse_header(pctx *p, gguf_file *f)
{
    if (p->size < 4 || memcmp(p->base, "GGUF", 4) != 0)
        return fail(p, "not a GGUF file (bad magic; %llu bytes)",
                    (unsigned long long)p->size);
    p->pos = 4;
    if (rd_u32(p, "version", &f->version))
        return -1;
    if (f->version != 2 && f->version != 3) {
        p->pos -= 4;
        if (f->version > 0xffff && (f->version & 0xffff) == 0)
            return fail(p, "GGUF version %u looks byte-swapped (big-endian "
                           "file?); only little-endian files are supported",
                        f->version);
        return fail(p, "unsupported GGUF version %u (this reader handles "
                       "versions 2 and 3)", f->version);
    }
    if (rd_u64(p, "tensor count", &f->n_tensors) ||
        rd_u64(p, "kv count", &f->n_kv))
        return -1;
    uint64_t rem = left(p);
    if (f->n_kv > rem / GGUF_MIN_KV_BYTES) {
        p->pos -= 8;
        return fail(p, "kv count %llu cannot fit in the %llu bytes left",
                    (unsigned long long)f->n_kv, (unsigned long long)rem);
    }
    rem -= f->n_kv * GGUF_MIN_KV_BYTES;
    if (f->n_tensors > rem / GGUF_MIN_TENSOR_BYTES) {
        p->pos -= 16;
        return fail(p, "tensor count %llu cannot fit in the bytes left after "
                       "%llu kv pairs", (unsigned long long)f->n_tensors,
                    (unsigned long long)f->n_kv);
    }
    return 0;
}

/* Parse every kv, reject duplicates, build the lookup index. */
static int parse_kvs(pctx *p, gguf_impl *im)
{
    gguf_file *f = &im->pub;
    f->kv = ds4_xcalloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (parse_kv(p, i, &f->kv[i]))
            return -1;
    p->what[0] = 0;
    size_t a, b;
    if (index_build(&im->kv_ix, f->kv, f->n_kv, kv_name_at, &a, &b)) {
        char nm[128];
        name_for_msg(nm, sizeof nm, f->kv[b].key.ptr, f->kv[b].key.len);
        p->pos = (uint64_t)((const uint8_t *)f->kv[b].key.ptr - p->base) - 8;
        return fail(p, "duplicate key '%s' (kv %zu and kv %zu)", nm, a, b);
    }
    return 0;
}

/* Apply general.alignment (u32, nonzero power of two) if present. */
static int parse_alignment(pctx *p, gguf_impl *im)
{
    gguf_file *f = &im->pub;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    size_t i = index_find(&im->kv_ix, f->kv, kv_name_at, "general.alignment");
    if (i == SIZE_MAX)
        return 0;
    const gguf_kv *kv = &f->kv[i];
    uint64_t save = p->pos;
    p->pos = (uint64_t)(kv->data - p->base);
    if (kv->type != GGUF_VT_UINT32)
        return fail(p, "key 'general.alignment' has type %s, expected u32",
                    gguf_kv_type_name(kv));
    uint32_t a = le32(kv->data);
    if (!is_pow2(a))
        return fail(p, "general.alignment %u is not a nonzero power of two",
                    a);
    f->alignment = a;
    p->pos = save;
    return 0;
}

/* Check and size a tensor's shape and type; fills t->nbytes. */
static int tensor_geometry(pctx *p, gguf_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (t->ne[d] == 0)
            return fail(p, "dimension %u is zero", d);
        if (n > UINT64_MAX / t->ne[d])
            return fail(p, "element count overflows (dimension %u = %llu)", d,
                        (unsigned long long)t->ne[d]);
        n *= t->ne[d];
    }
    const ds4_type_info *ti = ds4_type_get(t->type);
    if (!ti)
        return fail(p, "unknown tensor type id %u", t->type);
    if (ti->block_elems == 0 || t->ne[0] % ti->block_elems != 0)
        return fail(p, "row length %llu is not a multiple of the %s block "
                       "size %u", (unsigned long long)t->ne[0], ti->name,
                    ti->block_elems);
    t->nbytes = ds4_type_nbytes(t->type, n);
    if (t->nbytes == 0)
        return fail(p, "byte size of %llu elements of %s overflows",
                    (unsigned long long)n, ti->name);
    return 0;
}

/* Parse one tensor info at p->pos (geometry checked, data not yet). */
static int parse_tensor_info(pctx *p, uint64_t i, gguf_tensor *t)
{
    snprintf(p->what, sizeof p->what, "tensor %llu", (unsigned long long)i);
    if (rd_name(p, "name", &t->name))
        return -1;
    char nm[128];
    name_for_msg(nm, sizeof nm, t->name.ptr, t->name.len);
    snprintf(p->what, sizeof p->what, "tensor '%s'", nm);
    if (rd_u32(p, "n_dims", &t->n_dims))
        return -1;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
        p->pos -= 4;
        return fail(p, "n_dims %u is outside 1..%d", t->n_dims,
                    GGUF_MAX_DIMS);
    }
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (rd_u64(p, "dimension", &t->ne[d]))
            return -1;
    if (rd_u32(p, "type", &t->type))
        return -1;
    uint64_t geo_at = p->pos - 4;
    if (rd_u64(p, "data offset", &t->offset))
        return -1;
    uint64_t end = p->pos;
    p->pos = geo_at;
    if (tensor_geometry(p, t))
        return -1;
    p->pos = end;
    return 0;
}

/* Place a tensor's data: aligned offset, inside the file. info_end is
 * the byte just after its info record (for error positions). */
static int place_tensor(pctx *p, gguf_file *f, gguf_tensor *t,
                        uint64_t info_end)
{
    char nm[128];
    name_for_msg(nm, sizeof nm, t->name.ptr, t->name.len);
    snprintf(p->what, sizeof p->what, "tensor '%s'", nm);
    p->pos = info_end - 8;
    if (t->offset % f->alignment != 0)
        return fail(p, "data offset %llu is not a multiple of the alignment "
                       "%u", (unsigned long long)t->offset, f->alignment);
    uint64_t room = f->size >= f->data_offset ? f->size - f->data_offset : 0;
    if (t->offset > room || t->nbytes > room - t->offset)
        return fail(p, "data (%llu bytes at offset %llu from the data section "
                       "at byte %llu) extends past the end of the file "
                       "(%llu bytes)", (unsigned long long)t->nbytes,
                    (unsigned long long)t->offset,
                    (unsigned long long)f->data_offset,
                    (unsigned long long)f->size);
    t->data = f->base + f->data_offset + t->offset;
    return 0;
}

typedef struct span {
    uint64_t off, end;
    size_t idx;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Reject tensors whose data ranges overlap. */
static int check_overlap(pctx *p, const gguf_file *f)
{
    if (f->n_tensors < 2)
        return 0;
    span *s = ds4_xmalloc(f->n_tensors * sizeof *s);
    for (size_t i = 0; i < f->n_tensors; i++)
        s[i] = (span){f->tensors[i].offset,
                      f->tensors[i].offset + f->tensors[i].nbytes, i};
    qsort(s, f->n_tensors, sizeof *s, span_cmp);
    for (size_t i = 1; i < f->n_tensors; i++) {
        if (s[i].off < s[i - 1].end) {
            char a[128], b[128];
            const gguf_tensor *ta = &f->tensors[s[i - 1].idx];
            const gguf_tensor *tb = &f->tensors[s[i].idx];
            name_for_msg(a, sizeof a, ta->name.ptr, ta->name.len);
            name_for_msg(b, sizeof b, tb->name.ptr, tb->name.len);
            p->what[0] = 0;
            p->pos = f->data_offset + s[i].off;
            free(s);
            return fail(p, "tensor '%s' data overlaps tensor '%s'", b, a);
        }
    }
    free(s);
    return 0;
}

/* Parse tensor infos, locate the data section, place every tensor. */
static int parse_tensors(pctx *p, gguf_impl *im)
{
    gguf_file *f = &im->pub;
    size_t nt = f->n_tensors;
    f->tensors = ds4_xcalloc(nt ? nt : 1, sizeof *f->tensors);
    uint64_t *info_end = ds4_xmalloc((nt ? nt : 1) * sizeof *info_end);
    int rc = -1;
    for (size_t i = 0; i < nt; i++) {
        if (parse_tensor_info(p, i, &f->tensors[i]))
            goto out;
        info_end[i] = p->pos;
    }
    p->what[0] = 0;
    size_t a, b;
    if (index_build(&im->tensor_ix, f->tensors, nt, tensor_name_at, &a, &b)) {
        char nm[128];
        const gguf_tensor *t = &f->tensors[b];
        name_for_msg(nm, sizeof nm, t->name.ptr, t->name.len);
        p->pos = (uint64_t)((const uint8_t *)t->name.ptr - p->base) - 8;
        fail(p, "duplicate tensor name '%s' (tensor %zu and tensor %zu)", nm,
             a, b);
        goto out;
    }
    f->data_offset = align_up(p->pos, f->alignment);
    if (nt == 0 && f->data_offset > f->size)
        f->data_offset = f->size; /* no data section: stay inside the file */
    for (size_t i = 0; i < nt; i++)
        if (place_tensor(p, f, &f->tensors[i], info_end[i]))
            goto out;
    rc = check_overlap(p, f);
out:
    free(info_end);
    return rc;
}

/* Free everything a parse allocated (not the mapping). */
static void impl_free(gguf_impl *im)
{
    if (im->pub.kv)
        for (uint64_t i = 0; i < im->pub.n_kv; i++)
            free((void *)im->pub.kv[i].str_off);
    free(im->pub.kv);
    free(im->pub.tensors);
    free(im->kv_ix.order);
    free(im->tensor_ix.order);
    free(im);
}

int gguf_parse(const void *buf, uint64_t len, gguf_file **out, char *err,
               size_t errlen)
{
    *out = NULL;
    set_err(err, errlen, "%s", "");
    if (!buf && len)
        len = 0;
    gguf_impl *im = ds4_xcalloc(1, sizeof *im);
    gguf_file *f = &im->pub;
    f->base = buf ? buf : (const uint8_t *)"";
    f->size = len;
    f->fd = -1;
    pctx p = {.base = f->base, .size = len, .err = err, .errlen = errlen};
    if (parse_header(&p, f) || parse_kvs(&p, im) ||
        parse_alignment(&p, im) || parse_tensors(&p, im)) {
        impl_free(im);
        return -1;
    }
    *out = f;
    return 0;
}

int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO must not hang (it is rejected below). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        set_err(err, errlen, "gguf: %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "gguf: %s: fstat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
        set_err(err, errlen, "gguf: %s: %s", path,
                S_ISDIR(st.st_mode) ? "is a directory"
                : !S_ISREG(st.st_mode) ? "not a regular file"
                                       : "empty file, not a GGUF file");
        close(fd);
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        set_err(err, errlen, "gguf: %s: mmap: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    char perr[600];
    if (gguf_parse(map, size, out, perr, sizeof perr)) {
        set_err(err, errlen, "%s: %s", path, perr);
        munmap(map, size);
        close(fd);
        return -1;
    }
    (*out)->fd = fd;
    (*out)->map = map;
    (*out)->map_len = size;
    return 0;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->fd >= 0)
        close(f->fd);
    impl_free((gguf_impl *)f);
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key)
{
    if (!f)
        return NULL;
    const gguf_impl *im = (const gguf_impl *)f;
    size_t i = index_find(&im->kv_ix, f->kv, kv_name_at, key);
    return i == SIZE_MAX ? NULL : &f->kv[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!f)
        return NULL;
    const gguf_impl *im = (const gguf_impl *)f;
    size_t i = index_find(&im->tensor_ix, f->tensors, tensor_name_at, name);
    return i == SIZE_MAX ? NULL : &f->tensors[i];
}

/* ---- typed getters ----------------------------------------------------- */

/* Decode an integer value of type t at d: returns 1 with *sv for a negative
 * value, 0 with *uv for a nonnegative one, -1 if t is not an integer type. */
static int read_int(uint32_t t, const uint8_t *d, int64_t *sv, uint64_t *uv)
{
    int64_t s;
    switch (t) {
    case GGUF_VT_UINT8: *uv = d[0]; return 0;
    case GGUF_VT_UINT16: *uv = le16(d); return 0;
    case GGUF_VT_UINT32: *uv = le32(d); return 0;
    case GGUF_VT_UINT64: *uv = le64(d); return 0;
    case GGUF_VT_INT8: s = (int8_t)d[0]; break;
    case GGUF_VT_INT16: s = (int16_t)le16(d); break;
    case GGUF_VT_INT32: s = (int32_t)le32(d); break;
    case GGUF_VT_INT64: s = (int64_t)le64(d); break;
    default: return -1;
    }
    if (s < 0) {
        *sv = s;
        return 1;
    }
    *uv = (uint64_t)s;
    return 0;
}

/* Convert an integer value to u64 (0) or fail (-2). */
static int conv_u64(uint32_t t, const uint8_t *d, uint64_t max, uint64_t *out)
{
    int64_t sv;
    uint64_t uv;
    if (read_int(t, d, &sv, &uv) != 0 || uv > max)
        return -2;
    *out = uv;
    return 0;
}

static int conv_i64(uint32_t t, const uint8_t *d, int64_t *out)
{
    int64_t sv;
    uint64_t uv;
    int r = read_int(t, d, &sv, &uv);
    if (r < 0 || (r == 0 && uv > (uint64_t)INT64_MAX))
        return -2;
    *out = r ? sv : (int64_t)uv;
    return 0;
}

/* F32 as is; F64 when it fits the float range (NaN/Inf pass through). */
static int conv_f32(uint32_t t, const uint8_t *d, float *out)
{
    if (t == GGUF_VT_FLOAT32) {
        uint32_t b = le32(d);
        memcpy(out, &b, 4);
        return 0;
    }
    if (t == GGUF_VT_FLOAT64) {
        uint64_t b = le64(d);
        double v;
        memcpy(&v, &b, 8);
        if (v == v && (v > FLT_MAX || v < -FLT_MAX) && v - v == 0)
            return -2;
        *out = (float)v;
        return 0;
    }
    return -2;
}

/* Decode a string starting with its u64 length prefix at d. */
static gguf_str str_at(const uint8_t *d)
{
    return (gguf_str){(const char *)d + 8, le64(d)};
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    uint64_t v;
    if (!kv)
        return -1;
    if (conv_u64(kv->type, kv->data, UINT32_MAX, &v))
        return -2;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv ? conv_u64(kv->type, kv->data, UINT64_MAX, out) : -1;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv ? conv_i64(kv->type, kv->data, out) : -1;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv ? conv_f32(kv->type, kv->data, out) : -1;
}

int gguf_get_bool(const gguf_file *f, const char *key, int *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv)
        return -1;
    if (kv->type != GGUF_VT_BOOL)
        return -2;
    *out = kv->data[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv)
        return -1;
    if (kv->type != GGUF_VT_STRING)
        return -2;
    *out = str_at(kv->data);
    return 0;
}

/* Pointer to scalar array element i, or NULL (with *rc set) if absent. */
static const uint8_t *arr_elem(const gguf_kv *kv, uint64_t i, int *rc)
{
    if (!kv || kv->type != GGUF_VT_ARRAY) {
        *rc = kv ? -2 : -1;
        return NULL;
    }
    uint64_t es = scalar_size(kv->arr_type);
    if (es == 0) {
        *rc = -2;
        return NULL;
    }
    if (i >= kv->arr_n) {
        *rc = -1;
        return NULL;
    }
    return kv->data + i * es;
}

int gguf_arr_u32(const gguf_kv *kv, uint64_t i, uint32_t *out)
{
    int rc = -2;
    uint64_t v;
    const uint8_t *d = arr_elem(kv, i, &rc);
    if (!d)
        return rc;
    if (conv_u64(kv->arr_type, d, UINT32_MAX, &v))
        return -2;
    *out = (uint32_t)v;
    return 0;
}

int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out)
{
    int rc = -2;
    const uint8_t *d = arr_elem(kv, i, &rc);
    return d ? conv_i64(kv->arr_type, d, out) : rc;
}

int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out)
{
    int rc = -2;
    const uint8_t *d = arr_elem(kv, i, &rc);
    return d ? conv_f32(kv->arr_type, d, out) : rc;
}

int gguf_arr_str(const gguf_kv *kv, uint64_t i, gguf_str *out)
{
    if (!kv)
        return -1;
    if (kv->type != GGUF_VT_ARRAY || kv->arr_type != GGUF_VT_STRING ||
        !kv->str_off)
        return -2;
    if (i >= kv->arr_n)
        return -1;
    *out = str_at(kv->data + kv->str_off[i]);
    return 0;
}

/* ---- writer ------------------------------------------------------------ */

typedef struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val;       /* encoded value as it goes in the file */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
    uint64_t offset;    /* assigned at write time */
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
    int alignment_set;
    char *deferred;     /* first misuse, reported by the write call */
};

/* Growable byte buffer. */
typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

static void wb_put(wbuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n)
            c *= 2;
        b->p = ds4_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void wb_u32(wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    wb_put(b, x, 4);
}

static void wb_u64(wbuf *b, uint64_t v)
{
    wb_u32(b, (uint32_t)v);
    wb_u32(b, (uint32_t)(v >> 32));
}

static void wb_str(wbuf *b, const char *s, uint64_t n)
{
    wb_u64(b, n);
    wb_put(b, s, n);
}

static void wb_zeros(wbuf *b, size_t n)
{
    static const uint8_t z[64];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        wb_put(b, z, k);
        n -= k;
    }
}

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = ds4_xcalloc(1, sizeof *w);
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w->deferred);
    free(w);
}

void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment)
{
    w->alignment = alignment;
    w->alignment_set = 1;
}

/* Remember the first misuse of the writer API for the write call. */
static void defer_err(gguf_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void defer_err(gguf_writer *w, const char *fmt, ...)
{
    if (w->deferred)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    w->deferred = ds4_xstrdup(msg);
}

/* Append a kv whose encoded value is val (taken over). */
static void add_kv(gguf_writer *w, const char *key, uint32_t type, wbuf val)
{
    if (!key) {
        defer_err(w, "gguf writer: NULL key");
        free(val.p);
        return;
    }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? w->cap_kv * 2 : 16;
        w->kv = ds4_xrealloc(w->kv, w->cap_kv * sizeof *w->kv);
    }
    w->kv[w->n_kv++] = (wkv){ds4_xstrdup(key), type, val.p, val.len};
}

/* Append a scalar kv of n little-endian bytes taken from v. */
static void add_scalar(gguf_writer *w, const char *key, uint32_t type,
                       uint64_t v, size_t n)
{
    wbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        uint8_t x = (uint8_t)(v >> (8 * i));
        wb_put(&b, &x, 1);
    }
    add_kv(w, key, type, b);
}

void gguf_w_u8(gguf_writer *w, const char *key, uint8_t v)
{
    add_scalar(w, key, GGUF_VT_UINT8, v, 1);
}

void gguf_w_i8(gguf_writer *w, const char *key, int8_t v)
{
    add_scalar(w, key, GGUF_VT_INT8, (uint8_t)v, 1);
}

void gguf_w_u16(gguf_writer *w, const char *key, uint16_t v)
{
    add_scalar(w, key, GGUF_VT_UINT16, v, 2);
}

void gguf_w_i16(gguf_writer *w, const char *key, int16_t v)
{
    add_scalar(w, key, GGUF_VT_INT16, (uint16_t)v, 2);
}

void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v)
{
    add_scalar(w, key, GGUF_VT_UINT32, v, 4);
}

void gguf_w_i32(gguf_writer *w, const char *key, int32_t v)
{
    add_scalar(w, key, GGUF_VT_INT32, (uint32_t)v, 4);
}

void gguf_w_u64(gguf_writer *w, const char *key, uint64_t v)
{
    add_scalar(w, key, GGUF_VT_UINT64, v, 8);
}

void gguf_w_i64(gguf_writer *w, const char *key, int64_t v)
{
    add_scalar(w, key, GGUF_VT_INT64, (uint64_t)v, 8);
}

void gguf_w_f32(gguf_writer *w, const char *key, float v)
{
    uint32_t b;
    memcpy(&b, &v, 4);
    add_scalar(w, key, GGUF_VT_FLOAT32, b, 4);
}

void gguf_w_f64(gguf_writer *w, const char *key, double v)
{
    uint64_t b;
    memcpy(&b, &v, 8);
    add_scalar(w, key, GGUF_VT_FLOAT64, b, 8);
}

void gguf_w_bool(gguf_writer *w, const char *key, int v)
{
    add_scalar(w, key, GGUF_VT_BOOL, v != 0, 1);
}

void gguf_w_str(gguf_writer *w, const char *key, const char *v)
{
    if (!v) {
        defer_err(w, "gguf writer: key '%s': NULL string", key ? key : "?");
        return;
    }
    wbuf b = {0};
    wb_str(&b, v, strlen(v));
    add_kv(w, key, GGUF_VT_STRING, b);
}

void gguf_w_arr(gguf_writer *w, const char *key, uint32_t elem_type,
                const void *data, uint64_t n)
{
    uint64_t es = scalar_size(elem_type);
    if (es == 0) {
        defer_err(w, "gguf writer: key '%s': array element type %s is not "
                     "a scalar type", key ? key : "?",
                  gguf_vtype_name(elem_type));
        return;
    }
    if ((n && !data) || n > SIZE_MAX / es) {
        defer_err(w, "gguf writer: key '%s': bad array data", key ? key : "?");
        return;
    }
    if (elem_type == GGUF_VT_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1) {
                defer_err(w, "gguf writer: key '%s': bool element %llu is "
                             "not 0 or 1", key ? key : "?",
                          (unsigned long long)i);
                return;
            }
    wbuf b = {0};
    wb_u32(&b, elem_type);
    wb_u64(&b, n);
    wb_put(&b, data, (size_t)(n * es));
    add_kv(w, key, GGUF_VT_ARRAY, b);
}

void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v,
                    const uint64_t *lens, uint64_t n)
{
    if (n && !v) {
        defer_err(w, "gguf writer: key '%s': NULL string array",
                  key ? key : "?");
        return;
    }
    wbuf b = {0};
    wb_u32(&b, GGUF_VT_STRING);
    wb_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) {
            defer_err(w, "gguf writer: key '%s': NULL string element %llu",
                      key ? key : "?", (unsigned long long)i);
            free(b.p);
            return;
        }
        wb_str(&b, v[i], lens ? lens[i] : strlen(v[i]));
    }
    add_kv(w, key, GGUF_VT_ARRAY, b);
}

void gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type,
                   uint32_t n_dims, const uint64_t *ne, const void *data,
                   uint64_t nbytes)
{
    if (!name || n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne) {
        defer_err(w, "gguf writer: tensor '%s': n_dims %u is outside 1..%d",
                  name ? name : "?", n_dims, GGUF_MAX_DIMS);
        return;
    }
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? w->cap_t * 2 : 16;
        w->t = ds4_xrealloc(w->t, w->cap_t * sizeof *w->t);
    }
    wtensor *t = &w->t[w->n_t++];
    *t = (wtensor){.name = ds4_xstrdup(name), .type = type, .n_dims = n_dims,
                   .data = data, .nbytes = nbytes};
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
}

static gguf_str wkv_name_at(const void *arr, size_t i)
{
    const char *k = ((const wkv *)arr)[i].key;
    return (gguf_str){k, strlen(k)};
}

static gguf_str wt_name_at(const void *arr, size_t i)
{
    const char *k = ((const wtensor *)arr)[i].name;
    return (gguf_str){k, strlen(k)};
}

/* Check names are 1..65535 bytes and unique. what is "key" or "tensor". */
static int check_names(const void *arr, size_t n, name_at_fn name_at,
                       const char *what, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        gguf_str s = name_at(arr, i);
        if (s.len == 0 || s.len > GGUF_MAX_NAME_LEN) {
            set_err(err, errlen, "gguf writer: %s %zu: name length %llu is "
                    "outside 1..%u", what, i, (unsigned long long)s.len,
                    GGUF_MAX_NAME_LEN);
            return -1;
        }
    }
    gguf_index ix = {0};
    size_t a, b;
    int rc = index_build(&ix, arr, n, name_at, &a, &b);
    if (rc)
        set_err(err, errlen, "gguf writer: duplicate %s '%s' (entries %zu "
                "and %zu)", what, name_at(arr, b).ptr, a, b);
    free(ix.order);
    return rc;
}

/* Resolve the alignment from set_alignment and/or a general.alignment kv;
 * *emit is set when the writer must add the general.alignment kv itself. */
static int resolve_alignment(gguf_writer *w, int *emit, char *err,
                             size_t errlen)
{
    *emit = 0;
    const wkv *kv = NULL;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, "general.alignment") == 0)
            kv = &w->kv[i];
    if (kv) {
        if (kv->type != GGUF_VT_UINT32) {
            set_err(err, errlen, "gguf writer: general.alignment must be u32, "
                    "not %s", gguf_vtype_name(kv->type));
            return -1;
        }
        uint32_t a = le32(kv->val);
        if (w->alignment_set && a != w->alignment) {
            set_err(err, errlen, "gguf writer: general.alignment %u "
                    "contradicts set_alignment(%u)", a, w->alignment);
            return -1;
        }
        w->alignment = a;
    } else {
        *emit = w->alignment != GGUF_DEFAULT_ALIGNMENT;
    }
    if (!is_pow2(w->alignment)) {
        set_err(err, errlen, "gguf writer: alignment %u is not a nonzero "
                "power of two", w->alignment);
        return -1;
    }
    return 0;
}

/* Check one tensor's geometry against its byte count. */
static int check_wtensor(const wtensor *t, char *err, size_t errlen)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (t->ne[d] == 0 || n > UINT64_MAX / t->ne[d]) {
            set_err(err, errlen, "gguf writer: tensor '%s': dimension %u "
                    "(%llu) is zero or overflows", t->name, d,
                    (unsigned long long)t->ne[d]);
            return -1;
        }
        n *= t->ne[d];
    }
    const ds4_type_info *ti = ds4_type_get(t->type);
    if (!ti) {
        set_err(err, errlen, "gguf writer: tensor '%s': unknown type id %u",
                t->name, t->type);
        return -1;
    }
    uint64_t want = ds4_type_nbytes(t->type, n);
    if (ti->block_elems == 0 || t->ne[0] % ti->block_elems || want == 0 ||
        want != t->nbytes || !t->data) {
        set_err(err, errlen, "gguf writer: tensor '%s': %llu bytes given, "
                "%s [%llu x %llu x %llu x %llu] needs %llu%s", t->name,
                (unsigned long long)t->nbytes, ti->name,
                (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                (unsigned long long)want,
                !t->data ? " (data is NULL)"
                : (ti->block_elems && t->ne[0] % ti->block_elems)
                    ? " (row length not a multiple of the block size)"
                    : "");
        return -1;
    }
    return 0;
}

/* Validate everything and encode the header, tensor infos and padding up
 * to the data section into hdr; assigns tensor offsets. */
static int writer_prepare(gguf_writer *w, wbuf *hdr, uint64_t *total,
                          char *err, size_t errlen)
{
    int emit;
    if (w->deferred) {
        set_err(err, errlen, "%s", w->deferred);
        return -1;
    }
    if (check_names(w->kv, w->n_kv, wkv_name_at, "key", err, errlen) ||
        check_names(w->t, w->n_t, wt_name_at, "tensor", err, errlen) ||
        resolve_alignment(w, &emit, err, errlen))
        return -1;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        if (check_wtensor(&w->t[i], err, errlen))
            return -1;
        w->t[i].offset = off;
        off = align_up(off + w->t[i].nbytes, w->alignment);
    }
    wb_put(hdr, "GGUF", 4);
    wb_u32(hdr, 3);
    wb_u64(hdr, w->n_t);
    wb_u64(hdr, w->n_kv + (size_t)emit);
    for (size_t i = 0; i < w->n_kv; i++) {
        wb_str(hdr, w->kv[i].key, strlen(w->kv[i].key));
        wb_u32(hdr, w->kv[i].type);
        wb_put(hdr, w->kv[i].val, w->kv[i].val_len);
    }
    if (emit) {
        wb_str(hdr, "general.alignment", 17);
        wb_u32(hdr, GGUF_VT_UINT32);
        wb_u32(hdr, w->alignment);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        wb_str(hdr, t->name, strlen(t->name));
        wb_u32(hdr, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            wb_u64(hdr, t->ne[d]);
        wb_u32(hdr, t->type);
        wb_u64(hdr, t->offset);
    }
    /* Pad to the data section only when there is one: a file without
     * tensors needs no padding, however large the alignment. */
    if (w->n_t)
        wb_zeros(hdr, (size_t)(align_up(hdr->len, w->alignment) - hdr->len));
    *total = hdr->len + off;
    return 0;
}

int gguf_writer_to_mem(gguf_writer *w, uint8_t **out, uint64_t *len,
                       char *err, size_t errlen)
{
    wbuf b = {0};
    uint64_t total;
    *out = NULL;
    *len = 0;
    set_err(err, errlen, "%s", "");
    if (writer_prepare(w, &b, &total, err, errlen)) {
        free(b.p);
        return -1;
    }
    size_t data_start = b.len;
    for (size_t i = 0; i < w->n_t; i++) {
        wb_zeros(&b, (size_t)(data_start + w->t[i].offset - b.len));
        wb_put(&b, w->t[i].data, (size_t)w->t[i].nbytes);
    }
    wb_zeros(&b, (size_t)(total - b.len));
    *out = b.p ? b.p : ds4_xmalloc(1);
    *len = b.len;
    return 0;
}

/* write(2) all of buf, retrying on short writes and EINTR. */
static int write_all(int fd, const void *buf, uint64_t n)
{
    const uint8_t *p = buf;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (uint64_t)k;
    }
    return 0;
}

/* Stream header, tensor data and padding to fd. */
static int write_body(gguf_writer *w, int fd, const wbuf *hdr, uint64_t total)
{
    static const uint8_t zeros[4096];
    if (write_all(fd, hdr->p, hdr->len))
        return -1;
    uint64_t pos = hdr->len;
    for (size_t i = 0; i <= w->n_t; i++) {
        uint64_t target = i < w->n_t ? hdr->len + w->t[i].offset : total;
        while (pos < target) {
            uint64_t k = target - pos < sizeof zeros ? target - pos
                                                     : sizeof zeros;
            if (write_all(fd, zeros, k))
                return -1;
            pos += k;
        }
        if (i < w->n_t) {
            if (write_all(fd, w->t[i].data, w->t[i].nbytes))
                return -1;
            pos += w->t[i].nbytes;
        }
    }
    return 0;
}

/* fsync the directory holding path so the rename is durable. */
static int fsync_parent(const char *path)
{
    char *dir = ds4_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err,
                      size_t errlen)
{
    wbuf hdr = {0};
    uint64_t total;
    set_err(err, errlen, "%s", "");
    if (writer_prepare(w, &hdr, &total, err, errlen)) {
        free(hdr.p);
        return -1;
    }
    size_t plen = strlen(path);
    char *tmp = ds4_xmalloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int rc = -1;
    const char *step = "open";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        step = "write";
        if (write_body(w, fd, &hdr, total) == 0) {
            step = "fsync";
            if (fsync(fd) == 0)
                rc = 0;
        }
        if (close(fd) != 0 && rc == 0) {
            step = "close";
            rc = -1;
        }
        if (rc == 0 && rename(tmp, path) != 0) {
            step = "rename";
            rc = -1;
        }
        if (rc == 0 && fsync_parent(path) != 0) {
            step = "fsync of directory";
            rc = -1;
        }
    }
    if (rc != 0) {
        set_err(err, errlen, "gguf writer: %s: %s: %s", tmp, step,
                strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    free(hdr.p);
    return rc;
}
