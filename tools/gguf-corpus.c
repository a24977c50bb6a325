/* gguf-corpus.c - write the seed corpus of the GGUF fuzz target.
 *
 *   gguf-corpus DIR
 *
 * Writes small (< 8 KB), deterministic files into DIR: valid files made by
 * the writer (every value type, arrays, string arrays, alignments, tensor
 * types, a ds4-like metadata block, version 2) and hand-made invalid ones
 * (one per failure class of the reader, plus truncations), so the fuzzer
 * starts next to every branch. The committed corpus under
 * tests/fuzz/corpus/gguf/ is this tool's output plus a few small inputs
 * the fuzzer found (fz-*). Names carry no .gguf suffix because *.gguf is
 * git-ignored.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "util.h"

static const char *out_dir;
static uint64_t rng = 0x2545f4914f6cdd1dull;

/* xorshift64: deterministic bytes on every machine. */
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Write one corpus file; exits on I/O failure (a tool, not a daemon). */
static void emit(const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    if (n >= 8192) {
        fprintf(stderr, "gguf-corpus: %s is %zu bytes (limit 8 KB)\n", name, n);
        exit(1);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* Serialize a writer into the corpus (and free it). */
static void emit_writer(const char *name, gguf_writer *w)
{
    uint8_t *buf;
    uint64_t len;
    char err[512];
    if (gguf_writer_to_mem(w, &buf, &len, err, sizeof err)) {
        fprintf(stderr, "gguf-corpus: %s: %s\n", name, err);
        exit(1);
    }
    emit(name, buf, len);
    free(buf);
    gguf_writer_free(w);
}

/* Tensor data must outlive the writer that references it: kept here and
 * freed at exit. */
static void *kept[64];
static size_t n_kept;

static void free_kept(void)
{
    while (n_kept)
        free(kept[--n_kept]);
}

/* Add a tensor with deterministic random bytes. */
static void add_tensor(gguf_writer *w, const char *name, uint32_t type,
                       uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                       uint64_t ne2)
{
    uint64_t ne[4] = {ne0, ne1, ne2, 1};
    uint64_t nbytes = ds4_type_nbytes(type, ne0 * ne1 * ne2);
    uint8_t *d = ds4_xmalloc(nbytes);
    for (uint64_t i = 0; i < nbytes; i++)
        d[i] = (uint8_t)(rnd() >> 24);
    DS4_ASSERT(n_kept < DS4_ARRAY_LEN(kept));
    kept[n_kept++] = d;
    gguf_w_tensor(w, name, type, n_dims, ne, d, nbytes);
}

/* ---- valid files ------------------------------------------------------- */

static void valid_scalars(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_u8(w, "s.u8", 200);
    gguf_w_i8(w, "s.i8", -100);
    gguf_w_u16(w, "s.u16", 60000);
    gguf_w_i16(w, "s.i16", -30000);
    gguf_w_u32(w, "s.u32", 4000000000u);
    gguf_w_i32(w, "s.i32", -2000000000);
    gguf_w_u64(w, "s.u64", UINT64_MAX);
    gguf_w_i64(w, "s.i64", INT64_MIN);
    gguf_w_f32(w, "s.f32", -1.25f);
    gguf_w_f64(w, "s.f64", 1e300);
    gguf_w_bool(w, "s.bool", 1);
    gguf_w_str(w, "s.str", "hello gguf");
    gguf_w_str(w, "s.empty", "");
    emit_writer("valid-scalars", w);
}

static void valid_arrays(void)
{
    gguf_writer *w = gguf_writer_new();
    uint8_t raw[64];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)rnd();
    uint8_t bools[5] = {0, 1, 1, 0, 1};
    static const uint32_t types[] = {
        GGUF_VT_UINT8, GGUF_VT_INT8, GGUF_VT_UINT16, GGUF_VT_INT16,
        GGUF_VT_UINT32, GGUF_VT_INT32, GGUF_VT_FLOAT32, GGUF_VT_UINT64,
        GGUF_VT_INT64, GGUF_VT_FLOAT64,
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(types); i++) {
        char key[32];
        snprintf(key, sizeof key, "a.%s", gguf_vtype_name(types[i]));
        gguf_w_arr(w, key, types[i], raw, 4);
    }
    gguf_w_arr(w, "a.bool", GGUF_VT_BOOL, bools, 5);
    gguf_w_arr(w, "a.empty", GGUF_VT_UINT32, NULL, 0);
    const char *s[] = {"", "a", "bb", "", "\xe4\xb8\xad"};
    gguf_w_arr_str(w, "a.str", s, NULL, 5);
    gguf_w_arr_str(w, "a.str_empty", NULL, NULL, 0);
    emit_writer("valid-arrays", w);
}

static void valid_tensors(const char *name, uint32_t alignment, int version2)
{
    gguf_writer *w = gguf_writer_new();
    if (alignment)
        gguf_writer_set_alignment(w, alignment);
    gguf_w_str(w, "general.architecture", "deepseek4");
    add_tensor(w, "f32", DS4_TYPE_F32, 1, 5, 1, 1);
    add_tensor(w, "f16", DS4_TYPE_F16, 2, 4, 3, 1);
    add_tensor(w, "q8", DS4_TYPE_Q8_0, 2, 32, 2, 1);
    add_tensor(w, "q2k", DS4_TYPE_Q2_K, 1, 256, 1, 1);
    add_tensor(w, "iq2", DS4_TYPE_IQ2_XXS, 3, 256, 1, 1);
    add_tensor(w, "i32", DS4_TYPE_I32, 2, 3, 2, 1);
    add_tensor(w, "bf16", DS4_TYPE_BF16, 1, 3, 1, 1);
    uint8_t *buf;
    uint64_t len;
    char err[512];
    if (gguf_writer_to_mem(w, &buf, &len, err, sizeof err)) {
        fprintf(stderr, "gguf-corpus: %s: %s\n", name, err);
        exit(1);
    }
    if (version2)
        buf[4] = 2;
    emit(name, buf, len);
    free(buf);
    gguf_writer_free(w);
}

/* Metadata shaped like a ds4 model header, with a tiny tokenizer. */
static void valid_ds4_like(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "deepseek4");
    gguf_w_str(w, "general.name", "corpus");
    gguf_w_u32(w, "deepseek4.block_count", 2);
    gguf_w_u32(w, "deepseek4.embedding_length", 256);
    gguf_w_f32(w, "deepseek4.attention.layer_norm_rms_epsilon", 1e-6f);
    uint32_t ratios[2] = {0, 4};
    gguf_w_arr(w, "deepseek4.compress_ratios", GGUF_VT_UINT32, ratios, 2);
    float clamp[2] = {10.0f, 10.0f};
    gguf_w_arr(w, "deepseek4.swiglu_clamp_exp", GGUF_VT_FLOAT32, clamp, 2);
    gguf_w_str(w, "tokenizer.ggml.pre", "joyai-llm");
    const char *toks[] = {"<s>", "</s>", "a", "b", "ab", "\xc4\xa0"};
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 6);
    const char *merges[] = {"a b"};
    gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 1);
    add_tensor(w, "token_embd.weight", DS4_TYPE_F16, 2, 8, 6, 1);
    add_tensor(w, "output_norm.weight", DS4_TYPE_F32, 1, 8, 1, 1);
    add_tensor(w, "blk.0.ffn_gate_tid2eid.weight", DS4_TYPE_I32, 2, 2, 6, 1);
    emit_writer("valid-ds4-like", w);
}

