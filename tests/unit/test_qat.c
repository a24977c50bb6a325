/* test_qat.c - the QAT simulations of common/qat.c against torch fixtures
 * (tests/data/qat/, made by tests/golden/qat/make_torch_qat.py with torch
 * 2.11 on the GPU machine) and against properties that need no oracle:
 * every E4M3/E2M1 code, midpoint ties, Hadamard structure and inverse. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hash.h"
#include "qat.h"
#include "test.h"

#define POISON_BITS 0x7FC0DEADu

/* A named float array inside the fixture blob. */
typedef struct {
    const float *v;
    size_t n;
} section;

static unsigned char *blob;
static size_t blob_len;

static uint32_t bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* Same float, or both NaN (torch's NaN payload is not part of the contract). */
static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return bits(a) == bits(b);
}

/* Find a section by name; n = 0 and v = NULL when absent or malformed. */
static section find_section(const char *name)
{
    section s = {NULL, 0};
    if (!blob || blob_len < 12 || memcmp(blob, "DS4QAT1\0", 8))
        return s;
    uint32_t count;
    memcpy(&count, blob + 8, 4);
    size_t off = 12;
    for (uint32_t i = 0; i < count; i++) {
        if (blob_len - off < 36)
            return s;
        uint32_t n;
        memcpy(&n, blob + off + 32, 4);
        if ((blob_len - off - 36) / 4 < n)
            return s;
        if (!strncmp((const char *)blob + off, name, 32)) {
            s.v = (const float *)(blob + off + 36);
            s.n = n;
            return s;
        }
        off += 36 + (size_t)n * 4;
    }
    return s;
}

/* A malloc'd copy of a section's values (the blob may be unaligned). */
static float *copy_section(section s)
{
    float *p = malloc((s.n ? s.n : 1) * sizeof *p);
    if (s.n)
        memcpy(p, s.v, s.n * sizeof *p);
    return p;
}

/* Fixture hash recorded in the JSON header matches the blob. */
static void test_fixture_hash(void)
{
    char *json = test_read_file(test_data_path("qat/qat_fixtures.json"), NULL);
    CHECK(json != NULL);
    if (!json || !blob)
        return;
    uint8_t h[32];
    char hex[65];
    ds4_sha256(blob, blob_len, h);
    ds4_hex(h, 32, hex);
    CHECKF(strstr(json, hex) != NULL, "blob sha256 %s not in json", hex);
    CHECK(strstr(json, "\"torch\": \"2.") != NULL);
    free(json);
}

/* Elementwise E4M3FN rounding equals torch's float8_e4m3fn cast. */
static void test_fp8_elementwise_vs_torch(void)
{
    section in = find_section("fp8_in"), out = find_section("fp8_out_cpu");
    section cu = find_section("fp8_out_cuda");
    CHECK(in.n > 2000 && in.n == out.n);
    if (!in.n || in.n != out.n)
        return;
    float *x = copy_section(in), *y = copy_section(out);
    int bad = 0, nans = 0;
    for (size_t i = 0; i < in.n; i++) {
        float r = ds4_fp8_e4m3_round(x[i]);
        nans += isnan(r);
        if (!same_float(r, y[i]) && bad++ < 5)
            fprintf(stderr, "fp8 cast %.9g (0x%08x): ours %.9g torch %.9g\n",
                    x[i], bits(x[i]), r, y[i]);
    }
    CHECKF(bad == 0, "%d of %zu fp8 casts differ from torch", bad, in.n);
    CHECK(nans > 10); /* the out-of-range NaN cases were exercised */
    if (cu.n == in.n) {
        float *c = copy_section(cu);
        int cbad = 0;
        for (size_t i = 0; i < in.n; i++)
            cbad += !same_float(c[i], y[i]);
        CHECKF(cbad == 0, "torch cuda and cpu casts differ at %d", cbad);
        free(c);
    }
    free(x);
    free(y);
}

/* All 256 codes round-trip; midpoints go to the even code; neighbours of
 * midpoints go to the nearer code. No oracle needed. */
