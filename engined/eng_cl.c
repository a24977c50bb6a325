/* eng_cl.c - OpenCL device selection, program build from the embedded
 * kernel sources, kernel cache, buffers and the mat-vec / mat-mat
 * launchers. See eng_cl.h. */
#include "eng_cl.h"

#include <CL/cl_ext.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "quant.h"
#include "util.h"

/* The kernels/NAME.cl files, embedded by scripts/embed-kernels.sh. */
extern const struct {
    const char *name;
    const char *text;
} ds4_kernel_sources[];

#define ENG_MAX_PLATFORMS 16
#define ENG_MAX_DEVICES 64
#define ENG_MAX_REQUIRES 8

/* Record a failure message in cl->err; always returns -1. */
static int eng_fail(eng_cl *cl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int eng_fail(eng_cl *cl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cl->err, sizeof cl->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* Readable name of an OpenCL error code. */
const char *eng_cl_strerror(cl_int code)
{
    switch (code) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE)
    E(CL_COMPILER_NOT_AVAILABLE) E(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP)
    E(CL_IMAGE_FORMAT_MISMATCH) E(CL_IMAGE_FORMAT_NOT_SUPPORTED)
    E(CL_BUILD_PROGRAM_FAILURE) E(CL_MAP_FAILURE)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    E(CL_COMPILE_PROGRAM_FAILURE) E(CL_LINKER_NOT_AVAILABLE)
    E(CL_LINK_PROGRAM_FAILURE) E(CL_DEVICE_PARTITION_FAILED)
    E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM)
    E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_QUEUE_PROPERTIES) E(CL_INVALID_COMMAND_QUEUE)
    E(CL_INVALID_HOST_PTR) E(CL_INVALID_MEM_OBJECT)
    E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) E(CL_INVALID_IMAGE_SIZE)
    E(CL_INVALID_SAMPLER) E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS)
    E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE)
    E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL_DEFINITION)
    E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE)
    E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS)
    E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE)
    E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET)
    E(CL_INVALID_EVENT_WAIT_LIST) E(CL_INVALID_EVENT)
    E(CL_INVALID_OPERATION) E(CL_INVALID_GL_OBJECT)
    E(CL_INVALID_BUFFER_SIZE) E(CL_INVALID_MIP_LEVEL)
    E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_INVALID_PROPERTY)
    E(CL_INVALID_IMAGE_DESCRIPTOR) E(CL_INVALID_COMPILER_OPTIONS)
    E(CL_INVALID_LINKER_OPTIONS) E(CL_INVALID_DEVICE_PARTITION_COUNT)
    E(CL_INVALID_PIPE_SIZE) E(CL_INVALID_DEVICE_QUEUE)
    E(CL_INVALID_SPEC_ID) E(CL_MAX_SIZE_RESTRICTION_EXCEEDED)
    E(CL_PLATFORM_NOT_FOUND_KHR)
#undef E
    default:
        return "CL_UNKNOWN_ERROR";
    }
}

/* Whether s selects entry idx named name: a decimal index, or a
 * case-insensitive substring of the name. */
static int eng_selector_match(const char *s, int idx, const char *name)
{
    if (!s || !*s)
        return 1;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == 0 && end != s)
        return v == idx;
    return strcasestr(name, s) != NULL;
}

/* String device info into buf (empty on failure). */
static void eng_dev_str(cl_device_id d, cl_device_info what, char *buf,
                        size_t n)
{
    buf[0] = 0;
    if (clGetDeviceInfo(d, what, n, buf, NULL) != CL_SUCCESS)
        buf[0] = 0;
    buf[n - 1] = 0;
}

/* Numeric device info of size n, zero on failure. */
static void eng_dev_num(cl_device_id d, cl_device_info what, void *out,
                        size_t n)
{
    memset(out, 0, n);
    if (clGetDeviceInfo(d, what, n, out, NULL) != CL_SUCCESS)
        memset(out, 0, n);
}

/* Whether a space-separated extension list holds ext exactly. */
static int eng_has_ext(const char *list, const char *ext)
{
    size_t n = strlen(ext);
    for (const char *p = list; p && (p = strstr(p, ext)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ' '))
            return 1;
    return 0;
}