static void valid_small(void)
{
    gguf_writer *w = gguf_writer_new();
    emit_writer("valid-empty", w);
    w = gguf_writer_new();
    gguf_w_u32(w, "general.alignment", 16);
    add_tensor(w, "t", DS4_TYPE_F32, 1, 3, 1, 1);
    add_tensor(w, "u", DS4_TYPE_I8, 4, 2, 1, 1);
    emit_writer("valid-align-kv16", w);
    w = gguf_writer_new();
    add_tensor(w, "q4k", DS4_TYPE_Q4_K, 2, 256, 1, 1);
    add_tensor(w, "q6k", DS4_TYPE_Q6_K, 1, 256, 1, 1);
    add_tensor(w, "q4_0", DS4_TYPE_Q4_0, 1, 32, 1, 1);
    emit_writer("valid-other-types", w);
}

/* ---- invalid files ----------------------------------------------------- */

typedef struct rb {
    uint8_t p[8192];
    size_t len;
} rb;

static void rb_put(rb *b, const void *s, size_t n)
{
    if (b->len + n > sizeof b->p) {
        fprintf(stderr, "gguf-corpus: raw file too big\n");
        exit(1);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void rb_u32(rb *b, uint32_t v) { rb_put(b, &v, 4); }
static void rb_u64(rb *b, uint64_t v) { rb_put(b, &v, 8); }

static void rb_str(rb *b, const char *s)
{
    rb_u64(b, strlen(s));
    rb_put(b, s, strlen(s));
}

static void rb_header(rb *b, uint32_t v, uint64_t n_t, uint64_t n_kv)
{
    b->len = 0;
    rb_put(b, "GGUF", 4);
    rb_u32(b, v);
    rb_u64(b, n_t);
    rb_u64(b, n_kv);
}

static void rb_tensor(rb *b, const char *name, uint32_t n_dims,
                      const uint64_t *ne, uint32_t type, uint64_t off)
{
    rb_str(b, name);
    rb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        rb_u64(b, ne[d]);
    rb_u32(b, type);
    rb_u64(b, off);
}

static void rb_pad_data(rb *b, size_t n)
{
    while (b->len % 32)
        rb_put(b, "", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t x = (uint8_t)rnd();
        rb_put(b, &x, 1);
    }
}

static void rb_emit(const char *name, const rb *b)
{
    emit(name, b->p, b->len);
}

/* Hand-made files hitting one reader check each. */
static void invalid_kvs(void)
{
    rb b;
    rb_header(&b, 3, 0, (uint64_t)1 << 60);
    rb_emit("bad-huge-nkv", &b);
    rb_header(&b, 3, (uint64_t)1 << 60, 0);
    rb_emit("bad-huge-ntensors", &b);
    rb_header(&b, 1, 0, 0);
    rb_emit("bad-version1", &b);
    rb_header(&b, 0x03000000u, 0, 0);
    rb_emit("bad-version-bigendian", &b);
    rb_header(&b, 3, 0, 1);
    rb_u64(&b, (uint64_t)1 << 63);
    rb_put(&b, "key and some more bytes", 23);
    rb_emit("bad-huge-keylen", &b);
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY);
    rb_u32(&b, GGUF_VT_UINT32);
    rb_u64(&b, (uint64_t)1 << 62);
    rb_u32(&b, 1);
    rb_emit("bad-huge-arrcount", &b);
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY);
    rb_u32(&b, GGUF_VT_STRING);
    rb_u64(&b, 3);
    rb_str(&b, "x");
    rb_u64(&b, 1000);
    rb_put(&b, "0123456789abcdef", 16);
    rb_emit("bad-strarr-elem-past-end", &b);
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "a");
    rb_u32(&b, GGUF_VT_ARRAY);
    rb_u32(&b, GGUF_VT_ARRAY);
    rb_u64(&b, 1);
    rb_u32(&b, GGUF_VT_UINT8);
    rb_u64(&b, 1);
    rb_put(&b, "\x01", 1);
    rb_emit("bad-nested-array", &b);
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "v");
    rb_u32(&b, 13);
    rb_u64(&b, 0);
    rb_emit("bad-value-type", &b);
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "b");
    rb_u32(&b, GGUF_VT_BOOL);
    rb_put(&b, "\x02", 1);
    rb_emit("bad-bool2", &b);
    rb_header(&b, 3, 0, 2);
    for (int i = 0; i < 2; i++) {
        rb_str(&b, "dup");
        rb_u32(&b, GGUF_VT_UINT8);
        rb_put(&b, "\x01", 1);
    }
    rb_emit("bad-dup-key", &b);
    static const uint32_t aligns[] = {0, 3, 48};
    for (size_t i = 0; i < DS4_ARRAY_LEN(aligns); i++) {
        char name[64];
        rb_header(&b, 3, 0, 1);
        rb_str(&b, "general.alignment");
        rb_u32(&b, GGUF_VT_UINT32);
        rb_u32(&b, aligns[i]);
        snprintf(name, sizeof name, "bad-alignment-%u", aligns[i]);
        rb_emit(name, &b);
    }
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "general.alignment");
    rb_u32(&b, GGUF_VT_UINT64);
    rb_u64(&b, 32);
    rb_emit("bad-alignment-u64", &b);
}