static void test_fp8_codes_exhaustive(void)
{
    for (int c = 0; c < 256; c++) {
        float v = ds4_fp8_e4m3_decode((uint8_t)c);
        if ((c & 0x7F) == 0x7F) {
            CHECK(isnan(v));
            continue;
        }
        CHECKF(ds4_fp8_e4m3_encode(v) == c, "code 0x%02x value %g", c, v);
        CHECK(bits(ds4_fp8_e4m3_round(v)) == bits(v));
    }
    CHECK(ds4_fp8_e4m3_decode(0x7E) == 448.0f);
    CHECK(ds4_fp8_e4m3_decode(0x01) == 0x1p-9f);
    CHECK(ds4_fp8_e4m3_decode(0x08) == 0x1p-6f);
    for (int c = 0; c < 0x7E; c++) {
        float lo = ds4_fp8_e4m3_decode((uint8_t)c);
        float hi = ds4_fp8_e4m3_decode((uint8_t)(c + 1));
        float mid = (lo + hi) / 2;
        int even = (c & 1) ? c + 1 : c;
        CHECKF(ds4_fp8_e4m3_encode(mid) == even, "mid of 0x%02x", c);
        CHECKF(ds4_fp8_e4m3_encode(-mid) == (0x80 | even), "-mid of 0x%02x", c);
        CHECK(ds4_fp8_e4m3_encode(nextafterf(mid, 0.0f)) == c);
        CHECK(ds4_fp8_e4m3_encode(nextafterf(mid, 1e9f)) == c + 1);
    }
    /* torch semantics: no saturation above the 448/480 midpoint */
    CHECK(ds4_fp8_e4m3_round(464.0f) == 448.0f);
    CHECK(isnan(ds4_fp8_e4m3_round(nextafterf(464.0f, 1e9f))));
    CHECK(isnan(ds4_fp8_e4m3_round(INFINITY)));
    CHECK(isnan(ds4_fp8_e4m3_round(-1e30f)));
    CHECK(ds4_fp8_e4m3_encode(-0.0f) == 0x80);
    CHECK(ds4_fp8_e4m3_round(0x1p-10f) == 0.0f);
    CHECK(ds4_fp8_e4m3_round(0x1p-149f) == 0.0f);
}

/* Run a block simulation on a poisoned-then-filled copy; compare bits. */
static void check_block(const char *in_name, const char *out_name,
                        int (*fn)(float *, size_t, size_t), size_t block)
{
    section in = find_section(in_name), out = find_section(out_name);
    CHECKF(in.n > 0 && in.n == out.n && in.n % block == 0, "%s", in_name);
    if (!in.n || in.n != out.n || in.n % block)
        return;
    float *x = malloc((in.n + 1) * sizeof *x);
    for (size_t i = 0; i <= in.n; i++)
        x[i] = from_bits(POISON_BITS);
    memcpy(x, in.v, in.n * sizeof *x);
    float *y = copy_section(out);
    CHECK(fn(x, in.n, block) == 0);
    float *orig = copy_section(in);
    int bad = 0;
    for (size_t i = 0; i < in.n; i++)
        if (!same_float(x[i], y[i]) && bad++ < 5)
            fprintf(stderr, "%s[%zu] in %.9g: ours %.9g torch %.9g\n", in_name,
                    i, orig[i], x[i], y[i]);
    free(orig);
    CHECKF(bad == 0, "%s: %d of %zu differ", in_name, bad, in.n);
    CHECK(bits(x[in.n]) == POISON_BITS); /* no write past the end */
    free(x);
    free(y);
}

/* Block FP8 and FP4 simulations equal the torch versions of the official
 * kernels, bit for bit. */
static void test_block_sims_vs_torch(void)
{
    check_block("fp8blk64_in", "fp8blk64_out", ds4_fp8_block_roundtrip, 64);
    check_block("fp4blk32_in", "fp4blk32_out", ds4_fp4_block_roundtrip, 32);
}