/* Fill cl->info from the chosen device. */
static void eng_query_info(eng_cl *cl)
{
    eng_cl_info *in = &cl->info;
    cl_device_id d = cl->device;
    if (clGetPlatformInfo(cl->platform, CL_PLATFORM_NAME, sizeof in->platform,
                          in->platform, NULL) != CL_SUCCESS)
        in->platform[0] = 0;
    in->platform[sizeof in->platform - 1] = 0;
    eng_dev_str(d, CL_DEVICE_NAME, in->name, sizeof in->name);
    eng_dev_str(d, CL_DEVICE_VENDOR, in->vendor, sizeof in->vendor);
    eng_dev_str(d, CL_DEVICE_VERSION, in->version, sizeof in->version);
    eng_dev_str(d, CL_DEVICE_OPENCL_C_VERSION, in->c_version,
                sizeof in->c_version);
    eng_dev_str(d, CL_DRIVER_VERSION, in->driver, sizeof in->driver);
    size_t n = 0;
    if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS)
        n = 0;
    in->extensions = ds4_xcalloc(n + 1, 1);
    if (n && clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, n, in->extensions,
                             NULL) != CL_SUCCESS)
        in->extensions[0] = 0;
    cl_ulong u;
    eng_dev_num(d, CL_DEVICE_GLOBAL_MEM_SIZE, &u, sizeof u);
    in->global_mem = u;
    eng_dev_num(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, &u, sizeof u);
    in->max_alloc = u;
    eng_dev_num(d, CL_DEVICE_LOCAL_MEM_SIZE, &u, sizeof u);
    in->local_mem = u;
    eng_dev_num(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, &in->max_wg,
                sizeof in->max_wg);
    cl_uint v;
    eng_dev_num(d, CL_DEVICE_MAX_COMPUTE_UNITS, &v, sizeof v);
    in->compute_units = v;
    eng_dev_num(d, CL_DEVICE_MEM_BASE_ADDR_ALIGN, &v, sizeof v);
    in->base_align = v / 8;
    cl_device_type t;
    eng_dev_num(d, CL_DEVICE_TYPE, &t, sizeof t);
    in->is_gpu = (t & CL_DEVICE_TYPE_GPU) != 0;
    in->is_nvidia = eng_has_ext(in->extensions, "cl_nv_device_attribute_query")
                    || strcasestr(in->vendor, "nvidia") != NULL;
    if (eng_has_ext(in->extensions, "cl_nv_device_attribute_query")) {
        eng_dev_num(d, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, &v, sizeof v);
        in->cc_major = (int)v;
        eng_dev_num(d, CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, &v, sizeof v);
        in->cc_minor = (int)v;
    }
    in->has_fp16 = eng_has_ext(in->extensions, "cl_khr_fp16");
    in->has_fp64 = eng_has_ext(in->extensions, "cl_khr_fp64");
}

/* All devices of the platforms DS4_CL_PLATFORM admits, in platform order;
 * returns the count (0 with cl->err set when there is none). */
static int eng_list_devices(eng_cl *cl, cl_platform_id *plat_of,
                            cl_device_id *devs)
{
    cl_platform_id plats[ENG_MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(ENG_MAX_PLATFORMS, plats, &np);
    if (e != CL_SUCCESS || np == 0) {
        eng_fail(cl, "no OpenCL platform found (%s): install an OpenCL ICD "
                 "(e.g. pocl-opencl-icd, or the NVIDIA driver's OpenCL)",
                 e == CL_SUCCESS ? "0 platforms" : eng_cl_strerror(e));
        return 0;
    }
    if (np > ENG_MAX_PLATFORMS)
        np = ENG_MAX_PLATFORMS;
    const char *psel = getenv("DS4_CL_PLATFORM");
    int nd = 0;
    for (cl_uint p = 0; p < np; p++) {
        char pname[256] = "";
        if (clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof pname, pname,
                              NULL) != CL_SUCCESS)
            pname[0] = 0;
        pname[sizeof pname - 1] = 0;
        if (!eng_selector_match(psel, (int)p, pname))
            continue;
        cl_uint n = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL,
                           (cl_uint)(ENG_MAX_DEVICES - nd), devs + nd,
                           &n) != CL_SUCCESS)
            continue;
        if (n > (cl_uint)(ENG_MAX_DEVICES - nd))
            n = (cl_uint)(ENG_MAX_DEVICES - nd);
        for (cl_uint i = 0; i < n; i++)
            plat_of[nd + (int)i] = plats[p];
        nd += (int)n;
    }
    if (nd == 0)
        eng_fail(cl, "no OpenCL device found%s%s%s", psel ? " on platforms "
                 "matching DS4_CL_PLATFORM='" : "", psel ? psel : "",
                 psel ? "'" : "");
    return nd;
}

/* Pick the device per DS4_CL_DEVICE, else first GPU, else first device. */
static int eng_select_device(eng_cl *cl)
{
    cl_platform_id plat_of[ENG_MAX_DEVICES];
    cl_device_id devs[ENG_MAX_DEVICES];
    int nd = eng_list_devices(cl, plat_of, devs);
    if (nd == 0)
        return -1;
    const char *dsel = getenv("DS4_CL_DEVICE");
    int pick = -1;
    for (int i = 0; i < nd && pick < 0; i++) {
        char name[256];
        eng_dev_str(devs[i], CL_DEVICE_NAME, name, sizeof name);
        cl_device_type t = 0;
        eng_dev_num(devs[i], CL_DEVICE_TYPE, &t, sizeof t);
        if (dsel && *dsel ? eng_selector_match(dsel, i, name)
                          : (t & CL_DEVICE_TYPE_GPU) != 0)
            pick = i;
    }
    if (pick < 0 && dsel && *dsel)
        return eng_fail(cl, "no OpenCL device matches DS4_CL_DEVICE='%s' "
                        "(%d device%s available)", dsel, nd,
                        nd == 1 ? "" : "s");
    if (pick < 0)
        pick = 0;
    cl->platform = plat_of[pick];
    cl->device = devs[pick];
    return 0;
}

/* Whether the device runs the fast path's PTX (kernels/matmul_nv.cl). */
static int eng_nv_capable(const eng_cl_info *in)
{
    return in->is_nvidia && in->has_ptx && in->cc_major >= 8;
}

/* Build options for this device: language level, work-group sizes and
 * capability macros the kernels branch on. */