/* One tensor (plus data) per tensor-table check. */
static void invalid_tensor(const char *name, uint32_t n_dims,
                           const uint64_t *ne, uint32_t type, uint64_t off,
                           size_t data)
{
    rb b;
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", n_dims, ne, type, off);
    rb_pad_data(&b, data);
    rb_emit(name, &b);
}

static void invalid_tensors(void)
{
    uint64_t ne[5] = {8, 1, 1, 1, 1};
    invalid_tensor("bad-tensor-misaligned", 1, ne, DS4_TYPE_F32, 4, 64);
    invalid_tensor("bad-tensor-past-end", 1, ne, DS4_TYPE_F32, 0, 31);
    invalid_tensor("bad-tensor-offset-wrap", 1, ne, DS4_TYPE_F32,
                   UINT64_MAX - 31, 64);
    invalid_tensor("bad-tensor-type99", 1, ne, 99, 0, 64);
    invalid_tensor("bad-tensor-ndims0", 0, ne, DS4_TYPE_F32, 0, 64);
    invalid_tensor("bad-tensor-ndims5", 5, ne, DS4_TYPE_F32, 0, 64);
    uint64_t big[3] = {(uint64_t)1 << 32, (uint64_t)1 << 32, 2};
    invalid_tensor("bad-tensor-ne-overflow", 3, big, DS4_TYPE_F32, 0, 64);
    uint64_t zero[2] = {8, 0};
    invalid_tensor("bad-tensor-zero-dim", 2, zero, DS4_TYPE_F32, 0, 64);
    uint64_t part[1] = {48};
    invalid_tensor("bad-tensor-partial-block", 1, part, DS4_TYPE_Q8_0, 0,
                   128);
    rb b;
    rb_header(&b, 3, 2, 0);
    rb_tensor(&b, "d", 1, ne, DS4_TYPE_F32, 0);
    rb_tensor(&b, "d", 1, ne, DS4_TYPE_F32, 32);
    rb_pad_data(&b, 64);
    rb_emit("bad-dup-tensor", &b);
    rb_header(&b, 3, 2, 0);
    uint64_t ne2[2] = {8, 2};
    rb_tensor(&b, "a", 2, ne2, DS4_TYPE_F32, 0);
    rb_tensor(&b, "b", 1, ne, DS4_TYPE_F32, 32);
    rb_pad_data(&b, 96);
    rb_emit("bad-tensor-overlap", &b);
}

