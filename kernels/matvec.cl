/* matvec.cl - decode mat-vec y = W x for row-major GGUF weight blocks
 * (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS), x and y in f32, plus the
 * block decoders that matmul.cl reuses.
 *
 * Portable OpenCL C 1.2: no cl_khr_fp16 (halves are read with vload_half),
 * no subgroups. One work-group of DS4_MV_WG work-items per output row;
 * work-item i decodes the 8-element groups i, i + WG, ... so neighbouring
 * work-items read neighbouring bytes, then a local-memory tree reduction.
 *
 * Dequantized values are bit-exact with common/quant.c: each product of
 * the block formulas is rounded separately, hence FP_CONTRACT OFF.
 *
 * eng_cl.c prepends a prelude defining DS4_IQ2XXS_GRID_INIT and
 * DS4_KSIGNS_IQ2XS_INIT from common/quant.h's tables, and passes DS4_MV_WG.
 * Other files use the decoders by naming this file on a ds4-requires line
 * (see matmul.cl); they then see it with DS4_AS_LIBRARY defined, without
 * its kernels. */
#pragma OPENCL FP_CONTRACT OFF

#ifndef DS4_MV_WG
#define DS4_MV_WG 64
#endif

__constant ulong ds4_iq2xxs_grid[256] = DS4_IQ2XXS_GRID_INIT;
__constant uchar ds4_ksigns_iq2xs[128] = DS4_KSIGNS_IQ2XS_INIT;

/* An f16 at p (2-byte aligned), exactly converted. */
float ds4_ld_f16(__global const uchar *p)
{
    return vload_half(0, (__global const half *)p);
}

/* A little-endian u32 at p, which is only 2-byte aligned in IQ2_XXS. */
uint ds4_ld_u32_a2(__global const uchar *p)
{
    __global const ushort *h = (__global const ushort *)p;
    return (uint)h[0] | ((uint)h[1] << 16);
}

/* Eight bytes at p as two little-endian words: p 4-byte aligned (the
 * launchers require a 4-aligned weight offset), or only 2-byte aligned.
 * Wider loads than bytes matter on GPUs. */
uint2 ds4_ld8_a4(__global const uchar *p)
{
    __global const uint *u = (__global const uint *)p;
    return (uint2)(u[0], u[1]);
}
uint2 ds4_ld8_a2(__global const uchar *p)
{
    __global const ushort *h = (__global const ushort *)p;
    return (uint2)((uint)h[0] | ((uint)h[1] << 16),
                   (uint)h[2] | ((uint)h[3] << 16));
}

/* Byte i (0..7) of two words. */
#define DS4_BYTE8(v, i) ((((i) < 4 ? (v).x : (v).y) >> (8 * ((i) & 3))) & 255u)

/* Bytes of one row of cols elements, per type (cols a block multiple). */
#define DS4_ROW_BYTES_Q8_0(cols) ((ulong)((cols) / 32) * 34)
#define DS4_ROW_BYTES_Q2_K(cols) ((ulong)((cols) / 256) * 84)
#define DS4_ROW_BYTES_Q4_K(cols) ((ulong)((cols) / 256) * 144)
#define DS4_ROW_BYTES_IQ2_XXS(cols) ((ulong)((cols) / 256) * 66)

/* Q8_0: group g (8 elements) of a row: y = qs * d. */
void ds4_dq8_q8_0(__global const uchar *row, uint g, float *w)
{
    __global const uchar *b = row + (ulong)(g >> 2) * 34;
    float d = ds4_ld_f16(b);
    uint2 v = ds4_ld8_a2(b + 2 + (g & 3) * 8);
    for (int i = 0; i < 8; i++)
        w[i] = (float)((int)(DS4_BYTE8(v, i) << 24) >> 24) * d;
}

/* Q2_K: group g of a row; the 8 elements share one code byte lane, one
 * shift and one scale byte. y = (d*sc)*q - (dmin*m). */
