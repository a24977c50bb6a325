/* bench.cl - reference kernels for tools/ds4-kbench: the device's plain
 * streaming-read bandwidth, the ceiling the mat-vec kernels are judged
 * against. */

/* XOR of n 16-byte words, grid-strided so neighbouring work-items read
 * neighbouring words; one word per work-item out (keeps the reads live). */
__kernel void bench_read(__global const uint4 *a, __global uint *out,
                         ulong n)
{
    size_t gid = get_global_id(0), gs = get_global_size(0);
    uint4 acc = (uint4)(0);
    for (size_t i = gid; i < n; i += gs)
        acc ^= a[i];
    out[gid] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
