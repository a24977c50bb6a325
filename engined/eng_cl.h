/* eng_cl.h - the engine's OpenCL foundation: device selection, context
 * and queue, run-time build of the embedded kernel sources (kernels/NAME.cl,
 * one program per file) with device-specific options, kernel lookup,
 * buffer helpers, readable error names, and launchers for the quantized
 * mat-vec / mat-mat kernels.
 *
 * Device choice: DS4_CL_PLATFORM (a decimal platform index or a
 * case-insensitive substring of the platform name) narrows the platforms;
 * DS4_CL_DEVICE (an index into the devices of those platforms, in order, or
 * a substring of the device name) picks the device; otherwise the first GPU,
 * else the first device (PoCL's CPU device in CI).
 *
 * Kernel paths: the portable kernels run everywhere; on NVIDIA devices
 * with usable inline PTX and compute capability 8.0 or newer the quantized
 * mat-vec / mat-mat (Q8_0, Q2_K, Q4_K, IQ2_XXS, cols a multiple of 256)
 * take the tensor-core fast path of kernels/matmul_nv.cl instead.
 * DS4_CL_PORTABLE=1 forces the portable path (cl->nv_path = 0). Tests may
 * set cl->nv_path = 1 on any device: without PTX the fast path's kernels
 * run with emulated PTX primitives (slow, for checking on PoCL).
 *
 * Every failing call returns -1 (or NULL) and leaves a message naming the
 * problem in cl->err.
 *
 * Not thread-safe: one eng_cl is driven by one thread (cl_kernel argument
 * state is shared by every caller of eng_cl_kernel()). */
#ifndef DS4_ENG_CL_H
#define DS4_ENG_CL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 300
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What the engine needs to know about the chosen device. */
typedef struct eng_cl_info {
    char platform[256];     /* platform name */
    char name[256];         /* device name */
    char vendor[256];
    char version[256];      /* CL_DEVICE_VERSION */
    char c_version[128];    /* CL_DEVICE_OPENCL_C_VERSION */
    char driver[128];
    char *extensions;       /* owned, space separated */
    uint64_t global_mem;
    uint64_t max_alloc;     /* largest single buffer */
    uint64_t local_mem;
    size_t max_wg;          /* max work-group size */
    uint32_t compute_units;
    uint32_t base_align;    /* CL_DEVICE_MEM_BASE_ADDR_ALIGN, in bytes */
    int is_gpu;
    int is_nvidia;          /* NVIDIA's OpenCL (cl_nv_* extensions) */
    int cc_major, cc_minor; /* NVIDIA compute capability, 0 if unknown */
    int has_fp16;           /* cl_khr_fp16 (never on NVIDIA) */
    int has_fp64;
    int has_ptx;            /* inline PTX asm builds and runs correctly */
} eng_cl_info;

/* One built program: a kernels/ source file (plus the files it requires). */
typedef struct eng_cl_program {
    const char *name;       /* source file name, e.g. "matvec.cl" */
    cl_program prog;
    char *log;              /* build log (owned, may be empty) */
} eng_cl_program;

/* A looked-up kernel, cached by name. */
typedef struct eng_cl_kernel_entry {
    char *name;
    cl_kernel k;
} eng_cl_kernel_entry;

typedef struct eng_cl {
    cl_platform_id platform;
    cl_device_id device;
    cl_context ctx;
    cl_command_queue queue;
    eng_cl_info info;
    char options[1024];     /* build options used for every program */
    eng_cl_program *progs;
    int n_progs;
    eng_cl_kernel_entry *kernels;
    int n_kernels, cap_kernels;
    int mv_wg;              /* work-group size of the mat-vec kernels */
    int rows_kernels;       /* 1: use the barrier-free per-row kernels
                               (matmul_rows_*) for mat-vec and mat-mat;
                               set for non-GPU devices, tests flip it */
    int nv_path;            /* 1: quantized mat-vec / mat-mat use the
                               NVIDIA fast path where it applies (see
                               above); tests and tools may flip it */
    cl_event *last_event;   /* benchmarks: when set, eng_cl_matvec /
                               eng_cl_matmul store the event of the kernel
                               they enqueue there (caller releases it; on
                               the fast path the main kernel, after the
                               activation conversion kernel) */
    cl_mem nv_scratch;      /* fast path: converted activations, grown */
    uint64_t nv_scratch_bytes;
    char err[2048];         /* message of the last failure */
} eng_cl;

