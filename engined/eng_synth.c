/* eng_synth.c - synthetic device weights (see eng_synth.h). */
#include "eng_synth.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/dsv4_mkmodel.h"
#include "common/quant.h"
#include "common/util.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

double eng_synth_target_std(int id, uint64_t fan_in)
{
    dsv4_value_recipe r;
    dsv4_mk_recipe(id, fan_in, &r);
    double half = (r.hi - r.lo) / 2.0 + 0.5;
    return ldexp(half / sqrt(3.0), -r.k);
}

/* Block layout of the quantized types: bytes per block and the f16 scale
 * fields (d, and dmin where the format has one). */
typedef struct qlayout {
    uint32_t type, block_bytes, d_off, dmin_off, has_dmin;
    double d_per_std;    /* d = std * d_per_std */
    double dmin_per_d;   /* dmin = d * dmin_per_d (zero mean) */
} qlayout;

/* d from the target std: Q8_0 values q*d, q uniform in [-128,127];
 * Q2_K d*sc*q - dmin*m (sc, m 4-bit, q 2-bit); Q4_K the same with 6-bit
 * sc/m and 4-bit q; IQ2_XXS d*(0.5+s)/4 * grid (grid values 8..43, s
 * 4-bit). The factors are the formats' typical magnitudes, measured by
 * tests/unit/test_eng_synth.c to land within 2x of the target. */
static const qlayout k_q[] = {
    {DS4_TYPE_Q8_0, 34, 0, 0, 0, 1.732 / 127.0, 0},
    {DS4_TYPE_Q2_K, 84, 80, 82, 1, 1.0 / 12.0, 1.5},
    {DS4_TYPE_Q4_K, 144, 0, 2, 1, 1.0 / 250.0, 7.5},
    {DS4_TYPE_IQ2_XXS, 66, 0, 0, 0, 1.0 / 60.0, 0},
};

static const qlayout *qlayout_of(uint32_t type)
{
    for (size_t i = 0; i < sizeof k_q / sizeof k_q[0]; i++)
        if (k_q[i].type == type)
            return &k_q[i];
    return NULL;
}

static uint64_t salt_of(uint64_t seed, uint32_t tensor, uint32_t what)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + tensor * 0xd1b54a32d192ed03ull + what;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t round_up(uint64_t n, size_t wg)
{
    return (size_t)((n + wg - 1) / wg * wg);
}

#define ARG(k, i, v)                                                        \
    do {                                                                    \
        __typeof__(v) v_ = (v);                                             \
        rc |= clSetKernelArg(k, i, sizeof v_, &v_);                         \
    } while (0)

static int launch(eng_cl *cl, cl_kernel k, uint64_t items, const char *name,
                  cl_int set_rc, char *err, size_t errlen)
{
    if (set_rc != CL_SUCCESS)
        return fail(err, errlen, "%s: setting arguments: %s", name, eng_cl_strerror(set_rc));
    if (items == 0)
        return 0;
    size_t wg = 64, g = round_up(items, wg);
    cl_int rc = clEnqueueNDRangeKernel(cl->queue, k, 1, NULL, &g, &wg, 0, NULL, NULL);
    if (rc != CL_SUCCESS)
        return fail(err, errlen, "%s: enqueue of %zu items: %s", name, g, eng_cl_strerror(rc));
    return 0;
}