/* Truncations and byte flips of a valid writer file. */
static void invalid_mutants(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_u32(w, "k", 7);
    const char *s[] = {"x", "", "yz"};
    gguf_w_arr_str(w, "tok", s, NULL, 3);
    add_tensor(w, "q8", DS4_TYPE_Q8_0, 2, 32, 2, 1);
    add_tensor(w, "f", DS4_TYPE_F32, 1, 8, 1, 1);
    uint8_t *buf;
    uint64_t len;
    char err[256];
    if (gguf_writer_to_mem(w, &buf, &len, err, sizeof err)) {
        fprintf(stderr, "gguf-corpus: %s\n", err);
        exit(1);
    }
    emit("valid-mutant-base", buf, len);
    static const size_t cuts[] = {7, 23, 40, 90, 120};
    for (size_t i = 0; i < DS4_ARRAY_LEN(cuts); i++) {
        char name[64];
        snprintf(name, sizeof name, "trunc-%03zu", cuts[i]);
        emit(name, buf, cuts[i] < len ? cuts[i] : len - 1);
    }
    emit("trunc-last-byte", buf, len - 1);
    uint8_t *m = ds4_xmalloc(len);
    for (int i = 0; i < 5; i++) {
        char name[64];
        memcpy(m, buf, len);
        size_t at = (size_t)(rnd() % 200);
        m[at] ^= (uint8_t)(1u << (rnd() % 8));
        snprintf(name, sizeof name, "flip-%02d-at%03zu", i, at);
        emit(name, m, len);
    }
    memcpy(m, buf, len);
    memcpy(m, "GGUG", 4);
    emit("bad-magic", m, len);
    free(m);
    free(buf);
    gguf_writer_free(w);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gguf-corpus DIR\n");
        return 2;
    }
    out_dir = argv[1];
    valid_scalars();
    valid_arrays();
    valid_tensors("valid-tensors", 0, 0);
    valid_tensors("valid-tensors-align1", 1, 0);
    valid_tensors("valid-tensors-align8", 8, 0);
    valid_tensors("valid-tensors-align256", 256, 0);
    valid_tensors("valid-tensors-v2", 0, 1);
    valid_ds4_like();
    valid_small();
    invalid_kvs();
    invalid_tensors();
    invalid_mutants();
    free_kept();
    return 0;
}
