/* test_quant.c - common/quant.c against the ggml reference vectors in
 * tests/data/quant-vectors: type geometry, f16/bf16 conversions bit for
 * bit, every dequantized value bit for bit, reference dot products,
 * quantizer reconstruction error no worse than ggml's on the same input,
 * seeded random round trips, determinism, and rejection of bad arguments. */
#include "hash.h"
#include "quant.h"
#include "tests/unit/test.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define ROWS 8
#define COLS 4096
#define NCONV 4154

/* ------------------------------------------------------------- helpers */

/* Load a fixture of exactly `want` bytes (NULL and a failed check if not). */
static void *load(const char *name, size_t want)
{
    char rel[256];
    snprintf(rel, sizeof rel, "quant-vectors/%s", name);
    size_t len = 0;
    void *p = test_read_file(test_data_path(rel), &len);
    CHECKF(p && len == want, "%s: %zu bytes, want %zu", name, len, want);
    if (p && len != want) {
        free(p);
        p = NULL;
    }
    return p;
}

/* Bits of a float. */
static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Float from bits. */
static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* xorshift64 for seeded random test inputs. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Roughly normal value (sum of uniforms: no libm on the value path). */
static float rng_normal(uint64_t *s)
{
    double acc = 0;
    for (int i = 0; i < 4; i++)
        acc += (double)(rng_next(s) >> 11) * 0x1p-53;
    return (float)((acc - 2.0) * 1.7320508075688772);
}

/* Relative RMS error ||y - x|| / ||x|| over n values. */
static double rel_rms(const float *y, const float *x, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)y[i] - (double)x[i];
        num += d * d;
        den += (double)x[i] * (double)x[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Poison a float buffer with a NaN pattern. */
static void poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = bitsf(0x7fbadbadu);
}

/* --------------------------------------------------------------- types */

