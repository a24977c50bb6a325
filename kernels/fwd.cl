/* fwd.cl - the DeepSeek V4 forward pass's non-GEMM kernels (engined/
 * eng_fwd.c drives them; weights go through matvec.cl / matmul.cl and the
 * routed experts through fwd_moe.cl):
 *   embedding, mHC pre (RMS, Sinkhorn split, stream collapse, RMSNorm) and
 *   post, RMSNorm rows, the row "finish" (norm, partial interleaved RoPE,
 *   QAT: FP8 E4M3 + F16 on KV rows, Hadamard-128 + FP4 E2M1 on indexer
 *   rows), the compressor's softmax pooling and state ring, the sliding-
 *   window ring, indexer scores and causal top-k, sparse attention with
 *   sinks and inverse RoPE, SwiGLU, and the output head's stream collapse.
 *
 * Portable OpenCL C 1.2. Work-group kernels use FWD_WG work-items in
 * dimension 0 (the launcher sets it). Floats accumulate in f32; the QAT
 * round trips are bit-exact with common/qat.c (integer bit manipulation,
 * no libm), so the engine's QAT mode and eng_ref's agree up to the
 * accumulation order of the values fed to them.
 *
 * Session state (one f32 buffer per session, regions at element offsets
 * the host computes) is described in eng_fwd.h. */
#pragma OPENCL FP_CONTRACT OFF

#define FWD_WG 64        /* work-group size of the reduction kernels */
#define FWD_MAXD 1024    /* longest row kept in local memory (hd, id) */
#define FWD_MAXHC 16     /* most hyper-connection streams */
#define FWD_ACC (FWD_MAXD / FWD_WG)

/* ---- reductions over the work-group (FWD_WG work-items, dim 0) -------- */

