/* fwd_moe.cl - the MoE sublayer's routing and routed experts, entirely on
 * the device (no host round trip to learn which experts a token chose):
 *   fwd_moe_route    sqrt(softplus) scores, hash routing from tid2eid or
 *                    bias-corrected top-k, normalised weights * scale;
 *   fwd_moe_plan     counting sort of the (token, slot) choices by expert
 *                    into blocks of up to 8 entries of one expert;
 *   fwd_moe_gateup_T / fwd_moe_down_T  per weight type: one work-item per
 *                    weight row and block, so only the chosen experts'
 *                    rows are read, each decoded once per block;
 *   fwd_moe_combine  y += sum over slots of weight * expert output.
 * The block decoders (ds4_dq8_*) come from matvec.cl.
 *
 * ds4-requires: matvec.cl
 */
#pragma OPENCL FP_CONTRACT OFF

#define FWD_MB 8 /* entries per block */

/* scores[t][e] = sqrt(softplus(logit)) in place; sel[t][0..k) the experts
 * (tid2eid row of the token on hash layers, else the top-k of score + bias
 * with ties to the lower id), selw their weights score / (sum + 1e-20) *
 * wscale. One work-item per token. */
__kernel void fwd_moe_route(__global float *scores, uint E, uint k,
                            __global const int *ids, uint hash,
                            __global const int *tid2eid, ulong tid_off,
                            __global const float *sw, ulong bias_off,
                            float wscale, __global int *sel,
                            __global float *selw, uint S)
{
    uint t = get_global_id(0);
    if (t >= S)
        return;
    __global float *s = scores + (ulong)t * E;
    for (uint e = 0; e < E; e++) {
        float x = s[e];
        float sp = x > 20.0f ? x : log1p(exp(x));
        s[e] = sqrt(sp);
    }
    __global int *st = sel + (ulong)t * k;
    if (hash) {
        for (uint i = 0; i < k; i++) {
            int e = tid2eid[tid_off + (ulong)ids[t] * k + i];
            st[i] = e < 0 || (uint)e >= E ? 0 : e; /* the loader checked */
        }
    } else {
        __global const float *bias = sw + bias_off;
        uint taken[32] = {0}; /* E <= 1024 */
        for (uint i = 0; i < k; i++) {
            uint best = E;
            float bv = 0.0f;
            for (uint e = 0; e < E; e++) {
                if (taken[e >> 5] & (1u << (e & 31)))
                    continue;
                float v = s[e] + bias[e];
                if (best == E || v > bv) {
                    best = e;
                    bv = v;
                }
            }
            taken[best >> 5] |= 1u << (best & 31);
            st[i] = (int)best;
        }
    }
    float wsum = 0.0f;
    for (uint i = 0; i < k; i++)
        wsum += s[st[i]];
    for (uint i = 0; i < k; i++)
        selw[(ulong)t * k + i] = s[st[i]] / (wsum + 1e-20f) * wscale;
}

/* Counting sort of the n = S*k choices by expert (stable: token order):
 * entries[at] = choice index, entry_of[choice] = at; blocks of up to
 * FWD_MB entries of one expert as (expert, first, count); *nblocks. A
 * single work-item (n and E are small). cnt: E scratch words. */
__kernel void fwd_moe_plan(__global const int *sel, uint n, uint E,
                           __global uint *cnt, __global uint *entries,
                           __global uint *entry_of, __global uint4 *blocks,
                           __global uint *nblocks)
{
    if (get_global_id(0) != 0)
        return;
    for (uint e = 0; e < E; e++)
        cnt[e] = 0;
    for (uint i = 0; i < n; i++)
        cnt[sel[i]]++;
    uint pos = 0, nb = 0;
    for (uint e = 0; e < E; e++) {
        uint c = cnt[e];
        cnt[e] = pos;
        for (uint o = 0; o < c; o += FWD_MB)
            blocks[nb++] = (uint4)(e, pos + o, min((uint)FWD_MB, c - o), 0);
        pos += c;
    }
    for (uint i = 0; i < n; i++) {
        uint at = cnt[sel[i]]++;
        entries[at] = i;
        entry_of[i] = at;
    }
    *nblocks = nb;
}

