/* matmul.cl - prefill mat-mat Y = X W^T for a chunk of tokens: X is
 * [ntok x cols] f32 (rows x_stride apart), W row-major GGUF blocks
 * [rows x cols], Y [ntok x rows] f32 (rows y_stride apart).
 *
 * Portable tiled version: a 16 x 16 work-group computes 16 weight rows for
 * 16 tokens; per 32-column step it dequantizes the weight tile and copies
 * the activation tile to local memory (so each weight byte is decoded once
 * per 16 tokens), then every work-item accumulates one output in f32.
 * The block decoders come from matvec.cl (compiled into this program).
 *
 * ds4-requires: matvec.cl
 */
#pragma OPENCL FP_CONTRACT OFF

#define DS4_MM_T 16  /* tile edge: weight rows and tokens per work-group */
#define DS4_MM_K 32  /* columns per step */

/* Multiply-accumulate the two local tiles into acc. */
float ds4_mm_step(float acc, __local float (*Xl)[DS4_MM_K + 1],
                  __local float (*Wl)[DS4_MM_K + 1], uint lt, uint lr)
{
    for (int k = 0; k < DS4_MM_K; k++)
        acc += Xl[lt][k] * Wl[lr][k];
    return acc;
}

/* Copy the activation tile (tokens t0.., columns k0..) to local memory,
 * zero outside the matrix. */
void ds4_mm_load_x(__local float (*Xl)[DS4_MM_K + 1], __global const float *X,
                   uint x_stride, uint ntok, uint cols, uint t0, uint k0,
                   uint lin)
{
    for (uint i = lin; i < DS4_MM_T * DS4_MM_K; i += DS4_MM_T * DS4_MM_T) {
        uint tt = i / DS4_MM_K, kk = i % DS4_MM_K;
        uint t = t0 + tt, c = k0 + kk;
        Xl[tt][kk] = t < ntok && c < cols ? X[(ulong)t * x_stride + c] : 0.0f;
    }
}

/* Mat-mat over a block-quantized type (cols a multiple of 32): 64
 * work-items each decode one 8-element group of the weight tile. */
#define DS4_MATMUL_Q(NAME, DQ8, ROW_BYTES, TABLES)                           \
__kernel __attribute__((reqd_work_group_size(DS4_MM_T, DS4_MM_T, 1)))      \
void matmul_##NAME(__global const uchar *W, ulong w_off,                   \
                   __global const float *X, uint x_stride,                 \
                   __global float *Y, uint y_stride,                       \
                   uint rows, uint cols, uint ntok)                        \
{                                                                           \
    __local float Xl[DS4_MM_T][DS4_MM_K + 1];                               \
    __local float Wl[DS4_MM_T][DS4_MM_K + 1];                               \
    TABLES                                                                  \
    uint lr = get_local_id(0), lt = get_local_id(1);                        \
    uint lin = lt * DS4_MM_T + lr;                                          \
    uint r0 = get_group_id(0) * DS4_MM_T, t0 = get_group_id(1) * DS4_MM_T;  \
    ulong rb = ROW_BYTES(cols);                                             \
    float acc = 0.0f;                                                       \
    for (uint k0 = 0; k0 < cols; k0 += DS4_MM_K) {                          \
        ds4_mm_load_x(Xl, X, x_stride, ntok, cols, t0, k0, lin);            \
        if (lin < DS4_MM_T * (DS4_MM_K / 8)) {                              \
            uint rr = lin / (DS4_MM_K / 8), sub = lin % (DS4_MM_K / 8);     \
            float w[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };                        \
            if (r0 + rr < rows)                                             \
                DQ8(W + w_off + (ulong)(r0 + rr) * rb, k0 / 8 + sub, w);    \
            for (int i = 0; i < 8; i++)                                     \
                Wl[rr][sub * 8 + i] = w[i];                                 \
        }                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
        acc = ds4_mm_step(acc, Xl, Wl, lt, lr);                             \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
    }                                                                       \
    if (r0 + lr < rows && t0 + lt < ntok)                                   \
        Y[(ulong)(t0 + lt) * y_stride + r0 + lr] = acc;                     \
}

DS4_MATMUL_Q(q8_0, ds4_dq8_q8_0, DS4_ROW_BYTES_Q8_0, DS4_TABLES_NONE)
DS4_MATMUL_Q(q2_k, ds4_dq8_q2_k, DS4_ROW_BYTES_Q2_K, DS4_TABLES_NONE)
DS4_MATMUL_Q(q4_k, ds4_dq8_q4_k, DS4_ROW_BYTES_Q4_K, DS4_TABLES_NONE)
DS4_MATMUL_Q(iq2_xxs, ds4_dq8_iq2_xxs, DS4_ROW_BYTES_IQ2_XXS,
                  DS4_TABLES_IQ2)

