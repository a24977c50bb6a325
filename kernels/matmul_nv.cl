/* matmul_nv.cl - NVIDIA fast path of the quantized mat-vec / mat-mat
 * (Q8_0, Q2_K, Q4_K, IQ2_XXS; cols a multiple of 256): Y[t][r] =
 * sum_c X[t][c] * W[r][c], on the tensor cores through inline PTX
 * mma.sync.m16n8k16 (f16 inputs, f32 accumulation).
 *
 * Exactness. The weights enter the mma as small integers, exact in f16
 * (Q8_0: q; Q4_K: q; Q2_K: q * 4-bit scale; IQ2_XXS: +-grid value); the
 * f32 scales (Q8_0 d, Q4_K d*sc, Q2_K d, IQ2_XXS db) multiply the f32 mma
 * result of each 32-column step, and the K-quant mins are subtracted in
 * f32 against 16-column sums of x: y = sum_s (scale_s * sum q x - min_s *
 * sum x). The activations are split x*s = hi + lo into two f16 halves
 * (s a power of two per token and chunk of columns, chosen so the largest
 * |x*s| lies in [2^14, 2^15): no f16 overflow, about 22 bits kept), and
 * both halves go through the same mma as two n-columns, so the result is
 * the f32 reference up to summation order (~1e-7 relative), not f16
 * rounding. A one-hot x gives the dequantized weight bit for bit.
 *
 * Work split. A work-group is 8 warps. Each warp owns one 16-row m-tile
 * (lane 4g+t decodes rows g and g+8) and one 256-column superblock per
 * chunk, in 8 steps of 32 columns: lane t decodes columns 8t..8t+7 of a
 * step (pairs of columns (0,2) and (1,3) of each 4 form one f16x2
 * register; the staged x uses the same order), two mmas per step and
 * n-tile. An n-tile is 8 mma columns = 4 tokens (hi, lo). Variants:
 *   nv_mv_T   NT=1 n-tile, KS=8 warps split the columns of 16 rows
 *             (decode: 1..4 tokens);
 *   nv_mv8_T  NT=2, KS=4 (32 rows, up to 8 tokens);
 *   nv_mm_T   NT=8, KS=1 (128 rows x 32 tokens per work-group, prefill).
 * Per chunk of KS superblocks the work-group stages its tokens' x as
 * hi/lo halves and 16-column sums in local memory (two barriers), then
 * every warp runs its superblock; partial sums of the KS warps of a row
 * tile are added through local memory at the end.
 *
 * Built on every device: with DS4_NV_PTX (NVIDIA, inline PTX usable,
 * sm_80 or newer) the f16x2 arithmetic, conversions and mma are single
 * PTX instructions; otherwise they are emulated in plain OpenCL C (the
 * mma through local memory and barriers), so the same decoding and
 * layout logic runs, slowly, on PoCL in CI. eng_cl.c prepends
 * DS4_IQ2XXS_GRID_INIT. */
#pragma OPENCL FP_CONTRACT OFF

#define NV_WG 256

__constant ulong nv_iq2_grid[256] = DS4_IQ2XXS_GRID_INIT;

/* ------------------------------------------------------- primitives */

#ifdef DS4_NV_PTX
#define NV_UNROLL _Pragma("unroll")

