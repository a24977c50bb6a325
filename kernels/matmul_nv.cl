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
 * (s a power of two per token and 32-column step, chosen so the largest
 * |x*s| lies in [2^14, 2^15): no f16 overflow, about 22 bits kept), and
 * both halves go through the same mma as two n-columns, so the result is
 * the f32 reference up to summation order (~1e-7 relative), not f16
 * rounding. A one-hot x gives the dequantized weight bit for bit.
 *
 * Work split. A work-group is 8 warps. Each warp owns one 16-row
 * m-tile (lane 4g+t decodes rows g and g+8) and walks superblocks of it
 * (256 columns; 128 = 4 blocks for Q8_0) in steps of 32 columns: lane t
 * decodes columns 8t..8t+7 of a step (pairs of columns (0,2) and (1,3) of
 * each 4 form one f16x2 register; the staged x uses the same order), two
 * mmas per step and n-tile. An n-tile is 8 mma columns = 4 tokens (hi,
 * lo). A warp loads its 16 rows' superblock bytes with coalesced 32-bit
 * loads (consecutive lanes, consecutive words: about one cache line per
 * load instruction) into registers while it decodes the previous
 * superblock from its own local-memory tile; only warp-level syncs guard
 * the tile. Kernels:
 *   nv_mv_T   decode, 1..4 tokens: 16 rows, the 8 warps split the
 *             superblocks (every 8th); the work-group stages x (hi/lo,
 *             step scales, 16-column sums) in local memory once per pass
 *             of up to 4096 / tokens columns (one pass for a single token
 *             and K <= 4096); partial sums added at the end;
 *   nv_mv8_T  the same with 2 n-tiles (up to 8 tokens), 32 rows, 4 splits;
 *   nv_mm_T   prefill: 128 rows x 32 tokens, a warp per m-tile over all
 *             superblocks, B fragments from x converted once per call by
 *             nv_xprep into scratch memory (L1/L2 resident).
 *
 * Built on every device: with DS4_NV_PTX (NVIDIA, inline PTX usable,
 * sm_80 or newer) the f16x2 arithmetic, conversions and mma are single
 * PTX instructions; otherwise they are emulated in plain OpenCL C (the
 * mma through local memory and barriers), so the same decoding and
 * layout logic runs, slowly, on PoCL in CI. eng_cl.c prepends
 * DS4_IQ2XXS_GRID_INIT. */
#pragma OPENCL FP_CONTRACT OFF

#define NV_WG 256 /* 8 warps */

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
/* Butterfly shuffle within the warp (all 32 lanes take part). */
float nv_shfl_xor(float v, uint m)
{
    uint d;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"
                 : "=r"(d) : "r"(as_uint(v)), "r"(m));
    return as_float(d);
}
#define NV_EMU_DECL
/* The warp's local-memory writes are visible to the warp after it. */
#define NV_WARP_SYNC() asm volatile("bar.warp.sync 0xffffffff;" ::: "memory")

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
/* Every work-item of the work-group must reach it. */
#define NV_WARP_SYNC() barrier(CLK_LOCAL_MEM_FENCE)
#endif

/* Small unsigned integer (< 2^23) to float without a conversion unit. */
float nv_u2f(uint v)
{
    return as_float(0x4B000000u | v) - 8388608.0f;
}

/* Eight bytes at p (local memory) as two little-endian words: p 4-byte
 * or only 2-byte aligned. */