float fwd_sum(float v, __local float *red)
{
    uint l = get_local_id(0);
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = FWD_WG / 2; s > 0; s >>= 1) {
        if (l < s)
            red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

float fwd_max(float v, __local float *red)
{
    uint l = get_local_id(0);
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = FWD_WG / 2; s > 0; s >>= 1) {
        if (l < s)
            red[l] = fmax(red[l], red[l + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* ---- scalar helpers ------------------------------------------------------ */

float fwd_sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }

/* 2^ceil(log2(p)) from p's bits (p positive, normal): common/qat.c. */
float fwd_pow2_ceil(float p)
{
    uint b = as_uint(p);
    int e = (int)((b >> 23) & 0xFF);
    int k = e - 127 + ((b & 0x7FFFFF) != 0);
    if (k + 127 >= 255)
        return INFINITY;
    if (k + 127 <= 0)
        return as_float(1u << 23);
    return as_float((uint)(k + 127) << 23);
}

/* Clamp keeping NaN (torch.clamp). */
float fwd_clamp_nan(float v, float lim)
{
    return v > lim ? lim : v < -lim ? -lim : v;
}

/* Nearest E4M3FN value of y (|y| <= 448 after the clamp, or NaN), ties to
 * even: 3 mantissa bits for normal magnitudes, multiples of 2^-9 below
 * 2^-6. */
float fwd_e4m3_round(float y)
{
    if (isnan(y))
        return y;
    uint b = as_uint(y);
    uint sign = b & 0x80000000u;
    float a = fabs(y);
    float r;
    if (a < 0x1p-6f) {
        r = rint(a * 512.0f) * 0x1p-9f;
    } else {
        uint u = as_uint(a);
        u += 0x7FFFFu + ((u >> 20) & 1u);
        u &= ~0xFFFFFu;
        r = as_float(u);
        if (r > 464.0f) /* cannot happen after the clamp: NaN like torch */
            r = NAN;
    }
    return as_float(as_uint(r) | sign);
}

/* Nearest E2M1 value (|y| <= 6 after the clamp), ties to the even index;
 * NaN -> +0 (common/qat.c encodes NaN as code 0). */
float fwd_e2m1_round(float y)
{
    if (isnan(y))
        return y; /* ds4_fp4_e2m1_round passes NaN through */
    float a = fabs(y), m;
    if (a <= 0.25f)
        m = 0.0f;
    else if (a < 0.75f)
        m = 0.5f;
    else if (a <= 1.25f)
        m = 1.0f;
    else if (a < 1.75f)
        m = 1.5f;
    else if (a <= 2.5f)
        m = 2.0f;
    else if (a < 3.5f)
        m = 3.0f;
    else if (a <= 5.0f)
        m = 4.0f;
    else
        m = 6.0f;
    return as_float(as_uint(m) | (as_uint(y) & 0x80000000u));
}

/* f rounded to the nearest F16 value (common/quant.c ds4_f32_to_f16 then
 * back): RNE, overflow to inf, NaN kept. */
float fwd_f16_round(float f)
{
    uint w = as_uint(f);
    uint sign = w & 0x80000000u;
    uint a = w & 0x7fffffffu;
    if (a > 0x7f800000u)
        return f;
    if (a >= 0x477ff000u)
        return as_float(sign | 0x7f800000u);
    if (a >= 0x38800000u) {
        uint r = a + 0x0fffu + ((a >> 13) & 1u);
        r &= ~0x1fffu;
        return as_float(sign | r);
    }
    /* f16 subnormal: multiples of 2^-24, ties to even */
    float q = rint(as_float(a) * 0x1p24f) * 0x1p-24f;
    return as_float(sign | as_uint(q));
}

/* ---- embedding ----------------------------------------------------------- */

/* h[t][j][d] = embed[ids[t]][d] for every stream j. Global (H, S).
 * etype: 0 f32, 1 f16, 2 bf16. */
__kernel void fwd_embed(__global const uchar *E, ulong e_off, uint etype,
                        __global const int *ids, __global float *h, uint H,
                        uint hc)
{
    uint d = get_global_id(0), t = get_global_id(1);
    if (d >= H)
        return;
    ulong idx = (ulong)ids[t] * H + d;
    __global const uchar *base = E + e_off;
    float v;
    if (etype == 0)
        v = ((__global const float *)base)[idx];
    else if (etype == 1)
        v = vload_half(idx, (__global const half *)base);
    else
        v = as_float((uint)((__global const ushort *)base)[idx] << 16);
    __global float *ht = h + (ulong)t * hc * H;
    for (uint j = 0; j < hc; j++)
        ht[(ulong)j * H + d] = v;
}

/* ---- mHC ----------------------------------------------------------------- */

/* mHC pre of token t (one work-group per token): rs = RMS of the hc*H
 * streams, mix = mixraw * rs (mixraw = fn @ h, a GEMM), the pre/post/
 * Sinkhorn-projected comb split, the collapsed input x = sum_j pre[j] h[j],
 * then xn = RMSNorm(x) * norm. post and comb go to global for hc_post. */
__kernel void fwd_hc_pre(__global const float *h, __global const float *mixraw,
                         uint mix_stride, __global const float *sw,
                         ulong scale_off, ulong base_off, ulong norm_off,
                         __global float *post, __global float *comb,
                         __global float *xn, uint H, uint hc, uint iters,
                         float hc_eps, float eps)
{
    __local float red[FWD_WG];
    __local float lpre[FWD_MAXHC];
    __local float lc[FWD_MAXHC * FWD_MAXHC];
    uint l = get_local_id(0), t = get_group_id(0);
    __global const float *ht = h + (ulong)t * hc * H;
    uint F = hc * H;
    float ss = 0.0f;
    for (uint i = l; i < F; i += FWD_WG)
        ss += ht[i] * ht[i];
    ss = fwd_sum(ss, red);
    float rs = 1.0f / sqrt(ss / (float)F + eps);
    if (l == 0) {
        __global const float *mx = mixraw + (ulong)t * mix_stride;
        __global const float *sc = sw + scale_off, *bs = sw + base_off;
        for (uint i = 0; i < hc; i++) {
            lpre[i] = fwd_sigmoid(mx[i] * rs * sc[0] + bs[i]) + hc_eps;
            post[t * hc + i] = 2.0f * fwd_sigmoid(mx[hc + i] * rs * sc[1] + bs[hc + i]);
        }
        for (uint j = 0; j < hc; j++) {
            float m = -INFINITY;
            for (uint k = 0; k < hc; k++) {
                uint at = 2 * hc + j * hc + k;
                lc[j * hc + k] = mx[at] * rs * sc[2] + bs[at];
                m = fmax(m, lc[j * hc + k]);
            }
            float s = 0.0f;
            for (uint k = 0; k < hc; k++)
                s += (lc[j * hc + k] = exp(lc[j * hc + k] - m));
            for (uint k = 0; k < hc; k++)
                lc[j * hc + k] = lc[j * hc + k] / s + hc_eps;
        }
        for (uint it = 0; it < iters; it++) {
            if (it > 0)
                for (uint j = 0; j < hc; j++) {
                    float s = 0.0f;
                    for (uint k = 0; k < hc; k++)
                        s += lc[j * hc + k];
                    for (uint k = 0; k < hc; k++)
                        lc[j * hc + k] /= s + hc_eps;
                }
            for (uint k = 0; k < hc; k++) {
                float s = 0.0f;
                for (uint j = 0; j < hc; j++)
                    s += lc[j * hc + k];
                for (uint j = 0; j < hc; j++)
                    lc[j * hc + k] /= s + hc_eps;
            }
        }
        for (uint i = 0; i < hc * hc; i++)
            comb[(ulong)t * hc * hc + i] = lc[i];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    __global float *xt = xn + (ulong)t * H;
    float s2 = 0.0f;
    for (uint d = l; d < H; d += FWD_WG) {
        float s = 0.0f;
        for (uint j = 0; j < hc; j++)
            s += lpre[j] * ht[(ulong)j * H + d];
        xt[d] = s;
        s2 += s * s;
    }
    s2 = fwd_sum(s2, red);
    float r = 1.0f / sqrt(s2 / (float)H + eps);
    __global const float *w = sw + norm_off;
    for (uint d = l; d < H; d += FWD_WG)
        xt[d] = w[d] * (xt[d] * r);
}

/* h[t][k] = post[k] * y[t] + sum_j comb[j][k] * h[t][j]. Global (H, S). */
__kernel void fwd_hc_post(__global float *h, __global const float *y,
                          __global const float *post,
                          __global const float *comb, uint H, uint hc)
{
    uint d = get_global_id(0), t = get_global_id(1);
    if (d >= H)
        return;
    __global float *ht = h + (ulong)t * hc * H;
    __global const float *c = comb + (ulong)t * hc * hc;
    float old[FWD_MAXHC];
    for (uint j = 0; j < hc; j++)
        old[j] = ht[(ulong)j * H + d];
    float yv = y[(ulong)t * H + d];
    for (uint k = 0; k < hc; k++) {
        float s = 0.0f;
        for (uint j = 0; j < hc; j++)
            s += c[j * hc + k] * old[j];
        ht[(ulong)k * H + d] = post[t * hc + k] * yv + s;
    }
}

/* Output head collapse of row t (one work-group per row): rs over the
 * streams, pre = sigmoid(mix * rs * scale + base) + eps, x = sum pre h,
 * then RMSNorm(x) * norm. */
__kernel void fwd_head_pre(__global const float *h, __global const float *mixraw,
                           __global const float *sw, ulong scale_off,
                           ulong base_off, ulong norm_off, __global float *xo,
                           uint H, uint hc, float hc_eps, float eps)
{
    __local float red[FWD_WG];
    uint l = get_local_id(0), t = get_group_id(0);
    __global const float *ht = h + (ulong)t * hc * H;
    uint F = hc * H;
    float ss = 0.0f;
    for (uint i = l; i < F; i += FWD_WG)
        ss += ht[i] * ht[i];
    ss = fwd_sum(ss, red);
    float rs = 1.0f / sqrt(ss / (float)F + eps);
    float pre[FWD_MAXHC];
    for (uint j = 0; j < hc; j++)
        pre[j] = fwd_sigmoid(mixraw[t * hc + j] * rs * sw[scale_off] +
                             sw[base_off + j]) + hc_eps;
    __global float *xt = xo + (ulong)t * H;
    float s2 = 0.0f;
    for (uint d = l; d < H; d += FWD_WG) {
        float s = 0.0f;
        for (uint j = 0; j < hc; j++)
            s += pre[j] * ht[(ulong)j * H + d];
        xt[d] = s;
        s2 += s * s;
    }
    s2 = fwd_sum(s2, red);
    float r = 1.0f / sqrt(s2 / (float)H + eps);
    __global const float *w = sw + norm_off;
    for (uint d = l; d < H; d += FWD_WG)
        xt[d] = w[d] * (xt[d] * r);
}

/* ---- row finish: norm, RoPE, QAT ---------------------------------------- */

/* Interleaved RoPE of the last n_rot dims of the local row x[n] at pos
 * (conjugate when inverse). Angles in f32 as HF: freq[i] * (float)pos. */
void fwd_rope_local(__local float *x, uint n, uint n_rot,
                    __global const float *freq, uint pos, int inverse)
{
    uint l = get_local_id(0);
    __local float *r = x + (n - n_rot);
    for (uint i = l; i < n_rot / 2; i += FWD_WG) {
        float ang = freq[i] * (float)pos;
        float c = cos(ang), s = sin(ang);
        if (inverse)
            s = -s;
        float a = r[2 * i], b = r[2 * i + 1];
        r[2 * i] = a * c - b * s;
        r[2 * i + 1] = b * c + a * s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* FP8 E4M3 block round trip of x[0..n) in blocks of 64 (one work-item per
 * block), as ds4_fp8_block_roundtrip. */
void fwd_fp8_local(__local float *x, uint n)
{
    const float inv = (float)(1.0 / 448.0);
    for (uint b = get_local_id(0) * 64; b < n; b += FWD_WG * 64) {
        float amax = 0.0f;
        for (uint i = b; i < b + 64; i++)
            amax = fmax(amax, fabs(x[i]));
        amax = fmax(amax, 1e-4f);
        float s = fwd_pow2_ceil(amax * inv);
        for (uint i = b; i < b + 64; i++)
            x[i] = fwd_e4m3_round(fwd_clamp_nan(x[i] / s, 448.0f)) * s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Hadamard-128 (Sylvester order, scaled by 128^-0.5) then FP4 E2M1 block
 * round trip in blocks of 32, as ds4_indexer_qat_row. n must be 128. */
void fwd_hadamard_fp4_local(__local float *x)
{
    uint l = get_local_id(0);
    for (uint hh = 1; hh < 128; hh *= 2) {
        for (uint p = l; p < 64; p += FWD_WG) {
            uint i = (p / hh) * 2 * hh + p % hh;
            float a = x[i], b = x[i + hh];
            x[i] = a + b;
            x[i + hh] = a - b;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float scale = (float)0.08838834764831844055;
    for (uint i = l; i < 128; i += FWD_WG)
        x[i] *= scale;
    barrier(CLK_LOCAL_MEM_FENCE);
    const float inv = (float)(1.0 / 6.0);
    const float floor_amax = 6.0f * 0x1p-126f;
    for (uint b = l * 32; b < 128; b += FWD_WG * 32) {
        float amax = 0.0f;
        for (uint i = b; i < b + 32; i++)
            amax = fmax(amax, fabs(x[i]));
        amax = fmax(amax, floor_amax);
        float s = fwd_pow2_ceil(amax * inv);
        for (uint i = b; i < b + 32; i++)
            x[i] = fwd_e2m1_round(fwd_clamp_nan(x[i] / s, 6.0f)) * s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Finish rows of n floats at buf + off + r * stride (one work-group per
 * row r < nrows): norm (0 none, 1 unweighted RMS, 2 RMS * sw[norm_off..]),
 * RoPE of the last n_rot dims (skipped when n_rot is 0) at position
 * tpos[r / pos_div] (a token's position, use_tpos) or pos_base +
 * (r / pos_div) * pos_mul, then QAT (0 none, 1 FP8 on the first n - n_rot
 * dims + F16 on all, 2 Hadamard + FP4). */
__kernel void fwd_rows_finish(__global float *buf, ulong off, uint stride,
                              uint n, uint nrows, __global const float *sw,
                              uint norm, ulong norm_off, ulong freq_off,
                              uint n_rot, __global const int *tpos,
                              uint use_tpos, uint pos_base, uint pos_div,
                              uint pos_mul, uint qat, float eps)
{
    __local float x[FWD_MAXD];
    __local float red[FWD_WG];
    uint l = get_local_id(0), r = get_group_id(0);
    if (r >= nrows)
        return;
    __global float *row = buf + off + (ulong)r * stride;
    float ss = 0.0f;
    for (uint i = l; i < n; i += FWD_WG) {
        x[i] = row[i];
        ss += x[i] * x[i];
    }
    if (norm) {
        ss = fwd_sum(ss, red);
        float rr = 1.0f / sqrt(ss / (float)n + eps);
        __global const float *w = sw + norm_off;
        for (uint i = l; i < n; i += FWD_WG)
            x[i] = norm == 2 ? w[i] * (x[i] * rr) : x[i] * rr;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (n_rot)
        fwd_rope_local(x, n, n_rot, sw + freq_off,
                       use_tpos ? (uint)tpos[r / pos_div]
                                : pos_base + (r / pos_div) * pos_mul, 0);
    if (qat == 1) {
        fwd_fp8_local(x, n - n_rot);
        for (uint i = l; i < n; i += FWD_WG)
            x[i] = fwd_f16_round(x[i]);
        barrier(CLK_LOCAL_MEM_FENCE);
    } else if (qat == 2) {
        fwd_hadamard_fp4_local(x);
    }
    for (uint i = l; i < n; i += FWD_WG)
        row[i] = x[i];
}

/* ---- rings of the session state ------------------------------------------ */

/* Keep a segment's last rows (positions pos0 + S - nsave ..; position p
 * at chunk row p - pos0 + tbase) in the sliding-window ring:
 * ring[p % n_swa] = kv row. Global (hd, nsave). */
__kernel void fwd_ring_save(__global const float *kv, __global float *state,
                            ulong ring_off, uint hd, uint n_swa, uint pos0,
                            uint S, uint nsave, uint tbase)
{
    uint c = get_global_id(0), i = get_global_id(1);
    if (c >= hd || i >= nsave)
        return;
    uint p = pos0 + S - nsave + i;
    state[ring_off + (ulong)(p % n_swa) * hd + c] =
        kv[(ulong)(p - pos0 + tbase) * hd + c];
}

/* Compressor input of token p (absolute), lane, channel c: kv and score
 * (gate + ape[p % ratio]) from the chunk (p >= pos0) or the state ring. */
void fwd_comp_in(uint p, uint lane, uint c, __global const float *ckv,
                 __global const float *cg, __global const float *state,
                 ulong skv, ulong ssc, __global const float *ape, uint d,
                 uint ratio, uint lanes, uint pos0, uint tbase, float *kv,
                 float *sc)
{
    uint cd = lanes * d;
    if (p >= pos0) {
        ulong at = (ulong)(p - pos0 + tbase) * cd + lane * d + c;
        *kv = ckv[at];
        *sc = cg[at] + ape[(ulong)(p % ratio) * cd + lane * d + c];
    } else {
        ulong at = (ulong)(p % (lanes * ratio)) * cd + lane * d + c;
        *kv = state[skv + at];
        *sc = state[ssc + at];
    }
}

/* Softmax pooling of compressed block w = w0 + gid1 (blocks that end in
 * this chunk), channel c = gid0: over the ratio tokens of the block (one
 * lane), or with overlap the previous block's tokens on lane 0 then this
 * block's on lane 1 (block 0 has no previous lane). The raw pooled row goes
 * to state[out_off + w * d]; fwd_rows_finish then norms/ropes/quantizes. */
__kernel void fwd_comp_pool(__global const float *ckv, __global const float *cg,
                            __global float *state, ulong skv, ulong ssc,
                            __global const float *sw, ulong ape_off,
                            ulong out_off, uint d, uint ratio, uint lanes,
                            uint pos0, uint tbase, uint w0, uint nb)
{
    uint c = get_global_id(0), b = get_global_id(1);
    if (c >= d || b >= nb)
        return;
    uint w = w0 + b;
    __global const float *ape = sw + ape_off;
    float mx = -INFINITY;
    for (uint ln = 0; ln < lanes; ln++) {
        if (lanes == 2 && ln == 0 && w == 0)
            continue;
        uint t0 = (w + ln - (lanes - 1)) * ratio;
        for (uint i = 0; i < ratio; i++) {
            float kv, sc;
            fwd_comp_in(t0 + i, ln, c, ckv, cg, state, skv, ssc, ape, d, ratio,
                        lanes, pos0, tbase, &kv, &sc);
            mx = fmax(mx, sc);
        }
    }
    float se = 0.0f, acc = 0.0f;
    for (uint ln = 0; ln < lanes; ln++) {
        if (lanes == 2 && ln == 0 && w == 0)
            continue;
        uint t0 = (w + ln - (lanes - 1)) * ratio;
        for (uint i = 0; i < ratio; i++) {
            float kv, sc;
            fwd_comp_in(t0 + i, ln, c, ckv, cg, state, skv, ssc, ape, d, ratio,
                        lanes, pos0, tbase, &kv, &sc);
            float e = exp(sc - mx);
            se += e;
            acc += e * kv;
        }
    }
    state[out_off + (ulong)w * d + c] = acc / se;
}

/* Keep a segment's last nsave tokens' compressor inputs (kv, gate + ape)
 * in the state ring of lanes * ratio slots. Global (lanes * d, nsave). */
__kernel void fwd_comp_save(__global const float *ckv, __global const float *cg,
                            __global const float *sw, ulong ape_off,
                            __global float *state, ulong skv, ulong ssc,
                            uint cd, uint ratio, uint lanes, uint pos0, uint S,
                            uint nsave, uint tbase)
{
    uint c = get_global_id(0), i = get_global_id(1);
    if (c >= cd || i >= nsave)
        return;
    uint p = pos0 + S - nsave + i;
    ulong src = (ulong)(p - pos0 + tbase) * cd + c;
    ulong dst = (ulong)(p % (lanes * ratio)) * cd + c;
    state[skv + dst] = ckv[src];
    state[ssc + dst] = cg[src] + sw[ape_off + (ulong)(p % ratio) * cd + c];
}

/* ---- lightning indexer --------------------------------------------------- */

/* score[tt][j] = sum_h relu(q_h . K_j) * qscale * (w[t][h] * wscale) for
 * the causally valid rows j < (p + 1) / ratio, -inf beyond: tokens t0 ..
 * t0 + nt of a segment (positions pos0 + t0 .., chunk rows tbase + t0 ..);
 * global (nc, nt), row stride nc. */
__kernel void fwd_idx_score(__global const float *iq, __global const float *iw,
                            __global const float *state, ulong k_off,
                            __global float *scores, uint iH, uint id,
                            uint pos0, uint tbase, uint t0, uint nt, uint nc,
                            uint ratio, float qscale, float wscale)
{
    uint j = get_global_id(0), tt = get_global_id(1);
    if (j >= nc || tt >= nt)
        return;
    uint nv = (pos0 + t0 + tt + 1) / ratio;
    uint t = tbase + t0 + tt;
    float s = -INFINITY;
    if (j < nv) {
        s = 0.0f;
        __global const float *K = state + k_off + (ulong)j * id;
        for (uint h = 0; h < iH; h++) {
            __global const float *q = iq + ((ulong)t * iH + h) * id;
            float dd = 0.0f;
            for (uint c = 0; c < id; c++)
                dd += q[c] * K[c];
            dd = dd > 0.0f ? dd * qscale : 0.0f;
            s += dd * (iw[(ulong)t * iH + h] * wscale);
        }
    }
    scores[(ulong)tt * nc + j] = s;
}

/* Order-preserving key of a score: larger score, larger key. */
uint fwd_key(float s)
{
    uint b = s == 0.0f ? 0u : as_uint(s); /* -0 ties with +0, as in C */
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* Inclusive prefix sum over the work-group of v (FWD_WG items); the total
 * goes to *total. */
uint fwd_scan(uint v, __local uint *sc, uint *total)
{
    uint l = get_local_id(0);
    sc[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint o = 1; o < FWD_WG; o <<= 1) {
        uint a = l >= o ? sc[l - o] : 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        sc[l] += a;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    uint r = sc[l];
    *total = sc[FWD_WG - 1];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* Causal top-k of a segment's token t0 + group (chunk row tbase + t0 +
 * group, position pos0 + t0 + group): the k best valid rows (all of them
 * when there are k or fewer) by score, ties to the lower index, written to
 * sel[t][0..k) in increasing index order, -1 after. A radix select finds
 * the k-th largest key (4 passes of 8 bits, histograms in local memory),
 * then one ordered pass keeps the keys above it and the first of the keys
 * equal to it. O(nv) per token. One work-group per token. */
__kernel void fwd_idx_topk(__global const float *scores, __global int *sel,
                           uint pos0, uint tbase, uint t0, uint nc, uint k,
                           uint ratio)
{
    __local uint hist[256];
    __local uint sc[FWD_WG];
    __local uint pick[2];
    uint l = get_local_id(0), tt = get_group_id(0), t = tbase + t0 + tt;
    uint nv = min((pos0 + t0 + tt + 1) / ratio, nc);
    uint nsel = min(k, nv);
    __global const float *s = scores + (ulong)tt * nc;
    __global int *out = sel + (ulong)t * k;
    uint thr = 0, need = nsel; /* the key of the k-th, how many equal to take */
    if (nv > k) {
        uint prefix = 0, mask = 0;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (uint b = l; b < 256; b += FWD_WG)
                hist[b] = 0;
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint j = l; j < nv; j += FWD_WG) {
                uint key = fwd_key(s[j]);
                if ((key & mask) == prefix)
                    atomic_inc(&hist[(key >> shift) & 255u]);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (l == 0) {
                uint cum = 0, b = 255;
                for (;; b--) {
                    if (cum + hist[b] >= need || b == 0)
                        break;
                    cum += hist[b];
                }
                pick[0] = b;
                pick[1] = need - cum;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            prefix |= pick[0] << shift;
            mask |= 255u << shift;
            need = pick[1];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        thr = prefix;
    }
    /* ordered pass: keys above thr, and the first `need` keys equal to it */
    uint base_out = 0, base_eq = 0;
    for (uint j0 = 0; j0 < nv; j0 += FWD_WG) {
        uint j = j0 + l;
        uint key = j < nv ? fwd_key(s[j]) : 0;
        uint eq = j < nv && nv > k && key == thr;
        uint teq, tsel;
        uint eq_before = fwd_scan(eq, sc, &teq) - eq + base_eq;
        uint take = j < nv && (nv <= k || key > thr || (eq && eq_before < need));
        uint at = fwd_scan(take, sc, &tsel) - take + base_out;
        if (take)
            out[at] = (int)j;
        base_out += tsel;
        base_eq += teq;
    }
    for (uint r = nsel + l; r < k; r += FWD_WG)
        out[r] = -1;
}

/* ---- attention ------------------------------------------------------------ */

/* Row i of query t's attendable set: window rows first (positions s0 ..
 * p, from the chunk or the ring), then compressed rows (the selection, or
 * all valid ones). */
__global const float *fwd_att_row(uint i, uint nw, uint s0, uint pos0,
                                  uint tbase, __global const float *kvc,
                                  __global const float *state, ulong ring_off,
                                  ulong comp_off, __global const int *selt,
                                  uint use_sel, uint hd, uint n_swa)
{
    if (i < nw) {
        uint s = s0 + i;
        if (s >= pos0)
            return kvc + (ulong)(s - pos0 + tbase) * hd;
        return state + ring_off + (ulong)(s % n_swa) * hd;
    }
    uint c = i - nw;
    uint j = use_sel ? (uint)selt[c] : c;
    return state + comp_off + (ulong)j * hd;
}

/* One head h = group 0, a segment's token group 1 (position pos0 + it,
 * chunk row tbase + it): softmax over the attendable rows
 * with the sink logit in the denominator, o = sum p * row (K = V), then
 * inverse RoPE of o's tail at the query position. Online softmax over
 * tiles of FWD_WG rows; work-item l owns dims l, l + WG, ... */
__kernel void fwd_attend(__global const float *q, __global const float *kvc,
                         __global const float *state, ulong ring_off,
                         ulong comp_off, __global const int *sel, uint use_sel,
                         uint k_sel, __global const float *sw, ulong sink_off,
                         ulong freq_off, __global float *o, uint nH, uint hd,
                         uint n_swa, uint ratio, uint pos0, uint tbase,
                         uint n_rot, float scale)
{
    __local float qv[FWD_MAXD];
    __local float ps[FWD_WG];
    __local float red[FWD_WG];
    uint l = get_local_id(0), h = get_group_id(0);
    uint p = pos0 + get_group_id(1), t = tbase + get_group_id(1);
    __global const float *qh = q + ((ulong)t * nH + h) * hd;
    for (uint c = l; c < hd; c += FWD_WG)
        qv[c] = qh[c];
    barrier(CLK_LOCAL_MEM_FENCE);
    uint s0 = p + 1 > n_swa ? p + 1 - n_swa : 0;
    uint nw = p - s0 + 1, ncomp = 0;
    __global const int *selt = sel + (ulong)t * k_sel;
    if (ratio) {
        uint nv = (p + 1) / ratio;
        ncomp = use_sel ? min(nv, k_sel) : nv;
    }
    uint R = nw + ncomp;
    float m = sw[sink_off + h], lsum = 1.0f; /* the sink: exp(sink - m) */
    float acc[FWD_ACC];
    for (uint a = 0; a < FWD_ACC; a++)
        acc[a] = 0.0f;
    for (uint base = 0; base < R; base += FWD_WG) {
        uint i = base + l;
        float sc = -INFINITY;
        if (i < R) {
            __global const float *row = fwd_att_row(i, nw, s0, pos0, tbase, kvc,
                                                    state, ring_off, comp_off,
                                                    selt, use_sel, hd, n_swa);
            float dd = 0.0f;
            for (uint c = 0; c < hd; c++)
                dd += qv[c] * row[c];
            sc = dd * scale;
        }
        float tm = fwd_max(sc, red);
        float mn = fmax(m, tm);
        float f = exp(m - mn);
        ps[l] = exp(sc - mn);
        barrier(CLK_LOCAL_MEM_FENCE);
        lsum *= f;
        for (uint a = 0; a < FWD_ACC; a++)
            acc[a] *= f;
        uint nr = min((uint)FWD_WG, R - base);
        for (uint r = 0; r < nr; r++) {
            float pr = ps[r];
            lsum += pr;
            __global const float *row = fwd_att_row(base + r, nw, s0, pos0, tbase,
                                                    kvc, state, ring_off,
                                                    comp_off, selt, use_sel, hd,
                                                    n_swa);
            for (uint a = 0, c = l; c < hd; a++, c += FWD_WG)
                acc[a] += pr * row[c];
        }
        m = mn;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint a = 0, c = l; c < hd; a++, c += FWD_WG)
        qv[c] = acc[a] / lsum;
    barrier(CLK_LOCAL_MEM_FENCE);
    fwd_rope_local(qv, hd, n_rot, sw + freq_off, p, 1);
    __global float *oh = o + ((ulong)t * nH + h) * hd;
    for (uint c = l; c < hd; c += FWD_WG)
        oh[c] = qv[c];
}

/* ---- FFN helpers ---------------------------------------------------------- */

/* mid = silu(min(g, lim)) * clamp(u, -lim, lim), n values. */
__kernel void fwd_swiglu(__global const float *g, __global const float *u,
                         __global float *mid, uint n, float lim)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    float gg = fmin(g[i], lim);
    float uu = fmax(fmin(u[i], lim), -lim);
    mid[i] = gg / (1.0f + exp(-gg)) * uu;
}

/* Copy n floats src[so..] -> dst[do..] (global n). */
__kernel void fwd_copy(__global const float *src, ulong so, __global float *dst,
                       ulong dof, uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        dst[dof + i] = src[so + i];
}