static void eng_make_options(eng_cl *cl)
{
    const eng_cl_info *in = &cl->info;
    cl->mv_wg = in->is_gpu ? 128 : 64;
    cl->rows_kernels = !in->is_gpu;
    while ((size_t)cl->mv_wg > in->max_wg && cl->mv_wg > 1)
        cl->mv_wg /= 2;
    int n = snprintf(cl->options, sizeof cl->options,
                     "-cl-std=CL1.2 -DDS4_MV_WG=%d%s", cl->mv_wg,
                     in->is_gpu ? " -DDS4_GPU=1" : "");
    cl_device_fp_config fp = 0;
    eng_dev_num(cl->device, CL_DEVICE_SINGLE_FP_CONFIG, &fp, sizeof fp);
    if (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT)
        n += snprintf(cl->options + n, sizeof cl->options - (size_t)n,
                      " -cl-fp32-correctly-rounded-divide-sqrt");
    if (in->is_nvidia)
        n += snprintf(cl->options + n, sizeof cl->options - (size_t)n,
                      " -DDS4_NVIDIA=1");
    if (in->is_nvidia && in->cc_major > 0)
        n += snprintf(cl->options + n, sizeof cl->options - (size_t)n,
                      " -cl-nv-arch sm_%d%d", in->cc_major, in->cc_minor);
    if (in->has_ptx)
        n += snprintf(cl->options + n, sizeof cl->options - (size_t)n,
                      " -DDS4_HAS_PTX=1");
    /* mma.sync m16n8k16 and cvt.rn.f16x2.f32 need sm_80 */
    if (eng_nv_capable(in))
        snprintf(cl->options + n, sizeof cl->options - (size_t)n,
                 " -DDS4_NV_PTX=1");
    const char *portable = getenv("DS4_CL_PORTABLE");
    cl->nv_path = eng_nv_capable(in) &&
                  !(portable && strcmp(portable, "1") == 0);
}

/* Build a program from count strings; on failure the log goes to *log.
 * Returns the program or NULL. */
static cl_program eng_build_strings(eng_cl *cl, cl_uint count,
                                    const char **texts, const char *opts,
                                    char **log, cl_int *err)
{
    cl_program p = clCreateProgramWithSource(cl->ctx, count, texts, NULL, err);
    if (*err != CL_SUCCESS)
        return NULL;
    *err = clBuildProgram(p, 1, &cl->device, opts, NULL, NULL);
    size_t n = 0;
    if (clGetProgramBuildInfo(p, cl->device, CL_PROGRAM_BUILD_LOG, 0, NULL,
                              &n) != CL_SUCCESS)
        n = 0;
    *log = ds4_xcalloc(n + 1, 1);
    if (n && clGetProgramBuildInfo(p, cl->device, CL_PROGRAM_BUILD_LOG, n,
                                   *log, NULL) != CL_SUCCESS)
        (*log)[0] = 0;
    if (*err != CL_SUCCESS) {
        clReleaseProgram(p);
        return NULL;
    }
    return p;
}

/* Whether inline PTX builds and runs (%laneid of work-item i is i % 32). */
static int eng_probe_ptx(eng_cl *cl)
{
    static const char *src =
        "__kernel void ds4_ptx_probe(__global uint *o) {\n"
        "  uint r;\n"
        "  asm volatile(\"mov.u32 %0, %%laneid;\" : \"=r\"(r));\n"
        "  o[get_global_id(0)] = r;\n"
        "}\n";
    char opts[64] = "";
    if (cl->info.cc_major > 0)
        snprintf(opts, sizeof opts, "-cl-nv-arch sm_%d%d", cl->info.cc_major,
                 cl->info.cc_minor);
    char *log = NULL;
    cl_int e;
    cl_program p = eng_build_strings(cl, 1, &src, opts, &log, &e);
    free(log);
    if (!p)
        return 0;
    int ok = 0;
    cl_kernel k = clCreateKernel(p, "ds4_ptx_probe", &e);
    cl_mem o = clCreateBuffer(cl->ctx, CL_MEM_READ_WRITE, 64 * 4, NULL, &e);
    if (k && o && e == CL_SUCCESS) {
        size_t g = 64, l = 64;
        cl_uint got[64];
        if (clSetKernelArg(k, 0, sizeof o, &o) == CL_SUCCESS &&
            clEnqueueNDRangeKernel(cl->queue, k, 1, NULL, &g, &l, 0, NULL,
                                   NULL) == CL_SUCCESS &&
            clEnqueueReadBuffer(cl->queue, o, CL_TRUE, 0, sizeof got, got, 0,
                                NULL, NULL) == CL_SUCCESS) {
            ok = 1;
            for (int i = 0; i < 64; i++)
                ok &= got[i] == (cl_uint)(i % 32);
        }
    }
    if (o)
        clReleaseMemObject(o);
    if (k)
        clReleaseKernel(k);
    clReleaseProgram(p);
    return ok;
}

/* Choose the device, create context and queue, probe capabilities. */
static int eng_open_inner(eng_cl *cl)
{
    if (eng_select_device(cl) != 0)
        return -1;
    eng_query_info(cl);
    cl_int e;
    cl_context_properties props[] = {
        CL_CONTEXT_PLATFORM, (cl_context_properties)cl->platform, 0
    };
    cl->ctx = clCreateContext(props, 1, &cl->device, NULL, NULL, &e);
    if (e != CL_SUCCESS) {
        cl->ctx = NULL;
        return eng_fail(cl, "clCreateContext on '%s' failed: %s",
                        cl->info.name, eng_cl_strerror(e));
    }
    cl->queue = clCreateCommandQueueWithProperties(cl->ctx, cl->device, NULL,
                                                   &e);
    if (e != CL_SUCCESS) {
        cl->queue = NULL;
        return eng_fail(cl, "clCreateCommandQueue on '%s' failed: %s",
                        cl->info.name, eng_cl_strerror(e));
    }
    if (cl->info.is_nvidia)
        cl->info.has_ptx = eng_probe_ptx(cl);
    eng_make_options(cl);
    return 0;
}