/* Fill one part (the whole tensor, or experts [e0, e1) of it). */
static int fill_part(eng_model *m, eng_cl *cl, const eng_part *pt, uint64_t seed,
                     char *err, size_t errlen)
{
    const eng_tensor *t = &m->tensors[pt->tensor];
    cl_mem buf = m->bufs[pt->buf];
    cl_ulong off = pt->off;
    cl_int rc = 0;
    if (t->id == DSV4_T_FFN_TID2EID) {
        if (t->type != DS4_TYPE_I32)
            return fail(err, errlen, "%s: tid2eid of type %u", t->name, t->type);
        cl_kernel k = eng_cl_kernel(cl, "synth_tid2eid");
        if (!k)
            return fail(err, errlen, "%s", cl->err);
        cl_uint kk = (cl_uint)t->ne[0];
        cl_uint ntok = (cl_uint)(pt->bytes / 4 / kk);
        cl_uint first = (cl_uint)(pt->src_off / 4 / kk);
        ARG(k, 0, buf);
        ARG(k, 1, off);
        ARG(k, 2, ntok);
        ARG(k, 3, first);
        ARG(k, 4, kk);
        ARG(k, 5, (cl_uint)m->hp.n_expert);
        ARG(k, 6, (cl_ulong)salt_of(seed, pt->tensor, 0));
        return launch(cl, k, ntok, t->name, rc, err, errlen);
    }
    dsv4_value_recipe r;
    dsv4_mk_recipe(t->id, t->ne[0], &r);
    const qlayout *q = qlayout_of(t->type);
    if (!q) {
        cl_uint kind;
        uint64_t es;
        switch (t->type) {
        case DS4_TYPE_F32: kind = 0, es = 4; break;
        case DS4_TYPE_F16: kind = 1, es = 2; break;
        case DS4_TYPE_BF16: kind = 2, es = 2; break;
        default:
            return fail(err, errlen, "%s: no synthetic recipe for type %s", t->name,
                        ds4_type_get(t->type) ? ds4_type_get(t->type)->name : "?");
        }
        cl_kernel k = eng_cl_kernel(cl, "synth_values");
        if (!k)
            return fail(err, errlen, "%s", cl->err);
        cl_ulong n = pt->bytes / es;
        ARG(k, 0, buf);
        ARG(k, 1, off);
        ARG(k, 2, n);
        ARG(k, 3, (cl_ulong)(pt->src_off / es));
        ARG(k, 4, kind);
        ARG(k, 5, (cl_int)r.lo);
        ARG(k, 6, (cl_int)r.hi);
        ARG(k, 7, (cl_int)r.off);
        ARG(k, 8, (cl_float)ldexp(1.0, -r.k));
        ARG(k, 9, (cl_int)r.nonzero);
        ARG(k, 10, (cl_ulong)salt_of(seed, pt->tensor, 0));
        return launch(cl, k, n, t->name, rc, err, errlen);
    }
    /* quantized: random payload, then the block scales */
    if (pt->bytes % q->block_bytes || pt->src_off % q->block_bytes)
        return fail(err, errlen, "%s: part of %llu bytes is not whole %u-byte blocks", t->name,
                    (unsigned long long)pt->bytes, q->block_bytes);
    cl_kernel kb = eng_cl_kernel(cl, "synth_bytes");
    cl_kernel kh = eng_cl_kernel(cl, "synth_half");
    if (!kb || !kh)
        return fail(err, errlen, "%s", cl->err);
    ARG(kb, 0, buf);
    ARG(kb, 1, off);
    ARG(kb, 2, (cl_ulong)pt->bytes);
    ARG(kb, 3, (cl_ulong)pt->src_off);
    ARG(kb, 4, (cl_ulong)salt_of(seed, pt->tensor, 1));
    if (launch(cl, kb, (pt->bytes + 15) / 16, t->name, rc, err, errlen))
        return -1;
    double d = eng_synth_target_std(t->id, t->ne[0]) * q->d_per_std;
    cl_ulong nb = pt->bytes / q->block_bytes, first = pt->src_off / q->block_bytes;
    for (int f = 0; f < 1 + (int)q->has_dmin; f++) {
        double v = f ? d * q->dmin_per_d : d;
        rc = 0;
        ARG(kh, 0, buf);
        ARG(kh, 1, off);
        ARG(kh, 2, nb);
        ARG(kh, 3, first);
        ARG(kh, 4, (cl_uint)q->block_bytes);
        ARG(kh, 5, (cl_uint)(f ? q->dmin_off : q->d_off));
        ARG(kh, 6, (cl_float)(v * 0.9));
        ARG(kh, 7, (cl_float)(v * 1.1));
        ARG(kh, 8, (cl_ulong)salt_of(seed, pt->tensor, 2 + (uint32_t)f));
        if (launch(cl, kh, nb, t->name, rc, err, errlen))
            return -1;
    }
    return 0;
}

int eng_synth_fill(eng_model *m, eng_cl *cl, const eng_plan *plan, uint64_t seed,
                   eng_progress_fn progress, void *ud, char *err, size_t errlen)
{
    uint64_t t0 = ds4_now_ns();
    if (eng_model_alloc(m, cl, plan, err, errlen))
        return -1;
    uint64_t done = 0;
    for (uint32_t j = 0; j < plan->n_parts; j++) {
        if (fill_part(m, cl, &plan->parts[j], seed, err, errlen))
            return -1;
        done += plan->parts[j].bytes;
        if (progress) {
            if (eng_cl_finish(cl))
                return fail(err, errlen, "synthetic weights: %s", cl->err);
            progress(ud, done, plan->tensor_bytes, m->tensors[plan->parts[j].tensor].name);
        }
    }
    if (eng_cl_finish(cl))
        return fail(err, errlen, "synthetic weights: %s", cl->err);
    m->upload_s = (ds4_now_ns() - t0) / 1e9;
    return 0;
}