/* Geometry, names, and overflow-safe sizes. */
static void test_types(void)
{
    static const struct { uint32_t id; const char *name; uint32_t be, bb; int sup; } want[] = {
        {0, "F32", 1, 4, 1},        {1, "F16", 1, 2, 1},       {2, "Q4_0", 32, 18, 0},
        {3, "Q4_1", 32, 20, 0},     {6, "Q5_0", 32, 22, 0},    {7, "Q5_1", 32, 24, 0},
        {8, "Q8_0", 32, 34, 1},     {9, "Q8_1", 32, 36, 0},    {10, "Q2_K", 256, 84, 1},
        {11, "Q3_K", 256, 110, 0},  {12, "Q4_K", 256, 144, 1}, {13, "Q5_K", 256, 176, 0},
        {14, "Q6_K", 256, 210, 0},  {15, "Q8_K", 256, 292, 0}, {16, "IQ2_XXS", 256, 66, 1},
        {17, "IQ2_XS", 256, 74, 0}, {18, "IQ3_XXS", 256, 98, 0}, {19, "IQ1_S", 256, 50, 0},
        {20, "IQ4_NL", 32, 18, 0},  {21, "IQ3_S", 256, 110, 0}, {22, "IQ2_S", 256, 82, 0},
        {23, "IQ4_XS", 256, 136, 0}, {24, "I8", 1, 1, 0},      {25, "I16", 1, 2, 0},
        {26, "I32", 1, 4, 1},       {27, "I64", 1, 8, 0},      {28, "F64", 1, 8, 0},
        {29, "IQ1_M", 256, 56, 0},  {30, "BF16", 1, 2, 1},     {34, "TQ1_0", 256, 54, 0},
        {35, "TQ2_0", 256, 66, 0},  {39, "MXFP4", 32, 17, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const ds4_type_info *t = ds4_type_get(want[i].id);
        CHECKF(t != NULL, "type %u", want[i].id);
        if (!t)
            continue;
        CHECKF(strcmp(t->name, want[i].name) == 0, "type %u name %s", want[i].id, t->name);
        CHECKF(t->block_elems == want[i].be && t->block_bytes == want[i].bb &&
                   t->supported == want[i].sup,
               "type %s geometry %u/%u/%d", t->name, t->block_elems, t->block_bytes,
               t->supported);
        CHECK(ds4_type_from_name(want[i].name) == (int)want[i].id);
        CHECK(ds4_type_nbytes(want[i].id, (uint64_t)want[i].be * 1000) ==
              (uint64_t)want[i].bb * 1000);
    }
    static const uint32_t unknown[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECKF(ds4_type_get(unknown[i]) == NULL, "id %u should be unknown", unknown[i]);
        CHECK(ds4_type_nbytes(unknown[i], 256) == 0);
    }
    CHECK(ds4_type_from_name("iq2_xxs") == DS4_TYPE_IQ2_XXS);
    CHECK(ds4_type_from_name("q4_k") == DS4_TYPE_Q4_K);
    CHECK(ds4_type_from_name("bf16") == DS4_TYPE_BF16);
    CHECK(ds4_type_from_name("Q9_9") == -1);
    CHECK(ds4_type_from_name("") == -1);
    CHECK(ds4_type_from_name(NULL) == -1);
    CHECK(ds4_type_nbytes(DS4_TYPE_Q8_0, 33) == 0);
    CHECK(ds4_type_nbytes(DS4_TYPE_Q2_K, 255) == 0);
    CHECK(ds4_type_nbytes(DS4_TYPE_Q2_K, 0) == 0);
    CHECK(ds4_type_nbytes(DS4_TYPE_Q4_K, 4096) == 2304);
    CHECK(ds4_type_nbytes(DS4_TYPE_IQ2_XXS, 4096) == 1056);
    /* overflow: the element count fits, the byte count does not */
    CHECK(ds4_type_nbytes(DS4_TYPE_F32, UINT64_MAX / 2) == 0);
    CHECK(ds4_type_nbytes(DS4_TYPE_F32, UINT64_MAX / 4) == (UINT64_MAX / 4) * 4);
    CHECK(ds4_type_nbytes(DS4_TYPE_Q8_0, UINT64_MAX / 32 * 32) == 0);
    CHECK(ds4_type_nbytes(DS4_TYPE_F64, (UINT64_MAX / 8) + 1) == 0);
}

/* --------------------------------------------------------- conversions */

/* Every conversion vector, bit for bit, plus exhaustive f16 round trips. */
static void test_conversions(void)
{
    float *in = load("f16.input.f32", NCONV * 4);
    uint16_t *hb = load("f16.bits.u16", NCONV * 2);
    float *hr = load("f16.roundtrip.f32", NCONV * 4);
    uint16_t *bb = load("bf16.bits.u16", NCONV * 2);
    float *br = load("bf16.roundtrip.f32", NCONV * 4);
    if (in && hb && hr && bb && br) {
        int bad_h = 0, bad_hr = 0, bad_b = 0, bad_br = 0;
        for (int i = 0; i < NCONV; i++) {
            uint16_t h = ds4_f32_to_f16(in[i]);
            uint16_t b = ds4_f32_to_bf16(in[i]);
            if (h != hb[i] && bad_h++ < 5)
                fprintf(stderr, "f16 #%d: in %08x got %04x want %04x\n", i,
                        fbits(in[i]), h, hb[i]);
            if (fbits(ds4_f16_to_f32(hb[i])) != fbits(hr[i]) && bad_hr++ < 5)
                fprintf(stderr, "f16->f32 #%d %04x\n", i, hb[i]);
            if (b != bb[i] && bad_b++ < 5)
                fprintf(stderr, "bf16 #%d: in %08x got %04x want %04x\n", i,
                        fbits(in[i]), b, bb[i]);
            if (fbits(ds4_bf16_to_f32(bb[i])) != fbits(br[i]) && bad_br++ < 5)
                fprintf(stderr, "bf16->f32 #%d %04x\n", i, bb[i]);
        }
        CHECKF(bad_h == 0, "%d f16 conversions differ", bad_h);
        CHECKF(bad_hr == 0, "%d f16 round trips differ", bad_hr);
        CHECKF(bad_b == 0, "%d bf16 conversions differ", bad_b);
        CHECKF(bad_br == 0, "%d bf16 round trips differ", bad_br);
    }
    /* the human-readable specials table agrees too */
    char *txt = test_read_file(test_data_path("quant-vectors/conv_specials.txt"), NULL);
    CHECK(txt != NULL);
    int rows = 0;
    for (char *line = txt ? strtok(txt, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        unsigned idx, w, h, hrt, b, brt;
        if (line[0] == '#' ||
            sscanf(line, "%u %x %x %x %x %x", &idx, &w, &h, &hrt, &b, &brt) != 6)
            continue;
        rows++;
        CHECKF(ds4_f32_to_f16(bitsf(w)) == h, "special %u f16", idx);
        CHECKF(fbits(ds4_f16_to_f32((uint16_t)h)) == hrt, "special %u f16 rt", idx);
        CHECKF(ds4_f32_to_bf16(bitsf(w)) == b, "special %u bf16", idx);
        CHECKF(fbits(ds4_bf16_to_f32((uint16_t)b)) == brt, "special %u bf16 rt", idx);
        CHECKF(in == NULL || fbits(in[idx < NCONV ? idx : 0]) == w, "special %u input", idx);
    }
    CHECKF(rows == 58, "%d specials", rows);
    /* every non-NaN f16 survives f16 -> f32 -> f16; NaNs become 0x7E00 */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t back = ds4_f32_to_f16(ds4_f16_to_f32((uint16_t)h));
        int nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        uint16_t want = nan ? (uint16_t)((h & 0x8000) | 0x7e00) : (uint16_t)h;
        bad += back != want;
        bad += ds4_f32_to_bf16(ds4_bf16_to_f32((uint16_t)h)) !=
               (uint16_t)(((h & 0x7fff) > 0x7f80) ? (h | 0x40) : h);
    }
    CHECKF(bad == 0, "%d 16-bit round trips differ", bad);
    free(in), free(hb), free(hr), free(bb), free(br), free(txt);
}

/* The IQ2_XXS tables equal the fixture text files. */
static void test_tables(void)
{
    char *g = test_read_file(test_data_path("quant-vectors/iq2xxs_grid.txt"), NULL);
    char *k = test_read_file(test_data_path("quant-vectors/ksigns_iq2xs.txt"), NULL);
    CHECK(g && k);
    if (!g || !k) {
        free(g), free(k);
        return;
    }
    int n = 0, bad = 0;
    for (char *line = strtok(g, "\n"); line; line = strtok(NULL, "\n"), n++)
        bad += n >= 256 || strtoull(line, NULL, 16) != ds4_iq2xxs_grid[n];
    CHECKF(n == 256 && bad == 0, "grid: %d lines, %d differ", n, bad);
    n = bad = 0;
    for (char *line = strtok(k, "\n"); line; line = strtok(NULL, "\n"), n++)
        bad += n >= 128 || strtoul(line, NULL, 10) != ds4_ksigns_iq2xs[n];
    CHECKF(n == 128 && bad == 0, "ksigns: %d lines, %d differ", n, bad);
    free(g), free(k);
}

/* ------------------------------------------------------------- decoders */

static const struct qtype {
    const char *file;
    uint32_t type;
    const char *digest; /* first 8 bytes of sha256 of our quantized fixture */
} qtypes[] = {
    {"q8_0", DS4_TYPE_Q8_0, "b981d978a7222af5"},
    {"q2_K", DS4_TYPE_Q2_K, "0812296d05d4808a"},
    {"q4_K", DS4_TYPE_Q4_K, "83cf9380ca612f26"},
    {"iq2_xxs", DS4_TYPE_IQ2_XXS, "0ae35d79d0fe9dab"},
};

/* Load <file>.<suffix> of a quant type. */
static void *load_q(const char *file, const char *suffix, size_t want)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", file, suffix);
    return load(name, want);
}