/* Eight floats of a plain row (f32 / f16 / bf16) from column 8g. */
void fwd_ld8_f32(__global const uchar *row, uint g, float *w)
{
    float8 v = vload8(g, (__global const float *)row);
    w[0] = v.s0, w[1] = v.s1, w[2] = v.s2, w[3] = v.s3;
    w[4] = v.s4, w[5] = v.s5, w[6] = v.s6, w[7] = v.s7;
}
void fwd_ld8_f16(__global const uchar *row, uint g, float *w)
{
    float8 v = vload_half8(g, (__global const half *)row);
    w[0] = v.s0, w[1] = v.s1, w[2] = v.s2, w[3] = v.s3;
    w[4] = v.s4, w[5] = v.s5, w[6] = v.s6, w[7] = v.s7;
}
void fwd_ld8_bf16(__global const uchar *row, uint g, float *w)
{
    uint8 u = convert_uint8(vload8(g, (__global const ushort *)row)) << 16;
    float8 v = as_float8(u);
    w[0] = v.s0, w[1] = v.s1, w[2] = v.s2, w[3] = v.s3;
    w[4] = v.s4, w[5] = v.s5, w[6] = v.s6, w[7] = v.s7;
}
#define FWD_ROW_BYTES_F32(cols) ((ulong)(cols) * 4)
#define FWD_ROW_BYTES_F16(cols) ((ulong)(cols) * 2)

/* w . x[8g .. 8g + 8) */
float fwd_dot8(const float *w, __global const float *x, uint g)
{
    float4 x0 = vload4(2 * g, x), x1 = vload4(2 * g + 1, x);
    return w[0] * x0.s0 + w[1] * x0.s1 + w[2] * x0.s2 + w[3] * x0.s3 +
           w[4] * x1.s0 + w[5] * x1.s1 + w[6] * x1.s2 + w[7] * x1.s3;
}

/* Gate and up rows r of the block's expert for its entries, then SwiGLU
 * with the clamps: mid[at][r]. Global (I rounded up, max blocks); experts
 * outside this weight part's [e0, e1) are another launch's. */
#define FWD_MOE_GATEUP(NAME, DQ8, ROW_BYTES, TABLES)                         \
__kernel void fwd_moe_gateup_##NAME(                                        \
    __global const uchar *Wg, ulong g_off, __global const uchar *Wu,        \
    ulong u_off, ulong ebytes, uint e0, uint e1, __global const float *x,   \
    uint H, uint I, uint k, __global const uint4 *blocks,                   \
    __global const uint *nblocks, __global const uint *entries,             \
    __global float *mid, float lim)                                         \
{                                                                           \
    TABLES /* before any return: it holds a barrier */                      \
    uint r = get_global_id(0), b = get_global_id(1);                        \
    if (r >= I || b >= *nblocks)                                            \
        return;                                                             \
    uint4 bl = blocks[b];                                                   \
    if (bl.x < e0 || bl.x >= e1)                                            \
        return;                                                             \
    ulong rb = ROW_BYTES(H);                                                \
    __global const uchar *rg = Wg + g_off + (ulong)(bl.x - e0) * ebytes +   \
                               (ulong)r * rb;                               \
    __global const uchar *ru = Wu + u_off + (ulong)(bl.x - e0) * ebytes +   \
                               (ulong)r * rb;                               \
    float ag[FWD_MB], au[FWD_MB];                                           \
    __global const float *xs[FWD_MB];                                       \
    for (uint j = 0; j < FWD_MB; j++) {                                     \
        ag[j] = au[j] = 0.0f;                                               \
        xs[j] = x + (ulong)(entries[bl.y + min(j, bl.z - 1)] / k) * H;      \
    }                                                                       \
    for (uint g = 0; g < H / 8; g++) {                                      \
        float wg[8], wu[8];                                                 \
        DQ8(rg, g, wg);                                                     \
        DQ8(ru, g, wu);                                                     \
        for (uint j = 0; j < bl.z; j++) {                                   \
            ag[j] += fwd_dot8(wg, xs[j], g);                                \
            au[j] += fwd_dot8(wu, xs[j], g);                                \
        }                                                                   \
    }                                                                       \
    for (uint j = 0; j < bl.z; j++) {                                       \
        float gg = fmin(ag[j], lim);                                        \
        float uu = fmax(fmin(au[j], lim), -lim);                            \
        mid[(ulong)(bl.y + j) * I + r] = gg / (1.0f + exp(-gg)) * uu;       \
    }                                                                       \
}