/* Readable name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). */
const char *eng_cl_strerror(cl_int code);

/* Choose a device (see above), fill cl->info, create context and queue.
 * Returns 0, or -1 with cl->err set (e.g. when no OpenCL platform exists). */
int eng_cl_open(eng_cl *cl);

/* Build every embedded kernel source with the device options plus
 * extra_options (may be NULL). On failure cl->err names the file and holds
 * the start of its build log. Returns 0 or -1. */
int eng_cl_build(eng_cl *cl, const char *extra_options);

/* Build log of one source file ("matvec.cl"), NULL if not built. */
const char *eng_cl_build_log(const eng_cl *cl, const char *file);

/* Kernel by function name, created on first use and cached; NULL (and
 * cl->err) if no built program defines it. */
cl_kernel eng_cl_kernel(eng_cl *cl, const char *name);

/* Release everything (safe on a zeroed or partially opened struct). */
void eng_cl_close(eng_cl *cl);

/* Print the device summary (tools/cl-info, engine start-up log). */
void eng_cl_print_info(const eng_cl *cl, FILE *f);

/* Device buffer of bytes; refuses sizes above the device's largest
 * allocation with a message giving both sizes. NULL and cl->err on error. */
cl_mem eng_cl_alloc(eng_cl *cl, uint64_t bytes, cl_mem_flags flags);

/* Blocking copies and an asynchronous fill (pattern of pattern_bytes, a
 * power of two <= 128, bytes a multiple of it). Return 0 or -1. */
int eng_cl_write(eng_cl *cl, cl_mem buf, uint64_t off, const void *src,
                 uint64_t bytes);
int eng_cl_read(eng_cl *cl, cl_mem buf, uint64_t off, void *dst,
                uint64_t bytes);
int eng_cl_fill(eng_cl *cl, cl_mem buf, const void *pattern,
                size_t pattern_bytes, uint64_t off, uint64_t bytes);

/* Wait for everything queued. Returns 0 or -1. */
int eng_cl_finish(eng_cl *cl);

/* Whether the mat-vec / mat-mat kernels handle a weight type (enum
 * ds4_type): F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS. */
int eng_cl_matvec_supported(uint32_t type);

/* Enqueue y[r] = sum_c W[r][c] * x[c] for r < rows. W: row-major GGUF
 * blocks of `type` starting at byte w_off of wbuf (w_off a multiple of 4;
 * GGUF aligns tensors to 32), cols a multiple of the type's block size.
 * x: cols floats, y: rows floats. Returns 0 or -1 (bad type/shape). */
int eng_cl_matvec(eng_cl *cl, uint32_t type, cl_mem wbuf, uint64_t w_off,
                  cl_mem x, cl_mem y, uint32_t rows, uint32_t cols);

/* Enqueue Y[t][r] = sum_c X[t][c] * W[r][c] for t < ntok, r < rows (a
 * prefill chunk, or a batched mat-vec of a few tokens: on the fast path
 * up to 4 tokens cost one pass over the weights, up to 16 one pass per 8).
 * X rows are x_stride floats apart, Y rows y_stride floats apart
 * (x_stride >= cols, y_stride >= rows). Returns 0 or -1. */
int eng_cl_matmul(eng_cl *cl, uint32_t type, cl_mem wbuf, uint64_t w_off,
                  cl_mem x, uint32_t x_stride, cl_mem y, uint32_t y_stride,
                  uint32_t rows, uint32_t cols, uint32_t ntok);

/* Name of the kernel family a mat-vec (ntok 0) or mat-mat of this type
 * and shape would run on now: "nv_mv", "nv_mv8", "nv_mm" (fast path),
 * "matvec", "matmul" (portable, work-group per row / tiled) or
 * "matmul_rows" (portable, per row). For tools and tests. */
const char *eng_cl_gemm_path(const eng_cl *cl, uint32_t type, uint32_t cols,
                             uint32_t ntok);

#endif