/* Count values whose bits differ. */
static int count_bit_diffs(const float *a, const float *b, size_t n, const char *what)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fbits(a[i]) != fbits(b[i]) && bad++ < 5)
            fprintf(stderr, "%s[%zu]: got %08x (%g) want %08x (%g)\n", what, i,
                    fbits(a[i]), a[i], fbits(b[i]), b[i]);
    return bad;
}

/* Every dequantized value and every dot product of one type. */
static void test_decode_type(const struct qtype *q)
{
    uint64_t row_bytes = ds4_type_nbytes(q->type, COLS);
    uint8_t *blocks = load_q(q->file, "blocks.bin", row_bytes * ROWS);
    float *want = load_q(q->file, "dequant.f32", ROWS * COLS * 4);
    float *act = load_q(q->file, "act.f32", COLS * 4);
    double *d64 = load_q(q->file, "dot.f64", ROWS * 8);
    float *d32 = load_q(q->file, "dot.f32", ROWS * 4);
    float *got = malloc(ROWS * COLS * 4);
    if (blocks && want && act && d64 && d32) {
        poison(got, ROWS * COLS);
        CHECK(ds4_dequantize(q->type, blocks, got, ROWS * COLS) == 0);
        int bad = count_bit_diffs(got, want, ROWS * COLS, q->file);
        CHECKF(bad == 0, "%s: %d of %d dequantized values differ", q->file, bad,
               ROWS * COLS);
        poison(got, ROWS * COLS);
        for (int r = 0; r < ROWS; r++)
            CHECK(ds4_dequantize(q->type, blocks + r * row_bytes, got + r * COLS, COLS) == 0);
        CHECKF(count_bit_diffs(got, want, ROWS * COLS, q->file) == 0, "%s row by row",
               q->file);
        for (int r = 0; r < ROWS; r++) {
            double dot = NAN;
            CHECK(ds4_dot_ref(q->type, blocks + r * row_bytes, act, COLS, &dot) == 0);
            /* same products, same order, same double sums: exactly equal */
            CHECKF(dot == d64[r], "%s row %d dot %.17g want %.17g", q->file, r, dot, d64[r]);
            CHECKF(fbits((float)dot) == fbits(d32[r]), "%s row %d dot f32 %.9g want %.9g",
                   q->file, r, (float)dot, d32[r]);
        }
    }
    free(blocks), free(want), free(act), free(d64), free(d32), free(got);
}