/* Open, releasing whatever was created when a step fails. */
int eng_cl_open(eng_cl *cl)
{
    memset(cl, 0, sizeof *cl);
    if (eng_open_inner(cl) == 0)
        return 0;
    char msg[sizeof cl->err];
    memcpy(msg, cl->err, sizeof msg);
    eng_cl_close(cl);
    memcpy(cl->err, msg, sizeof msg);
    return -1;
}

/* The prelude prepended to every program: common/quant.h's IQ2_XXS tables
 * as initializer macros (so kernels/ holds no copy of the numbers). */
static char *eng_make_prelude(void)
{
    size_t cap = 256 * 24 + 128 * 8 + 512, n = 0;
    char *s = ds4_xmalloc(cap);
    n += (size_t)snprintf(s + n, cap - n, "#define DS4_IQ2XXS_GRID_INIT {");
    for (int i = 0; i < 256; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s0x%016llxUL", i ? "," : "",
                              (unsigned long long)ds4_iq2xxs_grid[i]);
    n += (size_t)snprintf(s + n, cap - n,
                          "}\n#define DS4_KSIGNS_IQ2XS_INIT {");
    for (int i = 0; i < 128; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s%u", i ? "," : "",
                              (unsigned)ds4_ksigns_iq2xs[i]);
    n += (size_t)snprintf(s + n, cap - n, "}\n");
    DS4_ASSERT(n < cap);
    return s;
}

/* Index of the embedded source named name, or -1. */
static int eng_source_index(const char *name, size_t len)
{
    for (int i = 0; ds4_kernel_sources[i].name; i++)
        if (strlen(ds4_kernel_sources[i].name) == len &&
            memcmp(ds4_kernel_sources[i].name, name, len) == 0)
            return i;
    return -1;
}

/* The text after marker where it opens a line (after blanks and comment
 * leaders such as " * " or "// "), or NULL. */
static const char *eng_find_marker(const char *text, const char *marker)
{
    for (const char *p = text; (p = strstr(p, marker)); p++) {
        const char *q = p;
        while (q > text && strchr(" \t*/", q[-1]))
            q--;
        if (q == text || q[-1] == '\n')
            return p + strlen(marker);
    }
    return NULL;
}

/* Sources named on a "ds4-requires:" line of text (one level), stored
 * into req; returns how many, or -1 (cl->err) for an unknown name. */
static int eng_requires(eng_cl *cl, const char *file, const char *text,
                        const char **req)
{
    const char *p = eng_find_marker(text, "ds4-requires:");
    if (!p)
        return 0;
    int n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t len = 0;
        while (p[len] && !isspace((unsigned char)p[len]) && p[len] != ',' &&
               p[len] != '*')
            len++;
        if (len == 0)
            break;
        int idx = eng_source_index(p, len);
        if (idx < 0)
            return eng_fail(cl, "%s requires unknown kernel source '%.*s'",
                            file, (int)len, p);
        if (n == ENG_MAX_REQUIRES)
            return eng_fail(cl, "%s requires too many sources", file);
        req[n++] = ds4_kernel_sources[idx].text;
        p += len;
    }
    return n;
}

/* Build every embedded source as its own program (prelude + requirements
 * + the file), so one file's helpers never clash with another's. A file
 * names the sources whose helpers it uses on a "ds4-requires: a.cl b.cl"
 * comment line; those are compiled with DS4_AS_LIBRARY defined so they can
 * leave out their own kernels. */
int eng_cl_build(eng_cl *cl, const char *extra_options)
{
    DS4_ASSERT(cl->ctx && !cl->progs);
    int nsrc = 0;
    while (ds4_kernel_sources[nsrc].name)
        nsrc++;
    char opts[2048];
    snprintf(opts, sizeof opts, "%s %s", cl->options,
             extra_options ? extra_options : "");
    char *prelude = eng_make_prelude();
    cl->progs = ds4_xcalloc((size_t)nsrc + 1, sizeof *cl->progs);
    int rc = 0;
    for (int i = 0; i < nsrc && rc == 0; i++) {
        const char *texts[ENG_MAX_REQUIRES + 4];
        const char *file = ds4_kernel_sources[i].name;
        texts[0] = prelude;
        texts[1] = "#define DS4_AS_LIBRARY 1\n";
        int nreq = eng_requires(cl, file, ds4_kernel_sources[i].text,
                                texts + 2);
        if (nreq < 0) {
            rc = -1;
            break;
        }
        texts[nreq + 2] = "#undef DS4_AS_LIBRARY\n";
        texts[nreq + 3] = ds4_kernel_sources[i].text;
        eng_cl_program *pr = &cl->progs[cl->n_progs++];
        pr->name = file;
        cl_int e;
        pr->prog = eng_build_strings(cl, (cl_uint)nreq + 4, texts, opts,
                                     &pr->log, &e);
        if (!pr->prog)
            rc = eng_fail(cl, "building kernels/%s for '%s' failed (%s), "
                          "options '%s'; build log:\n%.1500s", file,
                          cl->info.name, eng_cl_strerror(e), opts,
                          pr->log ? pr->log : "");
    }
    free(prelude);
    return rc;
}

