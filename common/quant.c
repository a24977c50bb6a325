/* quant.c - GGML tensor types: geometry table, f16/bf16 conversions,
 * reference decoders (bit-exact with ggml, see tests/data/quant-vectors),
 * the double-accumulated reference dot product, and the quantizers for
 * F32/F16/BF16/Q8_0/Q2_K/Q4_K (IQ2_XXS lives in quant_iq2.c).
 *
 * Every float operation in a decoder is one separately rounded binary32
 * operation in the order the format description gives (the build uses
 * -ffp-contract=off), which is what bit-exactness with ggml requires.
 * Quantizers use only IEEE basic operations, so their bytes are the same on
 * every machine.
 */
#include "quant.h"
#include "util.h"

#include <math.h>
#include <string.h>

/* Bit-exactness needs separately rounded operations even where a build
 * forgets -ffp-contract=off (clang contracts by default). */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
#include <strings.h>

/* IQ2_XXS block quantizer, defined in quant_iq2.c (256 floats -> 66 bytes). */
void ds4_iq2xxs_quantize_block(const float *x, uint8_t *out);

/* ---------------------------------------------------------------- types */

/* Geometry of every type id ggml defines (ids 31-33 and 36-38 were removed
 * from ggml and stay unknown). Only the types SPEC §3.3 needs are decoded. */
static const ds4_type_info type_table[] = {
    [DS4_TYPE_F32] = {"F32", 1, 4, 1},
    [DS4_TYPE_F16] = {"F16", 1, 2, 1},
    [DS4_TYPE_Q4_0] = {"Q4_0", 32, 18, 0},
    [DS4_TYPE_Q4_1] = {"Q4_1", 32, 20, 0},
    [DS4_TYPE_Q5_0] = {"Q5_0", 32, 22, 0},
    [DS4_TYPE_Q5_1] = {"Q5_1", 32, 24, 0},
    [DS4_TYPE_Q8_0] = {"Q8_0", 32, 34, 1},
    [DS4_TYPE_Q8_1] = {"Q8_1", 32, 36, 0},
    [DS4_TYPE_Q2_K] = {"Q2_K", 256, 84, 1},
    [DS4_TYPE_Q3_K] = {"Q3_K", 256, 110, 0},
    [DS4_TYPE_Q4_K] = {"Q4_K", 256, 144, 1},
    [DS4_TYPE_Q5_K] = {"Q5_K", 256, 176, 0},
    [DS4_TYPE_Q6_K] = {"Q6_K", 256, 210, 0},
    [DS4_TYPE_Q8_K] = {"Q8_K", 256, 292, 0},
    [DS4_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66, 1},
    [17] = {"IQ2_XS", 256, 74, 0},
    [18] = {"IQ3_XXS", 256, 98, 0},
    [19] = {"IQ1_S", 256, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},
    [21] = {"IQ3_S", 256, 110, 0},
    [22] = {"IQ2_S", 256, 82, 0},
    [23] = {"IQ4_XS", 256, 136, 0},
    [DS4_TYPE_I8] = {"I8", 1, 1, 0},
    [DS4_TYPE_I16] = {"I16", 1, 2, 0},
    [DS4_TYPE_I32] = {"I32", 1, 4, 1},
    [DS4_TYPE_I64] = {"I64", 1, 8, 0},
    [DS4_TYPE_F64] = {"F64", 1, 8, 0},
    [29] = {"IQ1_M", 256, 56, 0},
    [DS4_TYPE_BF16] = {"BF16", 1, 2, 1},
    [34] = {"TQ1_0", 256, 54, 0},
    [35] = {"TQ2_0", 256, 66, 0},
    [39] = {"MXFP4", 32, 17, 0},
};

/* Geometry of a type id, NULL when unknown. */
const ds4_type_info *ds4_type_get(uint32_t type)
{
    if (type >= DS4_ARRAY_LEN(type_table) || !type_table[type].name)
        return NULL;
    return &type_table[type];
}