/* Scalar types decode as their conversion; I32 converts to float. */
static void test_decode_scalar(void)
{
    uint16_t *hb = load("f16.bits.u16", NCONV * 2);
    float *hr = load("f16.roundtrip.f32", NCONV * 4);
    uint16_t *bb = load("bf16.bits.u16", NCONV * 2);
    float *br = load("bf16.roundtrip.f32", NCONV * 4);
    float *got = malloc(NCONV * 4);
    if (hb && hr && bb && br) {
        poison(got, NCONV);
        CHECK(ds4_dequantize(DS4_TYPE_F16, hb, got, NCONV) == 0);
        CHECK(count_bit_diffs(got, hr, NCONV, "F16") == 0);
        poison(got, NCONV);
        CHECK(ds4_dequantize(DS4_TYPE_BF16, bb, got, NCONV) == 0);
        CHECK(count_bit_diffs(got, br, NCONV, "BF16") == 0);
        poison(got, NCONV);
        CHECK(ds4_dequantize(DS4_TYPE_F32, hr, got, NCONV) == 0);
        CHECK(memcmp(got, hr, NCONV * 4) == 0);
    }
    int32_t iv[6] = {0, 1, -1, 16777217, INT32_MIN, INT32_MAX};
    uint8_t raw[24];
    for (int i = 0; i < 6; i++) /* little-endian on the wire */
        for (int j = 0; j < 4; j++)
            raw[4 * i + j] = (uint8_t)((uint32_t)iv[i] >> (8 * j));
    float f[6];
    poison(f, 6);
    CHECK(ds4_dequantize(DS4_TYPE_I32, raw, f, 6) == 0);
    for (int i = 0; i < 6; i++)
        CHECKF(f[i] == (float)iv[i], "I32 %d -> %g", iv[i], f[i]);
    double dot = 0;
    float x[6] = {1, 2, 3, 0, 0, 0};
    CHECK(ds4_dot_ref(DS4_TYPE_I32, raw, x, 6, &dot) == 0 && dot == -1.0);
    free(hb), free(hr), free(bb), free(br), free(got);
}

/* ----------------------------------------------------------- quantizers */

/* Our quantizer's error on the fixture matrix vs ggml's (from dequant.f32):
 * no worse per matrix; prints both for the record. */