uint2 nv_lds8_a4(__local const uchar *p)
{
    __local const uint *u = (__local const uint *)p;
    return (uint2)(u[0], u[1]);
}
uint2 nv_lds8_a2(__local const uchar *p)
{
    __local const ushort *h = (__local const ushort *)p;
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
 * Per type: NV_SBC_T columns and NV_SBB_T bytes per superblock, NV_NW_T
 * 32-bit words loaded per row and superblock (from the superblock start
 * rounded down to 4 bytes; NV_ODD_T when that start is only 2-aligned).
 * nv_hdr_T reads what a row's steps share from its local tile once per
 * superblock; nv_dec_T turns step j (32 columns) into the lane's four
 * f16x2 registers p[0] = columns (0, 2), p[1] = (1, 3), p[2] = (4, 6),
 * p[3] = (5, 7) of 8t..8t+7, the step's f32 scale *sa and, for K-quants,
 * the f32 mins of its two 16-column halves (*mn). */
typedef struct nv_hdr {
    uint4 w;     /* scale bytes (K-quants) */
    float d, dm;
} nv_hdr;

#define NV_H1024 0x64006400u  /* f16x2 (1024, 1024) */

/* Ablation switches for timing experiments (ds4-kbench --build-opts
 * -DNV_ABL=n; results are wrong then): 2 skips the weight decoding (tile
 * words go to the mma), 4 the mma. */
#ifndef NV_ABL
#define NV_ABL 0
#endif

#define NV_SBC_q8_0 128
#define NV_SBB_q8_0 136
#define NV_NW_q8_0 34
#define NV_ODD_q8_0 0
#define NV_SBC_q2_k 256
#define NV_SBB_q2_k 84
#define NV_NW_q2_k 21
#define NV_ODD_q2_k 0
#define NV_SBC_q4_k 256
#define NV_SBB_q4_k 144
#define NV_NW_q4_k 36
#define NV_ODD_q4_k 0
#define NV_SBC_iq2_xxs 256
#define NV_SBB_iq2_xxs 66
#define NV_NW_iq2_xxs 17
#define NV_ODD_iq2_xxs 1

/* Q8_0 (superblock = 4 blocks of d + 32 qs): block j, y = q * d. Bytes ^
 * 0x80 under exponent 0x64 give 1024 + q + 128; minus 1152 leaves q. */
nv_hdr nv_hdr_q8_0(__local const uchar *rp)
{
    nv_hdr h = { (uint4)(0), 0.0f, 0.0f };
    return h;
}
void nv_dec_q8_0(__local const uchar *rp, const nv_hdr *h, uint j, uint t,
                 uint *p, float *sa, float2 *mn)
{
    __local const uchar *b = rp + 34 * j;
    uint2 q = nv_lds8_a2(b + 2 + 8 * t);
    p[0] = nv_h2sub((q.x & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    p[1] = nv_h2sub(((q.x >> 8) & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    p[2] = nv_h2sub((q.y & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    p[3] = nv_h2sub(((q.y >> 8) & 0x00FF00FFu) ^ 0x64806480u, 0x64806480u);
    *sa = vload_half(0, (__local const half *)b);
    *mn = (float2)(0.0f);
}

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min), qs[64], d,
 * dmin. Step j = elements 32j..32j+31: qs[32(j/4) + l] >> 2(j%4),
 * 16-column sub-blocks 2j, 2j+1. The weights enter as q * sc (<= 45,
 * exact; one f16x2 fma (1024 + q) * sc - 1024 * sc), the scale is d. */
nv_hdr nv_hdr_q2_k(__local const uchar *rp)
{
    nv_hdr h;
    __local const uint *u = (__local const uint *)rp;
    h.w = (uint4)(u[0], u[1], u[2], u[3]);
    h.d = vload_half(40, (__local const half *)rp);
    h.dm = vload_half(41, (__local const half *)rp);
    return h;
}
void nv_dec_q2_k(__local const uchar *rp, const nv_hdr *h, uint j, uint t,
                 uint *p, float *sa, float2 *mn)
{
    uint sh = 2 * (j & 3);
    uint2 q = nv_lds8_a4(rp + 16 + 32 * (j >> 2) + 8 * t);
    uint sw = (j >> 1) == 0 ? h->w.x : (j >> 1) == 1 ? h->w.y
            : (j >> 1) == 2 ? h->w.z : h->w.w;
    uint scb = (sw >> (16 * (j & 1))) & 0xFFFFu; /* bytes 2j, 2j+1 */
    uint sc = (scb >> (8 * (t >> 1))) & 15u;     /* this lane's half */
    uint scp = nv_h2sub((sc * 0x00010001u) | NV_H1024, NV_H1024);
    uint nsc = nv_h2mul(scp, 0xE400E400u);       /* -1024 * sc */
    p[0] = nv_h2fma(((q.x >> sh) & 0x00030003u) | NV_H1024, scp, nsc);
    p[1] = nv_h2fma(((q.x >> (sh + 8)) & 0x00030003u) | NV_H1024, scp, nsc);
    p[2] = nv_h2fma(((q.y >> sh) & 0x00030003u) | NV_H1024, scp, nsc);
    p[3] = nv_h2fma(((q.y >> (sh + 8)) & 0x00030003u) | NV_H1024, scp, nsc);
    *sa = h->d;
    *mn = (float2)(h->dm * nv_u2f((scb >> 4) & 15u),
                   h->dm * nv_u2f((scb >> 12) & 15u));
}

/* Q4_K: d, dmin, 12 bytes of 6-bit scales and mins, qs[128]; step j =
 * sub-block j = nibble j%2 of qs[32(j/2) + l]; y = (d*sc) q - dmin*m. */
nv_hdr nv_hdr_q4_k(__local const uchar *rp)
{
    nv_hdr h;
    __local const uint *u = (__local const uint *)rp;
    h.w = (uint4)(u[0], u[1], u[2], u[3]);
    h.d = vload_half(0, (__local const half *)rp);
    h.dm = vload_half(1, (__local const half *)rp);
    return h;
}
void nv_dec_q4_k(__local const uchar *rp, const nv_hdr *h, uint j, uint t,
                 uint *p, float *sa, float2 *mn)
{
    uint sh = 4 * (j & 1);
    uint2 q = nv_lds8_a4(rp + 16 + 32 * (j >> 1) + 8 * t);
    p[0] = nv_h2sub(((q.x >> sh) & 0x000F000Fu) | NV_H1024, NV_H1024);
    p[1] = nv_h2sub(((q.x >> (sh + 8)) & 0x000F000Fu) | NV_H1024, NV_H1024);
    p[2] = nv_h2sub(((q.y >> sh) & 0x000F000Fu) | NV_H1024, NV_H1024);
    p[3] = nv_h2sub(((q.y >> (sh + 8)) & 0x000F000Fu) | NV_H1024, NV_H1024);
    uint sc, m;
    if (j < 4) {
        sc = nv_byte12(h->w, j) & 63u;
        m = nv_byte12(h->w, j + 4) & 63u;
    } else {
        sc = (nv_byte12(h->w, j + 4) & 15u) |
             ((nv_byte12(h->w, j - 4) >> 6) << 4);
        m = (nv_byte12(h->w, j + 4) >> 4) | ((nv_byte12(h->w, j) >> 6) << 4);
    }
    *sa = h->d * nv_u2f(sc);
    float ml = h->dm * nv_u2f(m);
    *mn = (float2)(ml, ml);
}

/* IQ2_XXS: d, then per 32-element group (step j) 4 grid indices (bytes
 * of aux0) and 4 seven-bit sign fields plus a 4-bit scale (aux1). Lane t
 * decodes grid entry t. The sign byte is the 7 bits plus even parity
 * (ggml's ksigns table); the sign of element i of a half goes to bit 15
 * or 31 by one multiply. */
nv_hdr nv_hdr_iq2_xxs(__local const uchar *rp)
{
    nv_hdr h = { (uint4)(0), 0.0f, 0.0f };
    h.d = vload_half(0, (__local const half *)rp);
    return h;
}
void nv_dec_iq2_xxs_t(__local const uchar *rp, const nv_hdr *h, uint j,
                      uint t, uint *p, float *sa, float2 *mn,
                      __local const ulong *lgrid)
{
    uint2 aux = nv_lds8_a2(rp + 2 + 8 * j);
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
    *sa = (h->d * (0.5f + nv_u2f(aux.y >> 28))) * 0.25f;
    *mn = (float2)(0.0f);
}
#define nv_dec_iq2_xxs(rp, h, j, t, p, sa, mn)                               \
    nv_dec_iq2_xxs_t(rp, h, j, t, p, sa, mn, nv_lgrid)

#define NV_TABLES_NONE
#define NV_TABLES_IQ2                                                        \
    __local ulong nv_lgrid[256];                                            \
    for (uint i = lid; i < 256; i += NV_WG)                                 \
        nv_lgrid[i] = nv_iq2_grid[i];                                       \
    barrier(CLK_LOCAL_MEM_FENCE);

/* ------------------------------------------------ activations
 *
 * nv_xprep converts X once per call into scratch memory the main kernels
 * read their B fragments from: per token K words, per 32-column step s
 * 32 words, per lane t (columns 8t..8t+7) 4 words of hi halves then 4 of
 * lo halves, each group of 4 columns in the order 0, 2, 1, 3 (so the
 * quarter-warp reading one token's hi and lo fragments reads 128
 * contiguous bytes); then the inverse scales of the steps (float [ntok][K
 * / 32]) and the 16-column sums (float [ntok][K / 16]). Each step of a
 * token has its own power-of-two scale s putting its largest |x| in
 * [2^14, 2^15): x * s = hi + lo exactly up to ~2^-22 relative. */

/* The power-of-two scale for the largest |x| (bits mb); *inv = 1 / it. */
float nv_xscale(uint mb, float *inv)
{
    int e = (int)(mb >> 23);
    e = clamp(e, 15, 254);
    *inv = as_float((uint)(e - 14) << 23);
    return as_float((uint)(268 - e) << 23);
}

/* Sum of a quad, in one fixed order. */
float nv_qsum(float4 v)
{
    return (v.x + v.y) + (v.z + v.w);
}

/* Largest |x| of a quad, +inf if the quad holds a NaN. */
float nv_qmax(float4 v)
{
    float m = fmax(fmax(fabs(v.x), fabs(v.y)), fmax(fabs(v.z), fabs(v.w)));
    return isnan(nv_qsum(v)) ? as_float(0x7F800000u) : m;
}

/* The largest |x| of the 8 quads of this work-item's 32-column step, and
 * the sum of the 4 quads of its 16-column half ((q0 + q1) + (q2 + q3)).
 * With PTX: butterfly shuffles across the 8 work-items holding them;
 * emulated: this work-item reads the step's quads itself (no barriers).
 * xs: the step's first column of the token's row; live: it exists. */
void nv_step_reduce(float4 v, __global const float *xs, int live, uint f8,
                    float *m, float *sum)
{
#ifdef DS4_NV_PTX
    float s = nv_qsum(v), mx = nv_qmax(v);
    s += nv_shfl_xor(s, 1);
    s += nv_shfl_xor(s, 2);
    mx = fmax(mx, nv_shfl_xor(mx, 1));
    mx = fmax(mx, nv_shfl_xor(mx, 2));
    mx = fmax(mx, nv_shfl_xor(mx, 4));
    *m = mx, *sum = s;
#else
    float q[8];
    for (int i = 0; i < 8; i++)
        q[i] = live ? nv_qsum(vload4(i, xs)) : 0.0f;
    float mx = 0.0f;
    for (int i = 0; live && i < 8; i++)
        mx = fmax(mx, nv_qmax(vload4(i, xs)));
    uint h = f8 & 4;
    *m = mx;
    *sum = (q[h] + q[h + 1]) + (q[h + 2] + q[h + 3]);
#endif
}

/* One work-item per column quad (consecutive work-items, consecutive
 * quads of one token: coalesced reads; 8 work-items = one step). */
__kernel __attribute__((reqd_work_group_size(NV_WG, 1, 1)))
void nv_xprep(__global const float *X, uint x_stride, uint ntok, uint cols,
              __global uint *out)
{
    uint f = get_global_id(0), qpt = cols / 4;
    uint tk = f / qpt, fi = f % qpt, s = fi / 8, f8 = fi % 8;
    int live = tk < ntok;
    __global const float *xp = X + (ulong)(live ? tk : 0) * x_stride +
                               4 * (live ? fi : 0);
    float4 v = live ? vload4(0, xp) : (float4)(0.0f);
    float m, sum;
    nv_step_reduce(v, xp - 4 * f8, live, f8, &m, &sum);
    if (!live)
        return;
    float inv, sc = nv_xscale(as_uint(m), &inv);
    __global float *xinv = (__global float *)(out + (ulong)ntok * cols);
    __global float *sx16 = xinv + (ulong)ntok * (cols / 32);
    if ((f8 & 3) == 0)
        sx16[(ulong)tk * (cols / 16) + 2 * s + (f8 >> 2)] = sum;
    if (f8 == 0)
        xinv[(ulong)tk * (cols / 32) + s] = inv;
    float a0 = v.x * sc, b0 = v.z * sc, a1 = v.y * sc, b1 = v.w * sc;
    uint h0 = nv_pack2(a0, b0), h1 = nv_pack2(a1, b1);
    float2 g0 = nv_unpack2(h0), g1 = nv_unpack2(h1);
    uint l0 = nv_pack2(a0 - g0.x, b0 - g0.y);
    uint l1 = nv_pack2(a1 - g1.x, b1 - g1.y);
    __global uint *d = out + (ulong)tk * cols + 32 * s + 8 * (f8 >> 1) +
                       2 * (f8 & 1);
    vstore2((uint2)(h0, h1), 0, d);
    vstore2((uint2)(l0, l1), 0, d + 4);
}

/* Stage a pass of the decode kernels: tokens t0.. (ntl live) x columns
 * c0..c0+kc into local memory in nv_xprep's layout, kp words per token
 * (kp >= kc), step scales and 16-column sums likewise per token. */
void nv_stage_pass(__global const float *X, uint x_stride, uint ntl, uint t0,
                   uint c0, uint kc, uint kp, uint lid, __local uint *stage,
                   __local float *sx16, __local float *xinv)
{
    uint qpt = kc / 4;
    for (uint f0 = 0; f0 < ntl * qpt; f0 += NV_WG) {
        uint f = f0 + lid, tk = f / qpt, fi = f % qpt;
        uint s = fi / 8, f8 = fi % 8;
        int live = tk < ntl;
        __global const float *xp = X + (ulong)(t0 + (live ? tk : 0)) *
                                   x_stride + c0 + 4 * (live ? fi : 0);
        float4 v = live ? vload4(0, xp) : (float4)(0.0f);
        float m, sum;
        nv_step_reduce(v, xp - 4 * f8, live, f8, &m, &sum);
        if (!live)
            continue;
        float inv, sc = nv_xscale(as_uint(m), &inv);
        if ((f8 & 3) == 0)
            sx16[tk * (kp / 16) + 2 * s + (f8 >> 2)] = sum;
        if (f8 == 0)
            xinv[tk * (kp / 32) + s] = inv;
        float a0 = v.x * sc, b0 = v.z * sc, a1 = v.y * sc, b1 = v.w * sc;
        uint h0 = nv_pack2(a0, b0), h1 = nv_pack2(a1, b1);
        float2 g0 = nv_unpack2(h0), g1 = nv_unpack2(h1);
        uint l0 = nv_pack2(a0 - g0.x, b0 - g0.y);
        uint l1 = nv_pack2(a1 - g1.x, b1 - g1.y);
        __local uint *d = stage + tk * kp + 32 * s + 8 * (f8 >> 1) +
                          2 * (f8 & 1);
        *(__local uint2 *)d = (uint2)(h0, h1);
        *(__local uint2 *)(d + 4) = (uint2)(l0, l1);
    }
}

/* ------------------------------------------------------- the kernel */

/* Add the KS partial sums of each row tile (through local memory) and
 * write Y. acc[2n], acc[2n+1]: rows g, g+8 of the warp's tile, token
 * 4n + t. rbase: first row of the work-group. */
void nv_finish(const float *acc, uint nt, uint ks_n, __local uint *scratch,
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
    __local float *red = (__local float *)scratch;
    uint per = nrg * 4 * nt * 16;
    barrier(CLK_LOCAL_MEM_FENCE); /* every warp is done with its tile */
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

/* Byte offset in W of row r's superblock sb. */
#define NV_SB_OFF(r, sb) (w_off + (ulong)(r) * rbytes + (ulong)(sb) * SBB)

/* Load the warp's tile words of superblock sb: word w = 32k + lane of
 * the 16 rows x NW words is row w / NW, word w % NW (coalesced). */
#define NV_LOAD_TILE(T, wr, sb)                                              \
    NV_UNROLL                                                               \
    for (uint k = 0; k < (16 * NV_NW_##T + 31) / 32; k++) {                 \
        uint w = 32 * k + lane, r = w / NW, wi = w % NW;                    \
        wr[k] = 0;                                                          \
        if (w < 16 * NW) {                                                  \
            ulong a = NV_SB_OFF(min(r0 + r, rows - 1), sb);                 \
            __global const uint *src =                                      \
                (__global const uint *)(W + (a & ~3ul)) + wi;               \
            if (NV_ODD_##T && wi == NW - 1 && (a & 3) == 0)                 \
                wr[k] = *(__global const ushort *)src;                      \
            else                                                            \
                wr[k] = *src;                                               \
        }                                                                   \
    }

/* Decode superblock sb from the warp's tile (rows g, g+8) and run its
 * steps through the mma; BFETCH(n, st, bq, inv, s0, s1, HAS_MIN) gives
 * n-tile n's B fragment, the inverse x scale of the lane's token and its
 * 16-column sums for step st of the row. live = 0 zeroes a padding
 * superblock. */
#define NV_SB_COMPUTE(T, NT, HAS_MIN, BFETCH, JUNROLL)                       \
    {                                                                       \
        __local const uchar *rpa = (__local const uchar *)(wt + g * RSW) +  \
            (NV_ODD_##T ? (NV_SB_OFF(ra, sb) & 3) : 0);                     \
        __local const uchar *rpb = (__local const uchar *)(wt +             \
            (g + 8) * RSW) + (NV_ODD_##T ? (NV_SB_OFF(rb, sb) & 3) : 0);    \
        nv_hdr ha = nv_hdr_##T(rpa), hb = nv_hdr_##T(rpb);                  \
        JUNROLL                                                             \
        for (uint j = 0; j < NSTEP; j++) {                                  \
            uint pa[4], pb[4];                                              \
            float saa, sab;                                                 \
            float2 mna, mnb;                                                \
            if (NV_ABL & 2) {                                               \
                for (int i = 0; i < 4; i++) {                               \
                    pa[i] = wt[g * RSW + 4 * j + i];                        \
                    pb[i] = wt[(g + 8) * RSW + 4 * j + i];                  \
                }                                                           \
                saa = ha.d, sab = hb.d;                                     \
                mna = mnb = (float2)(ha.dm);                                \
            } else {                                                        \
                nv_dec_##T(rpa, &ha, j, t, pa, &saa, &mna);                 \
                nv_dec_##T(rpb, &hb, j, t, pb, &sab, &mnb);                 \
            }                                                               \
            saa *= live, sab *= live;                                       \
            mna *= live, mnb *= live;                                       \
            uint a0[4] = { pa[0], pb[0], pa[1], pb[1] };                    \
            uint a1[4] = { pa[2], pb[2], pa[3], pb[3] };                    \
            uint st = sb * NSTEP + j; /* step within the row */             \
            NV_UNROLL                                                       \
            for (uint n = 0; n < NT; n++) {                                 \
                uint4 bq = (uint4)(0);                                      \
                float inv = 0.0f, s0 = 0.0f, s1 = 0.0f;                     \
                BFETCH(n, st, bq, inv, s0, s1, HAS_MIN)                     \
                float d[4] = { 0.0f, 0.0f, 0.0f, 0.0f };                    \
                if (NV_ABL & 4) {                                           \
                    d[0] = as_float(a0[0] ^ bq.x ^ a1[2]);                  \
                    d[1] = as_float(a0[1] ^ bq.y ^ a1[3]);                  \
                    d[2] = as_float(a0[2] ^ bq.z ^ a1[0]);                  \
                    d[3] = as_float(a0[3] ^ bq.w ^ a1[1]);                  \
                } else {                                                    \
                    NV_MMA(d, a0, bq.x, bq.y);                              \
                    NV_MMA(d, a1, bq.z, bq.w);                              \
                }                                                           \
                acc[2 * n] = fma(saa, (d[0] + d[1]) * inv, acc[2 * n]);     \
                acc[2 * n + 1] = fma(sab, (d[2] + d[3]) * inv,              \
                                     acc[2 * n + 1]);                       \
                if (HAS_MIN) {                                              \
                    acc[2 * n] = fma(-mna.x, s0, acc[2 * n]);               \
                    acc[2 * n] = fma(-mna.y, s1, acc[2 * n]);               \
                    acc[2 * n + 1] = fma(-mnb.x, s0, acc[2 * n + 1]);       \
                    acc[2 * n + 1] = fma(-mnb.y, s1, acc[2 * n + 1]);       \
                }                                                           \
            }                                                               \
        }                                                                   \
    }

/* Whether the decode kernels unroll their steps, per type, as measured
 * on an H200 (docs/PERFORMANCE.md): unrolled, independent steps overlap,
 * which takes 4-19 % off the time for the K-quants and IQ2_XXS; Q8_0 runs
 * 17-36 % longer unrolled (162 registers instead of 128). -DNV_MV_NOUNROLL
 * keeps every loop (for such comparisons). The prefill kernel keeps it:
 * its 8 n-tiles give enough independent work. */
#if defined(DS4_NV_PTX) && !defined(NV_MV_NOUNROLL)
#define NV_JUNROLL_q8_0 _Pragma("unroll 1")
#define NV_JUNROLL_q2_k _Pragma("unroll")
#define NV_JUNROLL_q4_k _Pragma("unroll")
#define NV_JUNROLL_iq2_xxs _Pragma("unroll")
#else
#define NV_JUNROLL_q8_0 _Pragma("unroll 1")
#define NV_JUNROLL_q2_k _Pragma("unroll 1")
#define NV_JUNROLL_q4_k _Pragma("unroll 1")
#define NV_JUNROLL_iq2_xxs _Pragma("unroll 1")
#endif

/* Store the loaded words to the warp's tile. */
#define NV_STORE_TILE(wr)                                                    \
    NV_UNROLL                                                               \
    for (uint k = 0; k < (16 * NW + 31) / 32; k++) {                        \
        uint w = 32 * k + lane;                                             \
        if (w < 16 * NW)                                                    \
            wt[(w / NW) * RSW + w % NW] = wr[k];                            \
    }

/* B fragments from the prepared x in global memory (nv_mm). */
#define NV_BF_GLOBAL(n, st, bq, inv, s0, s1, HAS_MIN)                        \
    {                                                                       \
        uint tb = t0 + 4 * n + (g >> 1), tl = t0 + 4 * n + t;               \
        if (tb < ntok)                                                      \
            bq = vload4(0, XP + (ulong)tb * cols + 32 * st + 8 * t +        \
                        4 * (g & 1));                                       \
        if (tl < ntok) {                                                    \
            inv = xinv[(ulong)tl * (cols / 32) + st];                       \
            if (HAS_MIN) {                                                  \
                float2 sp = vload2(0, sx16 + (ulong)tl * (cols / 16) +      \
                                   2 * st);                                 \
                s0 = sp.x, s1 = sp.y;                                       \
            }                                                               \
        }                                                                   \
    }

/* B fragments from the work-group's staged pass (nv_mv, nv_mv8). */
#define NV_BF_LOCAL(n, st, bq, inv, s0, s1, HAS_MIN)                         \
    {                                                                       \
        uint tb = 4 * n + (g >> 1), tl = 4 * n + t, sp_ = st - st0;         \
        if (tb < ntl)                                                       \
            bq = *(__local const uint4 *)(stage + tb * kp + 32 * sp_ +      \
                                          8 * t + 4 * (g & 1));             \
        if (tl < ntl) {                                                     \
            inv = xinv_l[tl * (kp / 32) + sp_];                             \
            if (HAS_MIN) {                                                  \
                s0 = sx16_l[tl * (kp / 16) + 2 * sp_];                      \
                s1 = sx16_l[tl * (kp / 16) + 2 * sp_ + 1];                  \
            }                                                               \
        }                                                                   \
    }

/* Decode (nv_mv: NT = 1, KS = 8; nv_mv8: NT = 2, KS = 4): the work-group
 * stages x for up to 4096 / live-token columns at a time (one pass for a
 * single token and K <= 4096), one barrier; then each warp runs its
 * superblocks of the pass (every KS-th, the same trip count in every
 * warp; padding ones on a clamped copy with zero scales), loading the
 * next one's words while it decodes the current one, with warp-level
 * syncs only. */
#define NV_KERNEL_MV(NAME, T, NT, KS, HAS_MIN, TABLES)                       \
__kernel __attribute__((reqd_work_group_size(NV_WG, 1, 1)))                \
void NAME(__global const uchar *W, ulong w_off,                            \
          __global const float *X, uint x_stride,                          \
          __global float *Y, uint y_stride, uint rows, uint cols,          \
          uint ntok)                                                       \
{                                                                           \
    const uint SBC = NV_SBC_##T, SBB = NV_SBB_##T, NW = NV_NW_##T;          \
    const uint RSW = NW + 1, NSTEP = SBC / 32, RG = 8 / KS;                 \
    __local uint4 nv_stage4[1024];                                          \
    __local uint *stage = (__local uint *)nv_stage4;                        \
    __local float sx16_l[256], xinv_l[128];                                 \
    __local uint wtile[8 * 16 * (NV_NW_##T + 1)];                           \
    NV_EMU_DECL                                                             \
    uint lid = get_local_id(0), warp = lid >> 5, lane = lid & 31;           \
    uint g = lane >> 2, t = lane & 3;                                       \
    TABLES                                                                  \
    uint ks = warp % KS, rg = warp / KS;                                    \
    uint r0 = (get_group_id(0) * RG + rg) * 16;                             \
    uint t0 = get_group_id(1) * 4 * NT, ntl = min(4u * NT, ntok - t0);      \
    uint kp = (4096 / ntl) / SBC * SBC;                                     \
    uint nsb = cols / SBC;                                                  \
    ulong rbytes = (ulong)nsb * SBB;                                        \
    uint ra = min(r0 + g, rows - 1), rb = min(r0 + g + 8, rows - 1);        \
    __local uint *wt = wtile + warp * 16 * RSW;                             \
    float acc[2 * NT];                                                      \
    for (int n = 0; n < 2 * NT; n++)                                        \
        acc[n] = 0.0f;                                                      \
    for (uint c0 = 0; c0 < cols; c0 += kp) {                                \
        uint kc = min(kp, cols - c0), sb0 = c0 / SBC, nsbp = kc / SBC;      \
        uint niter = (nsbp + KS - 1) / KS, st0 = sb0 * NSTEP;               \
        uint wr[(16 * NV_NW_##T + 31) / 32];                                \
        NV_LOAD_TILE(T, wr, sb0 + min(ks, nsbp - 1))                        \
        nv_stage_pass(X, x_stride, ntl, t0, c0, kc, kp, lid, stage, sx16_l, \
                      xinv_l);                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
        for (uint it = 0; it < niter; it++) {                               \
            uint sbu = it * KS + ks, sb = sb0 + min(sbu, nsbp - 1);         \
            float live = sbu < nsbp ? 1.0f : 0.0f;                          \
            NV_STORE_TILE(wr)                                               \
            NV_WARP_SYNC();                                                 \
            if (it + 1 < niter)                                             \
                NV_LOAD_TILE(T, wr, sb0 + min(sbu + KS, nsbp - 1))          \
            NV_SB_COMPUTE(T, NT, HAS_MIN, NV_BF_LOCAL, NV_JUNROLL_##T)      \
            NV_WARP_SYNC(); /* the tile is rewritten next */                \
        }                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE); /* the pass is restaged next */       \
    }                                                                       \
    nv_finish(acc, NT, KS, wtile, lid, r0 - rg * 16, t0, rows, ntok, Y,     \
              y_stride);                                                    \
}

/* Prefill (nv_mm: NT = 8, RG = 8 warps of 16 rows, 32 tokens): B from
 * nv_xprep's output XP; each warp walks all superblocks of its rows,
 * loading the next one's words while it decodes the current one; no
 * work-group barriers. */
#define NV_KERNEL_MM(NAME, T, HAS_MIN, TABLES)                               \
__kernel __attribute__((reqd_work_group_size(NV_WG, 1, 1)))                \
void NAME(__global const uchar *W, ulong w_off, __global const uint *XP,   \
          __global float *Y, uint y_stride, uint rows, uint cols,          \
          uint ntok)                                                       \
{                                                                           \
    const uint SBC = NV_SBC_##T, SBB = NV_SBB_##T, NW = NV_NW_##T;          \
    const uint RSW = NW + 1, NSTEP = SBC / 32;                              \
    __local uint wtile[8 * 16 * (NV_NW_##T + 1)];                           \
    NV_EMU_DECL                                                             \
    uint lid = get_local_id(0), warp = lid >> 5, lane = lid & 31;           \
    uint g = lane >> 2, t = lane & 3;                                       \
    TABLES                                                                  \
    uint r0 = (get_group_id(0) * 8 + warp) * 16, t0 = get_group_id(1) * 32; \
    uint nsb = cols / SBC;                                                  \
    ulong rbytes = (ulong)nsb * SBB;                                        \
    uint ra = min(r0 + g, rows - 1), rb = min(r0 + g + 8, rows - 1);        \
    __local uint *wt = wtile + warp * 16 * RSW;                             \
    __global const float *xinv = (__global const float *)(XP +              \
        (ulong)ntok * cols);                                                \
    __global const float *sx16 = xinv + (ulong)ntok * (cols / 32);          \
    const float live = 1.0f;                                                \
    float acc[16];                                                          \
    for (int n = 0; n < 16; n++)                                            \
        acc[n] = 0.0f;                                                      \
    uint wr[(16 * NV_NW_##T + 31) / 32];                                    \
    NV_LOAD_TILE(T, wr, 0)                                                  \
    for (uint sb = 0; sb < nsb; sb++) {                                     \
        NV_STORE_TILE(wr)                                                   \
        NV_WARP_SYNC();                                                     \
        if (sb + 1 < nsb)                                                   \
            NV_LOAD_TILE(T, wr, sb + 1)                                     \
        NV_SB_COMPUTE(T, 8, HAS_MIN, NV_BF_GLOBAL, _Pragma("unroll 1"))     \
        NV_WARP_SYNC(); /* the tile is rewritten next */                    \
    }                                                                       \
    nv_finish(acc, 8, 1, wtile, lid, r0 - warp * 16, t0, rows, ntok, Y,     \
              y_stride);                                                    \
}

#define NV_KERNELS(T, HAS_MIN, TABLES)                                       \
    NV_KERNEL_MV(nv_mv_##T, T, 1, 8, HAS_MIN, TABLES)                       \
    NV_KERNEL_MV(nv_mv8_##T, T, 2, 4, HAS_MIN, TABLES)                      \
    NV_KERNEL_MM(nv_mm_##T, T, HAS_MIN, TABLES)

NV_KERNELS(q8_0, 0, NV_TABLES_NONE)
NV_KERNELS(q2_k, 1, NV_TABLES_NONE)
NV_KERNELS(q4_k, 1, NV_TABLES_NONE)
NV_KERNELS(iq2_xxs, 0, NV_TABLES_IQ2)
