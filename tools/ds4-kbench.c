/* ds4-kbench - micro-benchmark of the engine's quantized mat-vec (decode)
 * and mat-mat (prefill) kernels on the OpenCL device eng_cl_open() picks.
 *
 * For each path (fast = NVIDIA tensor-core kernels where the device has
 * them, portable), weight type, shape and token count it prints the
 * median time per call of the repeats after a warm-up, the weight bytes
 * streamed per second, that as a fraction of the device's plain
 * streaming-read bandwidth measured in the same run, and FLOP/s.
 *
 * Timing: each repeat enqueues a batch of back-to-back calls and waits
 * for the queue. Reported: the median GPU time of one call (profiling
 * events on the tool's own queue), and in parentheses the batch's wall
 * time per call, in which host enqueue cost and launch gaps count as in a
 * decode loop. The weights rotate through copies filling >= 256 MB so
 * repeated calls read device memory, not the cache. Weights are random block bytes with sane
 * f16 scales; activations random in [-1, 1).
 *
 * Usage: ds4-kbench [--csv] [--path fast|portable|both] [--quick]
 *                   [--reps N] [--type NAME] [--ptxas] [--build-opts S]
 *   --quick  only the decode shapes and one prefill shape
 *   --ptxas  build with -cl-nv-verbose and print the fast path's ptxas
 *            report (registers, spills) on NVIDIA
 *   --build-opts S  extra kernel build options (e.g. -DNV_ABL=1 for the
 *            fast path's ablation experiments) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engined/eng_cl.h"
#include "quant.h"
#include "util.h"

#define ROTATE_BYTES (256ull << 20)

static int g_prof; /* the queue has profiling enabled */

typedef struct kb_case {
    uint32_t type, rows, cols, ntok; /* ntok 0: eng_cl_matvec */
    const char *what;
} kb_case;

static const kb_case kCases[] = {
    { DS4_TYPE_Q8_0, 4096, 4096, 0, "attn proj" },
    { DS4_TYPE_Q8_0, 129280, 4096, 0, "vocab head" },
    { DS4_TYPE_IQ2_XXS, 2048, 4096, 0, "expert gate/up" },
    { DS4_TYPE_Q2_K, 4096, 2048, 0, "expert down" },
    { DS4_TYPE_Q2_K, 2048, 4096, 0, "" },
    { DS4_TYPE_Q4_K, 2048, 4096, 0, "q4 expert" },
    { DS4_TYPE_Q4_K, 4096, 4096, 0, "" },
    { DS4_TYPE_IQ2_XXS, 4096, 4096, 0, "" },
    { DS4_TYPE_Q8_0, 4096, 4096, 4, "batched" },
    { DS4_TYPE_IQ2_XXS, 2048, 4096, 4, "batched" },
    { DS4_TYPE_Q2_K, 4096, 2048, 4, "batched" },
    { DS4_TYPE_Q4_K, 2048, 4096, 4, "batched" },
    { DS4_TYPE_Q8_0, 4096, 4096, 8, "batched" },
    { DS4_TYPE_IQ2_XXS, 2048, 4096, 8, "batched" },
    { DS4_TYPE_F16, 4096, 4096, 0, "float ref" },
    { DS4_TYPE_Q8_0, 4096, 4096, 512, "prefill" },
    { DS4_TYPE_IQ2_XXS, 2048, 4096, 512, "prefill" },
    { DS4_TYPE_Q2_K, 4096, 2048, 512, "prefill" },
    { DS4_TYPE_Q4_K, 4096, 4096, 512, "prefill" },
    { DS4_TYPE_Q8_0, 4096, 4096, 2048, "prefill" },
};
#define N_QUICK 16 /* cases up to and including the first prefill */

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t rnd_scale(void)
{
    float v = (float)(1.0 / 1024 + (rnd() >> 40) * (0.1 / 16777216.0));
    return ds4_f32_to_f16(rnd() & 1 ? -v : v);
}