/* Mat-mat over a plain float type of ESIZE bytes per element (any cols). */
#define DS4_MATMUL_F(NAME, LD, ESIZE)                                        \
__kernel __attribute__((reqd_work_group_size(DS4_MM_T, DS4_MM_T, 1)))      \
void matmul_##NAME(__global const uchar *W, ulong w_off,                   \
                   __global const float *X, uint x_stride,                 \
                   __global float *Y, uint y_stride,                       \
                   uint rows, uint cols, uint ntok)                        \
{                                                                           \
    __local float Xl[DS4_MM_T][DS4_MM_K + 1];                               \
    __local float Wl[DS4_MM_T][DS4_MM_K + 1];                               \
    uint lr = get_local_id(0), lt = get_local_id(1);                        \
    uint lin = lt * DS4_MM_T + lr;                                          \
    uint r0 = get_group_id(0) * DS4_MM_T, t0 = get_group_id(1) * DS4_MM_T;  \
    ulong rb = (ulong)cols * ESIZE;                                         \
    float acc = 0.0f;                                                       \
    for (uint k0 = 0; k0 < cols; k0 += DS4_MM_K) {                          \
        ds4_mm_load_x(Xl, X, x_stride, ntok, cols, t0, k0, lin);            \
        for (uint i = lin; i < DS4_MM_T * DS4_MM_K;                         \
             i += DS4_MM_T * DS4_MM_T) {                                    \
            uint rr = i / DS4_MM_K, kk = i % DS4_MM_K;                      \
            uint r = r0 + rr, c = k0 + kk;                                  \
            Wl[rr][kk] = r < rows && c < cols                               \
                ? LD(W + w_off + (ulong)r * rb, c) : 0.0f;                  \
        }                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
        acc = ds4_mm_step(acc, Xl, Wl, lt, lr);                             \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
    }                                                                       \
    if (r0 + lr < rows && t0 + lt < ntok)                                   \
        Y[(ulong)(t0 + lt) * y_stride + r0 + lr] = acc;                     \
}

DS4_MATMUL_F(f32, ds4_ld_f32, 4)
DS4_MATMUL_F(f16, ds4_ld_f16e, 2)
DS4_MATMUL_F(bf16, ds4_ld_bf16, 2)

/* Barrier-free variant for CPU devices (PoCL): work-item (r, b) computes
 * weight row r for the DS4_MR_T tokens of block b, decoding each weight
 * group once and keeping the activations in cache. PoCL vectorizes it
 * across neighbouring rows; the engine also uses it as the CPU mat-vec
 * (ntok = 1). Launched with a 16 x 1 work-group over padded rows. */
#define DS4_MR_T 8

/* Accumulate the 8-element group g of w into the tokens' sums. */
void ds4_mr_acc8(float *acc, const float *w, __global const float *xp,
                 uint x_stride, uint g, uint nt)
{
    for (uint t = 0; t < DS4_MR_T; t++) {
        if (t >= nt)
            break;
        __global const float *xt = xp + (ulong)t * x_stride;
        float4 x0 = vload4(2 * g, xt), x1 = vload4(2 * g + 1, xt);
        acc[t] += w[0] * x0.s0 + w[1] * x0.s1 + w[2] * x0.s2 + w[3] * x0.s3 +
                  w[4] * x1.s0 + w[5] * x1.s1 + w[6] * x1.s2 + w[7] * x1.s3;
    }
}

#define DS4_MATMUL_ROWS_Q(NAME, DQ8, ROW_BYTES, TABLES)                      \
__kernel void matmul_rows_##NAME(__global const uchar *W, ulong w_off,     \
                                 __global const float *X, uint x_stride,   \
                                 __global float *Y, uint y_stride,         \
                                 uint rows, uint cols, uint ntok)          \
{                                                                           \
    TABLES /* before the early return: it holds a barrier */                \
    uint r = get_global_id(0), t0 = get_global_id(1) * DS4_MR_T;            \
    if (r >= rows || t0 >= ntok)                                            \
        return;                                                             \
    uint nt = min(ntok - t0, (uint)DS4_MR_T);                               \
    __global const uchar *row = W + w_off + (ulong)r * ROW_BYTES(cols);     \
    __global const float *xp = X + (ulong)t0 * x_stride;                    \
    float acc[DS4_MR_T];                                                    \
    for (uint t = 0; t < DS4_MR_T; t++)                                     \
        acc[t] = 0.0f;                                                      \
    for (uint g = 0; g < cols / 8; g++) {                                   \
        float w[8];                                                         \
        DQ8(row, g, w);                                                     \
        ds4_mr_acc8(acc, w, xp, x_stride, g, nt);                           \
    }                                                                       \
    for (uint t = 0; t < nt; t++)                                           \
        Y[(ulong)(t0 + t) * y_stride + r] = acc[t];                         \
}