/* Down rows r of the block's expert: ye[at][r] = W_down[r] . mid[at]. */
#define FWD_MOE_DOWN(NAME, DQ8, ROW_BYTES, TABLES)                           \
__kernel void fwd_moe_down_##NAME(                                          \
    __global const uchar *Wd, ulong d_off, ulong ebytes, uint e0, uint e1,  \
    __global const float *mid, uint I, uint H,                              \
    __global const uint4 *blocks, __global const uint *nblocks,             \
    __global float *ye)                                                     \
{                                                                           \
    TABLES                                                                  \
    uint r = get_global_id(0), b = get_global_id(1);                        \
    if (r >= H || b >= *nblocks)                                            \
        return;                                                             \
    uint4 bl = blocks[b];                                                   \
    if (bl.x < e0 || bl.x >= e1)                                            \
        return;                                                             \
    __global const uchar *rd = Wd + d_off + (ulong)(bl.x - e0) * ebytes +   \
                               (ulong)r * ROW_BYTES(I);                     \
    float acc[FWD_MB];                                                      \
    for (uint j = 0; j < FWD_MB; j++)                                       \
        acc[j] = 0.0f;                                                      \
    for (uint g = 0; g < I / 8; g++) {                                      \
        float w[8];                                                         \
        DQ8(rd, g, w);                                                      \
        for (uint j = 0; j < bl.z; j++)                                     \
            acc[j] += fwd_dot8(w, mid + (ulong)(bl.y + j) * I, g);          \
    }                                                                       \
    for (uint j = 0; j < bl.z; j++)                                         \
        ye[(ulong)(bl.y + j) * H + r] = acc[j];                             \
}

#define FWD_MOE_TYPE(NAME, DQ8, ROW_BYTES, TABLES)                           \
    FWD_MOE_GATEUP(NAME, DQ8, ROW_BYTES, TABLES)                            \
    FWD_MOE_DOWN(NAME, DQ8, ROW_BYTES, TABLES)

FWD_MOE_TYPE(q8_0, ds4_dq8_q8_0, DS4_ROW_BYTES_Q8_0, DS4_TABLES_NONE)
FWD_MOE_TYPE(q2_k, ds4_dq8_q2_k, DS4_ROW_BYTES_Q2_K, DS4_TABLES_NONE)
FWD_MOE_TYPE(q4_k, ds4_dq8_q4_k, DS4_ROW_BYTES_Q4_K, DS4_TABLES_NONE)
FWD_MOE_TYPE(iq2_xxs, ds4_dq8_iq2_xxs, DS4_ROW_BYTES_IQ2_XXS, DS4_TABLES_IQ2)
FWD_MOE_TYPE(f32, fwd_ld8_f32, FWD_ROW_BYTES_F32, DS4_TABLES_NONE)
FWD_MOE_TYPE(f16, fwd_ld8_f16, FWD_ROW_BYTES_F16, DS4_TABLES_NONE)
FWD_MOE_TYPE(bf16, fwd_ld8_bf16, FWD_ROW_BYTES_F16, DS4_TABLES_NONE)

/* y[t] += sum over slots of selw[t][slot] * ye[entry_of[t*k + slot]], in
 * slot order (after the shared expert's output). Global (H, S). */
__kernel void fwd_moe_combine(__global float *y, __global const float *ye,
                              __global const float *selw,
                              __global const uint *entry_of, uint H, uint k)
{
    uint d = get_global_id(0), t = get_global_id(1);
    if (d >= H)
        return;
    float acc = y[(ulong)t * H + d];
    for (uint i = 0; i < k; i++) {
        uint at = entry_of[t * k + i];
        acc += ye[(ulong)at * H + d] * selw[t * k + i];
    }
    y[(ulong)t * H + d] = acc;
}
