/* test_gguf.c - GGUF writer -> reader round trips, typed getters, writer
 * misuse, and hostile files (truncation at every byte, corrupt fields,
 * huge counts, bad geometry) that must fail with a message naming the
 * problem, never crash. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "test.h"
#include "util.h"

/* ---- helpers ----------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* xorshift64*: seeded, reproducible test data. */
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void fill_random(void *p, size_t n)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(rnd() >> 56);
}

/* Raw little-endian byte builder for hand-made (hostile) files. */
typedef struct rb {
    uint8_t *p;
    size_t len, cap;
} rb;

static void rb_put(rb *b, const void *s, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = ds4_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void rb_u8(rb *b, uint8_t v) { rb_put(b, &v, 1); }
static void rb_u32(rb *b, uint32_t v) { rb_put(b, &v, 4); }
static void rb_u64(rb *b, uint64_t v) { rb_put(b, &v, 8); }

static void rb_str(rb *b, const char *s)
{
    rb_u64(b, strlen(s));
    rb_put(b, s, strlen(s));
}

static void rb_header(rb *b, uint32_t version, uint64_t n_t, uint64_t n_kv)
{
    rb_put(b, "GGUF", 4);
    rb_u32(b, version);
    rb_u64(b, n_t);
    rb_u64(b, n_kv);
}

static void rb_kv_u32(rb *b, const char *key, uint32_t v)
{
    rb_str(b, key);
    rb_u32(b, GGUF_VT_UINT32);
    rb_u32(b, v);
}

/* A tensor info with n_dims dims from ne. */
static void rb_tensor(rb *b, const char *name, uint32_t n_dims,
                      const uint64_t *ne, uint32_t type, uint64_t offset)
{
    rb_str(b, name);
    rb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        rb_u64(b, ne[d]);
    rb_u32(b, type);
    rb_u64(b, offset);
}

/* Pad with zeros to a multiple of a, then append n random data bytes. */
static void rb_pad_data(rb *b, size_t a, size_t n)
{
    while (b->len % a)
        rb_u8(b, 0);
    for (size_t i = 0; i < n; i++)
        rb_u8(b, (uint8_t)rnd());
}

/* Parse a copy of exactly len bytes (so ASan sees any over-read). */
static int parse_exact(const void *buf, size_t len, gguf_file **f, char *err,
                       size_t errlen)
{
    void *copy = ds4_xmalloc(len ? len : 1);
    memcpy(copy, buf, len);
    int rc = gguf_parse(copy, len, f, err, errlen);
    if (rc != 0) /* on success close_exact() frees the copy */
        free(copy);
    return rc;
}

static void close_exact(gguf_file *f)
{
    if (!f)
        return;
    void *copy = (void *)f->base;
    gguf_close(f);
    free(copy);
}

/* Expect the parse of buf to fail with an error containing want. */
static void expect_fail(const char *label, const rb *b, const char *want)
{
    char err[512];
    memset(err, 'X', sizeof err);
    gguf_file *f = (gguf_file *)0x1;
    int rc = parse_exact(b->p, b->len, &f, err, sizeof err);
    CHECKF(rc == -1, "%s: parsed a hostile file", label);
    CHECKF(f == NULL, "%s: out not NULL on failure", label);
    CHECKF(memchr(err, 0, sizeof err) != NULL, "%s: err not terminated",
           label);
    CHECKF(strstr(err, want) != NULL, "%s: error '%s' lacks '%s'", label,
           err, want);
    if (rc == 0)
        close_exact(f);
    if (getenv("GGUF_TEST_VERBOSE"))
        fprintf(stderr, "%-24s %s\n", label, err);
}

/* Walk every kv and tensor the way a consumer would (ASan checks bounds). */
static uint64_t walk_all(const gguf_file *f)
{
    uint64_t acc = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        for (uint64_t j = 0; kv->type == GGUF_VT_ARRAY && j < kv->arr_n; j++) {
            gguf_str s;
            uint32_t u;
            int64_t v;
            float x;
            if (gguf_arr_str(kv, j, &s) == 0 && s.len)
                acc += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
            if (gguf_arr_u32(kv, j, &u) == 0)
                acc += u;
            if (gguf_arr_i64(kv, j, &v) == 0)
                acc += (uint64_t)v;
            if (gguf_arr_f32(kv, j, &x) == 0)
                acc += x == x;
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const uint8_t *d = f->tensors[i].data;
        acc += d[0] + d[f->tensors[i].nbytes - 1];
    }
    return acc;
}

/* ---- round trip -------------------------------------------------------- */

typedef struct tdesc {
    const char *name;
    uint32_t type, n_dims;
    uint64_t ne[4];
    uint64_t nbytes; /* expected, computed from block geometry by hand */
} tdesc;

/* Tensor set covering the types of SPEC §3.3 and 1..4 dims. Sizes are
 * written out by hand (block bytes/elems) rather than via quant.c. */
static const tdesc tensors[] = {
    {"blk.0.attn_norm.weight", DS4_TYPE_F32, 1, {96, 1, 1, 1}, 96 * 4},
    {"token_embd.weight", DS4_TYPE_F16, 2, {64, 3, 1, 1}, 64 * 3 * 2},
    {"blk.0.attn_q_a.weight", DS4_TYPE_Q8_0, 2, {64, 5, 1, 1}, 10 * 34},
    {"blk.0.ffn_down_exps.weight", DS4_TYPE_Q2_K, 3, {256, 2, 3, 1},
     6 * 84},
    {"blk.0.ffn_gate_exps.weight", DS4_TYPE_IQ2_XXS, 3, {512, 1, 2, 1},
     4 * 66},
    {"blk.0.ffn_gate_tid2eid.weight", DS4_TYPE_I32, 4, {6, 5, 2, 1},
     60 * 4},
    {"blk.0.ffn_up_exps.weight", DS4_TYPE_Q4_K, 2, {256, 3, 1, 1}, 3 * 144},
    {"output_hc_base.weight", DS4_TYPE_BF16, 1, {7, 1, 1, 1}, 14},
};
#define N_TENSORS DS4_ARRAY_LEN(tensors)

/* Random scalar values written by build_full and checked after reading. */
typedef struct vals {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32;
    int32_t i32; uint64_t u64; int64_t i64; float f32; double f64;
    uint32_t arr_u32[17]; int16_t arr_i16[9]; double arr_f64[5];
    uint8_t arr_bool[6]; int64_t arr_i64[4]; float arr_f32[3];
    uint8_t *tdata[N_TENSORS];
} vals;

static const char *const strs[] = {"", "hello", "", "\xe4\xb8\xad\xe6\x96\x87",
                                   "with\nnewline", ""};

/* A writer holding one kv of every type, arrays of every scalar type and
 * of strings (with empty strings), empty arrays, and the tensor set. */
static gguf_writer *build_full(vals *v, uint32_t alignment)
{
    gguf_writer *w = gguf_writer_new();
    if (alignment)
        gguf_writer_set_alignment(w, alignment);
    v->u8 = (uint8_t)rnd(); v->i8 = (int8_t)(rnd() | 0x80);
    v->u16 = (uint16_t)rnd(); v->i16 = (int16_t)(rnd() | 0x8000);
    v->u32 = (uint32_t)rnd() | 0x80000000u; v->i32 = -(int32_t)(rnd() >> 34);
    v->u64 = rnd() | (1ull << 63); v->i64 = -(int64_t)(rnd() >> 2);
    v->f32 = (float)(int32_t)rnd() / 7.0f;
    v->f64 = (double)(int64_t)rnd() / 3.0;
    gguf_w_u8(w, "t.u8", v->u8);
    gguf_w_i8(w, "t.i8", v->i8);
    gguf_w_u16(w, "t.u16", v->u16);
    gguf_w_i16(w, "t.i16", v->i16);
    gguf_w_u32(w, "t.u32", v->u32);
    gguf_w_i32(w, "t.i32", v->i32);
    gguf_w_u64(w, "t.u64", v->u64);
    gguf_w_i64(w, "t.i64", v->i64);
    gguf_w_f32(w, "t.f32", v->f32);
    gguf_w_f64(w, "t.f64", v->f64);
    gguf_w_bool(w, "t.bool1", 7);
    gguf_w_bool(w, "t.bool0", 0);
    gguf_w_str(w, "general.name", "tiny test model");
    gguf_w_str(w, "t.empty_str", "");
    for (size_t i = 0; i < 17; i++)
        v->arr_u32[i] = (uint32_t)rnd();
    for (size_t i = 0; i < 9; i++)
        v->arr_i16[i] = (int16_t)rnd();
    for (size_t i = 0; i < 5; i++)
        v->arr_f64[i] = (double)(int32_t)rnd() * 0.25;
    for (size_t i = 0; i < 6; i++)
        v->arr_bool[i] = rnd() & 1;
    for (size_t i = 0; i < 4; i++)
        v->arr_i64[i] = (int64_t)rnd();
    for (size_t i = 0; i < 3; i++)
        v->arr_f32[i] = (float)(int32_t)rnd() * 0.5f;
    uint8_t u8s[3] = {1, 200, 255};
    int8_t i8s[3] = {-128, 0, 127};
    uint16_t u16s[2] = {65535, 3};
    int32_t i32s[3] = {-5, 70000, INT32_MIN};
    uint64_t u64s[2] = {UINT64_MAX, 12};
    gguf_w_arr(w, "a.u8", GGUF_VT_UINT8, u8s, 3);
    gguf_w_arr(w, "a.i8", GGUF_VT_INT8, i8s, 3);
    gguf_w_arr(w, "a.u16", GGUF_VT_UINT16, u16s, 2);
    gguf_w_arr(w, "a.i16", GGUF_VT_INT16, v->arr_i16, 9);
    gguf_w_arr(w, "a.u32", GGUF_VT_UINT32, v->arr_u32, 17);
    gguf_w_arr(w, "a.i32", GGUF_VT_INT32, i32s, 3);
    gguf_w_arr(w, "a.f32", GGUF_VT_FLOAT32, v->arr_f32, 3);
    gguf_w_arr(w, "a.bool", GGUF_VT_BOOL, v->arr_bool, 6);
    gguf_w_arr(w, "a.u64", GGUF_VT_UINT64, u64s, 2);
    gguf_w_arr(w, "a.i64", GGUF_VT_INT64, v->arr_i64, 4);
    gguf_w_arr(w, "a.f64", GGUF_VT_FLOAT64, v->arr_f64, 5);
    gguf_w_arr(w, "a.empty_u32", GGUF_VT_UINT32, NULL, 0);
    gguf_w_arr_str(w, "a.str", strs, NULL, DS4_ARRAY_LEN(strs));
    gguf_w_arr_str(w, "a.empty_str", NULL, NULL, 0);
    const char *nul_strs[2] = {"a\0b", "xyz"};
    uint64_t nul_lens[2] = {3, 2};
    gguf_w_arr_str(w, "a.str_lens", nul_strs, nul_lens, 2);
    for (size_t i = 0; i < N_TENSORS; i++) {
        v->tdata[i] = ds4_xmalloc(tensors[i].nbytes);
        fill_random(v->tdata[i], tensors[i].nbytes);
        gguf_w_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims,
                      tensors[i].ne, v->tdata[i], tensors[i].nbytes);
    }
    return w;
}

