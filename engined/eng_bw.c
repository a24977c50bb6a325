/* eng_bw.c - streaming-read bandwidth probe (see eng_bw.h). */
#include "eng_bw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int eng_bw_measure(eng_cl *cl, uint64_t bytes, int repeats, eng_bw_result *out)
{
    memset(out, 0, sizeof *out);
    if (bytes == 0) {
        bytes = cl->info.max_alloc / 2;
        if (bytes > (1ull << 30))
            bytes = 1ull << 30;
    }
    bytes &= ~(uint64_t)15;
    if (repeats < 1)
        repeats = 1;
    cl_kernel k = eng_cl_kernel(cl, "bw_read");
    if (!k)
        return -1;
    cl_mem src = eng_cl_alloc(cl, bytes, CL_MEM_READ_ONLY);
    cl_mem sink = eng_cl_alloc(cl, 64, CL_MEM_READ_WRITE);
    double *t = calloc((size_t)repeats, sizeof *t);
    int rc = -1;
    if (!src || !sink || !t)
        goto out;
    uint32_t pat = 0x9e3779b9u;
    if (eng_cl_fill(cl, src, &pat, sizeof pat, 0, bytes) || eng_cl_finish(cl))
        goto out;
    cl_ulong n_vec = bytes / 16;
    cl_uint key = 0x12345678u;
    cl_int e = clSetKernelArg(k, 0, sizeof src, &src);
    e |= clSetKernelArg(k, 1, sizeof n_vec, &n_vec);
    e |= clSetKernelArg(k, 2, sizeof key, &key);
    e |= clSetKernelArg(k, 3, sizeof sink, &sink);
    if (e != CL_SUCCESS) {
        snprintf(cl->err, sizeof cl->err, "bw_read arguments: %s", eng_cl_strerror(e));
        goto out;
    }
    /* enough work-items to saturate the device, each a few vectors */
    size_t wg = 256;
    if (wg > cl->info.max_wg)
        wg = cl->info.max_wg;
    size_t g = (size_t)cl->info.compute_units * 64 * wg;
    if (g > n_vec)
        g = (n_vec + wg - 1) / wg * wg;
    for (int r = -1; r < repeats; r++) {
        uint64_t t0 = ds4_now_ns();
        e = clEnqueueNDRangeKernel(cl->queue, k, 1, NULL, &g, &wg, 0, NULL, NULL);
        if (e != CL_SUCCESS) {
            snprintf(cl->err, sizeof cl->err, "bw_read: %s", eng_cl_strerror(e));
            goto out;
        }
        if (eng_cl_finish(cl))
            goto out;
        if (r >= 0)
            t[r] = (ds4_now_ns() - t0) / 1e9;
    }
    qsort(t, (size_t)repeats, sizeof *t, cmp_d);
    out->gbps_median = bytes / t[repeats / 2] / 1e9;
    out->gbps_best = bytes / t[0] / 1e9;
    out->bytes = bytes;
    out->repeats = repeats;
    rc = 0;
out:
    if (src)
        clReleaseMemObject(src);
    if (sink)
        clReleaseMemObject(sink);
    free(t);
    return rc;
}