/* Build log of one source file, NULL if it was not built. */
const char *eng_cl_build_log(const eng_cl *cl, const char *file)
{
    for (int i = 0; i < cl->n_progs; i++)
        if (strcmp(cl->progs[i].name, file) == 0)
            return cl->progs[i].log ? cl->progs[i].log : "";
    return NULL;
}

/* Kernel by name from the first program defining it, cached. */
cl_kernel eng_cl_kernel(eng_cl *cl, const char *name)
{
    for (int i = 0; i < cl->n_kernels; i++)
        if (strcmp(cl->kernels[i].name, name) == 0)
            return cl->kernels[i].k;
    cl_int e = CL_INVALID_KERNEL_NAME;
    for (int i = 0; i < cl->n_progs; i++) {
        if (!cl->progs[i].prog)
            continue;
        cl_kernel k = clCreateKernel(cl->progs[i].prog, name, &e);
        if (e == CL_SUCCESS && k) {
            if (cl->n_kernels == cl->cap_kernels) {
                cl->cap_kernels = cl->cap_kernels ? 2 * cl->cap_kernels : 32;
                cl->kernels = ds4_xrealloc(cl->kernels, (size_t)cl->cap_kernels
                                           * sizeof *cl->kernels);
            }
            cl->kernels[cl->n_kernels].name = ds4_xstrdup(name);
            cl->kernels[cl->n_kernels++].k = k;
            return k;
        }
    }
    eng_fail(cl, "kernel '%s' not found in the built programs (%s)", name,
             cl->n_progs ? eng_cl_strerror(e) : "nothing built yet");
    return NULL;
}

/* Release kernels, programs, queue and context. */
void eng_cl_close(eng_cl *cl)
{
    for (int i = 0; i < cl->n_kernels; i++) {
        clReleaseKernel(cl->kernels[i].k);
        free(cl->kernels[i].name);
    }
    free(cl->kernels);
    for (int i = 0; i < cl->n_progs; i++) {
        if (cl->progs[i].prog)
            clReleaseProgram(cl->progs[i].prog);
        free(cl->progs[i].log);
    }
    free(cl->progs);
    if (cl->nv_scratch)
        clReleaseMemObject(cl->nv_scratch);
    if (cl->queue)
        clReleaseCommandQueue(cl->queue);
    if (cl->ctx)
        clReleaseContext(cl->ctx);
    free(cl->info.extensions);
    memset(cl, 0, sizeof *cl);
}

/* Print the device summary. */
void eng_cl_print_info(const eng_cl *cl, FILE *f)
{
    const eng_cl_info *in = &cl->info;
    fprintf(f, "platform:       %s\n", in->platform);
    fprintf(f, "device:         %s (%s)\n", in->name, in->is_gpu ? "GPU"
            : "not a GPU");
    fprintf(f, "vendor:         %s\n", in->vendor);
    fprintf(f, "version:        %s; %s; driver %s\n", in->version,
            in->c_version, in->driver);
    fprintf(f, "global memory:  %.2f GiB\n", in->global_mem / 1073741824.0);
    fprintf(f, "max allocation: %.2f GiB\n", in->max_alloc / 1073741824.0);
    fprintf(f, "local memory:   %llu KiB\n",
            (unsigned long long)(in->local_mem / 1024));
    fprintf(f, "compute units:  %u, max work-group %zu, base align %u B\n",
            in->compute_units, in->max_wg, in->base_align);
    fprintf(f, "fp16: %s, fp64: %s, NVIDIA: %s", in->has_fp16 ? "yes" : "no",
            in->has_fp64 ? "yes" : "no", in->is_nvidia ? "yes" : "no");
    if (in->cc_major)
        fprintf(f, " (sm_%d%d)", in->cc_major, in->cc_minor);
    fprintf(f, ", inline PTX: %s\n", in->has_ptx ? "usable" : "no");
    fprintf(f, "build options:  %s\n", cl->options);
    fprintf(f, "extensions:     %s\n", in->extensions ? in->extensions : "");
}

/* Device buffer, size-checked against the largest allocation. */
cl_mem eng_cl_alloc(eng_cl *cl, uint64_t bytes, cl_mem_flags flags)
{
    if (bytes == 0)
        bytes = 4;
    if (cl->info.max_alloc && bytes > cl->info.max_alloc) {
        eng_fail(cl, "buffer of %llu bytes (%.2f GiB) exceeds the largest "
                 "allocation of '%s' (%.2f GiB)", (unsigned long long)bytes,
                 bytes / 1073741824.0, cl->info.name,
                 cl->info.max_alloc / 1073741824.0);
        return NULL;
    }
    cl_int e;
    cl_mem m = clCreateBuffer(cl->ctx, flags, (size_t)bytes, NULL, &e);
    if (e != CL_SUCCESS) {
        eng_fail(cl, "allocating %llu bytes (%.2f GiB) on '%s' failed: %s",
                 (unsigned long long)bytes, bytes / 1073741824.0,
                 cl->info.name, eng_cl_strerror(e));
        return NULL;
    }
    return m;
}

/* Blocking host-to-device copy. */
int eng_cl_write(eng_cl *cl, cl_mem buf, uint64_t off, const void *src,
                 uint64_t bytes)
{
    cl_int e = clEnqueueWriteBuffer(cl->queue, buf, CL_TRUE, (size_t)off,
                                    (size_t)bytes, src, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "writing %llu bytes at %llu failed: %s",
                        (unsigned long long)bytes, (unsigned long long)off,
                        eng_cl_strerror(e));
    return 0;
}