static void free_vals(vals *v)
{
    for (size_t i = 0; i < N_TENSORS; i++)
        free(v->tdata[i]);
}

/* Check every scalar kv against the values written. */
static void check_scalars(const gguf_file *f, const vals *v)
{
    uint32_t u32; uint64_t u64; int64_t i64; float f32; int b; gguf_str s;
    const gguf_kv *kv;
    CHECK(gguf_get_u32(f, "t.u8", &u32) == 0 && u32 == v->u8);
    CHECK(gguf_get_i64(f, "t.i8", &i64) == 0 && i64 == v->i8);
    CHECK(gguf_get_u32(f, "t.u16", &u32) == 0 && u32 == v->u16);
    CHECK(gguf_get_i64(f, "t.i16", &i64) == 0 && i64 == v->i16);
    CHECK(gguf_get_u32(f, "t.u32", &u32) == 0 && u32 == v->u32);
    CHECK(gguf_get_i64(f, "t.i32", &i64) == 0 && i64 == v->i32);
    CHECK(gguf_get_u64(f, "t.u64", &u64) == 0 && u64 == v->u64);
    CHECK(gguf_get_i64(f, "t.i64", &i64) == 0 && i64 == v->i64);
    CHECK(gguf_get_f32(f, "t.f32", &f32) == 0 && f32 == v->f32);
    CHECK(gguf_get_f32(f, "t.f64", &f32) == 0 && f32 == (float)v->f64);
    kv = gguf_find_kv(f, "t.f64");
    double d = 0;
    CHECK(kv && kv->type == GGUF_VT_FLOAT64 && memcpy(&d, kv->data, 8) &&
          d == v->f64);
    CHECK(gguf_get_bool(f, "t.bool1", &b) == 0 && b == 1);
    CHECK(gguf_get_bool(f, "t.bool0", &b) == 0 && b == 0);
    CHECK(gguf_get_str(f, "general.name", &s) == 0 &&
          gguf_str_eq(s, "tiny test model"));
    CHECK(gguf_get_str(f, "t.empty_str", &s) == 0 && s.len == 0);
    static const struct { const char *k; uint32_t t; } types[] = {
        {"t.u8", GGUF_VT_UINT8}, {"t.i8", GGUF_VT_INT8},
        {"t.u16", GGUF_VT_UINT16}, {"t.i16", GGUF_VT_INT16},
        {"t.u32", GGUF_VT_UINT32}, {"t.i32", GGUF_VT_INT32},
        {"t.u64", GGUF_VT_UINT64}, {"t.i64", GGUF_VT_INT64},
        {"t.f32", GGUF_VT_FLOAT32}, {"t.f64", GGUF_VT_FLOAT64},
        {"t.bool1", GGUF_VT_BOOL}, {"general.name", GGUF_VT_STRING},
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(types); i++) {
        kv = gguf_find_kv(f, types[i].k);
        CHECKF(kv && kv->type == types[i].t, "type of %s", types[i].k);
    }
}