DS4_MATMUL_ROWS_Q(q8_0, ds4_dq8_q8_0, DS4_ROW_BYTES_Q8_0, DS4_TABLES_NONE)
DS4_MATMUL_ROWS_Q(q2_k, ds4_dq8_q2_k, DS4_ROW_BYTES_Q2_K, DS4_TABLES_NONE)
DS4_MATMUL_ROWS_Q(q4_k, ds4_dq8_q4_k, DS4_ROW_BYTES_Q4_K, DS4_TABLES_NONE)
DS4_MATMUL_ROWS_Q(iq2_xxs, ds4_dq8_iq2_xxs, DS4_ROW_BYTES_IQ2_XXS,
                  DS4_TABLES_IQ2)

/* Eight consecutive elements from column 8g of a plain float row. */
void ds4_ld8_f32(__global const uchar *row, uint g, float *w)
{
    float8 v = vload8(g, (__global const float *)row);
    w[0] = v.s0, w[1] = v.s1, w[2] = v.s2, w[3] = v.s3;
    w[4] = v.s4, w[5] = v.s5, w[6] = v.s6, w[7] = v.s7;
}
void ds4_ld8_f16(__global const uchar *row, uint g, float *w)
{
    float8 v = vload_half8(g, (__global const half *)row);
    w[0] = v.s0, w[1] = v.s1, w[2] = v.s2, w[3] = v.s3;
    w[4] = v.s4, w[5] = v.s5, w[6] = v.s6, w[7] = v.s7;
}
void ds4_ld8_bf16(__global const uchar *row, uint g, float *w)
{
    uint8 u = convert_uint8(vload8(g, (__global const ushort *)row)) << 16;
    float8 v = as_float8(u);
    w[0] = v.s0, w[1] = v.s1, w[2] = v.s2, w[3] = v.s3;
    w[4] = v.s4, w[5] = v.s5, w[6] = v.s6, w[7] = v.s7;
}

/* Plain float types: groups of 8 as above, then the scalar tail. */
#define DS4_MATMUL_ROWS_F(NAME, LD, LD8, ESIZE)                              \
__kernel void matmul_rows_##NAME(__global const uchar *W, ulong w_off,     \
                                 __global const float *X, uint x_stride,   \
                                 __global float *Y, uint y_stride,         \
                                 uint rows, uint cols, uint ntok)          \
{                                                                           \
    uint r = get_global_id(0), t0 = get_global_id(1) * DS4_MR_T;            \
    if (r >= rows || t0 >= ntok)                                            \
        return;                                                             \
    uint nt = min(ntok - t0, (uint)DS4_MR_T);                               \
    __global const uchar *row = W + w_off + (ulong)r * cols * ESIZE;        \
    __global const float *xp = X + (ulong)t0 * x_stride;                    \
    float acc[DS4_MR_T];                                                    \
    for (uint t = 0; t < DS4_MR_T; t++)                                     \
        acc[t] = 0.0f;                                                      \
    for (uint g = 0; g < cols / 8; g++) {                                   \
        float w[8];                                                         \
        LD8(row, g, w);                                                     \
        ds4_mr_acc8(acc, w, xp, x_stride, g, nt);                           \
    }                                                                       \
    for (uint c = cols & ~7u; c < cols; c++) {                              \
        float w = LD(row, c);                                               \
        for (uint t = 0; t < nt; t++)                                       \
            acc[t] += w * xp[(ulong)t * x_stride + c];                      \
    }                                                                       \
    for (uint t = 0; t < nt; t++)                                           \
        Y[(ulong)(t0 + t) * y_stride + r] = acc[t];                         \
}

DS4_MATMUL_ROWS_F(f32, ds4_ld_f32, ds4_ld8_f32, 4)
DS4_MATMUL_ROWS_F(f16, ds4_ld_f16e, ds4_ld8_f16, 2)
DS4_MATMUL_ROWS_F(bf16, ds4_ld_bf16, ds4_ld8_bf16, 2)
