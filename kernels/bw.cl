/* bw.cl - streaming-read bandwidth probe: every work-item reads 16-byte
 * vectors at a grid stride (fully coalesced) and folds them into one word,
 * written only when it matches an impossible key, so the reads cannot be
 * optimised away and almost nothing is written. */
__kernel void bw_read(__global const uint4 *src, ulong n_vec, uint key,
                      __global uint *sink)
{
    ulong i = get_global_id(0), stride = get_global_size(0);
    uint4 acc = (uint4)(0, 0, 0, 0);
    for (; i < n_vec; i += stride)
        acc ^= src[i];
    uint v = acc.x ^ acc.y ^ acc.z ^ acc.w;
    if (v == key)
        sink[0] = v;
}