static void test_quant_vs_ggml(const struct qtype *q, double slack)
{
    float *in = load_q(q->file, "input.f32", ROWS * COLS * 4);
    float *ref = load_q(q->file, "dequant.f32", ROWS * COLS * 4);
    uint64_t nb = ds4_type_nbytes(q->type, ROWS * COLS);
    uint8_t *blk = malloc(nb), *blk2 = malloc(nb);
    float *got = malloc(ROWS * COLS * 4);
    if (in && ref) {
        memset(blk, 0xa5, nb);
        memset(blk2, 0x5a, nb);
        poison(got, ROWS * COLS);
        CHECK(ds4_quantize(q->type, in, blk, ROWS * COLS) == 0);
        CHECK(ds4_quantize(q->type, in, blk2, ROWS * COLS) == 0);
        CHECKF(memcmp(blk, blk2, nb) == 0, "%s: quantizing twice differs", q->file);
        CHECK(ds4_dequantize(q->type, blk, got, ROWS * COLS) == 0);
        double ours = rel_rms(got, in, ROWS * COLS);
        double ggml = rel_rms(ref, in, ROWS * COLS);
        printf("  %-8s rel RMS error: ours %.6f  ggml %.6f  (matrix)\n", q->file, ours, ggml);
        printf("  %-8s per row ours/ggml:", q->file);
        int worse = 0;
        for (int r = 0; r < ROWS; r++) {
            double o = rel_rms(got + r * COLS, in + r * COLS, COLS);
            double g = rel_rms(ref + r * COLS, in + r * COLS, COLS);
            printf(" %.4f/%.4f", o, g);
            worse += o > g * slack;
        }
        printf("\n");
        /* stronger than the per-matrix requirement: no row is worse either */
        CHECKF(worse == 0, "%s: %d rows worse than ggml", q->file, worse);
        /* pinned digest of our bytes: the quantizers must give the same bytes
         * in every build (-O1 ASan, -O2) and on every machine */
        uint8_t dg[32];
        char hex[65];
        ds4_sha256(blk, nb, dg);
        ds4_hex(dg, 8, hex);
        printf("  %-8s quantized bytes sha256 %s...\n", q->file, hex);
        CHECKF(q->digest == NULL || strcmp(hex, q->digest) == 0,
               "%s: quantized bytes changed (sha256 %s, pinned %s): if the quantizer was "
               "improved on purpose, update the pinned digest",
               q->file, hex, q->digest);
        CHECKF(ours <= ggml * slack, "%s: error %.6f worse than ggml %.6f", q->file, ours,
               ggml);
        /* the rows that are plain normal data, where averages are meaningful */
        double o4 = rel_rms(got, in, 4 * COLS), g4 = rel_rms(ref, in, 4 * COLS);
        CHECKF(o4 <= g4 * slack, "%s: rows 0-3 error %.6f worse than ggml %.6f", q->file,
               o4, g4);
    }
    free(in), free(ref), free(blk), free(blk2), free(got);
}

/* Seeded random round trips: bounded error, identical bytes twice, and
 * the exact-format quantizers are exact where they must be. */
static void test_roundtrip_random(void)
{
    static const struct { uint32_t type; double bound; } t[] = {
        {DS4_TYPE_F32, 0.0},    {DS4_TYPE_F16, 5e-4},   {DS4_TYPE_BF16, 4e-3},
        {DS4_TYPE_Q8_0, 8e-3},  {DS4_TYPE_Q4_K, 0.10},  {DS4_TYPE_Q2_K, 0.33},
        {DS4_TYPE_IQ2_XXS, 0.37},
    };
    const size_t n = 16 * 256;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) /* scale varies per 256-block */
        x[i] = rng_normal(&s) * (float)(1u << (i / 256 % 8)) * 0.01f;
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        uint64_t nb = ds4_type_nbytes(t[k].type, n);
        uint8_t *a = malloc(nb), *b = malloc(nb);
        memset(a, 0x11, nb);
        memset(b, 0xee, nb);
        poison(y, n);
        CHECK(ds4_quantize(t[k].type, x, a, n) == 0);
        CHECK(ds4_quantize(t[k].type, x, b, n) == 0);
        CHECKF(memcmp(a, b, nb) == 0, "%s not deterministic", ds4_type_get(t[k].type)->name);
        CHECK(ds4_dequantize(t[k].type, a, y, n) == 0);
        double e = rel_rms(y, x, n);
        printf("  random round trip %-8s rel RMS %.6f (bound %.3g)\n",
               ds4_type_get(t[k].type)->name, e, t[k].bound);
        CHECKF(e <= t[k].bound, "%s round trip error %g > %g", ds4_type_get(t[k].type)->name,
               e, t[k].bound);
        free(a), free(b);
    }
    free(x), free(y);
}