/* Random weights of type, nbytes (a whole number of blocks). */
static void fill_weights(uint32_t type, uint8_t *w, uint64_t nbytes)
{
    for (uint64_t i = 0; i + 8 <= nbytes; i += 8) {
        uint64_t r = rnd();
        memcpy(w + i, &r, 8);
    }
    for (uint64_t i = nbytes & ~7ull; i < nbytes; i++)
        w[i] = (uint8_t)rnd();
    const ds4_type_info *ti = ds4_type_get(type);
    for (uint64_t o = 0; o + ti->block_bytes <= nbytes; o += ti->block_bytes) {
        uint8_t *b = w + o;
        switch (type) {
        case DS4_TYPE_F16:
            put16(b, ds4_f32_to_f16((float)((int)(rnd() & 255) - 128) / 64));
            break;
        case DS4_TYPE_Q2_K:
            put16(b + 80, rnd_scale());
            put16(b + 82, rnd_scale());
            break;
        case DS4_TYPE_Q4_K:
            put16(b, rnd_scale());
            put16(b + 2, rnd_scale());
            break;
        default:
            put16(b, rnd_scale());
        }
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Times of fn: *kern = median GPU time of one call (profiling events;
 * the wall time if the queue has no profiling), *wall = median over reps
 * of a batch's wall time per call. A batch has at least min_n calls and
 * lasts about 20 ms (a calibration call after the warm-up sets its
 * size). Returns 0 or -1. */
typedef int (*kb_fn)(eng_cl *cl, void *arg, int i);
static int time_calls(eng_cl *cl, kb_fn fn, void *arg, int min_n, int reps,
                      int prof, double *kern, double *wall)
{
    for (int i = 0; i < 2; i++) /* warm-up (first launch builds state) */
        if (fn(cl, arg, i))
            return -1;
    if (eng_cl_finish(cl))
        return -1;
    uint64_t c0 = ds4_now_ns();
    if (fn(cl, arg, 2) || eng_cl_finish(cl))
        return -1;
    double one = (ds4_now_ns() - c0) / 1e9;
    int n = one > 0 ? (int)(0.02 / one) : 1000;
    n = n < min_n ? min_n : n > 1000 ? 1000 : n;
    double *t = ds4_xmalloc((size_t)reps * sizeof *t);
    double *k = ds4_xmalloc((size_t)reps * n * sizeof *k);
    cl_event *ev = ds4_xcalloc((size_t)n, sizeof *ev);
    int nk = 0, rc = 0;
    for (int r = 0; r < reps && rc == 0; r++) {
        uint64_t t0 = ds4_now_ns();
        for (int i = 0; i < n && rc == 0; i++) {
            cl->last_event = prof ? &ev[i] : NULL;
            rc = fn(cl, arg, i);
            cl->last_event = NULL;
        }
        if (rc || eng_cl_finish(cl)) {
            rc = -1;
            break;
        }
        t[r] = (ds4_now_ns() - t0) / 1e9 / n;
        for (int i = 0; prof && i < n; i++) {
            cl_ulong a = 0, b = 0;
            if (clGetEventProfilingInfo(ev[i], CL_PROFILING_COMMAND_START,
                                        sizeof a, &a, NULL) == CL_SUCCESS &&
                clGetEventProfilingInfo(ev[i], CL_PROFILING_COMMAND_END,
                                        sizeof b, &b, NULL) == CL_SUCCESS &&
                b > a)
                k[nk++] = (b - a) / 1e9;
            clReleaseEvent(ev[i]);
            ev[i] = NULL;
        }
    }
    if (rc == 0) {
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        *wall = t[reps / 2];
        if (nk) {
            qsort(k, (size_t)nk, sizeof *k, cmp_double);
            *kern = k[nk / 2];
        } else {
            *kern = *wall;
        }
    }
    free(ev);
    free(k);
    free(t);
    return rc;
}

/* ---- streaming read */
typedef struct rd_arg {
    cl_kernel k;
    size_t g, l;
} rd_arg;

static int rd_call(eng_cl *cl, void *a, int i)
{
    rd_arg *r = a;
    (void)i;
    cl_int e = clEnqueueNDRangeKernel(cl->queue, r->k, 1, NULL, &r->g, &r->l,
                                      0, NULL, cl->last_event);
    if (e != CL_SUCCESS) {
        snprintf(cl->err, sizeof cl->err, "bench_read: %s",
                 eng_cl_strerror(e));
        return -1;
    }
    return 0;
}

/* Plain streaming-read bandwidth in GB/s (0 on failure). */
static double read_bandwidth(eng_cl *cl, int reps)
{
    uint64_t bytes = 2048ull << 20;
    if (cl->info.max_alloc && bytes > cl->info.max_alloc / 2)
        bytes = cl->info.max_alloc / 2 & ~255ull;
    if (!cl->info.is_gpu)
        bytes = 256ull << 20;
    cl_mem a = eng_cl_alloc(cl, bytes, CL_MEM_READ_ONLY);
    rd_arg r = { eng_cl_kernel(cl, "bench_read"), 0, 0 };
    r.l = cl->info.is_gpu ? 256 : 1;
    int prof = cl->info.is_gpu;
    r.g = cl->info.is_gpu ? (size_t)cl->info.compute_units * 2048
                          : (size_t)cl->info.compute_units * 4;
    cl_mem o = eng_cl_alloc(cl, r.g * 4, CL_MEM_READ_WRITE);
    double gbs = 0;
    uint32_t pat = 0x12345678;
    cl_ulong n = bytes / 16;
    if (a && o && r.k && eng_cl_fill(cl, a, &pat, 4, 0, bytes) == 0 &&
        clSetKernelArg(r.k, 0, sizeof a, &a) == CL_SUCCESS &&
        clSetKernelArg(r.k, 1, sizeof o, &o) == CL_SUCCESS &&
        clSetKernelArg(r.k, 2, sizeof n, &n) == CL_SUCCESS) {
        double s, w;
        if (time_calls(cl, rd_call, &r, 1, reps, prof && g_prof, &s, &w)
            == 0 && s > 0)
            gbs = bytes / s / 1e9;
    }
    if (a)
        clReleaseMemObject(a);
    if (o)
        clReleaseMemObject(o);
    return gbs;
}

/* ---- mat-vec / mat-mat */
typedef struct mm_arg {
    const kb_case *c;
    cl_mem w, x, y;
    uint64_t stride; /* bytes between weight copies */
    int copies;
} mm_arg;

static int mm_call(eng_cl *cl, void *a, int i)
{
    mm_arg *m = a;
    const kb_case *c = m->c;
    uint64_t off = (uint64_t)(i % m->copies) * m->stride;
    if (c->ntok == 0)
        return eng_cl_matvec(cl, c->type, m->w, off, m->x, m->y, c->rows,
                             c->cols);
    return eng_cl_matmul(cl, c->type, m->w, off, m->x, c->cols, m->y,
                         c->rows, c->rows, c->cols, c->ntok);
}

typedef struct kb_opts {
    int csv, quick, reps, ptxas;
    int paths; /* bit 0 fast, bit 1 portable */
    const char *type, *build_opts;
} kb_opts;

static void print_row(const kb_opts *o, const char *path, const char *kern,
                      const kb_case *c, double s, double wall,
                      uint64_t wbytes, double bw)
{
    uint32_t nt = c->ntok ? c->ntok : 1;
    double gbs = wbytes / s / 1e9;
    double tf = 2.0 * c->rows * c->cols * nt / s / 1e12;
    const char *tn = ds4_type_get(c->type)->name;
    if (o->csv)
        printf("%s,%s,%s,%u,%u,%u,%.3f,%.3f,%.1f,%.1f,%.3f,%s\n", path, kern,
               tn, (unsigned)c->rows, (unsigned)c->cols, (unsigned)nt,
               s * 1e6, wall * 1e6, gbs, bw > 0 ? 100 * gbs / bw : 0.0, tf,
               c->what);
    else
        printf("%-8s %-7s %-7s %6u x %-5u %4u tok %9.1f us (%8.1f) %7.1f "
               "GB/s %5.1f%% %7.2f TFLOP/s  %s\n", path, kern, tn,
               (unsigned)c->rows, (unsigned)c->cols, (unsigned)nt, s * 1e6,
               wall * 1e6, gbs, bw > 0 ? 100 * gbs / bw : 0.0, tf, c->what);
}

/* Run one case on the current path; 0, or -1 with cl->err. */
static int run_case(eng_cl *cl, const kb_opts *o, const kb_case *c,
                    const char *path, double bw)
{
    uint64_t wbytes = ds4_type_nbytes(c->type, (uint64_t)c->rows * c->cols);
    uint64_t stride = (wbytes + 255) & ~255ull;
    int copies = (int)((ROTATE_BYTES + stride - 1) / stride);
    if (copies < 1)
        copies = 1;
    if ((uint64_t)copies * stride > cl->info.max_alloc)
        copies = (int)(cl->info.max_alloc / stride);
    if (!cl->info.is_gpu)
        copies = 1;
    if (copies < 1) {
        snprintf(cl->err, sizeof cl->err, "weights exceed max allocation");
        return -1;
    }
    uint32_t nt = c->ntok ? c->ntok : 1;
    uint8_t *w = ds4_xmalloc(stride);
    fill_weights(c->type, w, wbytes);
    float *x = ds4_xmalloc((size_t)nt * c->cols * 4);
    for (uint64_t i = 0; i < (uint64_t)nt * c->cols; i++)
        x[i] = (float)((int64_t)(rnd() >> 40) - (1 << 23)) / (1 << 23);
    mm_arg m = { c, NULL, NULL, NULL, stride, copies };
    m.w = eng_cl_alloc(cl, stride * copies, CL_MEM_READ_ONLY);
    m.x = eng_cl_alloc(cl, (uint64_t)nt * c->cols * 4, CL_MEM_READ_ONLY);
    m.y = eng_cl_alloc(cl, (uint64_t)nt * c->rows * 4, CL_MEM_READ_WRITE);
    int rc = -1;
    if (m.w && m.x && m.y &&
        eng_cl_write(cl, m.x, 0, x, (uint64_t)nt * c->cols * 4) == 0) {
        rc = 0;
        for (int k = 0; k < copies && rc == 0; k++)
            rc = eng_cl_write(cl, m.w, (uint64_t)k * stride, w, stride);
    }
    if (rc == 0) {
        double s, wall;
        rc = time_calls(cl, mm_call, &m, cl->info.is_gpu ? 3 : 1, o->reps,
                        g_prof, &s, &wall);
        if (rc == 0)
            print_row(o, path, eng_cl_gemm_path(cl, c->type, c->cols,
                                                c->ntok),
                      c, s, wall, wbytes, bw);
    }
    if (m.w)
        clReleaseMemObject(m.w);
    if (m.x)
        clReleaseMemObject(m.x);
    if (m.y)
        clReleaseMemObject(m.y);
    free(w);
    free(x);
    return rc;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--csv] [--path fast|portable|both] "
            "[--quick] [--reps N] [--type NAME] [--ptxas] "
            "[--build-opts S]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    kb_opts o = { 0, 0, 7, 0, 3, NULL, NULL };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--csv") == 0)
            o.csv = 1;
        else if (strcmp(argv[i], "--quick") == 0)
            o.quick = 1;
        else if (strcmp(argv[i], "--ptxas") == 0)
            o.ptxas = 1;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            o.reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
            o.type = argv[++i];
        else if (strcmp(argv[i], "--build-opts") == 0 && i + 1 < argc)
            o.build_opts = argv[++i];
        else if (strcmp(argv[i], "--path") == 0 && i + 1 < argc) {
            const char *p = argv[++i];
            o.paths = strcmp(p, "fast") == 0 ? 1
                    : strcmp(p, "portable") == 0 ? 2
                    : strcmp(p, "both") == 0 ? 3 : 0;
            if (!o.paths)
                return usage(argv[0]);
        } else
            return usage(argv[0]);
    }
    if (o.reps < 1)
        o.reps = 1;
    eng_cl cl;
    if (eng_cl_open(&cl) != 0) {
        fprintf(stderr, "ds4-kbench: %s\n", cl.err);
        return 1;
    }
    /* a profiling queue in place of the engine's, for kernel times */
    cl_queue_properties qp[] = { CL_QUEUE_PROPERTIES,
                                 CL_QUEUE_PROFILING_ENABLE, 0 };
    cl_int qe;
    cl_command_queue pq = clCreateCommandQueueWithProperties(cl.ctx,
                                                             cl.device, qp,
                                                             &qe);
    if (qe == CL_SUCCESS && pq) {
        clReleaseCommandQueue(cl.queue);
        cl.queue = pq;
        g_prof = 1;
    }
    char bopts[1024];
    snprintf(bopts, sizeof bopts, "%s %s",
             o.ptxas && cl.info.is_nvidia ? "-cl-nv-verbose" : "",
             o.build_opts ? o.build_opts : "");
    uint64_t t0 = ds4_now_ns();
    if (eng_cl_build(&cl, bopts) != 0) {
        fprintf(stderr, "ds4-kbench: %s\n", cl.err);
        eng_cl_close(&cl);
        return 1;
    }
    int fast_ok = cl.nv_path;
    fprintf(o.csv ? stderr : stdout,
            "device: %s (%s); fast path %s; kernels built in %.1f s\n",
            cl.info.name, cl.info.platform,
            fast_ok ? "available" : "not available",
            (ds4_now_ns() - t0) / 1e9);
    if (o.ptxas) {
        const char *log = eng_cl_build_log(&cl, "matmul_nv.cl");
        printf("--- ptxas report of matmul_nv.cl ---\n%s\n", log ? log : "");
    }
    double bw = read_bandwidth(&cl, o.reps);
    if (o.csv) {
        printf("path,kernel,type,rows,cols,ntok,us,wall_us,GBps,"
               "pct_read_bw,TFLOPs,what\n");
        printf("read,bench_read,-,0,0,0,0,0,%.1f,100,0,streaming read\n",
               bw);
    } else {
        printf("streaming read: %.1f GB/s; columns: kernel time (%s median),"
               " (wall time per call in back-to-back batches), weight bytes"
               " per kernel time, %% of the streaming read\n", bw,
               g_prof ? "event" : "wall");
    }
    int rc = 0;
    size_t ncase = o.quick ? N_QUICK : DS4_ARRAY_LEN(kCases);
    for (int p = 0; p < 2; p++) {
        if (!(o.paths & (1 << p)) || (p == 0 && !fast_ok))
            continue;
        cl.nv_path = p == 0;
        for (size_t i = 0; i < ncase; i++) {
            const kb_case *c = &kCases[i];
            if (o.type && strcasecmp(o.type, ds4_type_get(c->type)->name))
                continue;
            if (!cl.info.is_gpu && (c->rows > 4096 || c->ntok > 8))
                continue; /* vocab head and prefill take minutes on a CPU */
            if (run_case(&cl, &o, c, p == 0 ? "fast" : "portable", bw)) {
                fprintf(stderr, "ds4-kbench: %s %u x %u: %s\n",
                        ds4_type_get(c->type)->name, (unsigned)c->rows,
                        (unsigned)c->cols, cl.err);
                rc = 1;
            }
        }
    }
    eng_cl_close(&cl);
    return rc;
}