void ds4_dq8_q2_k(__global const uchar *row, uint g, float *w)
{
    __global const uchar *b = row + (ulong)(g >> 5) * 84;
    uint e0 = (g & 31) * 8;
    uint h = e0 >> 7, j = (e0 & 127) >> 5, s = (e0 & 31) >> 4, l0 = e0 & 15;
    uint sc = b[8 * h + 2 * j + s];
    float dl = ds4_ld_f16(b + 80) * (float)(sc & 15);
    float ml = ds4_ld_f16(b + 82) * (float)(sc >> 4);
    uint2 v = ds4_ld8_a4(b + 16 + 32 * h + 16 * s + l0);
    for (int i = 0; i < 8; i++)
        w[i] = dl * (float)((DS4_BYTE8(v, i) >> (2 * j)) & 3) - ml;
}

/* Q4_K: group g of a row; 6-bit scale and min of sub-block k unpacked from
 * the 12 scale bytes. y = (d*sc)*q - (dmin*m). */
void ds4_dq8_q4_k(__global const uchar *row, uint g, float *w)
{
    __global const uchar *b = row + (ulong)(g >> 5) * 144;
    uint e0 = (g & 31) * 8;
    uint c = e0 >> 6, hi = (e0 & 63) >> 5, l0 = e0 & 31, k = 2 * c + hi;
    __global const uchar *S = b + 4;
    uint sc, m;
    if (k < 4) {
        sc = S[k] & 63;
        m = S[k + 4] & 63;
    } else {
        sc = (S[k + 4] & 15) | ((S[k - 4] >> 6) << 4);
        m = (S[k + 4] >> 4) | ((S[k] >> 6) << 4);
    }
    float dl = ds4_ld_f16(b) * (float)sc;
    float ml = ds4_ld_f16(b + 2) * (float)m;
    uint2 v = ds4_ld8_a4(b + 16 + 32 * c + l0);
    uint shift = hi * 4;
    for (int i = 0; i < 8; i++)
        w[i] = dl * (float)((DS4_BYTE8(v, i) >> shift) & 15) - ml;
}

/* Copy the IQ2_XXS tables to local memory, where lookups with a
 * different index per work-item do not serialize as they do in NVIDIA's
 * constant cache. Every work-item of the group must call it. */