/* Degenerate blocks: zeros, constants, single spikes, tiny values. */
static void test_quant_edge(void)
{
    static const uint32_t types[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K,
                                     DS4_TYPE_IQ2_XXS};
    float x[256], y[256];
    uint8_t buf[512];
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const char *nm = ds4_type_get(types[k])->name;
        memset(x, 0, sizeof x);
        poison(y, 256);
        CHECK(ds4_quantize(types[k], x, buf, 256) == 0);
        CHECK(ds4_dequantize(types[k], buf, y, 256) == 0);
        int bad = 0;
        for (int i = 0; i < 256; i++)
            bad += y[i] != 0;
        CHECKF(bad == 0, "%s: zeros decode to %d non-zeros", nm, bad);
        for (int i = 0; i < 256; i++)
            x[i] = i == 77 ? 1000.0f : (i % 3 ? 1e-30f : -2.5f);
        poison(y, 256);
        CHECK(ds4_quantize(types[k], x, buf, 256) == 0);
        CHECK(ds4_dequantize(types[k], buf, y, 256) == 0);
        bad = 0;
        for (int i = 0; i < 256; i++)
            bad += !isfinite(y[i]);
        CHECKF(bad == 0, "%s: %d non-finite values", nm, bad);
        CHECKF(rel_rms(y, x, 256) < 1.0, "%s: spike block error %g", nm, rel_rms(y, x, 256));
        /* huge finite values: scales saturate at the largest f16, output
         * stays finite */
        for (int i = 0; i < 256; i++)
            x[i] = (i % 2 ? 3e38f : -1e37f) * (float)(i % 7) / 7.0f;
        poison(y, 256);
        CHECK(ds4_quantize(types[k], x, buf, 256) == 0);
        CHECK(ds4_dequantize(types[k], buf, y, 256) == 0);
        bad = 0;
        for (int i = 0; i < 256; i++)
            bad += !isfinite(y[i]);
        CHECKF(bad == 0, "%s: huge input gives %d non-finite values", nm, bad);
        /* non-finite input: no crash or undefined behaviour (UBSan), and
         * still deterministic */
        for (int i = 0; i < 256; i++)
            x[i] = i % 5 == 0 ? NAN : i % 5 == 1 ? INFINITY : i % 5 == 2 ? -INFINITY : 1.0f;
        uint8_t buf2[512];
        CHECK(ds4_quantize(types[k], x, buf, 256) == 0);
        CHECK(ds4_quantize(types[k], x, buf2, 256) == 0);
        CHECK(memcmp(buf, buf2, ds4_type_nbytes(types[k], 256)) == 0);
        CHECK(ds4_dequantize(types[k], buf, y, 256) == 0);
    }
}

/* Unsupported types, bad element counts, NULL pointers are rejected. */
static void test_bad_args(void)
{
    float x[512] = {0}, y[512];
    uint8_t buf[2048] = {0};
    double d;
    CHECK(ds4_dequantize(DS4_TYPE_Q8_0, buf, y, 33) == -1);
    CHECK(ds4_dequantize(DS4_TYPE_Q2_K, buf, y, 300) == -1);
    CHECK(ds4_dequantize(DS4_TYPE_Q6_K, buf, y, 256) == -1);
    CHECK(ds4_dequantize(DS4_TYPE_Q4_0, buf, y, 32) == -1);
    CHECK(ds4_dequantize(31, buf, y, 32) == -1);
    CHECK(ds4_dequantize(UINT32_MAX, buf, y, 32) == -1);
    CHECK(ds4_dequantize(DS4_TYPE_F32, NULL, y, 4) == -1);
    CHECK(ds4_quantize(DS4_TYPE_Q4_K, x, buf, 100) == -1);
    CHECK(ds4_quantize(DS4_TYPE_IQ2_XXS, x, buf, 257) == -1);
    CHECK(ds4_quantize(DS4_TYPE_Q5_K, x, buf, 256) == -1);
    CHECK(ds4_quantize(DS4_TYPE_I32, x, buf, 4) == -1);
    CHECK(ds4_quantize(999, x, buf, 4) == -1);
    CHECK(ds4_dot_ref(DS4_TYPE_Q8_0, buf, x, 31, &d) == -1);
    CHECK(ds4_dot_ref(DS4_TYPE_Q3_K, buf, x, 256, &d) == -1);
    CHECK(ds4_dot_ref(DS4_TYPE_F32, buf, x, 4, NULL) == -1);
    CHECK(ds4_dequantize(DS4_TYPE_Q8_0, buf, y, 0) == 0);
}

int main(void)
{
    test_types();
    test_conversions();
    test_tables();
    test_decode_scalar();
    for (size_t i = 0; i < sizeof qtypes / sizeof qtypes[0]; i++)
        test_decode_type(&qtypes[i]);
    test_bad_args();
    for (size_t i = 0; i < sizeof qtypes / sizeof qtypes[0]; i++)
        test_quant_vs_ggml(&qtypes[i], 1.0);
    test_roundtrip_random();
    test_quant_edge();
    return test_main_end("test_quant");
}