/* Block-level facts: power-of-two scales, zero block, floor, bad sizes. */
static void test_block_properties(void)
{
    float z[64];
    memset(z, 0, sizeof z);
    CHECK(ds4_fp8_block_roundtrip(z, 64, 64) == 0);
    for (int i = 0; i < 64; i++)
        CHECK(bits(z[i]) == 0);
    /* amax 448*2^k gives scale 2^k exactly: the max element survives */
    uint32_t seed = 12345;
    for (int k = -8; k <= 8; k++) {
        float x[64];
        for (int i = 0; i < 64; i++) {
            seed = seed * 1664525u + 1013904223u;
            x[i] = ldexpf(((float)(seed >> 8) / 16777216.0f - 0.5f) * 800.0f, k);
        }
        x[5] = ldexpf(-448.0f, k);
        CHECK(ds4_fp8_block_roundtrip(x, 64, 64) == 0);
        CHECK(x[5] == ldexpf(-448.0f, k));
        for (int i = 0; i < 64; i++) {
            float q = ldexpf(x[i], -k);
            CHECK(ds4_fp8_e4m3_round(q) == q);
        }
    }
    /* amax below the 1e-4 floor: scale stays 2^-22 (1e-4/448 -> 2^-22),
     * so tiny elements land in E4M3's subnormal range; without the floor
     * the scale would be 2^-28 and they would keep more precision */
    float t[64];
    for (int i = 0; i < 64; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 2e-6f;
    }
    t[0] = 1e-6f;
    t[1] = 1e-9f;
    t[2] = -3.3e-9f;
    float t0[64];
    memcpy(t0, t, sizeof t);
    CHECK(ds4_fp8_block_roundtrip(t, 64, 64) == 0);
    for (int i = 0; i < 64; i++)
        CHECKF(bits(t[i]) == bits(ldexpf(ds4_fp8_e4m3_round(ldexpf(t0[i], 22)), -22)),
               "floor block [%d]", i);
    CHECK(t[1] == 0x1p-8f * 0x1p-22f);
    float bad[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK(ds4_fp8_block_roundtrip(bad, 10, 64) == -1);
    CHECK(ds4_fp4_block_roundtrip(bad, 10, 32) == -1);
    CHECK(ds4_fp4_block_roundtrip(bad, 10, 0) == -1);
    CHECK(bad[0] == 1 && bad[9] == 10);
}

/* E2M1 table, every code, every midpoint tie (to even), and torch. */
static void test_e2m1(void)
{
    static const float tab[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int c = 0; c < 16; c++) {
        float v = ds4_fp4_e2m1_decode((uint8_t)c);
        float want = (c & 8) ? -tab[c & 7] : tab[c & 7];
        CHECK(bits(v) == bits(want));
        CHECKF(ds4_fp4_e2m1_encode(v) == c, "e2m1 code %d", c);
    }
    for (int i = 0; i < 7; i++) {
        float mid = (tab[i] + tab[i + 1]) / 2;
        int even = (i & 1) ? i + 1 : i;
        CHECKF(ds4_fp4_e2m1_encode(mid) == even, "e2m1 mid %g", mid);
        CHECK(ds4_fp4_e2m1_encode(-mid) == (8 | even));
        CHECK(ds4_fp4_e2m1_encode(nextafterf(mid, 0.0f)) == i);
        CHECK(ds4_fp4_e2m1_encode(nextafterf(mid, 100.0f)) == i + 1);
    }
    CHECK(ds4_fp4_e2m1_round(100.0f) == 6.0f);
    CHECK(bits(ds4_fp4_e2m1_round(-0.2f)) == bits(-0.0f));
    CHECK(isnan(ds4_fp4_e2m1_round(NAN)));
    section in = find_section("fp4_in"), out = find_section("fp4_out");
    CHECK(in.n > 500 && in.n == out.n);
    if (in.n && in.n == out.n) {
        float *x = copy_section(in), *y = copy_section(out);
        int bad = 0;
        for (size_t i = 0; i < in.n; i++)
            if (!same_float(ds4_fp4_e2m1_round(x[i]), y[i]) && bad++ < 5)
                fprintf(stderr, "e2m1 %.9g: ours %.9g torch %.9g\n", x[i],
                        ds4_fp4_e2m1_round(x[i]), y[i]);
        CHECKF(bad == 0, "%d e2m1 roundings differ", bad);
        free(x);
        free(y);
    }
}

/* Hadamard: Sylvester order exactly, torch within float rounding, and its
 * own inverse. */
static void test_hadamard(void)
{
    const float scale = (float)0.08838834764831844055;
    for (int k = 0; k < 128; k++) {
        float e[128] = {0};
        e[k] = 1.0f;
        ds4_hadamard128(e);
        int bad = 0;
        for (int i = 0; i < 128; i++) {
            float want = (__builtin_popcount((unsigned)(i & k)) & 1) ? -scale : scale;
            bad += bits(e[i]) != bits(want);
        }
        CHECKF(bad == 0, "hadamard column %d", k);
    }
    section in = find_section("had_in"), out = find_section("had_out");
    CHECK(in.n >= 128 && in.n % 128 == 0 && in.n == out.n);
    if (!in.n || in.n % 128 || in.n != out.n)
        return;
    float *x = copy_section(in), *y = copy_section(out);
    double worst_rel = 0, worst_inv = 0;
    int exact = 0;
    for (size_t r = 0; r < in.n / 128; r++) {
        float row[128], orig[128];
        memcpy(row, x + r * 128, sizeof row);
        memcpy(orig, row, sizeof row);
        ds4_hadamard128(row);
        double norm = 0, onorm = 0;
        for (int i = 0; i < 128; i++) {
            norm = fmax(norm, fabs(y[r * 128 + i]));
            onorm = fmax(onorm, fabs(orig[i]));
        }
        for (int i = 0; i < 128; i++) {
            worst_rel = fmax(worst_rel, fabs(row[i] - y[r * 128 + i]) / norm);
            exact += bits(row[i]) == bits(y[r * 128 + i]);
        }
        ds4_hadamard128(row);
        for (int i = 0; i < 128; i++)
            worst_inv = fmax(worst_inv, fabs(row[i] - orig[i]) / onorm);
    }
    /* torch's reference is an exact float64 matmul rounded once; the
     * butterflies round at each of 7 stages, so the last bits may differ */
    CHECKF(worst_rel <= 2e-6, "hadamard vs torch rel err %g", worst_rel);
    CHECKF(worst_inv <= 1e-6, "hadamard inverse rel err %g", worst_inv);
    printf("     hadamard vs torch: max rel err %.3g, %d of %zu bit-exact;"
           " H(H(x)) max rel err %.3g\n", worst_rel, exact, in.n, worst_inv);
    free(x);
    free(y);
}

/* The indexer row and KV row helpers compose the pieces as documented. */
static void test_row_helpers(void)
{
    uint32_t seed = 777;
    float a[512], b[512], c[512];
    for (int i = 0; i < 512; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 7.0f;
    }
    memcpy(b, a, sizeof a);
    memcpy(c, a, sizeof a);
    CHECK(ds4_kv_qat_row(b, 512, 448, 0) == 0);
    ds4_fp8_block_roundtrip(c, 448, 64);
    CHECK(memcmp(b, c, sizeof b) == 0);
    CHECK(memcmp(b + 448, a + 448, 64 * sizeof(float)) == 0);
    memcpy(b, a, sizeof a);
    CHECK(ds4_kv_qat_row(b, 512, 448, 1) == 0);
    for (int i = 0; i < 512; i++)
        CHECK(bits(b[i]) == bits(ds4_f16_round(c[i])));
    CHECK(ds4_kv_qat_row(b, 512, 440, 1) == -1);
    CHECK(ds4_kv_qat_row(b, 64, 128, 1) == -1);

    memcpy(b, a, 128 * sizeof(float));
    memcpy(c, a, 128 * sizeof(float));
    ds4_indexer_qat_row(b);
    ds4_hadamard128(c);
    ds4_fp4_block_roundtrip(c, 128, 32);
    CHECK(memcmp(b, c, 128 * sizeof(float)) == 0);
}

/* F16 rounding: known values, ties to even, overflow, subnormals. */
static void test_f16_round(void)
{
    CHECK(ds4_f16_round(1.0f) == 1.0f);
    CHECK(ds4_f16_round(65504.0f) == 65504.0f);
    CHECK(isinf(ds4_f16_round(65520.0f)));
    CHECK(ds4_f16_round(1.0f + 0x1p-11f) == 1.0f);
    CHECK(ds4_f16_round(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
    CHECK(ds4_f16_round(0x1p-24f) == 0x1p-24f);
    CHECK(ds4_f16_round(0x1p-25f) == 0.0f);
    CHECK(bits(ds4_f16_round(-0.0f)) == bits(-0.0f));
    uint32_t seed = 99;
    for (int i = 0; i < 1000; i++) {
        seed = seed * 1664525u + 1013904223u;
        float x = ldexpf((float)(seed >> 8) / 16777216.0f + 0.5f, (int)(seed % 20) - 10);
        float r = ds4_f16_round(x);
        CHECK(fabsf(r - x) <= ldexpf(fabsf(x), -11));
        CHECK(ds4_f16_round(r) == r);
    }
}

int main(void)
{
    blob = test_read_file(test_data_path("qat/qat_fixtures.bin"), &blob_len);
    CHECK(blob != NULL);
    test_fixture_hash();
    test_fp8_elementwise_vs_torch();
    test_fp8_codes_exhaustive();
    test_block_sims_vs_torch();
    test_block_properties();
    test_e2m1();
    test_hadamard();
    test_row_helpers();
    test_f16_round();
    free(blob);
    return test_main_end("qat");
}