/* Check every array kv against the values written. */
static void check_arrays(const gguf_file *f, const vals *v)
{
    const gguf_kv *kv;
    uint32_t u32; int64_t i64; float f32; gguf_str s;
    kv = gguf_find_kv(f, "a.u32");
    CHECK(kv && kv->type == GGUF_VT_ARRAY && kv->arr_type == GGUF_VT_UINT32 &&
          kv->arr_n == 17);
    for (uint64_t i = 0; kv && i < 17; i++)
        CHECK(gguf_arr_u32(kv, i, &u32) == 0 && u32 == v->arr_u32[i]);
    CHECK(gguf_arr_u32(kv, 17, &u32) == -1);
    kv = gguf_find_kv(f, "a.i16");
    for (uint64_t i = 0; kv && i < 9; i++)
        CHECK(gguf_arr_i64(kv, i, &i64) == 0 && i64 == v->arr_i16[i]);
    kv = gguf_find_kv(f, "a.f64");
    for (uint64_t i = 0; kv && i < 5; i++)
        CHECK(gguf_arr_f32(kv, i, &f32) == 0 && f32 == (float)v->arr_f64[i]);
    kv = gguf_find_kv(f, "a.f32");
    for (uint64_t i = 0; kv && i < 3; i++)
        CHECK(gguf_arr_f32(kv, i, &f32) == 0 && f32 == v->arr_f32[i]);
    kv = gguf_find_kv(f, "a.i64");
    for (uint64_t i = 0; kv && i < 4; i++)
        CHECK(gguf_arr_i64(kv, i, &i64) == 0 && i64 == v->arr_i64[i]);
    kv = gguf_find_kv(f, "a.bool");
    CHECK(kv && kv->arr_type == GGUF_VT_BOOL && kv->arr_n == 6 &&
          memcmp(kv->data, v->arr_bool, 6) == 0);
    CHECK(gguf_arr_u32(kv, 0, &u32) == -2); /* bool is not an integer */
    kv = gguf_find_kv(f, "a.u8");
    CHECK(gguf_arr_u32(kv, 1, &u32) == 0 && u32 == 200);
    kv = gguf_find_kv(f, "a.i8");
    CHECK(gguf_arr_i64(kv, 0, &i64) == 0 && i64 == -128);
    CHECK(gguf_arr_u32(kv, 0, &u32) == -2); /* negative */
    CHECK(gguf_arr_u32(kv, 2, &u32) == 0 && u32 == 127);
    kv = gguf_find_kv(f, "a.u16");
    CHECK(gguf_arr_u32(kv, 0, &u32) == 0 && u32 == 65535);
    kv = gguf_find_kv(f, "a.i32");
    CHECK(gguf_arr_i64(kv, 2, &i64) == 0 && i64 == INT32_MIN);
    CHECK(gguf_arr_u32(kv, 1, &u32) == 0 && u32 == 70000);
    kv = gguf_find_kv(f, "a.u64");
    CHECK(gguf_arr_u32(kv, 0, &u32) == -2); /* too big */
    CHECK(gguf_arr_i64(kv, 0, &i64) == -2);
    CHECK(gguf_arr_i64(kv, 1, &i64) == 0 && i64 == 12);
    CHECK(gguf_arr_f32(kv, 1, &f32) == -2);
    CHECK(gguf_arr_str(kv, 0, &s) == -2);
    kv = gguf_find_kv(f, "a.empty_u32");
    CHECK(kv && kv->arr_n == 0 && kv->arr_type == GGUF_VT_UINT32);
    CHECK(gguf_arr_u32(kv, 0, &u32) == -1);
    kv = gguf_find_kv(f, "a.str");
    CHECK(kv && kv->arr_type == GGUF_VT_STRING &&
          kv->arr_n == DS4_ARRAY_LEN(strs) && kv->str_off);
    for (uint64_t i = 0; kv && i < DS4_ARRAY_LEN(strs); i++)
        CHECKF(gguf_arr_str(kv, i, &s) == 0 && gguf_str_eq(s, strs[i]),
               "a.str[%llu]", (unsigned long long)i);
    CHECK(gguf_arr_str(kv, DS4_ARRAY_LEN(strs), &s) == -1);
    CHECK(gguf_arr_u32(kv, 0, &u32) == -2);
    CHECK(strcmp(gguf_kv_type_name(kv), "arr[str]") == 0);
    kv = gguf_find_kv(f, "a.empty_str");
    CHECK(kv && kv->arr_type == GGUF_VT_STRING && kv->arr_n == 0);
    CHECK(gguf_arr_str(kv, 0, &s) == -1);
    kv = gguf_find_kv(f, "a.str_lens");
    CHECK(gguf_arr_str(kv, 0, &s) == 0 && s.len == 3 &&
          memcmp(s.ptr, "a\0b", 3) == 0);
    CHECK(gguf_arr_str(kv, 1, &s) == 0 && s.len == 2 &&
          memcmp(s.ptr, "xy", 2) == 0);
}

