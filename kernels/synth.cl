/* synth.cl - synthetic weights generated in device memory, for the
 * full-width benchmark (no 81 GB file): every value is a stateless hash of
 * (salt, element index), so the result is deterministic and independent of
 * how tensors are split into buffers or of the work-group size.
 *
 *   synth_values   f32 / f16 / bf16 elements v = (voff + q) * scale with q
 *                  uniform in [lo, hi] (0 replaced by 1 when nonzero)
 *   synth_bytes    random bytes (the payload of quantized blocks)
 *   synth_half     one f16 field per block (a block's scale d or dmin),
 *                  uniform in [lo, hi]
 *   synth_tid2eid  per token k distinct expert ids (hash routing table) */

ulong ds4_mix64(ulong z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
    return z ^ (z >> 31);
}

ulong ds4_hash2(ulong salt, ulong i)
{
    return ds4_mix64(salt + 0x9e3779b97f4a7c15UL * (i + 1));
}

/* kind: 0 f32, 1 f16, 2 bf16. first: index of element 0 within the tensor. */
__kernel void synth_values(__global uchar *buf, ulong off, ulong n, ulong first,
                           uint kind, int lo, int hi, int voff, float scale,
                           int nonzero, ulong salt)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong h = ds4_hash2(salt, first + i);
    ulong range = (ulong)(hi - lo + 1);
    int q = lo + (int)(((h >> 32) * range) >> 32);
    if (nonzero && q == 0)
        q = 1;
    float v = (float)(voff + q) * scale;
    if (kind == 0) {
        ((__global float *)(buf + off))[i] = v;
    } else if (kind == 1) {
        vstore_half(v, i, (__global half *)(buf + off));
    } else {
        uint b = as_uint(v);
        ((__global ushort *)(buf + off))[i] = (ushort)(b >> 16);
    }
}

/* 16 bytes per work-item; first: byte index of byte 0 within the tensor. */
__kernel void synth_bytes(__global uchar *buf, ulong off, ulong n, ulong first,
                          ulong salt)
{
    ulong j = get_global_id(0) * 16;
    if (j >= n)
        return;
    ulong word = ~0UL, h = 0;
    for (uint b = 0; b < 16 && j + b < n; b++) {
        ulong a = first + j + b; /* byte index within the tensor */
        if ((a >> 3) != word) {
            word = a >> 3;
            h = ds4_hash2(salt, word);
        }
        buf[off + j + b] = (uchar)(h >> (8 * (a & 7)));
    }
}

/* first: index of block 0 within the tensor. */
__kernel void synth_half(__global uchar *buf, ulong off, ulong n_blocks, ulong first,
                         uint block_bytes, uint field_off, float lo, float hi, ulong salt)
{
    ulong b = get_global_id(0);
    if (b >= n_blocks)
        return;
    ulong h = ds4_hash2(salt, first + b);
    float u = (float)(h >> 40) * (1.0f / 16777216.0f);
    float v = lo + (hi - lo) * u;
    vstore_half(v, 0, (__global half *)(buf + off + b * block_bytes + field_off));
}

/* ids[t * k + j], t < n_tokens: k distinct experts of n_expert per token. */
__kernel void synth_tid2eid(__global uchar *buf, ulong off, uint n_tokens, uint first_token,
                            uint k, uint n_expert, ulong salt)
{
    uint t = get_global_id(0);
    if (t >= n_tokens)
        return;
    ulong h = ds4_hash2(salt, (ulong)first_token + t);
    uint base = (uint)((h >> 32) % n_expert);
    /* an odd stride is coprime with a power-of-two count; otherwise 1 */
    uint stride = (n_expert & (n_expert - 1)) == 0 ? (uint)(((h >> 8) % n_expert) | 1) : 1;
    __global int *ids = (__global int *)(buf + off);
    for (uint j = 0; j < k; j++)
        ids[(ulong)t * k + j] = (int)((base + j * stride) % n_expert);
}