/* Blocking device-to-host copy. */
int eng_cl_read(eng_cl *cl, cl_mem buf, uint64_t off, void *dst,
                uint64_t bytes)
{
    cl_int e = clEnqueueReadBuffer(cl->queue, buf, CL_TRUE, (size_t)off,
                                   (size_t)bytes, dst, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "reading %llu bytes at %llu failed: %s",
                        (unsigned long long)bytes, (unsigned long long)off,
                        eng_cl_strerror(e));
    return 0;
}

/* Asynchronous pattern fill. */
int eng_cl_fill(eng_cl *cl, cl_mem buf, const void *pattern,
                size_t pattern_bytes, uint64_t off, uint64_t bytes)
{
    cl_int e = clEnqueueFillBuffer(cl->queue, buf, pattern, pattern_bytes,
                                   (size_t)off, (size_t)bytes, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "filling %llu bytes at %llu failed: %s",
                        (unsigned long long)bytes, (unsigned long long)off,
                        eng_cl_strerror(e));
    return 0;
}

/* Wait for the queue to drain. */
int eng_cl_finish(eng_cl *cl)
{
    cl_int e = clFinish(cl->queue);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "clFinish failed: %s", eng_cl_strerror(e));
    return 0;
}

/* Kernel-name suffix of a weight type, NULL if unsupported. */
static const char *eng_type_suffix(uint32_t type)
{
    switch (type) {
    case DS4_TYPE_F32: return "f32";
    case DS4_TYPE_F16: return "f16";
    case DS4_TYPE_BF16: return "bf16";
    case DS4_TYPE_Q8_0: return "q8_0";
    case DS4_TYPE_Q2_K: return "q2_k";
    case DS4_TYPE_Q4_K: return "q4_k";
    case DS4_TYPE_IQ2_XXS: return "iq2_xxs";
    default: return NULL;
    }
}

/* Whether the weight type has mat-vec / mat-mat kernels. */
int eng_cl_matvec_supported(uint32_t type)
{
    return eng_type_suffix(type) != NULL;
}

/* Size of a buffer in bytes (0 if it cannot be queried). */
static uint64_t eng_mem_size(cl_mem m)
{
    size_t n = 0;
    if (clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof n, &n, NULL) != CL_SUCCESS)
        return 0;
    return n;
}

/* Check type, shape, alignment and buffer extents shared by both
 * launchers; fills *kernel. Returns 0 or -1. */
static int eng_check_gemm(eng_cl *cl, const char *op, uint32_t type,
                          cl_mem wbuf, uint64_t w_off, uint32_t rows,
                          uint32_t cols, cl_kernel *kernel)
{
    const char *suf = eng_type_suffix(type);
    const ds4_type_info *ti = ds4_type_get(type);
    if (!suf || !ti)
        return eng_fail(cl, "%s: weight type %u (%s) has no kernel", op,
                        (unsigned)type, ti ? ti->name : "unknown");
    uint64_t row_bytes = ds4_type_nbytes(type, cols);
    if (cols == 0 || row_bytes == 0)
        return eng_fail(cl, "%s: %u columns is not a multiple of %s's block "
                        "of %u", op, (unsigned)cols, ti->name,
                        (unsigned)ti->block_elems);
    if (w_off % 4)
        return eng_fail(cl, "%s: weight offset %llu is not 4-byte aligned",
                        op, (unsigned long long)w_off);
    uint64_t need = w_off + row_bytes * rows;
    uint64_t have = eng_mem_size(wbuf);
    if (need > have)
        return eng_fail(cl, "%s: %u x %u %s weights at offset %llu need %llu "
                        "bytes, buffer has %llu", op, (unsigned)rows,
                        (unsigned)cols, ti->name, (unsigned long long)w_off,
                        (unsigned long long)need, (unsigned long long)have);
    char name[64];
    snprintf(name, sizeof name, "%s_%s", op, suf);
    *kernel = eng_cl_kernel(cl, name);
    return *kernel ? 0 : -1;
}

/* Set kernel arguments from (size, pointer) pairs; 0 or -1. */
static int eng_set_args(eng_cl *cl, cl_kernel k, int n, const size_t *sizes,
                        const void *const *vals)
{
    for (int i = 0; i < n; i++) {
        cl_int e = clSetKernelArg(k, (cl_uint)i, sizes[i], vals[i]);
        if (e != CL_SUCCESS)
            return eng_fail(cl, "setting kernel argument %d failed: %s", i,
                            eng_cl_strerror(e));
    }
    return 0;
}

/* Enqueue the barrier-free per-row kernel (CPU devices): one work-item
 * per weight row and block of 8 tokens, 16 x 1 work-groups. Arguments
 * were checked by the caller. */
