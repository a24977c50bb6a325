/* test_cl_kernels.c - the OpenCL foundation and the quantized mat-vec /
 * mat-mat kernels against common/quant.c's references, on the device
 * eng_cl_open() picks (PoCL's CPU device in CI).
 *
 * Weights are random GGUF block bytes (seeded) whose f16 scale fields are
 * overwritten with sane random halves, at a non-zero buffer offset; outputs
 * are poisoned with a NaN pattern before every run and the padding after
 * them must stay poisoned. Per output the error must stay within 1e-5 of
 * sum |w x| (f32 accumulation against ds4_dot_ref's double sum; a bound
 * relative to |y| alone would fail on legitimate cancellation). A one-hot
 * activation matrix checks that the kernels' decoders are bit-exact.
 *
 * No OpenCL device is a failure unless DS4_ALLOW_NO_OPENCL=1.
 * DS4_CL_BENCH=1 adds rough timings of 4096 x 4096 mat-vecs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engined/eng_cl.h"
#include "quant.h"
#include "test.h"
#include "util.h"

#define POISON 0x7FC0DEADu /* a quiet NaN no kernel computes */
#define W_OFF 100          /* weights start here (4-, not 8-aligned) */
#define PAD 16             /* poisoned floats after every output */

static const uint32_t kTypes[] = {
    DS4_TYPE_F32, DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0,
    DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_IQ2_XXS,
};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* xorshift64 step. */
static uint64_t rng_u64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Uniform float in [lo, hi). */
static float rng_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((rng_u64() >> 40) * (1.0 / 16777216.0));
}

/* A finite, sane, non-zero f16 scale with random sign. */
static uint16_t rng_scale_f16(void)
{
    float v = rng_uniform(1.0f / 1024, 1.0f / 8);
    return ds4_f32_to_f16(rng_u64() & 1 ? -v : v);
}