/* Type id for a name, case-insensitive; -1 when unknown. */
int ds4_type_from_name(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < DS4_ARRAY_LEN(type_table); i++)
        if (type_table[i].name && strcasecmp(type_table[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Bytes for n elements; 0 when unknown, not whole blocks, or overflowing. */
uint64_t ds4_type_nbytes(uint32_t type, uint64_t n)
{
    const ds4_type_info *t = ds4_type_get(type);
    if (!t || n % t->block_elems)
        return 0;
    uint64_t blocks = n / t->block_elems;
    if (blocks > UINT64_MAX / t->block_bytes)
        return 0;
    return blocks * t->block_bytes;
}

/* Supported type whose block size divides n; NULL otherwise. */
static const ds4_type_info *usable_type(uint32_t type, uint64_t n)
{
    const ds4_type_info *t = ds4_type_get(type);
    if (!t || !t->supported || n % t->block_elems)
        return NULL;
    if (ds4_type_nbytes(type, n) == 0 && n != 0)
        return NULL;
    return t;
}

/* ---------------------------------------------------------- conversions */

/* Reinterpret float bits (no aliasing games). */
static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Float with the given bits. */
static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Exact binary16 -> binary32, subnormals normalised by integer shifts. */
float ds4_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf / NaN: keep the payload */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return f32_from_bits(sign);
        /* subnormal: shift the leading one into the implicit position */
        uint32_t e = 113; /* biased exponent of 2^-14 */
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        return f32_from_bits(sign | (e << 23) | ((man & 0x3ff) << 13));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* binary32 -> binary16, round to nearest even everywhere (subnormals too);
 * any NaN becomes the quiet NaN 0x7E00 with the input sign, as ggml's
 * portable routine does. */
uint16_t ds4_f32_to_f16(float f)
{
    uint32_t w = f32_bits(f);
    uint16_t sign = (uint16_t)((w >> 16) & 0x8000);
    uint32_t a = w & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00;
    if (a >= 0x477ff000u) /* 65520 and up round past 65504 */
        return sign | 0x7c00;
    if (a >= 0x38800000u) { /* normal f16 result: rebias, round 13 bits */
        uint32_t r = a - 0x38000000u;
        r += 0x0fffu + ((r >> 13) & 1);
        return sign | (uint16_t)(r >> 13);
    }
    if (a < 0x33000000u) /* below 2^-25: zero (2^-25 itself ties to 0) */
        return sign;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - (a >> 23); /* 14..24 for this range */
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1)))
        r++;
    return sign | (uint16_t)r;
}

/* Exact bf16 -> binary32 (the upper half of the float). */
float ds4_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

/* binary32 -> bf16: round to nearest even on the bit pattern (subnormals
 * kept, FLT_MAX region may round to inf); NaN keeps its upper half with the
 * quiet bit forced. */