static int eng_enqueue_rows(eng_cl *cl, uint32_t type, cl_mem wbuf,
                            uint64_t w_off, cl_mem x, uint32_t x_stride,
                            cl_mem y, uint32_t y_stride, uint32_t rows,
                            uint32_t cols, uint32_t ntok)
{
    cl_kernel k;
    if (eng_check_gemm(cl, "matmul_rows", type, wbuf, w_off, rows, cols, &k))
        return -1;
    cl_ulong off = w_off;
    cl_uint xs = x_stride, ys = y_stride, r = rows, c = cols, t = ntok;
    size_t sizes[] = { sizeof wbuf, sizeof off, sizeof x, sizeof xs,
                       sizeof y, sizeof ys, sizeof r, sizeof c, sizeof t };
    const void *vals[] = { &wbuf, &off, &x, &xs, &y, &ys, &r, &c, &t };
    if (eng_set_args(cl, k, 9, sizes, vals))
        return -1;
    size_t l[2] = { 16, 1 };
    size_t g[2] = { ((size_t)rows + 15) / 16 * 16, ((size_t)ntok + 7) / 8 };
    cl_int e = clEnqueueNDRangeKernel(cl->queue, k, 2, NULL, g, l, 0, NULL,
                                      cl->last_event);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "matmul_rows: enqueue of %u x %u failed: %s",
                        (unsigned)rows, (unsigned)ntok, eng_cl_strerror(e));
    return 0;
}

/* Whether the fast path handles this type and shape (cl->nv_path aside). */
static int eng_nv_applies(uint32_t type, uint32_t cols)
{
    return (type == DS4_TYPE_Q8_0 || type == DS4_TYPE_Q2_K ||
            type == DS4_TYPE_Q4_K || type == DS4_TYPE_IQ2_XXS) &&
           cols % 256 == 0;
}

/* The fast-path family for ntok tokens, its rows and tokens per
 * work-group (kernels/matmul_nv.cl: NT n-tiles, KS column splits). */
static const char *eng_nv_family(uint32_t ntok, uint32_t *rows_wg,
                                 uint32_t *toks_wg)
{
    if (ntok <= 4) {
        *rows_wg = 16, *toks_wg = 4;
        return "nv_mv";
    }
    if (ntok <= 16) {
        *rows_wg = 32, *toks_wg = 8;
        return "nv_mv8";
    }
    *rows_wg = 128, *toks_wg = 32;
    return "nv_mm";
}

const char *eng_cl_gemm_path(const eng_cl *cl, uint32_t type, uint32_t cols,
                             uint32_t ntok)
{
    if (cl->nv_path && eng_nv_applies(type, cols)) {
        uint32_t r, t;
        return eng_nv_family(ntok ? ntok : 1, &r, &t);
    }
    if (cl->rows_kernels)
        return "matmul_rows";
    return ntok ? "matmul" : "matvec";
}

/* Enqueue the fast path (arguments checked by the caller), 256
 * work-items per work-group over row tiles x token tiles. The decode
 * families read x themselves; nv_mm first has nv_xprep convert X into
 * cl->nv_scratch (grown as needed; the queue is in order). */
static int eng_enqueue_nv(eng_cl *cl, uint32_t type, cl_mem wbuf,
                          uint64_t w_off, cl_mem x, uint32_t x_stride,
                          cl_mem y, uint32_t y_stride, uint32_t rows,
                          uint32_t cols, uint32_t ntok)
{
    uint32_t rows_wg, toks_wg;
    const char *fam = eng_nv_family(ntok, &rows_wg, &toks_wg);
    char name[64];
    snprintf(name, sizeof name, "%s_%s", fam, eng_type_suffix(type));
    cl_kernel k = eng_cl_kernel(cl, name);
    if (!k)
        return -1;
    cl_ulong off = w_off;
    cl_uint xs = x_stride, ys = y_stride, r = rows, c = cols, t = ntok;
    cl_int e;
    if (strcmp(fam, "nv_mm") == 0) {
        /* hi/lo words, step scales and 16-column sums: 4 + 1/8 + 1/4
         * bytes per element */
        uint64_t need = (uint64_t)ntok * cols / 32 * (128 + 4 + 8);
        if (cl->nv_scratch_bytes < need) {
            if (cl->nv_scratch)
                clReleaseMemObject(cl->nv_scratch);
            cl->nv_scratch_bytes = 0;
            uint64_t want = need < (1u << 20) ? (1u << 20) : need;
            cl->nv_scratch = eng_cl_alloc(cl, want, CL_MEM_READ_WRITE);
            if (!cl->nv_scratch)
                return -1;
            cl->nv_scratch_bytes = want;
        }
        cl_mem xp = cl->nv_scratch;
        cl_kernel kp = eng_cl_kernel(cl, "nv_xprep");
        if (!kp)
            return -1;
        size_t psz[] = { sizeof x, sizeof xs, sizeof t, sizeof c, sizeof xp };
        const void *pv[] = { &x, &xs, &t, &c, &xp };
        if (eng_set_args(cl, kp, 5, psz, pv))
            return -1;
        size_t pl = 256, pg = ((size_t)ntok * cols / 4 + 255) / 256 * 256;
        e = clEnqueueNDRangeKernel(cl->queue, kp, 1, NULL, &pg, &pl, 0, NULL,
                                   NULL);
        if (e != CL_SUCCESS)
            return eng_fail(cl, "nv_xprep: enqueue of %u x %u failed: %s",
                            (unsigned)ntok, (unsigned)cols,
                            eng_cl_strerror(e));
        size_t sizes[] = { sizeof wbuf, sizeof off, sizeof xp, sizeof y,
                           sizeof ys, sizeof r, sizeof c, sizeof t };
        const void *vals[] = { &wbuf, &off, &xp, &y, &ys, &r, &c, &t };
        if (eng_set_args(cl, k, 8, sizes, vals))
            return -1;
    } else {
        size_t sizes[] = { sizeof wbuf, sizeof off, sizeof x, sizeof xs,
                           sizeof y, sizeof ys, sizeof r, sizeof c,
                           sizeof t };
        const void *vals[] = { &wbuf, &off, &x, &xs, &y, &ys, &r, &c, &t };
        if (eng_set_args(cl, k, 9, sizes, vals))
            return -1;
    }
    size_t l[2] = { 256, 1 };
    size_t g[2] = { ((size_t)rows + rows_wg - 1) / rows_wg * 256,
                    ((size_t)ntok + toks_wg - 1) / toks_wg };
    e = clEnqueueNDRangeKernel(cl->queue, k, 2, NULL, g, l, 0, NULL,
                               cl->last_event);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "%s: enqueue of %u x %u, %u tokens failed: %s",
                        name, (unsigned)rows, (unsigned)cols, (unsigned)ntok,
                        eng_cl_strerror(e));
    return 0;
}