void ds4_load_iq2_tables(__local ulong *grid, __local uchar *signs)
{
    uint n = get_local_size(0) * get_local_size(1);
    uint i0 = get_local_id(1) * get_local_size(0) + get_local_id(0);
    for (uint i = i0; i < 256; i += n)
        grid[i] = ds4_iq2xxs_grid[i];
    for (uint i = i0; i < 128; i += n)
        signs[i] = ds4_ksigns_iq2xs[i];
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Table set-up for a kernel body: nothing for most types, the local
 * copies (named ds4_lgrid / ds4_lsigns) for IQ2_XXS. */
#define DS4_TABLES_NONE
#define DS4_TABLES_IQ2                                                       \
    __local ulong ds4_lgrid[256];                                           \
    __local uchar ds4_lsigns[128];                                          \
    ds4_load_iq2_tables(ds4_lgrid, ds4_lsigns);

/* IQ2_XXS: group g of a row is one grid entry (8 magnitudes) with one
 * sign pattern; db = (d*(0.5+s))*0.25. Tables as set up above. */
#define ds4_dq8_iq2_xxs(row, g, w)                                           \
    ds4_dq8_iq2_xxs_t(row, g, w, ds4_lgrid, ds4_lsigns)
void ds4_dq8_iq2_xxs_t(__global const uchar *row, uint g, float *w,
                       __local const ulong *lgrid, __local const uchar *lsigns)
{
    __global const uchar *b = row + (ulong)(g >> 5) * 66;
    uint grp = (g & 31) >> 2, l = g & 3;
    uint a0 = ds4_ld_u32_a2(b + 2 + 8 * grp);
    uint a1 = ds4_ld_u32_a2(b + 6 + 8 * grp);
    float db = (ds4_ld_f16(b) * (0.5f + (float)(a1 >> 28))) * 0.25f;
    ulong grid = lgrid[(a0 >> (8 * l)) & 255];
    uint signs = lsigns[(a1 >> (7 * l)) & 127];
    for (int i = 0; i < 8; i++) {
        float v = db * (float)((uint)(grid >> (8 * i)) & 255);
        w[i] = (signs >> i) & 1 ? -v : v;
    }
}

/* Element loaders of the plain float types (any column count). */
float ds4_ld_f32(__global const uchar *row, uint e)
{
    return ((__global const float *)row)[e];
}
float ds4_ld_f16e(__global const uchar *row, uint e)
{
    return vload_half(e, (__global const half *)row);
}
float ds4_ld_bf16(__global const uchar *row, uint e)
{
    return as_float((uint)((__global const ushort *)row)[e] << 16);
}

/* Sum of v over the work-group (size DS4_MV_WG, a power of two); the
 * result is valid in work-item 0. */
float ds4_wg_sum(float v, __local float *red)
{
    uint lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = DS4_MV_WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return red[0];
}

#ifndef DS4_AS_LIBRARY /* kernels only when built as its own program */

/* Mat-vec over a block-quantized type: work-group r computes y[r]. */
#define DS4_MATVEC_Q(NAME, DQ8, ROW_BYTES, TABLES)                           \
__kernel __attribute__((reqd_work_group_size(DS4_MV_WG, 1, 1)))            \
void matvec_##NAME(__global const uchar *W, ulong w_off,                   \
                   __global const float *x, __global float *y,             \
                   uint rows, uint cols)                                   \
{                                                                           \
    __local float red[DS4_MV_WG];                                           \
    TABLES                                                                  \
    uint r = get_group_id(0), lid = get_local_id(0);                        \
    __global const uchar *row = W + w_off + (ulong)r * ROW_BYTES(cols);     \
    uint ng = cols / 8;                                                     \
    float acc = 0.0f;                                                       \
    for (uint g = lid; g < ng; g += DS4_MV_WG) {                            \
        float w[8];                                                         \
        DQ8(row, g, w);                                                     \
        float4 x0 = vload4(2 * g, x), x1 = vload4(2 * g + 1, x);            \
        float s = w[0] * x0.s0 + w[1] * x0.s1 + w[2] * x0.s2 +              \
                  w[3] * x0.s3 + w[4] * x1.s0 + w[5] * x1.s1 +              \
                  w[6] * x1.s2 + w[7] * x1.s3;                              \
        acc += s;                                                           \
    }                                                                       \
    acc = ds4_wg_sum(acc, red);                                             \
    if (lid == 0 && r < rows)                                               \
        y[r] = acc;                                                         \
}

DS4_MATVEC_Q(q8_0, ds4_dq8_q8_0, DS4_ROW_BYTES_Q8_0, DS4_TABLES_NONE)
DS4_MATVEC_Q(q2_k, ds4_dq8_q2_k, DS4_ROW_BYTES_Q2_K, DS4_TABLES_NONE)
DS4_MATVEC_Q(q4_k, ds4_dq8_q4_k, DS4_ROW_BYTES_Q4_K, DS4_TABLES_NONE)
DS4_MATVEC_Q(iq2_xxs, ds4_dq8_iq2_xxs, DS4_ROW_BYTES_IQ2_XXS, DS4_TABLES_IQ2)

/* Mat-vec over a plain float type of ESIZE bytes per element. */
#define DS4_MATVEC_F(NAME, LD, ESIZE)                                        \
__kernel __attribute__((reqd_work_group_size(DS4_MV_WG, 1, 1)))            \
void matvec_##NAME(__global const uchar *W, ulong w_off,                   \
                   __global const float *x, __global float *y,             \
                   uint rows, uint cols)                                   \
{                                                                           \
    __local float red[DS4_MV_WG];                                           \
    uint r = get_group_id(0), lid = get_local_id(0);                        \
    __global const uchar *row = W + w_off + (ulong)r * cols * ESIZE;        \
    float acc = 0.0f;                                                       \
    for (uint c = lid; c < cols; c += DS4_MV_WG)                            \
        acc += LD(row, c) * x[c];                                           \
    acc = ds4_wg_sum(acc, red);                                             \
    if (lid == 0 && r < rows)                                               \
        y[r] = acc;                                                         \
}

DS4_MATVEC_F(f32, ds4_ld_f32, 4)
DS4_MATVEC_F(f16, ds4_ld_f16e, 2)
DS4_MATVEC_F(bf16, ds4_ld_bf16, 2)

#endif /* DS4_AS_LIBRARY */