/* Store an f16 little-endian at p. */
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Random weights of type for rows x cols, as GGUF bytes (malloc'd). */
static uint8_t *make_weights(uint32_t type, uint32_t rows, uint32_t cols,
                             uint64_t *nbytes)
{
    uint64_t rb = ds4_type_nbytes(type, cols);
    DS4_ASSERT(rb > 0);
    *nbytes = rb * rows;
    uint8_t *w = ds4_xmalloc(*nbytes);
    const ds4_type_info *ti = ds4_type_get(type);
    uint64_t nblk = (uint64_t)rows * cols / ti->block_elems;
    for (uint64_t i = 0; i < nblk; i++) {
        uint8_t *b = w + i * ti->block_bytes;
        switch (type) {
        case DS4_TYPE_F32: {
            float v = rng_uniform(-2, 2);
            memcpy(b, &v, 4);
            break;
        }
        case DS4_TYPE_F16:
            put16(b, ds4_f32_to_f16(rng_uniform(-2, 2)));
            break;
        case DS4_TYPE_BF16:
            put16(b, ds4_f32_to_bf16(rng_uniform(-2, 2)));
            break;
        default:
            for (uint32_t j = 0; j < ti->block_bytes; j++)
                b[j] = (uint8_t)rng_u64();
            if (type == DS4_TYPE_Q2_K) {
                put16(b + 80, rng_scale_f16());
                put16(b + 82, rng_scale_f16());
            } else if (type == DS4_TYPE_Q4_K) {
                put16(b, rng_scale_f16());
                put16(b + 2, rng_scale_f16());
            } else {
                put16(b, rng_scale_f16()); /* Q8_0, IQ2_XXS */
            }
        }
    }
    return w;
}

/* Device buffer holding bytes at off, garbage before it. */
static cl_mem upload_at(eng_cl *cl, const void *src, uint64_t bytes,
                        uint64_t off)
{
    uint8_t *tmp = ds4_xmalloc(bytes + off);
    for (uint64_t i = 0; i < off; i++)
        tmp[i] = (uint8_t)rng_u64();
    memcpy(tmp + off, src, bytes);
    cl_mem m = eng_cl_alloc(cl, bytes + off, CL_MEM_READ_ONLY);
    DS4_ASSERT(m);
    CHECK(eng_cl_write(cl, m, 0, tmp, bytes + off) == 0);
    free(tmp);
    return m;
}

/* Output buffer of n floats filled with the poison pattern. */
static cl_mem poisoned(eng_cl *cl, uint64_t n)
{
    cl_mem m = eng_cl_alloc(cl, n * 4, CL_MEM_READ_WRITE);
    DS4_ASSERT(m);
    uint32_t p = POISON;
    CHECK(eng_cl_fill(cl, m, &p, 4, 0, n * 4) == 0);
    return m;
}

/* Whether a float has the poison bits. */
static int is_poison(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return u == POISON;
}

/* Reference dot and sum |w x| of row r. */
static void ref_dot(uint32_t type, const uint8_t *w, uint32_t r,
                    uint32_t cols, const float *x, double *dot, double *mag)
{
    uint64_t rb = ds4_type_nbytes(type, cols);
    float *deq = ds4_xmalloc((size_t)cols * 4);
    CHECK(ds4_dot_ref(type, w + rb * r, x, cols, dot) == 0);
    CHECK(ds4_dequantize(type, w + rb * r, deq, cols) == 0);
    double m = 0;
    for (uint32_t c = 0; c < cols; c++)
        m += fabs((double)deq[c] * x[c]);
    *mag = m;
    free(deq);
}

/* Compare one output with the reference; returns 1 if bad (and logs). */
static int bad_output(const char *what, uint32_t type, uint32_t r,
                      uint32_t t, float got, double ref, double mag)
{
    double tol = 1e-5 * mag + 1e-30;
    if (isfinite(got) && fabs(got - ref) <= tol)
        return 0;
    fprintf(stderr, "%s %s row %u tok %u: got %.9g want %.9g (tol %.3g)\n",
            what, ds4_type_get(type)->name, (unsigned)r, (unsigned)t,
            (double)got, ref, tol);
    return 1;
}

/* One mat-vec case against the reference. */
static void check_matvec(eng_cl *cl, uint32_t type, uint32_t rows,
                         uint32_t cols)
{
    uint64_t nb;
    uint8_t *w = make_weights(type, rows, cols, &nb);
    float *x = ds4_xmalloc((size_t)cols * 4);
    for (uint32_t c = 0; c < cols; c++)
        x[c] = rng_uniform(-1, 1);
    cl_mem wb = upload_at(cl, w, nb, W_OFF);
    cl_mem xb = upload_at(cl, x, (uint64_t)cols * 4, 0);
    cl_mem yb = poisoned(cl, rows + PAD);
    int rc = eng_cl_matvec(cl, type, wb, W_OFF, xb, yb, rows, cols);
    CHECKF(rc == 0, "matvec %s: %s", ds4_type_get(type)->name, cl->err);
    float *y = ds4_xmalloc((rows + PAD) * 4);
    CHECK(eng_cl_read(cl, yb, 0, y, (rows + PAD) * 4) == 0);
    int bad = 0;
    for (uint32_t r = 0; r < rows && bad < 5; r++) {
        double ref, mag;
        ref_dot(type, w, r, cols, x, &ref, &mag);
        bad += bad_output("matvec", type, r, 0, y[r], ref, mag);
    }
    for (uint32_t i = rows; i < rows + PAD; i++)
        bad += !is_poison(y[i]);
    CHECKF(bad == 0, "matvec %s %u x %u: %d bad outputs",
           ds4_type_get(type)->name, (unsigned)rows, (unsigned)cols, bad);
    clReleaseMemObject(wb);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(w);
    free(x);
    free(y);
}

/* One mat-mat case (padded strides) against the reference. */
static void check_matmul(eng_cl *cl, uint32_t type, uint32_t rows,
                         uint32_t cols, uint32_t ntok)
{
    uint32_t xs = cols + 3, ys = rows + 5;
    uint64_t nb;
    uint8_t *w = make_weights(type, rows, cols, &nb);
    float *x = ds4_xmalloc((size_t)ntok * xs * 4);
    for (uint64_t i = 0; i < (uint64_t)ntok * xs; i++)
        x[i] = rng_uniform(-1, 1);
    uint64_t ny = (uint64_t)ntok * ys + PAD;
    cl_mem wb = upload_at(cl, w, nb, W_OFF);
    cl_mem xb = upload_at(cl, x, (uint64_t)ntok * xs * 4, 0);
    cl_mem yb = poisoned(cl, ny);
    int rc = eng_cl_matmul(cl, type, wb, W_OFF, xb, xs, yb, ys, rows, cols,
                           ntok);
    CHECKF(rc == 0, "matmul %s: %s", ds4_type_get(type)->name, cl->err);
    float *y = ds4_xmalloc(ny * 4);
    CHECK(eng_cl_read(cl, yb, 0, y, ny * 4) == 0);
    int bad = 0;
    for (uint32_t t = 0; t < ntok && bad < 5; t++)
        for (uint32_t r = 0; r < rows && bad < 5; r++) {
            double ref, mag;
            ref_dot(type, w, r, cols, x + (uint64_t)t * xs, &ref, &mag);
            bad += bad_output("matmul", type, r, t, y[(uint64_t)t * ys + r],
                              ref, mag);
        }
    /* stride gaps and the tail stay poisoned */
    for (uint64_t i = 0; i < ny; i++) {
        uint64_t t = i / ys, r = i % ys;
        if (t >= ntok || r >= rows)
            bad += !is_poison(y[i]);
    }
    CHECKF(bad == 0, "matmul %s %u x %u, %u tokens: %d bad outputs",
           ds4_type_get(type)->name, (unsigned)rows, (unsigned)cols,
           (unsigned)ntok, bad);
    clReleaseMemObject(wb);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(w);
    free(x);
    free(y);
}

/* One-hot activations: Y[t][r] = W[r][t] exactly, so the kernels' decoded
 * weights must equal ds4_dequantize bit for bit (mat-mat and mat-vec). */
static void check_bit_exact(eng_cl *cl, uint32_t type)
{
    uint32_t rows = 5, cols = 256, ntok = 256;
    uint64_t nb;
    uint8_t *w = make_weights(type, rows, cols, &nb);
    float *x = ds4_xcalloc((size_t)ntok * cols, 4);
    for (uint32_t t = 0; t < ntok; t++)
        x[(uint64_t)t * cols + t] = 1.0f;
    float *deq = ds4_xmalloc((size_t)rows * cols * 4);
    CHECK(ds4_dequantize(type, w, deq, (uint64_t)rows * cols) == 0);
    cl_mem wb = upload_at(cl, w, nb, W_OFF);
    cl_mem xb = upload_at(cl, x, (uint64_t)ntok * cols * 4, 0);
    cl_mem yb = poisoned(cl, (uint64_t)ntok * rows);
    CHECK(eng_cl_matmul(cl, type, wb, W_OFF, xb, cols, yb, rows, rows, cols,
                        ntok) == 0);
    float *y = ds4_xmalloc((size_t)ntok * rows * 4);
    CHECK(eng_cl_read(cl, yb, 0, y, (uint64_t)ntok * rows * 4) == 0);
    int bad = 0;
    for (uint32_t t = 0; t < ntok; t++)
        for (uint32_t r = 0; r < rows; r++)
            bad += y[t * rows + r] != deq[r * cols + t];
    /* mat-vec with one-hot x at a few columns */
    cl_mem yv = poisoned(cl, rows);
    for (uint32_t t = 3; t < cols; t += 61) {
        cl_mem xv = upload_at(cl, x + (uint64_t)t * cols, cols * 4, 0);
        CHECK(eng_cl_matvec(cl, type, wb, W_OFF, xv, yv, rows, cols) == 0);
        float yy[5];
        CHECK(eng_cl_read(cl, yv, 0, yy, sizeof yy) == 0);
        for (uint32_t r = 0; r < rows; r++)
            bad += yy[r] != deq[r * cols + t];
        clReleaseMemObject(xv);
    }
    CHECKF(bad == 0, "%s: %d decoded weights differ from ds4_dequantize",
           ds4_type_get(type)->name, bad);
    clReleaseMemObject(wb);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    clReleaseMemObject(yv);
    free(w);
    free(x);
    free(deq);
    free(y);
}

/* Launchers refuse bad shapes and short buffers instead of reading past
 * them. */
static void check_argument_errors(eng_cl *cl)
{
    cl_mem w = eng_cl_alloc(cl, 1024, CL_MEM_READ_ONLY);
    cl_mem v = eng_cl_alloc(cl, 4096, CL_MEM_READ_WRITE);
    CHECK(w && v);
    CHECK(eng_cl_matvec(cl, DS4_TYPE_Q8_0, w, 0, v, v, 1, 33) == -1);
    CHECK(strstr(cl->err, "multiple") != NULL);
    CHECK(eng_cl_matvec(cl, DS4_TYPE_Q8_0, w, 0, v, v, 31, 32) == -1);
    CHECK(strstr(cl->err, "buffer has 1024") != NULL);
    CHECK(eng_cl_matvec(cl, DS4_TYPE_F32, w, 2, v, v, 1, 8) == -1);
    CHECK(eng_cl_matvec(cl, DS4_TYPE_I32, w, 0, v, v, 1, 8) == -1);
    CHECK(eng_cl_matvec(cl, DS4_TYPE_Q4_0, w, 0, v, v, 1, 32) == -1);
    CHECK(eng_cl_matvec(cl, DS4_TYPE_F32, w, 0, v, v, 1, 2048) == -1);
    CHECK(eng_cl_matmul(cl, DS4_TYPE_F32, w, 0, v, 8, v, 8, 4, 8, 200) == -1);
    CHECK(eng_cl_matmul(cl, DS4_TYPE_F32, w, 0, v, 7, v, 8, 4, 8, 2) == -1);
    CHECK(eng_cl_matmul(cl, DS4_TYPE_F32, w, 0, v, 8, v, 8, 4, 8, 2) == 0);
    CHECK(eng_cl_finish(cl) == 0);
    CHECK(eng_cl_alloc(cl, cl->info.max_alloc + 1, 0) == NULL);
    CHECK(strstr(cl->err, "exceeds the largest allocation") != NULL);
    clReleaseMemObject(w);
    clReleaseMemObject(v);
}

/* Device selection through DS4_CL_PLATFORM / DS4_CL_DEVICE. */
static void check_selection(void)
{
    char *saved_dev = getenv("DS4_CL_DEVICE");
    char *saved_plat = getenv("DS4_CL_PLATFORM");
    saved_dev = saved_dev ? ds4_xstrdup(saved_dev) : NULL;
    saved_plat = saved_plat ? ds4_xstrdup(saved_plat) : NULL;
    eng_cl c;
    setenv("DS4_CL_DEVICE", "no-such-device-xyzzy", 1);
    CHECK(eng_cl_open(&c) == -1);
    CHECKF(strstr(c.err, "DS4_CL_DEVICE") != NULL, "%s", c.err);
    eng_cl_close(&c);
    setenv("DS4_CL_DEVICE", "999", 1);
    CHECK(eng_cl_open(&c) == -1);
    eng_cl_close(&c);
    unsetenv("DS4_CL_DEVICE");
    setenv("DS4_CL_PLATFORM", "no-such-platform-xyzzy", 1);
    CHECK(eng_cl_open(&c) == -1);
    CHECKF(strstr(c.err, "DS4_CL_PLATFORM") != NULL, "%s", c.err);
    eng_cl_close(&c);
    setenv("DS4_CL_PLATFORM", "0", 1);
    setenv("DS4_CL_DEVICE", "0", 1);
    CHECKF(eng_cl_open(&c) == 0, "%s", c.err);
    eng_cl_close(&c);
    if (saved_dev)
        setenv("DS4_CL_DEVICE", saved_dev, 1);
    else
        unsetenv("DS4_CL_DEVICE");
    if (saved_plat)
        setenv("DS4_CL_PLATFORM", saved_plat, 1);
    else
        unsetenv("DS4_CL_PLATFORM");
    free(saved_dev);
    free(saved_plat);
}

/* Building succeeds; our sources compile without warnings; every kernel
 * resolves; error names read well. */
static int check_build(eng_cl *cl)
{
    uint64_t t0 = ds4_now_ns();
    int rc = eng_cl_build(cl, NULL);
    CHECKF(rc == 0, "%s", cl->err);
    if (rc)
        return -1;
    printf("built %d kernel sources in %.2f s on %s\n", cl->n_progs,
           (ds4_now_ns() - t0) / 1e9, cl->info.name);
    static const char *files[] = { "matvec.cl", "matmul.cl",
                                   "matmul_nv.cl" };
    for (size_t i = 0; i < DS4_ARRAY_LEN(files); i++) {
        const char *log = eng_cl_build_log(cl, files[i]);
        CHECKF(log != NULL, "%s not built", files[i]);
        CHECKF(!log || !strstr(log, "warning"), "%s build log:\n%s",
               files[i], log);
    }
    static const char *ops[] = { "matvec", "matmul" };
    static const char *suf[] = { "f32", "f16", "bf16", "q8_0", "q2_k",
                                 "q4_k", "iq2_xxs" };
    for (size_t o = 0; o < 2; o++)
        for (size_t s = 0; s < DS4_ARRAY_LEN(suf); s++) {
            char name[64];
            snprintf(name, sizeof name, "%s_%s", ops[o], suf[s]);
            CHECKF(eng_cl_kernel(cl, name) != NULL, "%s", cl->err);
        }
    static const char *nv[] = { "nv_mv", "nv_mv8", "nv_mm" };
    for (size_t o = 0; o < DS4_ARRAY_LEN(nv); o++)
        for (size_t s = 3; s < DS4_ARRAY_LEN(suf); s++) {
            char name[64];
            snprintf(name, sizeof name, "%s_%s", nv[o], suf[s]);
            CHECKF(eng_cl_kernel(cl, name) != NULL, "%s", cl->err);
        }
    CHECK(eng_cl_kernel(cl, "no_such_kernel") == NULL);
    CHECK(strstr(cl->err, "no_such_kernel") != NULL);
    CHECK(strcmp(eng_cl_strerror(CL_OUT_OF_RESOURCES),
                 "CL_OUT_OF_RESOURCES") == 0);
    CHECK(strcmp(eng_cl_strerror(CL_INVALID_KERNEL_ARGS),
                 "CL_INVALID_KERNEL_ARGS") == 0);
    CHECK(strcmp(eng_cl_strerror(-12345), "CL_UNKNOWN_ERROR") == 0);
    return 0;
}

/* Rough timings per type (DS4_CL_BENCH=1): a rows x 4096 mat-vec and a
 * 64-token mat-mat with the same weights (rows 4096, 32768 on a GPU). */
static void bench(eng_cl *cl)
{
    uint32_t n = 4096, nt = 64, m = cl->info.is_gpu ? 32768 : 4096;
    float *x = ds4_xmalloc((size_t)n * nt * 4);
    for (uint32_t i = 0; i < n * nt; i++)
        x[i] = rng_uniform(-1, 1);
    cl_mem xb = upload_at(cl, x, (uint64_t)n * nt * 4, 0);
    cl_mem yb = poisoned(cl, (uint64_t)m * nt);
    for (size_t i = 0; i < DS4_ARRAY_LEN(kTypes); i++) {
        uint64_t nb;
        uint8_t *w = make_weights(kTypes[i], m, n, &nb);
        cl_mem wb = upload_at(cl, w, nb, 0);
        CHECK(eng_cl_matvec(cl, kTypes[i], wb, 0, xb, yb, m, n) == 0);
        CHECK(eng_cl_matmul(cl, kTypes[i], wb, 0, xb, n, yb, m, m, n, nt)
              == 0);
        eng_cl_finish(cl);
        int it = 5;
        uint64_t t0 = ds4_now_ns();
        for (int k = 0; k < it; k++)
            eng_cl_matvec(cl, kTypes[i], wb, 0, xb, yb, m, n);
        eng_cl_finish(cl);
        double s = (ds4_now_ns() - t0) / 1e9 / it;
        uint64_t t1 = ds4_now_ns();
        eng_cl_matmul(cl, kTypes[i], wb, 0, xb, n, yb, m, m, n, nt);
        eng_cl_finish(cl);
        double sm = (ds4_now_ns() - t1) / 1e9;
        printf("bench %-8s matvec %ux4096: %8.3f ms (%6.1f GB/s); matmul "
               "64 tok %8.2f ms (%7.1f GFLOP/s)\n",
               ds4_type_get(kTypes[i])->name, (unsigned)m, s * 1e3,
               nb / s / 1e9, sm * 1e3, 2.0 * m * n * nt / sm / 1e9);
        clReleaseMemObject(wb);
        free(w);
    }
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
}

/* The NVIDIA fast path (emulated PTX where the device has none): the
 * quantized types over superblock-multiple column counts, row counts
 * that leave partial 16-row tiles, column counts that leave partial
 * chunks, and token counts that hit every kernel family and partial
 * token tiles. Same references and tolerance as the portable path. */
static void check_nv(eng_cl *cl)
{
    static const uint32_t qtypes[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q2_K,
                                       DS4_TYPE_Q4_K, DS4_TYPE_IQ2_XXS };
    int saved = cl->nv_path;
    cl->nv_path = 1;
    for (size_t i = 0; i < DS4_ARRAY_LEN(qtypes); i++) {
        uint32_t t = qtypes[i];
        CHECKF(strncmp(eng_cl_gemm_path(cl, t, 512, 0), "nv_mv", 5) == 0,
               "%s", eng_cl_gemm_path(cl, t, 512, 0));
        CHECK(strcmp(eng_cl_gemm_path(cl, t, 512, 8), "nv_mv8") == 0);
        CHECK(strcmp(eng_cl_gemm_path(cl, t, 512, 64), "nv_mm") == 0);
        check_matvec(cl, t, 1, 256);
        check_matvec(cl, t, 33, 768);
        check_matvec(cl, t, 7, 2304); /* 9 superblocks: a partial chunk */
        static const uint32_t toks[] = { 2, 4, 5, 13, 17, 40 };
        for (size_t k = 0; k < DS4_ARRAY_LEN(toks); k++)
            check_matmul(cl, t, k == 3 ? 130 : k == 1 ? 33 : 20,
                         k < 3 ? 2304 : 512, toks[k]);
        check_bit_exact(cl, t);
    }
    /* the fast path does not take float types or other column counts */
    CHECK(strcmp(eng_cl_gemm_path(cl, DS4_TYPE_F16, 512, 0), "nv_mv") != 0);
    CHECK(strncmp(eng_cl_gemm_path(cl, DS4_TYPE_Q8_0, 96, 0), "nv_", 3)
          != 0);
    cl->nv_path = saved;
}

/* DS4_CL_PORTABLE=1 turns the fast path off at open. */
static void check_portable_env(void)
{
    eng_cl c;
    setenv("DS4_CL_PORTABLE", "1", 1);
    CHECKF(eng_cl_open(&c) == 0, "%s", c.err);
    CHECK(c.nv_path == 0);
    CHECK(strcmp(eng_cl_gemm_path(&c, DS4_TYPE_Q8_0, 4096, 0), "nv_mv")
          != 0);
    eng_cl_close(&c);
    unsetenv("DS4_CL_PORTABLE");
}

/* Every weight type over several shapes, mat-vec and mat-mat. */
static void check_types(eng_cl *cl)
{
    for (size_t i = 0; i < DS4_ARRAY_LEN(kTypes); i++) {
        uint32_t t = kTypes[i], be = ds4_type_get(t)->block_elems;
        /* cols: one block, an odd block count, and more 8-element groups
         * than the work-group has items (not a multiple of it) */
        uint32_t cols[3];
        if (be == 1) {
            cols[0] = 37, cols[1] = 129, cols[2] = 1000;
        } else {
            cols[0] = be, cols[1] = be * 3;
            cols[2] = be * (be == 32 ? 33 : 9);
        }
        static const uint32_t rows[] = { 1, 7, 33, 130 };
        for (int c = 0; c < 3; c++)
            for (int r = 0; r < 4; r++)
                check_matvec(cl, t, rows[r], cols[c]);
        static const uint32_t toks[] = { 1, 7, 64 };
        for (int k = 0; k < 3; k++) {
            check_matmul(cl, t, 7, cols[1], toks[k]);
            check_matmul(cl, t, 33, cols[2], toks[k]);
        }
        check_bit_exact(cl, t);
    }
}

int main(void)
{
    eng_cl cl;
    if (eng_cl_open(&cl) != 0) {
        const char *allow = getenv("DS4_ALLOW_NO_OPENCL");
        if (allow && strcmp(allow, "1") == 0) {
            printf("SKIP: no OpenCL device (%s)\n", cl.err);
            return 0;
        }
        fprintf(stderr, "no OpenCL device: %s\n", cl.err);
        CHECK(!"eng_cl_open");
        return test_main_end("test_cl_kernels");
    }
    printf("device: %s (%s), inline PTX %s\n", cl.info.name, cl.info.platform,
           cl.info.has_ptx ? "usable" : "no");
    printf("fast path: %s by default\n", cl.nv_path ? "on" : "off");
    check_selection();
    check_portable_env();
    if (check_build(&cl) == 0) {
        check_argument_errors(&cl);
        int device_default = cl.rows_kernels, nv_default = cl.nv_path;
        /* both portable kernel families on every device: work-group per
         * row / tiled (GPU default) and barrier-free per row (CPU
         * default), then the fast path */
        cl.nv_path = 0;
        for (int v = 0; v < 2; v++) {
            cl.rows_kernels = v;
            check_types(&cl);
        }
        cl.rows_kernels = device_default;
        uint64_t t0 = ds4_now_ns();
        check_nv(&cl);
        printf("fast-path checks (%s): %.2f s\n",
               nv_default ? "PTX" : "emulated",
               (ds4_now_ns() - t0) / 1e9);
        cl.nv_path = nv_default;
        const char *b = getenv("DS4_CL_BENCH");
        for (int v = 0; b && strcmp(b, "1") == 0 && v < 2; v++) {
            cl.rows_kernels = v;
            printf("%s kernels:\n", v ? "per-row" : "work-group/tiled");
            bench(&cl);
        }
    }
    eng_cl_close(&cl);
    return test_main_end("test_cl_kernels");
}