/* Check the tensor table and data against what was written. */
static void check_tensors(const gguf_file *f, const vals *v, uint32_t align)
{
    CHECK(f->n_tensors == N_TENSORS);
    CHECK(f->alignment == align);
    CHECK(f->data_offset % align == 0);
    for (size_t i = 0; i < N_TENSORS; i++) {
        const gguf_tensor *t = gguf_find_tensor(f, tensors[i].name);
        CHECKF(t != NULL, "tensor %s missing", tensors[i].name);
        if (!t)
            continue;
        CHECK(t == &f->tensors[i]); /* insertion order kept */
        CHECK(t->type == tensors[i].type && t->n_dims == tensors[i].n_dims);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == tensors[i].ne[d]);
        CHECKF(t->nbytes == tensors[i].nbytes, "%s nbytes %llu",
               tensors[i].name, (unsigned long long)t->nbytes);
        CHECK(t->offset % align == 0);
        CHECK((const uint8_t *)t->data == f->base + f->data_offset + t->offset);
        CHECK(memcmp(t->data, v->tdata[i], tensors[i].nbytes) == 0);
    }
    CHECK(gguf_find_tensor(f, "nope") == NULL);
    CHECK(gguf_find_tensor(f, "token_embd.weigh") == NULL);
}

/* Writer -> memory -> reader, at several alignments. */
static void test_round_trip(uint32_t align)
{
    vals v;
    gguf_writer *w = build_full(&v, align == GGUF_DEFAULT_ALIGNMENT ? 0 : align);
    uint8_t *buf;
    uint64_t len;
    char err[512];
    CHECKF(gguf_writer_to_mem(w, &buf, &len, err, sizeof err) == 0, "%s", err);
    gguf_file *f = NULL;
    CHECKF(parse_exact(buf, len, &f, err, sizeof err) == 0, "align %u: %s",
           align, err);
    if (f) {
        CHECK(f->version == 3);
        uint32_t a;
        int rc = gguf_get_u32(f, "general.alignment", &a);
        CHECK(align == GGUF_DEFAULT_ALIGNMENT ? rc == -1 : rc == 0 && a == align);
        check_scalars(f, &v);
        check_arrays(f, &v);
        check_tensors(f, &v, align);
        close_exact(f);
    }
    free(buf);
    gguf_writer_free(w);
    free_vals(&v);
}