/* f16x2 a - b, round to nearest. */
uint nv_h2sub(uint a, uint b)
{
    uint d;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

/* f16x2 a * b. */
uint nv_h2mul(uint a, uint b)
{
    uint d;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

/* f16x2 a * b + c, one rounding. */
uint nv_h2fma(uint a, uint b, uint c)
{
    uint d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* Two floats to f16x2 (lo in bits 0-15), round to nearest even. */
uint nv_pack2(float lo, float hi)
{
    uint d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

/* f16x2 to two floats (.x from bits 0-15). */
float2 nv_unpack2(uint v)
{
    float lo, hi;
    asm("{ .reg .f16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; "
        "cvt.f32.f16 %1, h; }" : "=f"(lo), "=f"(hi) : "r"(v));
    return (float2)(lo, hi);
}

/* d += A (16x16, f16, row) * B (16x8, f16, col): a[4] and b0, b1 are the
 * lane's fragment registers as PTX defines them for m16n8k16. */
#define NV_MMA(d, a, b0, b1)                                                 \
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "               \
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"        \
        : "=f"((d)[0]), "=f"((d)[1]), "=f"((d)[2]), "=f"((d)[3])           \
        : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "r"(b0),     \
          "r"(b1), "f"((d)[0]), "f"((d)[1]), "f"((d)[2]), "f"((d)[3]))
#define NV_EMU_DECL

#else /* emulation in plain OpenCL C */
#define NV_UNROLL _Pragma("unroll 1")

uint nv_pack2(float lo, float hi)
{
    ushort h[2];
    vstore_half_rte(lo, 0, (half *)h);
    vstore_half_rte(hi, 1, (half *)h);
    return (uint)h[0] | ((uint)h[1] << 16);
}

float2 nv_unpack2(uint v)
{
    ushort h[2];
    h[0] = (ushort)(v & 0xFFFFu);
    h[1] = (ushort)(v >> 16);
    return (float2)(vload_half(0, (const half *)h),
                    vload_half(1, (const half *)h));
}

/* Exact for the integer-valued operands used here, like the hardware. */
uint nv_h2sub(uint a, uint b)
{
    float2 x = nv_unpack2(a), y = nv_unpack2(b);
    return nv_pack2(x.x - y.x, x.y - y.y);
}

uint nv_h2mul(uint a, uint b)
{
    float2 x = nv_unpack2(a), y = nv_unpack2(b);
    return nv_pack2(x.x * y.x, x.y * y.y);
}

uint nv_h2fma(uint a, uint b, uint c)
{
    float2 x = nv_unpack2(a), y = nv_unpack2(b), z = nv_unpack2(c);
    return nv_pack2(fma(x.x, y.x, z.x), fma(x.y, y.y, z.y));
}

/* The warp's fragments go through local memory; every work-item of the
 * work-group must call it (it holds barriers). */
void nv_mma_emu(float *d, const uint *a, uint b0, uint b1,
                __local uint *sa, __local uint *sb, uint lane)
{
    for (int i = 0; i < 4; i++)
        sa[lane * 4 + i] = a[i];
    sb[lane * 2] = b0;
    sb[lane * 2 + 1] = b1;
    barrier(CLK_LOCAL_MEM_FENCE);
    uint g = lane >> 2, t = lane & 3;
    float r[4];
    for (uint i = 0; i < 4; i++) {
        uint row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float s = d[i];
        for (uint k = 0; k < 16; k++) {
            /* A(row, k): lane (row % 8) * 4 + (k % 8) / 2, register
             * row / 8 + 2 * (k / 8), half k % 2; B(k, col): lane
             * col * 4 + (k % 8) / 2, register k / 8, half k % 2. */
            uint ai = (((row & 7) * 4 + ((k & 7) >> 1)) * 4 + (row >> 3) +
                       2 * (k >> 3)) * 2 + (k & 1);
            uint bi = ((col * 4 + ((k & 7) >> 1)) * 2 + (k >> 3)) * 2 +
                      (k & 1);
            s = fma(vload_half(ai, (__local const half *)sa),
                    vload_half(bi, (__local const half *)sb), s);
        }
        r[i] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = 0; i < 4; i++)
        d[i] = r[i];
}
#define NV_MMA(d, a, b0, b1)                                                 \
    nv_mma_emu(d, a, b0, b1, nv_emu_a + warp * 128, nv_emu_b + warp * 64,  \
               lane)
#define NV_EMU_DECL                                                          \
    __local uint nv_emu_a[8 * 128];                                         \
    __local uint nv_emu_b[8 * 64];
#endif

/* Small unsigned integer (< 2^23) to float without a conversion unit. */
float nv_u2f(uint v)
{
    return as_float(0x4B000000u | v) - 8388608.0f;
}

/* Eight bytes at p as two little-endian words: p 4-byte or only 2-byte
 * aligned. */
uint2 nv_ld8_a4(__global const uchar *p)
{
    __global const uint *u = (__global const uint *)p;
    return (uint2)(u[0], u[1]);
}
uint2 nv_ld8_a2(__global const uchar *p)
{
    __global const ushort *h = (__global const ushort *)p;
    return (uint2)((uint)h[0] | ((uint)h[1] << 16),
                   (uint)h[2] | ((uint)h[3] << 16));
}

/* Byte i (a constant after unrolling) of the 12 bytes y, z, w. */
uint nv_byte12(uint4 v, uint i)
{
    uint w = i < 4 ? v.y : i < 8 ? v.z : v.w;
    return (w >> (8 * (i & 3))) & 255u;
}

/* ------------------------------------------------ per-type decoding
 *
 * Per row and superblock a header (nv_hdr_T), then per 32-column step j
 * (nv_step_T) the lane's four f16x2 registers: p[0] = columns (0, 2),
 * p[1] = (1, 3), p[2] = (4, 6), p[3] = (5, 7) of 8t..8t+7; the step's
 * f32 scale *sa; for K-quants the f32 mins of the step's two 16-column
 * halves (*mn). Superblock bytes: Q8_0 8 blocks of 34 (272), Q2_K 84,
 * Q4_K 144, IQ2_XXS 66. */
typedef struct nv_hdr {
    uint4 w;
    float d, dm;
} nv_hdr;

#define NV_H1024 0x64006400u  /* f16x2 (1024, 1024) */

nv_hdr nv_hdr_q8_0(__global const uchar *sb)
{
    nv_hdr h = { (uint4)(0), 0.0f, 0.0f };
    return h;
}

/* Q8_0 block j: y = q * d. Bytes ^ 0x80 under exponent 0x64 give
 * 1024 + q + 128; subtracting 1152 leaves q exactly. */
void nv_step_q8_0(__global const uchar *sb, nv_hdr h, uint j, uint t,
                  uint *p, float *sa, float2 *mn)
{
    __global const uchar *b = sb + 34 * j;
    *sa = vload_half(0, (__global const half *)b);
    uint2 q = nv_ld8_a2(b + 2 + 8 * t);
    p[0] = nv_h2sub((q.x & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    p[1] = nv_h2sub(((q.x >> 8) & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    p[2] = nv_h2sub((q.y & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    p[3] = nv_h2sub(((q.y >> 8) & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    *mn = (float2)(0.0f);
}

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min), qs[64],
 * d, dmin. */
nv_hdr nv_hdr_q2_k(__global const uchar *sb)
{
    nv_hdr h;
    h.w = vload4(0, (__global const uint *)sb);
    h.d = vload_half(40, (__global const half *)sb);
    h.dm = vload_half(41, (__global const half *)sb);
    return h;
}

/* Q2_K step j = elements 32j..32j+31: qs[32(j/4) + l] >> 2(j%4), 16-column
 * sub-blocks 2j, 2j+1. The weights enter as q * sc (<= 45, exact; made by
 * one f16x2 fma (1024 + q) * sc - 1024 * sc), the scale is d. */
void nv_step_q2_k(__global const uchar *sb, nv_hdr h, uint j, uint t,
                  uint *p, float *sa, float2 *mn)
{
    uint sh = 2 * (j & 3);
    uint2 q = nv_ld8_a4(sb + 16 + 32 * (j >> 2) + 8 * t);
    uint sw = (j >> 1) == 0 ? h.w.x : (j >> 1) == 1 ? h.w.y
            : (j >> 1) == 2 ? h.w.z : h.w.w;
    uint scb = (sw >> (16 * (j & 1))) & 0xFFFFu; /* bytes 2j, 2j+1 */
    uint sc = (scb >> (8 * (t >> 1))) & 15u;     /* this lane's half */
    uint scp = nv_h2sub((sc * 0x00010001u) | NV_H1024, NV_H1024);
    uint nsc = nv_h2mul(scp, 0xE400E400u);       /* -1024 * sc */
    p[0] = nv_h2fma(((q.x >> sh) & 0x00030003u) | NV_H1024, scp, nsc);
    p[1] = nv_h2fma(((q.x >> (sh + 8)) & 0x00030003u) | NV_H1024, scp, nsc);
    p[2] = nv_h2fma(((q.y >> sh) & 0x00030003u) | NV_H1024, scp, nsc);
    p[3] = nv_h2fma(((q.y >> (sh + 8)) & 0x00030003u) | NV_H1024, scp, nsc);
    *sa = h.d;
    *mn = (float2)(h.dm * nv_u2f((scb >> 4) & 15u),
                   h.dm * nv_u2f((scb >> 12) & 15u));
}

/* Q4_K: d, dmin, 12 bytes of 6-bit scales and mins, qs[128]. */
nv_hdr nv_hdr_q4_k(__global const uchar *sb)
{
    nv_hdr h;
    h.w = vload4(0, (__global const uint *)sb);
    h.d = vload_half(0, (__global const half *)sb);
    h.dm = vload_half(1, (__global const half *)sb);
    return h;
}

/* Q4_K step j = sub-block j: nibble j%2 of qs[32(j/2) + l]; y = (d*sc) q
 * - dmin*m. */
void nv_step_q4_k(__global const uchar *sb, nv_hdr h, uint j, uint t,
                  uint *p, float *sa, float2 *mn)
{
    uint sh = 4 * (j & 1);
    uint2 q = nv_ld8_a4(sb + 16 + 32 * (j >> 1) + 8 * t);
    p[0] = nv_h2sub(((q.x >> sh) & 0x000F000Fu) | NV_H1024, NV_H1024);
    p[1] = nv_h2sub(((q.x >> (sh + 8)) & 0x000F000Fu) | NV_H1024, NV_H1024);
    p[2] = nv_h2sub(((q.y >> sh) & 0x000F000Fu) | NV_H1024, NV_H1024);
    p[3] = nv_h2sub(((q.y >> (sh + 8)) & 0x000F000Fu) | NV_H1024, NV_H1024);
    uint sc, m;
    if (j < 4) {
        sc = nv_byte12(h.w, j) & 63u;
        m = nv_byte12(h.w, j + 4) & 63u;
    } else {
        sc = (nv_byte12(h.w, j + 4) & 15u) |
             ((nv_byte12(h.w, j - 4) >> 6) << 4);
        m = (nv_byte12(h.w, j + 4) >> 4) | ((nv_byte12(h.w, j) >> 6) << 4);
    }
    *sa = h.d * nv_u2f(sc);
    float ml = h.dm * nv_u2f(m);
    *mn = (float2)(ml, ml);
}

/* IQ2_XXS: d, then per 32-element group 4 grid indices (bytes of aux0)
 * and 4 seven-bit sign fields plus a 4-bit scale (aux1). */
nv_hdr nv_hdr_iq2_xxs(__global const uchar *sb)
{
    nv_hdr h = { (uint4)(0), 0.0f, 0.0f };
    h.d = vload_half(0, (__global const half *)sb);
    return h;
}

/* IQ2_XXS step j = group j; lane t decodes grid entry t. The sign byte is
 * the 7 bits plus even parity (ggml's ksigns table); sign bit i of the
 * element in a half goes to bit 15 or 31 by one multiply. */
void nv_step_iq2_xxs_t(__global const uchar *sb, nv_hdr h, uint j, uint t,
                       uint *p, float *sa, float2 *mn,
                       __local const ulong *lgrid)
{
    uint2 aux = nv_ld8_a2(sb + 2 + 8 * j);
    uint2 gr = as_uint2(lgrid[(aux.x >> (8 * t)) & 255u]);
    uint s7 = (aux.y >> (7 * t)) & 127u;
    uint s = s7 | ((popcount(s7) & 1u) << 7);
    p[0] = nv_h2sub((gr.x & 0x00FF00FFu) | NV_H1024, NV_H1024) ^
           ((s * 0x20008000u) & 0x80008000u);
    p[1] = nv_h2sub(((gr.x >> 8) & 0x00FF00FFu) | NV_H1024, NV_H1024) ^
           ((s * 0x10004000u) & 0x80008000u);
    p[2] = nv_h2sub((gr.y & 0x00FF00FFu) | NV_H1024, NV_H1024) ^
           ((s * 0x02000800u) & 0x80008000u);
    p[3] = nv_h2sub(((gr.y >> 8) & 0x00FF00FFu) | NV_H1024, NV_H1024) ^
           ((s * 0x01000400u) & 0x80008000u);
    *sa = (h.d * (0.5f + nv_u2f(aux.y >> 28))) * 0.25f;
    *mn = (float2)(0.0f);
}
#define nv_step_iq2_xxs(sb, h, j, t, p, sa, mn)                              \
    nv_step_iq2_xxs_t(sb, h, j, t, p, sa, mn, nv_lgrid)

#define NV_TABLES_NONE
#define NV_TABLES_IQ2                                                        \
    __local ulong nv_lgrid[256];                                            \
    nv_lgrid[lid] = nv_iq2_grid[lid];

/* --------------------------------------------------- x staging
 *
 * Staged x of a chunk (CH = 256 * KS columns, TOKW = 4 * NT tokens):
 * rows (token, hi/lo) of STRW = CH / 2 + 16 words (the 64-byte pad keeps
 * a quarter-warp's hi and lo reads on different banks); in each group of
 * 4 columns the halves are stored in the order 0, 2, 1, 3. sx16 holds the
 * f32 sums of 16 columns; maxb the largest |x| bits per token (two
 * generations by chunk parity). Unit = 16 columns of one token; 512 units
 * per chunk, two per work-item. */

/* Load the unit's 16 values (zeros when dead), its sum, and fold its
 * largest |x| into maxb. */
void nv_stage_load(__global const float *X, uint x_stride, uint ntok,
                   uint cols, uint t0, uint c, uint ch, uint unit,
                   float *v, __local float *sx16, __local uint *maxb)
{
    uint upt = ch / 16, tk = unit / upt, u = unit % upt;
    uint col = c * ch + 16 * u, tok = t0 + tk;
    float s = 0.0f, m = 0.0f;
    if (tok < ntok && col < cols) {
        __global const float *xp = X + (ulong)tok * x_stride + col;
        for (int i = 0; i < 4; i++) {
            float4 q = vload4(i, xp);
            v[4 * i] = q.x, v[4 * i + 1] = q.y;
            v[4 * i + 2] = q.z, v[4 * i + 3] = q.w;
        }
        for (int i = 0; i < 16; i++) {
            s += v[i];
            m = fmax(m, fabs(v[i]));
        }
        if (isnan(s))
            m = as_float(0x7F800000u);
        atomic_max(&maxb[tk], as_uint(m));
    } else {
        for (int i = 0; i < 16; i++)
            v[i] = 0.0f;
    }
    sx16[tk * upt + u] = s;
}

/* Power-of-two scale putting the largest |x| (bits mb) in [2^14, 2^15);
 * *inv is its inverse. */
float nv_xscale(uint mb, float *inv)
{
    int e = (int)(mb >> 23);
    e = clamp(e, 15, 254);
    *inv = as_float((uint)(e - 14) << 23);
    return as_float((uint)(268 - e) << 23);
}

/* Split the unit's values into hi/lo halves and store them. */
void nv_stage_store(uint c, uint ch, uint unit, uint ntok, uint t0,
                    const float *v, __local uint *stage, __local uint *maxb)
{
    uint upt = ch / 16, tk = unit / upt, u = unit % upt;
    if (t0 + tk >= ntok && c > 0)
        return; /* dead token: still zero from the first chunk */
    float inv, s = nv_xscale(maxb[tk], &inv);
    uint hi[8], lo[8];
    for (int q = 0; q < 4; q++) {
        for (int k = 0; k < 2; k++) { /* pairs (0, 2) and (1, 3) */
            float a = v[4 * q + k] * s, b = v[4 * q + k + 2] * s;
            uint h = nv_pack2(a, b);
            float2 hf = nv_unpack2(h);
            hi[2 * q + k] = h;
            lo[2 * q + k] = nv_pack2(a - hf.x, b - hf.y);
        }
    }
    uint strw = ch / 2 + 16;
    __local uint4 *dh = (__local uint4 *)(stage + (tk * 2) * strw + 8 * u);
    __local uint4 *dl = (__local uint4 *)(stage + (tk * 2 + 1) * strw +
                                          8 * u);
    dh[0] = (uint4)(hi[0], hi[1], hi[2], hi[3]);
    dh[1] = (uint4)(hi[4], hi[5], hi[6], hi[7]);
    dl[0] = (uint4)(lo[0], lo[1], lo[2], lo[3]);
    dl[1] = (uint4)(lo[4], lo[5], lo[6], lo[7]);
}

/* ------------------------------------------------------- the kernel */

#define NV_KERNEL(NAME, T, SBB, NT, KS, HAS_MIN, TABLES)                     \
__kernel __attribute__((reqd_work_group_size(NV_WG, 1, 1)))                \
void NAME(__global const uchar *W, ulong w_off,                            \
          __global const float *X, uint x_stride,                          \
          __global float *Y, uint y_stride,                                \
          uint rows, uint cols, uint ntok)                                 \
{                                                                           \
    __local uint4 nv_stage4[2 * NT * (128 * KS + 16)];                      \
    __local uint *stage = (__local uint *)nv_stage4;                        \
    __local float sx16[64 * NT * KS];                                       \
    __local uint maxb[8 * NT];                                              \
    NV_EMU_DECL                                                             \
    uint lid = get_local_id(0), warp = lid >> 5, lane = lid & 31;           \
    uint g = lane >> 2, t = lane & 3;                                       \
    TABLES                                                                  \
    const uint ch = 256 * KS, strw = 128 * KS + 16;                         \
    uint ks = warp % KS, rg = warp / KS;                                    \
    uint r0 = (get_group_id(0) * (8 / KS) + rg) * 16;                       \
    uint t0 = get_group_id(1) * 4 * NT;                                     \
    uint nsb = cols / 256, nch = (nsb + KS - 1) / KS;                       \
    ulong rbytes = (ulong)nsb * SBB;                                        \
    __global const uchar *Ra = W + w_off +                                  \
        (ulong)min(r0 + g, rows - 1) * rbytes;                              \
    __global const uchar *Rb = W + w_off +                                  \
        (ulong)min(r0 + g + 8, rows - 1) * rbytes;                          \
    if (lid < 8 * NT)                                                       \
        maxb[lid] = 0;                                                      \
    float acc[2 * NT];                                                      \
    for (int n = 0; n < 2 * NT; n++)                                        \
        acc[n] = 0.0f;                                                      \
    barrier(CLK_LOCAL_MEM_FENCE);                                           \
    for (uint c = 0; c < nch; c++) {                                        \
        __local uint *mb = maxb + (c & 1) * 4 * NT;                         \
        float v0[16], v1[16];                                               \
        nv_stage_load(X, x_stride, ntok, cols, t0, c, ch, lid, v0, sx16,    \
                      mb);                                                  \
        nv_stage_load(X, x_stride, ntok, cols, t0, c, ch, lid + NV_WG, v1,  \
                      sx16, mb);                                            \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
        nv_stage_store(c, ch, lid, ntok, t0, v0, stage, mb);                \
        nv_stage_store(c, ch, lid + NV_WG, ntok, t0, v1, stage, mb);        \
        if (lid < 4 * NT) /* the next chunk's generation */                 \
            maxb[((c + 1) & 1) * 4 * NT + lid] = 0;                         \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
        uint sb = min(c * KS + ks, nsb - 1);                                \
        __global const uchar *Sa = Ra + (ulong)sb * SBB;                    \
        __global const uchar *Sb = Rb + (ulong)sb * SBB;                    \
        nv_hdr ha = nv_hdr_##T(Sa), hb = nv_hdr_##T(Sb);                    \
        float cs[2 * NT];                                                   \
        for (int n = 0; n < 2 * NT; n++)                                    \
            cs[n] = 0.0f;                                                   \
        NV_UNROLL                                                           \
        for (uint j = 0; j < 8; j++) {                                      \
            uint pa[4], pb[4];                                              \
            float saa, sab;                                                 \
            float2 mna, mnb;                                                \
            nv_step_##T(Sa, ha, j, t, pa, &saa, &mna);                      \
            nv_step_##T(Sb, hb, j, t, pb, &sab, &mnb);                      \
            uint a0[4] = { pa[0], pb[0], pa[1], pb[1] };                    \
            uint a1[4] = { pa[2], pb[2], pa[3], pb[3] };                    \
            NV_UNROLL                                                       \
            for (uint n = 0; n < NT; n++) {                                 \
                uint4 bq = *(__local const uint4 *)(stage +                 \
                    ((4 * n + (g >> 1)) * 2 + (g & 1)) * strw +             \
                    128 * ks + 16 * j + 4 * t);                             \
                float d[4] = { 0.0f, 0.0f, 0.0f, 0.0f };                    \
                NV_MMA(d, a0, bq.x, bq.y);                                  \
                NV_MMA(d, a1, bq.z, bq.w);                                  \
                cs[2 * n] = fma(saa, d[0] + d[1], cs[2 * n]);               \
                cs[2 * n + 1] = fma(sab, d[2] + d[3], cs[2 * n + 1]);       \
                if (HAS_MIN) {                                              \
                    __local const float *sxp = sx16 +                       \
                        (4 * n + t) * (16 * KS) + 16 * ks + 2 * j;          \
                    float s0 = sxp[0], s1 = sxp[1];                         \
                    acc[2 * n] = fma(-mna.x, s0, acc[2 * n]);               \
                    acc[2 * n] = fma(-mna.y, s1, acc[2 * n]);               \
                    acc[2 * n + 1] = fma(-mnb.x, s0, acc[2 * n + 1]);       \
                    acc[2 * n + 1] = fma(-mnb.y, s1, acc[2 * n + 1]);       \
                }                                                           \
            }                                                               \
        }                                                                   \
        for (uint n = 0; n < NT; n++) {                                     \
            float inv;                                                      \
            nv_xscale(mb[4 * n + t], &inv);                                 \
            acc[2 * n] = fma(cs[2 * n], inv, acc[2 * n]);                   \
            acc[2 * n + 1] = fma(cs[2 * n + 1], inv, acc[2 * n + 1]);       \
        }                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
    }                                                                       \
    nv_finish(acc, NT, KS, stage, lid, r0 - rg * 16, t0, rows, ntok, Y,     \
              y_stride);                                                    \
}

/* Add the KS partial sums of each row tile (through local memory) and
 * write Y. acc[2n], acc[2n+1]: rows g, g+8 of the warp's tile, token
 * 4n + t. rbase: first row of the work-group. */
void nv_finish(const float *acc, uint nt, uint ks_n, __local uint *stage,
               uint lid, uint rbase, uint t0, uint rows, uint ntok,
               __global float *Y, uint y_stride)
{
    uint warp = lid >> 5, lane = lid & 31, g = lane >> 2, t = lane & 3;
    uint ks = warp % ks_n, rg = warp / ks_n, nrg = 8 / ks_n;
    if (ks_n == 1) {
        for (uint n = 0; n < nt; n++) {
            uint tok = t0 + 4 * n + t, r = rbase + rg * 16 + g;
            if (tok >= ntok)
                continue;
            if (r < rows)
                Y[(ulong)tok * y_stride + r] = acc[2 * n];
            if (r + 8 < rows)
                Y[(ulong)tok * y_stride + r + 8] = acc[2 * n + 1];
        }
        return;
    }
    /* red[ks][rg][token][row] */
    __local float *red = (__local float *)stage;
    uint per = nrg * 4 * nt * 16;
    for (uint n = 0; n < nt; n++) {
        uint base = ks * per + (rg * 4 * nt + 4 * n + t) * 16;
        red[base + g] = acc[2 * n];
        red[base + g + 8] = acc[2 * n + 1];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint i = lid; i < per; i += NV_WG) {
        uint row = i % 16, tk = (i / 16) % (4 * nt), rgi = i / (16 * 4 * nt);
        float s = 0.0f;
        for (uint k = 0; k < ks_n; k++)
            s += red[k * per + i];
        uint tok = t0 + tk, r = rbase + rgi * 16 + row;
        if (tok < ntok && r < rows)
            Y[(ulong)tok * y_stride + r] = s;
    }
}

#define NV_KERNELS(T, SBB, HAS_MIN, TABLES)                                  \
    NV_KERNEL(nv_mv_##T, T, SBB, 1, 8, HAS_MIN, TABLES)                     \
    NV_KERNEL(nv_mv8_##T, T, SBB, 2, 4, HAS_MIN, TABLES)                    \
    NV_KERNEL(nv_mm_##T, T, SBB, 8, 1, HAS_MIN, TABLES)

NV_KERNELS(q8_0, 272, 0, NV_TABLES_NONE)
NV_KERNELS(q2_k, 84, 1, NV_TABLES_NONE)
NV_KERNELS(q4_k, 144, 1, NV_TABLES_NONE)
NV_KERNELS(iq2_xxs, 66, 0, NV_TABLES_IQ2)