uint16_t ds4_f32_to_bf16(float f)
{
    uint32_t w = f32_bits(f);
    if ((w & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((w >> 16) | 0x40);
    return (uint16_t)((w + 0x7fffu + ((w >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------- decoders */

/* Little-endian 16-bit load. */
static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* Little-endian 32-bit load. */
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* One Q8_0 block (34 bytes) -> 32 floats. */
static void dequant_q8_0(const uint8_t *b, float *y)
{
    float d = ds4_f16_to_f32(le16(b));
    for (int j = 0; j < 32; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

/* One Q2_K block (84 bytes) -> 256 floats. */
static void dequant_q2_k(const uint8_t *b, float *y)
{
    const uint8_t *scales = b, *qs = b + 16;
    float d = ds4_f16_to_f32(le16(b + 80));
    float dmin = ds4_f16_to_f32(le16(b + 82));
    for (int e = 0; e < 256; e++) {
        int h = e / 128, j = (e % 128) / 32, s = (e % 32) / 16, l = e % 16;
        int q = (qs[32 * h + 16 * s + l] >> (2 * j)) & 3;
        uint8_t sc = scales[8 * h + 2 * j + s];
        float dl = d * (float)(sc & 15);
        float ml = dmin * (float)(sc >> 4);
        y[e] = dl * (float)q - ml;
    }
}

/* Scale and min of Q4_K sub-block k from the 12 packed bytes. */
static void q4k_scale_min(const uint8_t *S, int k, int *sc, int *m)
{
    if (k < 4) {
        *sc = S[k] & 63;
        *m = S[k + 4] & 63;
    } else {
        *sc = (S[k + 4] & 15) | ((S[k - 4] >> 6) << 4);
        *m = (S[k + 4] >> 4) | ((S[k] >> 6) << 4);
    }
}

/* One Q4_K block (144 bytes) -> 256 floats. */
static void dequant_q4_k(const uint8_t *b, float *y)
{
    float d = ds4_f16_to_f32(le16(b));
    float dmin = ds4_f16_to_f32(le16(b + 2));
    const uint8_t *S = b + 4, *qs = b + 16;
    for (int k = 0; k < 8; k++) {
        int sc, m;
        q4k_scale_min(S, k, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        int c = k / 2, hi = k % 2;
        for (int l = 0; l < 32; l++) {
            uint8_t byte = qs[32 * c + l];
            int q = hi ? (byte >> 4) : (byte & 15);
            y[32 * k + l] = dl * (float)q - ml;
        }
    }
}

/* One IQ2_XXS block (66 bytes) -> 256 floats. */
static void dequant_iq2_xxs(const uint8_t *b, float *y)
{
    float d = ds4_f16_to_f32(le16(b));
    for (int g = 0; g < 8; g++) {
        uint32_t a0 = le32(b + 2 + 8 * g), a1 = le32(b + 6 + 8 * g);
        float db = (d * (0.5f + (float)(a1 >> 28))) * 0.25f;
        for (int l = 0; l < 4; l++) {
            uint64_t grid = ds4_iq2xxs_grid[(a0 >> (8 * l)) & 255];
            uint8_t signs = ds4_ksigns_iq2xs[(a1 >> (7 * l)) & 127];
            for (int j = 0; j < 8; j++) {
                float v = db * (float)((grid >> (8 * j)) & 255);
                y[32 * g + 8 * l + j] = (signs >> j) & 1 ? -v : v;
            }
        }
    }
}

/* Decode `blocks` whole blocks of a supported type. */
static void dequant_blocks(uint32_t type, const uint8_t *src, float *dst,
                           uint64_t blocks)
{
    const ds4_type_info *t = &type_table[type];
    for (uint64_t i = 0; i < blocks; i++) {
        const uint8_t *b = src + i * t->block_bytes;
        float *y = dst + i * t->block_elems;
        switch (type) {
        case DS4_TYPE_F32: memcpy(y, b, 4); break;
        case DS4_TYPE_F16: y[0] = ds4_f16_to_f32(le16(b)); break;
        case DS4_TYPE_BF16: y[0] = ds4_bf16_to_f32(le16(b)); break;
        case DS4_TYPE_I32: y[0] = (float)(int32_t)le32(b); break;
        case DS4_TYPE_Q8_0: dequant_q8_0(b, y); break;
        case DS4_TYPE_Q2_K: dequant_q2_k(b, y); break;
        case DS4_TYPE_Q4_K: dequant_q4_k(b, y); break;
        case DS4_TYPE_IQ2_XXS: dequant_iq2_xxs(b, y); break;
        default: DS4_ASSERT(!"dequant_blocks: unsupported type");
        }
    }
}

/* Dequantize n elements; -1 for an unsupported type or bad n. */
int ds4_dequantize(uint32_t type, const void *src, float *dst, uint64_t n)
{
    const ds4_type_info *t = usable_type(type, n);
    if (!t)
        return -1;
    if (n && (!src || !dst))
        return -1;
    dequant_blocks(type, src, dst, n / t->block_elems);
    return 0;
}

/* Dot of a dequantized row with x, summed in double in element order. */
int ds4_dot_ref(uint32_t type, const void *row, const float *x, uint64_t n,
                double *out)
{
    const ds4_type_info *t = usable_type(type, n);
    if (!t || !out || (n && (!row || !x)))
        return -1;
    float y[256];
    double sum = 0.0;
    const uint8_t *src = row;
    for (uint64_t i = 0; i < n; i += t->block_elems) {
        dequant_blocks(type, src, y, 1);
        src += t->block_bytes;
        for (uint32_t j = 0; j < t->block_elems; j++)
            sum += (double)y[j] * (double)x[i + j];
    }
    *out = sum;
    return 0;
}

/* ----------------------------------------------------------- quantizers */

/* Little-endian 16-bit store. */
static void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Round half away from zero using only exact operations (like roundf). */
static float round_half_away(float x)
{
    float a = x < 0 ? -x : x;
    if (!(a < 8388608.0f)) /* already integral (or NaN) */
        return x;
    float t = (float)(int32_t)a; /* truncation is exact here */
    if (a - t >= 0.5f)
        t += 1.0f;
    return x < 0 ? -t : t;
}

/* Squared error of one Q8_0 block decoded with scale d and codes q. */
static double q8_0_sse(const float *x, const int8_t *q, float d)
{
    double e = 0;
    for (int j = 0; j < 32; j++) {
        double r = (double)((float)q[j] * d) - (double)x[j];
        e += r * r;
    }
    return e;
}

/* Codes for scale 1/id, clamped to [-127, 127]. */
static void q8_0_codes(const float *x, float id, int8_t *q)
{
    for (int j = 0; j < 32; j++) {
        float v = round_half_away(x[j] * id);
        q[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v == v ? v : 0);
    }
}

/* One Q8_0 block: amax/127 scale; codes from the float scale and from the
 * stored f16 scale are both tried and the better one kept. */
static void quant_q8_0(const float *x, uint8_t *out)
{
    float amax = 0;
    for (int j = 0; j < 32; j++) {
        float a = x[j] < 0 ? -x[j] : x[j];
        if (a > amax)
            amax = a;
    }
    float d = amax / 127.0f;
    /* beyond the f16 range ggml would store inf; the largest finite scale
     * at least decodes to finite values */
    uint16_t dh = ds4_f32_to_f16(d > 65504.0f ? 65504.0f : d);
    float dd = ds4_f16_to_f32(dh);
    int8_t qa[32], qb[32];
    q8_0_codes(x, d != 0 ? 1.0f / d : 0.0f, qa);
    q8_0_codes(x, dd != 0 ? 1.0f / dd : 0.0f, qb);
    const int8_t *q = q8_0_sse(x, qb, dd) < q8_0_sse(x, qa, dd) ? qb : qa;
    st16(out, dh);
    memcpy(out + 2, q, 32);
}

/* K-quants (Q2_K, Q4_K) share one search. A sub-block j of `len` values is
 * decoded as y = (d*sc_j)*q - (dmin*m_j) with codes q in [0, qmax] and
 * scale/min codes sc_j, m_j in [0, smax]. The search:
 *   1. fits each sub-block alone in double precision (a_j, b_j >= 0) by
 *      least squares over a sweep of code assignments;
 *   2. picks d, dmin from the largest a_j, b_j, rounds them to f16;
 *   3. for each sub-block tries every (sc, m) pair in a window around the
 *      ideal codes with the best codes q for each, measured with the exact
 *      float decoder, keeps the best; then refits d and dmin by least squares
 *      over the whole block and repeats, keeping the best block seen.
 * Only IEEE basic operations are used, so the bytes are reproducible. */
typedef struct kq_geom {
    int nsub, len, qmax, smax, window;
} kq_geom;

static const kq_geom q2k_geom = {16, 16, 3, 15, 4};
static const kq_geom q4k_geom = {8, 32, 15, 63, 4};

/* Clamp v to [0, hi] and round to nearest (NaN gives 0). */
static int clamp_round(double v, int hi)
{
    if (!(v > 0))
        return 0;
    if (v >= hi)
        return hi;
    return (int)(v + 0.5);
}

/* Least-squares fit x ~ a*q - b (b >= 0) of one sub-block for the codes
 * q = round((x - lo) * iscale) over a sweep of iscale; returns the best
 * squared error with a and b. */
static double kq_fit_sub(const float *x, int len, int qmax, double *pa, double *pb)
{
    double lo = 0, hi = x[0]; /* lo <= 0: code 0 decodes to -b <= 0 */
    for (int i = 0; i < len; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    *pa = 0;
    *pb = -lo;
    double best = 0;
    for (int i = 0; i < len; i++)
        best += (x[i] - lo) * (x[i] - lo);
    if (!(hi > lo))
        return best;
    for (int k = 0; k <= 24; k++) {
        double iscale = (qmax * (0.7 + 0.025 * k)) / (hi - lo);
        double n = len, sq = 0, sqq = 0, sx = 0, sqx = 0;
        int q[32];
        for (int i = 0; i < len; i++) {
            q[i] = clamp_round((x[i] - lo) * iscale, qmax);
            sq += q[i], sqq += (double)q[i] * q[i], sx += x[i], sqx += q[i] * (double)x[i];
        }
        double det = n * sqq - sq * sq, a, c;
        if (!(det > 0))
            continue;
        a = (n * sqx - sq * sx) / det;
        c = (sx - a * sq) / n;
        if (c > 0) { /* the min must be <= 0: refit the scale alone */
            c = 0;
            a = sqx / sqq;
        }
        if (!(a > 0))
            continue;
        double err = 0;
        for (int i = 0; i < len; i++) {
            double r = a * q[i] + c - x[i];
            err += r * r;
        }
        if (err < best) {
            best = err;
            *pa = a;
            *pb = -c;
        }
    }
    return best;
}

/* Best codes of one sub-block for float scale A and offset B (nearest
 * level); returns the squared error under the exact float decoder. */
static double kq_codes(const float *x, int len, int qmax, float A, float B, uint8_t *q)
{
    double err = 0;
    float iA = A > 0 ? 1.0f / A : 0.0f;
    for (int i = 0; i < len; i++) {
        float t = (x[i] + B) * iA;
        int c = !(t > 0) ? 0 : t >= (float)qmax ? qmax : (int)(t + 0.5f);
        float r = (A * (float)c - B) - x[i];
        q[i] = (uint8_t)c;
        err += (double)(r * r);
    }
    return err;
}

/* f16 block scale for a non-negative value (finite, at most 65504). */
static float kq_f16(double v, uint16_t *bits)
{
    float f = v > 65504.0 ? 65504.0f : (float)v;
    if (!(f > 0))
        f = 0;
    *bits = ds4_f32_to_f16(f);
    return ds4_f16_to_f32(*bits);
}

/* Result of a K-quant search: super-scales and per-sub-block codes. */
typedef struct kq_result {
    uint16_t d, dmin;
    uint8_t sc[16], m[16];
    uint8_t q[256];
    double err;
} kq_result;

/* Given f16 d/dmin, choose each sub-block's (sc, m, q) in a window around
 * the ideal codes. Fills r and returns its error. */
static double kq_assign(const kq_geom *g, const float *x, const double *a, const double *b,
                        uint16_t dh, uint16_t mh, kq_result *r)
{
    float d = ds4_f16_to_f32(dh), dm = ds4_f16_to_f32(mh);
    r->d = dh, r->dmin = mh, r->err = 0;
    for (int j = 0; j < g->nsub; j++) {
        const float *xs = x + j * g->len;
        int sc0 = d > 0 ? clamp_round(a[j] / d, g->smax) : 0;
        int m0 = dm > 0 ? clamp_round(b[j] / dm, g->smax) : 0;
        double best = -1;
        uint8_t qt[32];
        for (int sc = sc0 - g->window; sc <= sc0 + g->window; sc++) {
            if (sc < 0 || sc > g->smax)
                continue;
            for (int m = m0 - g->window; m <= m0 + g->window; m++) {
                if (m < 0 || m > g->smax || (m > 0 && !(dm > 0)))
                    continue;
                double e = kq_codes(xs, g->len, g->qmax, d * (float)sc, dm * (float)m, qt);
                if (best < 0 || e < best) {
                    best = e;
                    r->sc[j] = (uint8_t)sc, r->m[j] = (uint8_t)m;
                    memcpy(r->q + j * g->len, qt, (size_t)g->len);
                }
            }
        }
        r->err += best;
    }
    return r->err;
}

/* Least-squares d, dmin for fixed codes: x ~ d*(sc*q) - dmin*m. Returns 0
 * and the new values, or -1 when the system is degenerate. */
static int kq_refit(const kq_geom *g, const float *x, const kq_result *r, double *d,
                    double *dmin)
{
    double suu = 0, suv = 0, svv = 0, sux = 0, svx = 0;
    for (int j = 0; j < g->nsub; j++)
        for (int i = 0; i < g->len; i++) {
            double u = (double)r->sc[j] * r->q[j * g->len + i], v = -(double)r->m[j];
            double xv = x[j * g->len + i];
            suu += u * u, suv += u * v, svv += v * v, sux += u * xv, svx += v * xv;
        }
    double det = suu * svv - suv * suv;
    if (det > 1e-12 * suu * svv && svv > 0) {
        *d = (sux * svv - svx * suv) / det;
        *dmin = (svx * suu - sux * suv) / det;
    } else if (suu > 0) {
        *d = sux / suu;
        *dmin = 0;
    } else {
        return -1;
    }
    if (*dmin < 0) { /* keep offsets non-negative: refit the scale alone */
        *dmin = 0;
        if (!(suu > 0))
            return -1;
        *d = sux / suu;
    }
    return *d > 0 ? 0 : -1;
}

/* Full K-quant search of one 256-value block. */
static void kq_search(const kq_geom *g, const float *x, kq_result *best)
{
    double a[16], b[16], amax = 0, bmax = 0;
    for (int j = 0; j < g->nsub; j++) {
        kq_fit_sub(x + j * g->len, g->len, g->qmax, &a[j], &b[j]);
        amax = a[j] > amax ? a[j] : amax;
        bmax = b[j] > bmax ? b[j] : bmax;
    }
    kq_result cur;
    uint16_t dh, mh;
    kq_f16(amax / g->smax, &dh);
    kq_f16(bmax / g->smax, &mh);
    kq_assign(g, x, a, b, dh, mh, best);
    double d, dmin;
    for (int it = 0; it < 4; it++) {
        if (kq_refit(g, x, it ? &cur : best, &d, &dmin) < 0)
            break;
        kq_f16(d, &dh);
        kq_f16(dmin, &mh);
        kq_assign(g, x, a, b, dh, mh, &cur);
        if (cur.err < best->err)
            *best = cur;
    }
}

/* One Q2_K block: search, then pack (layout in the format notes). */
static void quant_q2_k(const float *x, uint8_t *out)
{
    kq_result r;
    kq_search(&q2k_geom, x, &r);
    memset(out, 0, 84);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, j = (e % 128) / 32, s = (e % 32) / 16, l = e % 16;
        out[16 + 32 * h + 16 * s + l] |= (uint8_t)(r.q[e] << (2 * j));
    }
    for (int sb = 0; sb < 16; sb++)
        out[sb] = (uint8_t)(r.sc[sb] | (r.m[sb] << 4));
    st16(out + 80, r.d);
    st16(out + 82, r.dmin);
}

/* One Q4_K block: search, then pack the 6-bit scales and 4-bit codes. */
static void quant_q4_k(const float *x, uint8_t *out)
{
    kq_result r;
    kq_search(&q4k_geom, x, &r);
    memset(out, 0, 144);
    st16(out, r.d);
    st16(out + 2, r.dmin);
    uint8_t *S = out + 4, *qs = out + 16;
    for (int k = 0; k < 8; k++) {
        if (k < 4) {
            S[k] |= r.sc[k];
            S[k + 4] |= r.m[k];
        } else {
            S[k + 4] = (uint8_t)((r.sc[k] & 15) | ((r.m[k] & 15) << 4));
            S[k - 4] |= (uint8_t)((r.sc[k] >> 4) << 6);
            S[k] |= (uint8_t)((r.m[k] >> 4) << 6);
        }
    }
    for (int e = 0; e < 256; e++) {
        int c = e / 64, hi = (e % 64) / 32, l = e % 32;
        qs[32 * c + l] |= (uint8_t)(r.q[e] << (4 * hi));
    }
}

/* Quantize n elements into dst; -1 for an unsupported type or bad n. */
int ds4_quantize(uint32_t type, const float *src, void *dst, uint64_t n)
{
    const ds4_type_info *t = usable_type(type, n);
    if (!t || type == DS4_TYPE_I32 || (n && (!src || !dst)))
        return -1;
    uint8_t *out = dst;
    for (uint64_t i = 0; i < n; i += t->block_elems) {
        const float *x = src + i;
        uint8_t *b = out + i / t->block_elems * t->block_bytes;
        switch (type) {
        case DS4_TYPE_F32: memcpy(b, x, 4); break;
        case DS4_TYPE_F16: st16(b, ds4_f32_to_f16(x[0])); break;
        case DS4_TYPE_BF16: st16(b, ds4_f32_to_bf16(x[0])); break;
        case DS4_TYPE_Q8_0: quant_q8_0(x, b); break;
        case DS4_TYPE_Q2_K: quant_q2_k(x, b); break;
        case DS4_TYPE_Q4_K: quant_q4_k(x, b); break;
        case DS4_TYPE_IQ2_XXS: ds4_iq2xxs_quantize_block(x, b); break;
        default: return -1;
        }
    }
    return 0;
}