/* Conversions and -1/-2 results of the typed getters. */
static void test_getters(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_i8(w, "neg8", -3);
    gguf_w_u64(w, "big", 1ull << 40);
    gguf_w_u64(w, "huge", UINT64_MAX);
    gguf_w_i64(w, "neg", -5);
    gguf_w_i32(w, "pos", 123456);
    gguf_w_f64(w, "f64big", 1e300);
    gguf_w_f64(w, "f64inf", INFINITY);
    gguf_w_f32(w, "f32", 1.5f);
    gguf_w_bool(w, "b", 1);
    gguf_w_str(w, "s", "str");
    gguf_w_u32(w, "u32max", UINT32_MAX);
    uint8_t *buf;
    uint64_t len;
    char err[256];
    CHECK(gguf_writer_to_mem(w, &buf, &len, err, sizeof err) == 0);
    gguf_file *f = NULL;
    CHECK(parse_exact(buf, len, &f, err, sizeof err) == 0);
    if (f) {
        uint32_t u32 = 77; uint64_t u64; int64_t i64; float x; int b;
        gguf_str s;
        CHECK(gguf_get_u32(f, "absent", &u32) == -1 && u32 == 77);
        CHECK(gguf_get_u32(f, "neg8", &u32) == -2 && u32 == 77);
        CHECK(gguf_get_u64(f, "neg8", &u64) == -2);
        CHECK(gguf_get_i64(f, "neg8", &i64) == 0 && i64 == -3);
        CHECK(gguf_get_u32(f, "big", &u32) == -2);
        CHECK(gguf_get_u64(f, "big", &u64) == 0 && u64 == 1ull << 40);
        CHECK(gguf_get_i64(f, "big", &i64) == 0 && i64 == 1ll << 40);
        CHECK(gguf_get_i64(f, "huge", &i64) == -2);
        CHECK(gguf_get_u64(f, "neg", &u64) == -2);
        CHECK(gguf_get_u32(f, "pos", &u32) == 0 && u32 == 123456);
        CHECK(gguf_get_u64(f, "pos", &u64) == 0 && u64 == 123456);
        CHECK(gguf_get_u32(f, "u32max", &u32) == 0 && u32 == UINT32_MAX);
        CHECK(gguf_get_f32(f, "f64big", &x) == -2);
        CHECK(gguf_get_f32(f, "f64inf", &x) == 0 && isinf(x));
        CHECK(gguf_get_f32(f, "f32", &x) == 0 && x == 1.5f);
        CHECK(gguf_get_f32(f, "pos", &x) == -2);
        CHECK(gguf_get_u32(f, "f32", &u32) == -2);
        CHECK(gguf_get_bool(f, "b", &b) == 0 && b == 1);
        CHECK(gguf_get_bool(f, "pos", &b) == -2);
        CHECK(gguf_get_u32(f, "b", &u32) == -2);
        CHECK(gguf_get_str(f, "s", &s) == 0 && gguf_str_eq(s, "str"));
        CHECK(!gguf_str_eq(s, "st") && !gguf_str_eq(s, "strs"));
        CHECK(gguf_get_str(f, "pos", &s) == -2);
        CHECK(gguf_get_u32(f, "s", &u32) == -2);
        CHECK(gguf_arr_u32(gguf_find_kv(f, "pos"), 0, &u32) == -2);
        CHECK(gguf_arr_u32(NULL, 0, &u32) == -1);
        CHECK(gguf_arr_str(gguf_find_kv(f, "s"), 0, &s) == -2);
        CHECK(strcmp(gguf_vtype_name(GGUF_VT_FLOAT32), "f32") == 0);
        CHECK(strcmp(gguf_vtype_name(99), "unknown") == 0);
        close_exact(f);
    }
    free(buf);
    gguf_writer_free(w);
}

