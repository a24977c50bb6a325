/* qat.c - plain-C reference of DeepSeek V4's QAT simulations (FP8 E4M3FN
 * KV round trip, Hadamard-128 + FP4 E2M1 indexer round trip, F16 rounding
 * of KV rows). See qat.h for the exact formulas; tests/unit/test_qat.c
 * checks them bit for bit against torch fixtures. */
#include "qat.h"

#include <math.h>
#include <string.h>

#include "quant.h"

/* Bits of a float (memcpy: no aliasing games). */
static uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* Float with the given bits. */
static float bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* 2^ceil(log2(p)) read off p's bits, as the official kernel does
 * (exponent, plus one if any mantissa bit is set) - not log2f/ceilf, whose
 * libm rounding could differ at exact powers of two. p is positive and
 * normal here (callers apply an amax floor); out of range saturates. */
static float pow2_ceil_scale(float p)
{
    uint32_t b = f32_bits(p);
    int e = (int)((b >> 23) & 0xFF);
    int k = e - 127 + ((b & 0x7FFFFF) != 0);
    if (k + 127 >= 255)
        return INFINITY;
    if (k + 127 <= 0)
        return bits_f32(UINT32_C(1) << 23); /* 2^-126: never reached */
    return bits_f32((uint32_t)(k + 127) << 23);
}

/* Largest |x| over n floats, NaNs ignored (the kernel's max semantics). */
static float block_amax(const float *x, size_t n)
{
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax)
            amax = a;
    }
    return amax;
}

/* Clamp v to [-lim, lim]; NaN stays NaN (as torch.clamp). */
static float clampf_nan(float v, float lim)
{
    if (v > lim)
        return lim;
    if (v < -lim)
        return -lim;
    return v;
}

uint8_t ds4_fp8_e4m3_encode(float f)
{
    uint8_t sign = (uint8_t)((f32_bits(f) >> 24) & 0x80);
    float a = fabsf(f);
    /* 464 is the tie between 448 and the (NaN) code 0x7F: it rounds to the
     * even 448; anything larger, inf and NaN map to NaN like torch's cast. */
    if (!(a <= 464.0f))
        return sign | 0x7F;
    if (a < 0x1p-6f) {
        /* subnormal range: multiples of 2^-9, ties to even via rintf */
        return sign | (uint8_t)rintf(a * 512.0f);
    }
    int e = (int)((f32_bits(a) >> 23) & 0xFF) - 127;
    int q = (int)rintf(ldexpf(a, 3 - e)); /* 8..16, exact scaling */
    if (q == 16) {
        q = 8;
        e++;
    }
    int code = ((e + 7) << 3) | (q - 8);
    if (code > 0x7E)
        return sign | 0x7F;
    return sign | (uint8_t)code;
}

float ds4_fp8_e4m3_decode(uint8_t code)
{
    int e = (code >> 3) & 0xF;
    int m = code & 7;
    float v;
    if ((code & 0x7F) == 0x7F)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9);
    else
        v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return (code & 0x80) ? -v : v;
}

float ds4_fp8_e4m3_round(float f)
{
    return ds4_fp8_e4m3_decode(ds4_fp8_e4m3_encode(f));
}

int ds4_fp8_block_roundtrip(float *x, size_t n, size_t block)
{
    if (block == 0 || n % block)
        return -1;
    /* float(1/448) as the kernel's float32 constant, not 1/448 in double */
    const float inv = (float)(1.0 / 448.0);
    for (size_t b = 0; b < n; b += block) {
        float amax = fmaxf(block_amax(x + b, block), DS4_FP8_AMAX_FLOOR);
        float s = pow2_ceil_scale(amax * inv);
        for (size_t i = b; i < b + block; i++) {
            float y = clampf_nan(x[i] / s, DS4_FP8_E4M3_MAX);
            x[i] = ds4_fp8_e4m3_round(y) * s;
        }
    }
    return 0;
}

static const float e2m1_mag[8] = {0.0f, 0.5f, 1.0f, 1.5f,
                                  2.0f, 3.0f, 4.0f, 6.0f};

uint8_t ds4_fp4_e2m1_encode(float f)
{
    if (isnan(f))
        return 0;
    uint8_t sign = (f32_bits(f) >> 28) & 0x8;
    float a = fabsf(f);
    /* midpoints; "<=" where the lower neighbour has the even index, "<"
     * where the upper one does, so exact ties go to the even code */
    uint8_t idx;
    if (a <= 0.25f)
        idx = 0;
    else if (a < 0.75f)
        idx = 1;
    else if (a <= 1.25f)
        idx = 2;
    else if (a < 1.75f)
        idx = 3;
    else if (a <= 2.5f)
        idx = 4;
    else if (a < 3.5f)
        idx = 5;
    else if (a <= 5.0f)
        idx = 6;
    else
        idx = 7;
    return sign | idx;
}

float ds4_fp4_e2m1_decode(uint8_t code)
{
    float v = e2m1_mag[code & 7];
    return (code & 8) ? -v : v;
}

float ds4_fp4_e2m1_round(float f)
{
    if (isnan(f))
        return f;
    return ds4_fp4_e2m1_decode(ds4_fp4_e2m1_encode(f));
}

int ds4_fp4_block_roundtrip(float *x, size_t n, size_t block)
{
    if (block == 0 || n % block)
        return -1;
    const float inv = (float)(1.0 / 6.0);
    const float floor_amax = 6.0f * 0x1p-126f;
    for (size_t b = 0; b < n; b += block) {
        float amax = fmaxf(block_amax(x + b, block), floor_amax);
        float s = pow2_ceil_scale(amax * inv);
        for (size_t i = b; i < b + block; i++) {
            float y = clampf_nan(x[i] / s, DS4_FP4_E2M1_MAX);
            x[i] = ds4_fp4_e2m1_round(y) * s;
        }
    }
    return 0;
}

void ds4_hadamard128(float *x)
{
    /* in-place butterflies, natural (Sylvester) order */
    for (int h = 1; h < DS4_QAT_HADAMARD_N; h *= 2) {
        for (int i = 0; i < DS4_QAT_HADAMARD_N; i += 2 * h) {
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
    }
    /* 128^-0.5 rounded once to float; the official transform's scale */
    const float scale = (float)0.08838834764831844055;
    for (int i = 0; i < DS4_QAT_HADAMARD_N; i++)
        x[i] *= scale;
}

void ds4_indexer_qat_row(float *x)
{
    ds4_hadamard128(x);
    (void)ds4_fp4_block_roundtrip(x, DS4_QAT_HADAMARD_N, DS4_QAT_FP4_BLOCK);
}

float ds4_f16_round(float f)
{
    return ds4_f16_to_f32(ds4_f32_to_f16(f));
}

int ds4_kv_qat_row(float *x, size_t n, size_t n_nope, int f16)
{
    if (n_nope > n || n_nope % DS4_QAT_FP8_BLOCK)
        return -1;
    ds4_fp8_block_roundtrip(x, n_nope, DS4_QAT_FP8_BLOCK);
    if (f16)
        for (size_t i = 0; i < n; i++)
            x[i] = ds4_f16_round(x[i]);
    return 0;
}