/* Enqueue the mat-vec kernel of type: the fast path where it applies,
 * else one work-group per row (GPU), or the per-row kernel with one token
 * (CPU). */
int eng_cl_matvec(eng_cl *cl, uint32_t type, cl_mem wbuf, uint64_t w_off,
                  cl_mem x, cl_mem y, uint32_t rows, uint32_t cols)
{
    cl_kernel k;
    if (eng_check_gemm(cl, "matvec", type, wbuf, w_off, rows, cols, &k))
        return -1;
    if (eng_mem_size(x) < (uint64_t)cols * 4 ||
        eng_mem_size(y) < (uint64_t)rows * 4)
        return eng_fail(cl, "matvec: x needs %u floats and y %u floats",
                        (unsigned)cols, (unsigned)rows);
    if (rows == 0)
        return 0;
    if (cl->nv_path && eng_nv_applies(type, cols))
        return eng_enqueue_nv(cl, type, wbuf, w_off, x, cols, y, rows, rows,
                              cols, 1);
    if (cl->rows_kernels)
        return eng_enqueue_rows(cl, type, wbuf, w_off, x, cols, y, rows,
                                rows, cols, 1);
    cl_ulong off = w_off;
    cl_uint r = rows, c = cols;
    size_t sizes[] = { sizeof wbuf, sizeof off, sizeof x, sizeof y,
                       sizeof r, sizeof c };
    const void *vals[] = { &wbuf, &off, &x, &y, &r, &c };
    if (eng_set_args(cl, k, 6, sizes, vals))
        return -1;
    size_t l = (size_t)cl->mv_wg, g = (size_t)rows * l;
    cl_int e = clEnqueueNDRangeKernel(cl->queue, k, 1, NULL, &g, &l, 0, NULL,
                                      cl->last_event);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "matvec: enqueue of %u rows failed: %s",
                        (unsigned)rows, eng_cl_strerror(e));
    return 0;
}

/* Enqueue the mat-mat: the fast path where it applies, else the tiled
 * kernel of type (16 x 16 output tiles) or the per-row kernel (CPU). */
int eng_cl_matmul(eng_cl *cl, uint32_t type, cl_mem wbuf, uint64_t w_off,
                  cl_mem x, uint32_t x_stride, cl_mem y, uint32_t y_stride,
                  uint32_t rows, uint32_t cols, uint32_t ntok)
{
    cl_kernel k;
    if (eng_check_gemm(cl, "matmul", type, wbuf, w_off, rows, cols, &k))
        return -1;
    if (x_stride < cols || y_stride < rows)
        return eng_fail(cl, "matmul: strides %u/%u below cols %u/rows %u",
                        (unsigned)x_stride, (unsigned)y_stride,
                        (unsigned)cols, (unsigned)rows);
    if (ntok == 0 || rows == 0)
        return 0;
    uint64_t xneed = ((uint64_t)(ntok - 1) * x_stride + cols) * 4;
    uint64_t yneed = ((uint64_t)(ntok - 1) * y_stride + rows) * 4;
    if (eng_mem_size(x) < xneed || eng_mem_size(y) < yneed)
        return eng_fail(cl, "matmul: X needs %llu bytes and Y %llu bytes for "
                        "%u tokens", (unsigned long long)xneed,
                        (unsigned long long)yneed, (unsigned)ntok);
    if (cl->nv_path && eng_nv_applies(type, cols))
        return eng_enqueue_nv(cl, type, wbuf, w_off, x, x_stride, y,
                              y_stride, rows, cols, ntok);
    if (cl->rows_kernels)
        return eng_enqueue_rows(cl, type, wbuf, w_off, x, x_stride, y,
                                y_stride, rows, cols, ntok);
    cl_ulong off = w_off;
    cl_uint xs = x_stride, ys = y_stride, r = rows, c = cols, t = ntok;
    size_t sizes[] = { sizeof wbuf, sizeof off, sizeof x, sizeof xs,
                       sizeof y, sizeof ys, sizeof r, sizeof c, sizeof t };
    const void *vals[] = { &wbuf, &off, &x, &xs, &y, &ys, &r, &c, &t };
    if (eng_set_args(cl, k, 9, sizes, vals))
        return -1;
    size_t l[2] = { 16, 16 };
    size_t g[2] = { ((size_t)rows + 15) / 16 * 16,
                    ((size_t)ntok + 15) / 16 * 16 };
    cl_int e = clEnqueueNDRangeKernel(cl->queue, k, 2, NULL, g, l, 0, NULL,
                                      cl->last_event);
    if (e != CL_SUCCESS)
        return eng_fail(cl, "matmul: enqueue of %u x %u failed: %s",
                        (unsigned)rows, (unsigned)ntok, eng_cl_strerror(e));
    return 0;
}