/* gguf_writer_write + gguf_open: same bytes as to_mem, no temp left. */
static void test_file_io(void)
{
    char dir[] = "/tmp/test_gguf.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300], tmp[310];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    vals v;
    gguf_writer *w = build_full(&v, 64);
    char err[512];
    CHECKF(gguf_writer_write(w, path, err, sizeof err) == 0, "%s", err);
    CHECK(access(tmp, F_OK) != 0);
    uint8_t *mem;
    uint64_t len;
    CHECK(gguf_writer_to_mem(w, &mem, &len, err, sizeof err) == 0);
    size_t flen = 0;
    uint8_t *disk = test_read_file(path, &flen);
    CHECK(disk && flen == len && memcmp(disk, mem, len) == 0);
    gguf_file *f = NULL;
    CHECKF(gguf_open(path, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(f->fd >= 0 && f->size == len);
        check_scalars(f, &v);
        check_tensors(f, &v, 64);
        gguf_close(f);
    }
    /* Failures: missing file, directory, empty file, unwritable path. */
    CHECK(gguf_open("/nonexistent/x.gguf", &f, err, sizeof err) == -1 &&
          f == NULL && strstr(err, "No such file"));
    CHECK(gguf_open(dir, &f, err, sizeof err) == -1 &&
          strstr(err, "directory"));
    CHECK(gguf_open("/dev/null", &f, err, sizeof err) == -1 &&
          strstr(err, "not a regular file"));
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK(gguf_open(fifo, &f, err, sizeof err) == -1 &&
          strstr(err, "not a regular file"));
    unlink(fifo);
    char empty[300];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    fclose(fopen(empty, "w"));
    CHECK(gguf_open(empty, &f, err, sizeof err) == -1 && strstr(err, "empty"));
    CHECK(gguf_writer_write(w, "/nonexistent/dir/x.gguf", err, sizeof err) ==
              -1 && strstr(err, "open"));
    unlink(empty);
    unlink(path);
    rmdir(dir);
    free(disk);
    free(mem);
    gguf_writer_free(w);
    free_vals(&v);
}

/* Writer misuse is reported at write time with a message. */
static void test_writer_errors(void)
{
    static const struct { int what; const char *want; } cases[] = {
        {0, "duplicate key 'k'"}, {1, "duplicate tensor 't'"},
        {2, "needs 34"}, {3, "unknown type id 99"}, {4, "power of two"},
        {5, "power of two"}, {6, "n_dims 0"}, {7, "n_dims 5"},
        {8, "not a scalar"}, {9, "contradicts"}, {10, "must be u32"},
        {11, "multiple of the block"}, {12, "zero"}, {13, "length 0"},
    };
    uint8_t data[64] = {1};
    uint64_t ne[5] = {32, 1, 1, 1, 1};
    for (size_t i = 0; i < DS4_ARRAY_LEN(cases); i++) {
        gguf_writer *w = gguf_writer_new();
        gguf_w_u32(w, "k", 1);
        switch (cases[i].what) {
        case 0: gguf_w_u8(w, "k", 2); break;
        case 1: gguf_w_tensor(w, "t", DS4_TYPE_I8, 1, ne, data, 32);
                gguf_w_tensor(w, "t", DS4_TYPE_I8, 1, ne, data, 32); break;
        case 2: gguf_w_tensor(w, "t", DS4_TYPE_Q8_0, 1, ne, data, 33); break;
        case 3: gguf_w_tensor(w, "t", 99, 1, ne, data, 32); break;
        case 4: gguf_writer_set_alignment(w, 24); break;
        case 5: gguf_writer_set_alignment(w, 0); break;
        case 6: gguf_w_tensor(w, "t", DS4_TYPE_I8, 0, ne, data, 32); break;
        case 7: gguf_w_tensor(w, "t", DS4_TYPE_I8, 5, ne, data, 32); break;
        case 8: gguf_w_arr(w, "a", GGUF_VT_STRING, data, 1); break;
        case 9: gguf_writer_set_alignment(w, 64);
                gguf_w_u32(w, "general.alignment", 128); break;
        case 10: gguf_w_u64(w, "general.alignment", 64); break;
        case 11: ne[0] = 16;
                 gguf_w_tensor(w, "t", DS4_TYPE_Q8_0, 1, ne, data, 17);
                 ne[0] = 32; break;
        case 12: ne[1] = 0;
                 gguf_w_tensor(w, "t", DS4_TYPE_I8, 2, ne, data, 0);
                 ne[1] = 1; break;
        case 13: gguf_w_u32(w, "", 1); break;
        }
        char err[512] = "poison";
        uint8_t *buf = (uint8_t *)0x1;
        uint64_t len = 99;
        int rc = gguf_writer_to_mem(w, &buf, &len, err, sizeof err);
        CHECKF(rc == -1 && buf == NULL && len == 0 &&
                   strstr(err, cases[i].want),
               "writer case %d: rc %d err '%s'", cases[i].what, rc, err);
        CHECK(gguf_writer_write(w, "/tmp/never-written.gguf", err,
                                sizeof err) == -1);
        CHECK(access("/tmp/never-written.gguf.tmp", F_OK) != 0);
        gguf_writer_free(w);
    }
}

/* ---- hostile files ----------------------------------------------------- */

/* A small valid file whose last tensor ends exactly at end of file, so
 * every proper prefix is invalid. */
static void small_valid(rb *b)
{
    uint64_t ne1[1] = {8}, ne2[2] = {32, 2};
    rb_header(b, 3, 2, 3);
    rb_kv_u32(b, "general.alignment", 32);
    rb_str(b, "tok");
    rb_u32(b, GGUF_VT_ARRAY);
    rb_u32(b, GGUF_VT_STRING);
    rb_u64(b, 3);
    rb_str(b, "a");
    rb_str(b, "");
    rb_str(b, "ccc");
    rb_str(b, "name");
    rb_u32(b, GGUF_VT_STRING);
    rb_str(b, "x");
    rb_tensor(b, "q", 2, ne2, DS4_TYPE_Q8_0, 0);
    rb_tensor(b, "w", 1, ne1, DS4_TYPE_F32, 96);
    rb_pad_data(b, 32, 68);
    rb_pad_data(b, 32, 32);
}

/* Every prefix of a valid file fails with a non-empty message. */
static void test_truncation(void)
{
    rb b = {0};
    small_valid(&b);
    char err[512];
    gguf_file *f = NULL;
    CHECKF(parse_exact(b.p, b.len, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        gguf_str s;
        CHECK(gguf_arr_str(gguf_find_kv(f, "tok"), 2, &s) == 0 &&
              gguf_str_eq(s, "ccc"));
        CHECK(f->n_tensors == 2 && f->tensors[1].nbytes == 32);
        CHECK(f->data_offset + 128 == b.len);
        close_exact(f);
    }
    int bad = 0;
    for (size_t n = 0; n < b.len; n++) {
        err[0] = 0;
        f = (gguf_file *)0x1;
        int rc = parse_exact(b.p, n, &f, err, sizeof err);
        if (rc != -1 || f != NULL || err[0] == 0) {
            bad++;
            fprintf(stderr, "truncation at %zu: rc %d err '%s'\n", n, rc, err);
            if (rc == 0)
                close_exact(f);
        }
    }
    CHECKF(bad == 0, "%d truncations accepted", bad);
    /* A truncated real file through gguf_open too. */
    char path[] = "/tmp/test_gguf_trunc.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, b.p, b.len - 1) == (ssize_t)(b.len - 1));
    close(fd);
    CHECK(gguf_open(path, &f, err, sizeof err) == -1 &&
          strstr(err, "past the end") && strstr(err, "tensor 'w'"));
    unlink(path);
    free(b.p);
}

/* Seeded random corruption: every result is an error or a file whose
 * every element can be walked. */
static void test_mutations(void)
{
    rb b = {0};
    small_valid(&b);
    uint8_t *m = ds4_xmalloc(b.len);
    int accepted = 0;
    for (int it = 0; it < 4000; it++) {
        memcpy(m, b.p, b.len);
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = rnd() % b.len;
            m[at] = (rnd() & 1) ? (uint8_t)rnd() : (uint8_t)(m[at] ^ 0x80);
        }
        char err[512] = "";
        gguf_file *f = NULL;
        if (parse_exact(m, b.len, &f, err, sizeof err) == 0) {
            accepted++;
            (void)walk_all(f);
            close_exact(f);
        } else {
            CHECKF(err[0] != 0, "mutation %d: empty error", it);
        }
    }
    CHECK(accepted > 0 && accepted < 4000);
    free(m);
    free(b.p);
}

/* One hand-made corrupt file per failure class. */
static void test_hostile(void)
{
    uint64_t ne1[1] = {32}, ne2[2] = {32, 2};
    rb b = {0};
#define RESET() (free(b.p), b = (rb){0})

    small_valid(&b); b.p[3] = 'G';
    expect_fail("bad magic", &b, "bad magic");
    RESET(); rb_put(&b, "GG", 2);
    expect_fail("tiny", &b, "bad magic");
    RESET(); small_valid(&b); b.p[4] = 4;
    expect_fail("version 4", &b, "unsupported GGUF version 4");
    RESET(); small_valid(&b); b.p[4] = 1;
    expect_fail("version 1", &b, "version 1");
    RESET(); small_valid(&b); b.p[4] = 0; b.p[7] = 3;
    expect_fail("big-endian", &b, "byte-swapped");
    RESET(); small_valid(&b); b.p[4] = 2;
    gguf_file *f = NULL;
    char err[512];
    CHECKF(parse_exact(b.p, b.len, &f, err, sizeof err) == 0 &&
               f->version == 2, "version 2: %s", err);
    close_exact(f);

    RESET(); rb_header(&b, 3, 0, 1ull << 60); rb_kv_u32(&b, "k", 1);
    expect_fail("huge n_kv", &b, "kv count 1152921504606846976");
    RESET(); rb_header(&b, 3, 1ull << 60, 1); rb_kv_u32(&b, "k", 1);
    expect_fail("huge n_tensors", &b, "tensor count");
    RESET(); rb_header(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_fail("max counts", &b, "kv count");
    RESET(); rb_header(&b, 3, 0, 1); rb_u64(&b, 1ull << 63);
    rb_put(&b, "key", 3); rb_u32(&b, GGUF_VT_UINT8); rb_u8(&b, 1);
    expect_fail("huge key length", &b, "key length 9223372036854775808");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "s");
    rb_u32(&b, GGUF_VT_STRING); rb_u64(&b, UINT64_MAX - 3); rb_put(&b, "abcd", 4);
    expect_fail("huge string value", &b, "kv 0 's': string value length");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY); rb_u32(&b, GGUF_VT_UINT32);
    rb_u64(&b, 1ull << 62); rb_u32(&b, 5);
    expect_fail("huge array count", &b, "array count 4611686018427387904");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY); rb_u32(&b, GGUF_VT_STRING);
    rb_u64(&b, 1ull << 61); rb_str(&b, "x");
    expect_fail("huge string array", &b, "array of 2305843009213693952 strings");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY); rb_u32(&b, GGUF_VT_STRING);
    rb_u64(&b, 2); rb_str(&b, "x"); rb_u64(&b, 1000); rb_put(&b, "yy", 2);
    expect_fail("string element past end", &b, "string element length 1000");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY); rb_u32(&b, GGUF_VT_ARRAY); rb_u64(&b, 1);
    rb_u32(&b, GGUF_VT_UINT8); rb_u64(&b, 1); rb_u8(&b, 1);
    expect_fail("nested array", &b, "nested arrays");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY); rb_u32(&b, 13); rb_u64(&b, 1); rb_u64(&b, 0);
    expect_fail("bad array elem type", &b, "unknown array element type 13");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "v");
    rb_u32(&b, 13); rb_u64(&b, 0);
    expect_fail("bad value type", &b, "kv 0 'v': unknown value type 13");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "b");
    rb_u32(&b, GGUF_VT_BOOL); rb_u8(&b, 2); rb_u64(&b, 0);
    expect_fail("bool 2", &b, "must be 0 or 1");
    RESET(); rb_header(&b, 3, 0, 1); rb_u64(&b, 0);
    rb_u32(&b, GGUF_VT_UINT8); rb_u8(&b, 1); rb_u64(&b, 0);
    expect_fail("empty key", &b, "key length 0");
    RESET(); rb_header(&b, 3, 0, 2); rb_kv_u32(&b, "dup", 1);
    rb_kv_u32(&b, "dup", 2);
    expect_fail("duplicate key", &b, "duplicate key 'dup'");

    RESET(); rb_header(&b, 3, 0, 1); rb_kv_u32(&b, "general.alignment", 48);
    expect_fail("alignment 48", &b, "general.alignment 48 is not");
    RESET(); rb_header(&b, 3, 0, 1); rb_kv_u32(&b, "general.alignment", 0);
    expect_fail("alignment 0", &b, "general.alignment 0 is not");
    RESET(); rb_header(&b, 3, 0, 1); rb_str(&b, "general.alignment");
    rb_u32(&b, GGUF_VT_UINT64); rb_u64(&b, 32);
    expect_fail("alignment u64", &b, "has type u64, expected u32");

    RESET(); rb_header(&b, 3, 1, 0); rb_tensor(&b, "m", 1, ne1, DS4_TYPE_F32, 4);
    rb_pad_data(&b, 32, 200);
    expect_fail("misaligned", &b, "tensor 'm': data offset 4 is not a multiple");
    RESET(); rb_header(&b, 3, 1, 0); rb_tensor(&b, "p", 1, ne1, DS4_TYPE_F32, 0);
    rb_pad_data(&b, 32, 127);
    expect_fail("past end", &b, "tensor 'p': data (128 bytes");
    RESET(); rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "p", 1, ne1, DS4_TYPE_F32, UINT64_MAX - 31);
    rb_pad_data(&b, 32, 128);
    expect_fail("offset wrap", &b, "extends past the end");
    RESET(); rb_header(&b, 3, 1, 0); rb_tensor(&b, "u", 1, ne1, 99, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("unknown type", &b, "tensor 'u': unknown tensor type id 99");
    RESET(); rb_header(&b, 3, 1, 0); rb_tensor(&b, "z", 0, ne1, DS4_TYPE_F32, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("n_dims 0", &b, "tensor 'z': n_dims 0 is outside");
    RESET(); rb_header(&b, 3, 1, 0);
    uint64_t ne5[5] = {32, 1, 1, 1, 1};
    rb_tensor(&b, "f", 5, ne5, DS4_TYPE_F32, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("n_dims 5", &b, "n_dims 5 is outside");
    RESET(); rb_header(&b, 3, 1, 0);
    uint64_t neo[3] = {1ull << 32, 1ull << 32, 2};
    rb_tensor(&b, "o", 3, neo, DS4_TYPE_F32, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("ne overflow", &b, "tensor 'o': element count overflows");
    RESET(); rb_header(&b, 3, 1, 0);
    uint64_t neb[2] = {1ull << 40, 1ull << 22};
    rb_tensor(&b, "o", 2, neb, DS4_TYPE_F32, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("nbytes overflow", &b, "overflows");
    RESET(); rb_header(&b, 3, 1, 0);
    uint64_t ne0[2] = {32, 0};
    rb_tensor(&b, "z", 2, ne0, DS4_TYPE_F32, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("zero dim", &b, "dimension 1 is zero");
    RESET(); rb_header(&b, 3, 1, 0);
    uint64_t neq[1] = {48};
    rb_tensor(&b, "q", 1, neq, DS4_TYPE_Q8_0, 0);
    rb_pad_data(&b, 32, 128);
    expect_fail("partial block", &b, "row length 48 is not a multiple of the "
                                     "Q8_0 block size 32");
    RESET(); rb_header(&b, 3, 2, 0);
    rb_tensor(&b, "d", 1, ne1, DS4_TYPE_F32, 0);
    rb_tensor(&b, "d", 1, ne1, DS4_TYPE_F32, 128);
    rb_pad_data(&b, 32, 256);
    expect_fail("duplicate tensor", &b, "duplicate tensor name 'd'");
    RESET(); rb_header(&b, 3, 2, 0);
    rb_tensor(&b, "a", 2, ne2, DS4_TYPE_F32, 0);
    rb_tensor(&b, "b", 1, ne1, DS4_TYPE_F32, 128);
    rb_pad_data(&b, 32, 256);
    expect_fail("overlap", &b, "tensor 'b' data overlaps tensor 'a'");
    RESET(); rb_header(&b, 3, 1, 0);
    rb_str(&b, "n\x01\xff'");
    rb_u32(&b, 9);
    rb_pad_data(&b, 32, 64);
    expect_fail("odd name", &b, "tensor 'n\\x01\\xff\\x27': n_dims 9");

    /* A huge alignment without tensors: accepted, data_offset inside the
     * file, and the writer does not pad the header out to 2 GiB. */
    RESET(); rb_header(&b, 3, 0, 1);
    rb_kv_u32(&b, "general.alignment", 1u << 31);
    f = NULL;
    CHECKF(parse_exact(b.p, b.len, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(f->alignment == 1u << 31 && f->data_offset <= f->size);
        close_exact(f);
    }
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_alignment(w, 1u << 31);
    uint8_t *out;
    uint64_t len;
    CHECK(gguf_writer_to_mem(w, &out, &len, err, sizeof err) == 0 &&
          len < 100);
    free(out);
    gguf_writer_free(w);
    free(b.p);
#undef RESET
}

int main(void)
{
    test_round_trip(GGUF_DEFAULT_ALIGNMENT);
    test_round_trip(1);
    test_round_trip(64);
    test_round_trip(4096);
    test_getters();
    test_file_io();
    test_writer_errors();
    test_truncation();
    test_mutations();
    test_hostile();
    return test_main_end("gguf");
}
