/* eng_fwd.c - the DeepSeek V4 forward pass on the device (see eng_fwd.h):
 * weight table and small f32 weights, chunk scratch, the per-layer
 * pipeline of GEMMs (eng_cl_matmul / eng_cl_matvec) and kernels/fwd*.cl
 * kernels, the output head, and the sequence state. Everything of a step
 * stays on the device; the host only writes token ids and reads logits. */
#include "engined/eng_fwd.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/quant.h"
#include "common/util.h"
#include "engined/eng_ref.h"

#define FWD_WG 64      /* as kernels/fwd.cl */
#define FWD_MAXD 1024
#define FWD_MAXHC 16
#define FWD_MB 8       /* as kernels/fwd_moe.cl */
#define FWD_HEAD_ROWS 64
#define FWD_SCORE_CAP (16u << 20) /* floats of indexer scores per pass */

/* A weight matrix: rows x cols of type at (buf, off). */
typedef struct fwd_w {
    cl_mem buf;
    uint64_t off;
    uint32_t type, rows, cols;
} fwd_w;

/* A routed-expert tensor: E experts of rows x cols, in parts. */
typedef struct fwd_part {
    cl_mem buf;
    uint64_t off;
    uint32_t e0, e1;
} fwd_part;
typedef struct fwd_exps {
    uint32_t type, rows, cols, n_parts;
    uint64_t ebytes;
    fwd_part *parts;
} fwd_exps;

/* Compressor of one kind (attention or indexer) in a layer. */
typedef struct fwd_comp {
    fwd_w kv, gate;
    uint64_t ape, norm;   /* sw offsets */
    uint32_t dim, lanes;
} fwd_comp;

typedef struct fwd_layer {
    uint32_t ratio;
    int hash;
    fwd_w hc_attn_fn, q_a, q_b, kv, out_a, out_b, hc_ffn_fn, gate_inp;
    fwd_w sh_gate, sh_up, sh_down, idx_q_b, idx_proj;
    fwd_comp comp, icomp;
    fwd_exps gate, up, down;
    cl_mem tid_buf;
    uint64_t tid_off;     /* in int32 elements */
    /* sw offsets */
    uint64_t attn_norm, q_a_norm, kv_norm, sinks, hca_scale, hca_base;
    uint64_t hcf_scale, hcf_base, ffn_norm, probs_b;
    /* state offsets (floats) */
    uint64_t ring, comp_rows, ckv, csc, icomp_rows, ikv, isc;
} fwd_layer;

struct eng_fwd {
    eng_cl *cl;
    const eng_model *m;
    dsv4_hparams hp;
    int exact;
    uint32_t iqat;         /* qat mode of the indexer rows: 0 or 2 */
    uint32_t C, max_ctx;
    fwd_layer *L;
    cl_mem embd_buf;
    uint64_t embd_off;
    uint32_t embd_type;   /* 0 f32, 1 f16, 2 bf16 */
    fwd_w out_hc_fn, output;
    uint64_t out_norm, out_hc_base, out_hc_scale, freq_main, freq_comp;
    cl_mem sw;
    uint64_t sw_bytes;
    uint64_t state_floats; /* per sequence */
    /* chunk scratch */
    cl_mem ids, tpos, h, mix, post, comb, xn, qr, q, kvc, o, z, y, ckv, cg, iq, iw;
    cl_mem scores, sel, rl, msel, mw, sg, su, smid, cnt, entries, entry_of;
    cl_mem blocks, nblocks, mid, ye, hh, mixh, xo, lg;
    uint32_t score_cap;
    cl_mem og, zg;         /* one output group's slice of o / z */
    uint64_t scratch_bytes;
    cl_mem *owned;         /* every buffer to release */
    uint32_t n_owned, cap_owned;
    /* DS4_FWD_PROFILE=1: wait after every launch, time per kernel name,
     * summary on stderr at close */
    int profile;
    int trace;             /* DS4_FWD_TRACE=1: every launch on stderr,
                              each waited for (localises device faults) */
    struct {
        char name[48];
        double s;
        uint64_t n;
    } prof[64];
    int n_prof;
};

struct eng_fwd_seq {
    eng_fwd *f;
    cl_mem state, hlast;
    uint32_t n;
    int has_hlast;
    int broken;
};

/* ---- errors and small helpers ------------------------------------------ */

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

/* The eng_cl failure message, prefixed. */
static int cl_fail(eng_fwd *f, char *err, size_t errlen, const char *what)
{
    return fail(err, errlen, "%s: %s", what, f->cl->err);
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

/* A device buffer owned by f (released by eng_fwd_close). */
static cl_mem fwd_alloc(eng_fwd *f, uint64_t bytes, char *err, size_t errlen)
{
    cl_mem b = eng_cl_alloc(f->cl, bytes ? bytes : 4, CL_MEM_READ_WRITE);
    if (!b) {
        cl_fail(f, err, errlen, "scratch");
        return NULL;
    }
    if (f->n_owned == f->cap_owned) {
        f->cap_owned = f->cap_owned ? 2 * f->cap_owned : 64;
        f->owned = ds4_xrealloc(f->owned, sizeof *f->owned * f->cap_owned);
    }
    f->owned[f->n_owned++] = b;
    f->scratch_bytes += bytes;
    return b;
}

/* ---- kernel launches ----------------------------------------------------- */

enum { KA_MEM, KA_U32, KA_U64, KA_F32 };
typedef struct karg {
    int kind;
    cl_mem m;
    cl_uint u;
    cl_ulong q;
    cl_float f;
} karg;
#define KM(x) ((karg){KA_MEM, (x), 0, 0, 0})
#define KU(x) ((karg){KA_U32, NULL, (cl_uint)(x), 0, 0})
#define KQ(x) ((karg){KA_U64, NULL, 0, (cl_ulong)(x), 0})
#define KF(x) ((karg){KA_F32, NULL, 0, 0, (cl_float)(x)})
#define NARGS(...) ((int)(sizeof((karg[]){__VA_ARGS__}) / sizeof(karg)))
/* LAUNCH(f, name, g0, g1, l0, args...): 2-D range (g0 rounded up to l0). */
#define LAUNCH(f, name, g0, g1, l0, ...)                                     \
    fwd_launch(f, name, g0, g1, l0, (const karg[]){__VA_ARGS__},             \
               NARGS(__VA_ARGS__))

/* Profile: finish the queue and charge the time since t0 to name. */
static void prof_add(eng_fwd *f, const char *name, uint64_t t0)
{
    clFinish(f->cl->queue);
    double dt = (ds4_now_ns() - t0) / 1e9;
    int i = 0;
    while (i < f->n_prof && strcmp(f->prof[i].name, name) != 0)
        i++;
    if (i == f->n_prof) {
        if (f->n_prof == (int)(sizeof f->prof / sizeof f->prof[0]))
            return;
        snprintf(f->prof[f->n_prof++].name, sizeof f->prof[0].name, "%s", name);
    }
    f->prof[i].s += dt;
    f->prof[i].n++;
}

static int fwd_launch_(eng_fwd *f, const char *name, size_t g0, size_t g1,
                       size_t l0, const karg *a, int n);
static int fwd_launch(eng_fwd *f, const char *name, size_t g0, size_t g1,
                      size_t l0, const karg *a, int n)
{
    if (f->trace) {
        fprintf(stderr, "eng_fwd: %s %zu x %zu\n", name, g0, g1);
        int rc = fwd_launch_(f, name, g0, g1, l0, a, n);
        cl_int e = clFinish(f->cl->queue);
        fprintf(stderr, "eng_fwd: %s -> %d, finish %s\n", name, rc, eng_cl_strerror(e));
        return rc;
    }
    if (!f->profile)
        return fwd_launch_(f, name, g0, g1, l0, a, n);
    clFinish(f->cl->queue);
    uint64_t t0 = ds4_now_ns();
    int rc = fwd_launch_(f, name, g0, g1, l0, a, n);
    prof_add(f, name, t0);
    return rc;
}

static int fwd_launch_(eng_fwd *f, const char *name, size_t g0, size_t g1,
                       size_t l0, const karg *a, int n)
{
    eng_cl *cl = f->cl;
    if (g0 == 0 || g1 == 0)
        return 0;
    cl_kernel k = eng_cl_kernel(cl, name);
    if (!k)
        return -1;
    for (int i = 0; i < n; i++) {
        cl_int e;
        switch (a[i].kind) {
        case KA_MEM: e = clSetKernelArg(k, (cl_uint)i, sizeof(cl_mem), &a[i].m); break;
        case KA_U32: e = clSetKernelArg(k, (cl_uint)i, sizeof(cl_uint), &a[i].u); break;
        case KA_U64: e = clSetKernelArg(k, (cl_uint)i, sizeof(cl_ulong), &a[i].q); break;
        default: e = clSetKernelArg(k, (cl_uint)i, sizeof(cl_float), &a[i].f); break;
        }
        if (e != CL_SUCCESS) {
            snprintf(cl->err, sizeof cl->err, "%s: argument %d: %s", name, i,
                     eng_cl_strerror(e));
            return -1;
        }
    }
    size_t g[2] = {round_up(g0, l0), g1}, l[2] = {l0, 1};
    cl_int e = clEnqueueNDRangeKernel(cl->queue, k, 2, NULL, g, l, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        snprintf(cl->err, sizeof cl->err, "%s: enqueue %zu x %zu: %s", name,
                 g[0], g[1], eng_cl_strerror(e));
        return -1;
    }
    return 0;
}

/* Y[S][rows] = X[S][cols] W^T: the mat-vec launcher for one token, the
 * mat-mat one for a chunk. */
static int fwd_mm(eng_fwd *f, const fwd_w *w, cl_mem x, uint32_t xs, cl_mem y,
                  uint32_t ys, uint32_t S)
{
    uint64_t t0 = 0;
    if (f->profile) {
        clFinish(f->cl->queue);
        t0 = ds4_now_ns();
    }
    int rc;
    if (f->trace)
        fprintf(stderr, "eng_fwd: gemm %u x %u type %u, %u tokens\n", w->rows,
                w->cols, w->type, S);
    if (S == 1)
        rc = eng_cl_matvec(f->cl, w->type, w->buf, w->off, x, y, w->rows, w->cols);
    else
        rc = eng_cl_matmul(f->cl, w->type, w->buf, w->off, x, xs, y, ys, w->rows,
                           w->cols, S);
    if (f->trace)
        fprintf(stderr, "eng_fwd: gemm -> %d, finish %s\n", rc,
                eng_cl_strerror(clFinish(f->cl->queue)));
    if (f->profile) {
        char nm[48];
        snprintf(nm, sizeof nm, "%s %ux%u t%u", S == 1 ? "matvec" : "matmul",
                 w->rows, w->cols, w->type);
        prof_add(f, nm, t0);
    }
    return rc;
}

/* ---- setup: weights ------------------------------------------------------ */

/* Growing host array of the small f32 weights (uploaded as f->sw). */
typedef struct swbuf {
    float *v;
    size_t n, cap;
} swbuf;

/* Append n floats at a 16-float boundary; returns their offset. */
static uint64_t sw_add(swbuf *b, const float *x, size_t n)
{
    size_t at = round_up(b->n, 16);
    if (at + n > b->cap) {
        b->cap = 2 * (at + n) + 1024;
        b->v = ds4_xrealloc(b->v, sizeof(float) * b->cap);
    }
    memset(b->v + b->n, 0, sizeof(float) * (at - b->n));
    memcpy(b->v + at, x, sizeof(float) * n);
    b->n = at + n;
    return at;
}

/* Dequantize a small tensor into sw; 0 or -1. */
static int sw_tensor(eng_fwd *f, swbuf *b, int id, int layer, uint64_t *off,
                     char *err, size_t errlen)
{
    const eng_tensor *t = eng_model_find(f->m, id, layer);
    if (!t)
        return fail(err, errlen, "tensor %s of layer %d missing",
                    dsv4_tensor_suffix(id), layer);
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
    float *tmp = ds4_xmalloc(sizeof(float) * (size_t)n);
    /* a layout-only model with synthetic weights (eng_synth) has no file
     * data: read the small tensor back from the device */
    const void *src = t->data;
    void *dev = NULL;
    eng_tensor_ref r;
    if (!src && t->n_parts == 1 && eng_model_tensor(f->m, id, layer, &r) == 0) {
        dev = ds4_xmalloc((size_t)t->nbytes);
        if (eng_cl_read(f->cl, r.buf, r.off, dev, t->nbytes)) {
            free(dev);
            free(tmp);
            return fail(err, errlen, "tensor '%s': reading it back: %s", t->name,
                        f->cl->err);
        }
        src = dev;
    }
    int bad = !src || ds4_dequantize(t->type, src, tmp, n);
    free(dev);
    if (bad) {
        free(tmp);
        return fail(err, errlen, "tensor '%s': cannot convert its type to f32",
                    t->name);
    }
    *off = sw_add(b, tmp, (size_t)n);
    free(tmp);
    return 0;
}

/* A matrix weight (rows = ne[1], cols = ne[0]) with a kernel for its type. */
static int get_w(eng_fwd *f, int id, int layer, fwd_w *w, char *err,
                 size_t errlen)
{
    eng_tensor_ref r;
    if (eng_model_tensor(f->m, id, layer, &r))
        return fail(err, errlen, "tensor %s of layer %d not on the device",
                    dsv4_tensor_suffix(id), layer);
    if (!eng_cl_matvec_supported(r.type) || r.n_parts != 1)
        return fail(err, errlen, "tensor '%s': type %u has no GEMM kernel",
                    r.t->name, (unsigned)r.type);
    w->buf = r.buf;
    w->off = r.off;
    w->type = r.type;
    w->cols = (uint32_t)r.ne[0];
    w->rows = (uint32_t)(r.n_dims > 1 ? r.ne[1] : 1);
    return 0;
}

/* Kernel-name suffix of an expert weight type. */
static const char *exp_suffix(uint32_t type)
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

static int get_exps(eng_fwd *f, int id, int layer, fwd_exps *x, char *err,
                    size_t errlen)
{
    eng_tensor_ref r;
    if (eng_model_tensor(f->m, id, layer, &r))
        return fail(err, errlen, "tensor %s of layer %d not on the device",
                    dsv4_tensor_suffix(id), layer);
    if (!exp_suffix(r.type) || r.n_dims != 3 || r.ne[0] % 8)
        return fail(err, errlen, "expert tensor '%s': type %u unsupported",
                    r.t->name, (unsigned)r.type);
    x->type = r.type;
    x->cols = (uint32_t)r.ne[0];
    x->rows = (uint32_t)r.ne[1];
    x->ebytes = ds4_type_nbytes(r.type, x->cols) * x->rows;
    x->n_parts = r.n_parts;
    x->parts = ds4_xcalloc(r.n_parts, sizeof *x->parts);
    for (uint32_t p = 0; p < r.n_parts; p++) {
        if (eng_model_tensor_part(f->m, id, layer, p, &r))
            return fail(err, errlen, "expert tensor part %u missing", p);
        x->parts[p] = (fwd_part){r.buf, r.off, r.e0, r.e1};
    }
    return 0;
}

static int get_comp(eng_fwd *f, swbuf *b, int layer, int indexer, fwd_comp *c,
                    char *err, size_t errlen)
{
    const dsv4_hparams *hp = &f->hp;
    int kv = indexer ? DSV4_T_IDX_COMP_KV : DSV4_T_ATTN_COMP_KV;
    int gate = indexer ? DSV4_T_IDX_COMP_GATE : DSV4_T_ATTN_COMP_GATE;
    int ape = indexer ? DSV4_T_IDX_COMP_APE : DSV4_T_ATTN_COMP_APE;
    int norm = indexer ? DSV4_T_IDX_COMP_NORM : DSV4_T_ATTN_COMP_NORM;
    c->dim = indexer ? hp->idx_head_dim : hp->head_dim;
    c->lanes = hp->compress_ratio[layer] == 4 ? 2 : 1;
    if (get_w(f, kv, layer, &c->kv, err, errlen) ||
        get_w(f, gate, layer, &c->gate, err, errlen) ||
        sw_tensor(f, b, ape, layer, &c->ape, err, errlen) ||
        sw_tensor(f, b, norm, layer, &c->norm, err, errlen))
        return -1;
    return 0;
}

/* Per-layer weights and small tensors. */
static int setup_layer(eng_fwd *f, swbuf *b, int l, char *err, size_t errlen)
{
    const dsv4_hparams *hp = &f->hp;
    fwd_layer *L = &f->L[l];
    L->ratio = hp->compress_ratio[l];
    L->hash = (uint32_t)l < hp->n_hash_layer;
    if (get_w(f, DSV4_T_HC_ATTN_FN, l, &L->hc_attn_fn, err, errlen) ||
        get_w(f, DSV4_T_ATTN_Q_A, l, &L->q_a, err, errlen) ||
        get_w(f, DSV4_T_ATTN_Q_B, l, &L->q_b, err, errlen) ||
        get_w(f, DSV4_T_ATTN_KV, l, &L->kv, err, errlen) ||
        get_w(f, DSV4_T_ATTN_OUTPUT_A, l, &L->out_a, err, errlen) ||
        get_w(f, DSV4_T_ATTN_OUTPUT_B, l, &L->out_b, err, errlen) ||
        get_w(f, DSV4_T_HC_FFN_FN, l, &L->hc_ffn_fn, err, errlen) ||
        get_w(f, DSV4_T_FFN_GATE_INP, l, &L->gate_inp, err, errlen) ||
        get_w(f, DSV4_T_FFN_GATE_SHEXP, l, &L->sh_gate, err, errlen) ||
        get_w(f, DSV4_T_FFN_UP_SHEXP, l, &L->sh_up, err, errlen) ||
        get_w(f, DSV4_T_FFN_DOWN_SHEXP, l, &L->sh_down, err, errlen) ||
        get_exps(f, DSV4_T_FFN_GATE_EXPS, l, &L->gate, err, errlen) ||
        get_exps(f, DSV4_T_FFN_UP_EXPS, l, &L->up, err, errlen) ||
        get_exps(f, DSV4_T_FFN_DOWN_EXPS, l, &L->down, err, errlen) ||
        sw_tensor(f, b, DSV4_T_ATTN_NORM, l, &L->attn_norm, err, errlen) ||
        sw_tensor(f, b, DSV4_T_ATTN_Q_A_NORM, l, &L->q_a_norm, err, errlen) ||
        sw_tensor(f, b, DSV4_T_ATTN_KV_A_NORM, l, &L->kv_norm, err, errlen) ||
        sw_tensor(f, b, DSV4_T_ATTN_SINKS, l, &L->sinks, err, errlen) ||
        sw_tensor(f, b, DSV4_T_HC_ATTN_SCALE, l, &L->hca_scale, err, errlen) ||
        sw_tensor(f, b, DSV4_T_HC_ATTN_BASE, l, &L->hca_base, err, errlen) ||
        sw_tensor(f, b, DSV4_T_HC_FFN_SCALE, l, &L->hcf_scale, err, errlen) ||
        sw_tensor(f, b, DSV4_T_HC_FFN_BASE, l, &L->hcf_base, err, errlen) ||
        sw_tensor(f, b, DSV4_T_FFN_NORM, l, &L->ffn_norm, err, errlen))
        return -1;
    if (L->gate.type != L->up.type || L->gate.n_parts != L->up.n_parts)
        return fail(err, errlen, "layer %d: gate and up experts differ in "
                    "type or placement", l);
    for (uint32_t p = 0; p < L->gate.n_parts; p++)
        if (L->gate.parts[p].e0 != L->up.parts[p].e0 ||
            L->gate.parts[p].e1 != L->up.parts[p].e1)
            return fail(err, errlen, "layer %d: gate and up experts are split "
                        "differently", l);
    if (L->hash) {
        eng_tensor_ref r;
        if (eng_model_tensor(f->m, DSV4_T_FFN_TID2EID, l, &r) ||
            r.type != DS4_TYPE_I32 || r.off % 4)
            return fail(err, errlen, "layer %d: tid2eid missing or not I32", l);
        L->tid_buf = r.buf;
        L->tid_off = r.off / 4;
    } else if (sw_tensor(f, b, DSV4_T_FFN_EXP_PROBS_B, l, &L->probs_b, err, errlen)) {
        return -1;
    }
    if (L->ratio && get_comp(f, b, l, 0, &L->comp, err, errlen))
        return -1;
    if (L->ratio == 4 &&
        (get_comp(f, b, l, 1, &L->icomp, err, errlen) ||
         get_w(f, DSV4_T_IDX_ATTN_Q_B, l, &L->idx_q_b, err, errlen) ||
         get_w(f, DSV4_T_IDX_PROJ, l, &L->idx_proj, err, errlen)))
        return -1;
    return 0;
}

/* Dimensions the kernels and the QAT simulations can handle. */
static int check_dims(const eng_fwd *f, char *err, size_t errlen)
{
    const dsv4_hparams *hp = &f->hp;
    if (hp->head_dim > FWD_MAXD || hp->idx_head_dim > FWD_MAXD)
        return fail(err, errlen, "head dims %u/%u above the kernels' %u",
                    hp->head_dim, hp->idx_head_dim, FWD_MAXD);
    if (hp->n_hc > FWD_MAXHC || hp->n_hc == 0)
        return fail(err, errlen, "%u hyper-connection streams (1..%u supported)",
                    hp->n_hc, FWD_MAXHC);
    if (hp->n_expert > 1024 || hp->n_expert_used > hp->n_expert)
        return fail(err, errlen, "%u experts, %u used: unsupported",
                    hp->n_expert, hp->n_expert_used);
    if (hp->n_rot % 2 || hp->n_rot > hp->head_dim || hp->n_rot > hp->idx_head_dim)
        return fail(err, errlen, "RoPE dims %u unsupported", hp->n_rot);
    if (hp->n_embd % 8 || hp->n_ff_exp % 8)
        return fail(err, errlen, "hidden %u / expert width %u not multiples of 8",
                    hp->n_embd, hp->n_ff_exp);
    if ((uint64_t)hp->n_head * hp->head_dim % hp->o_groups)
        return fail(err, errlen, "heads do not split into %u groups", hp->o_groups);
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if (hp->compress_ratio[l] != 0 && hp->compress_ratio[l] != 4 &&
            hp->compress_ratio[l] < 2)
            return fail(err, errlen, "layer %u: compress ratio %u", l,
                        hp->compress_ratio[l]);
    if (!f->exact) {
        if ((hp->head_dim - hp->n_rot) % 64)
            return fail(err, errlen, "QAT mode needs non-RoPE KV dims in blocks "
                        "of 64 (%u); use exact mode", hp->head_dim - hp->n_rot);
        if (hp->idx_head_dim != 128)
            return fail(err, errlen, "QAT mode needs indexer heads of 128 "
                        "(Hadamard-128), not %u; use exact mode", hp->idx_head_dim);
    }
    return 0;
}

/* Session state layout: per-layer offsets (floats) for max_ctx tokens. */
static void plan_state(eng_fwd *f)
{
    const dsv4_hparams *hp = &f->hp;
    uint64_t at = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        fwd_layer *L = &f->L[l];
        L->ring = at;
        at += (uint64_t)hp->n_swa * hp->head_dim;
        if (L->ratio) {
            uint64_t cd = (uint64_t)L->comp.lanes * hp->head_dim;
            L->comp_rows = at;
            at += (uint64_t)(f->max_ctx / L->ratio) * hp->head_dim;
            L->ckv = at;
            at += L->comp.lanes * L->ratio * cd;
            L->csc = at;
            at += L->comp.lanes * L->ratio * cd;
        }
        if (L->ratio == 4) {
            uint64_t cd = 2ull * hp->idx_head_dim;
            L->icomp_rows = at;
            at += (uint64_t)(f->max_ctx / 4) * hp->idx_head_dim;
            L->ikv = at;
            at += 8 * cd;
            L->isc = at;
            at += 8 * cd;
        }
        at = round_up(at, 64);
    }
    f->state_floats = at;
}

/* Per-group scratch of the grouped output projection: the GEMM launchers
 * take whole buffers, so group g's slice of o is copied into og, and zg
 * back into z. (Sub-buffers would avoid the copies, but NVIDIA's OpenCL
 * crashes releasing them.) */
static int setup_groups(eng_fwd *f, char *err, size_t errlen)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t gin = hp->n_head * hp->head_dim / hp->o_groups;
    f->og = fwd_alloc(f, (uint64_t)f->C * gin * 4, err, errlen);
    f->zg = fwd_alloc(f, (uint64_t)f->C * hp->o_lora_rank * 4, err, errlen);
    return f->og && f->zg ? 0 : -1;
}

/* Chunk scratch buffers. */
static int setup_scratch(eng_fwd *f, char *err, size_t errlen)
{
    const dsv4_hparams *hp = &f->hp;
    uint64_t C = f->C, H = hp->n_embd, hc = hp->n_hc, mixn = (2 + hc) * hc;
    uint64_t nq = (uint64_t)hp->n_head * hp->head_dim, k = hp->n_expert_used;
    uint64_t cw = 2ull * (hp->head_dim > hp->idx_head_dim ? hp->head_dim : hp->idx_head_dim);
    uint64_t nc_max = f->max_ctx / 4 + 1;
    uint64_t cap = C * nc_max;
    if (cap > FWD_SCORE_CAP)
        cap = FWD_SCORE_CAP > nc_max ? FWD_SCORE_CAP : nc_max;
    f->score_cap = (uint32_t)cap;
    uint64_t nb_max = C * k;
    uint64_t HR = C < FWD_HEAD_ROWS ? C : FWD_HEAD_ROWS;
    struct {
        cl_mem *p;
        uint64_t bytes;
    } a[] = {
        {&f->ids, C * 4}, {&f->tpos, C * 4}, {&f->h, C * hc * H * 4}, {&f->mix, C * mixn * 4},
        {&f->post, C * hc * 4}, {&f->comb, C * hc * hc * 4}, {&f->xn, C * H * 4},
        {&f->qr, C * hp->q_lora_rank * 4}, {&f->q, C * nq * 4},
        {&f->kvc, C * hp->head_dim * 4}, {&f->o, C * nq * 4},
        {&f->z, C * hp->o_groups * hp->o_lora_rank * 4}, {&f->y, C * H * 4},
        {&f->ckv, C * cw * 4}, {&f->cg, C * cw * 4},
        {&f->iq, C * hp->n_idx_head * hp->idx_head_dim * 4},
        {&f->iw, C * hp->n_idx_head * 4}, {&f->scores, cap * 4},
        {&f->sel, C * (hp->idx_top_k ? hp->idx_top_k : 1) * 4},
        {&f->rl, C * hp->n_expert * 4}, {&f->msel, C * k * 4}, {&f->mw, C * k * 4},
        {&f->sg, C * hp->n_ff_exp * 4}, {&f->su, C * hp->n_ff_exp * 4},
        {&f->smid, C * hp->n_ff_exp * 4}, {&f->cnt, (uint64_t)hp->n_expert * 4},
        {&f->entries, C * k * 4}, {&f->entry_of, C * k * 4},
        {&f->blocks, nb_max * 16}, {&f->nblocks, 4},
        {&f->mid, C * k * hp->n_ff_exp * 4}, {&f->ye, C * k * H * 4},
        {&f->hh, HR * hc * H * 4}, {&f->mixh, HR * hc * 4}, {&f->xo, HR * H * 4},
        {&f->lg, HR * hp->n_vocab * 4},
    };
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        if (!(*a[i].p = fwd_alloc(f, a[i].bytes, err, errlen)))
            return -1;
    return setup_groups(f, err, errlen);
}

int eng_fwd_open(eng_cl *cl, const eng_model *m, const eng_fwd_opts *o,
                 eng_fwd **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!m->bufs)
        return fail(err, errlen, "model not uploaded");
    eng_fwd *f = ds4_xcalloc(1, sizeof *f);
    f->cl = cl;
    f->m = m;
    f->hp = m->hp;
    f->exact = o && o->exact;
    f->iqat = f->exact || (o && o->no_indexer_qat) ? 0 : 2;
    f->C = o && o->max_chunk ? o->max_chunk : 256;
    f->max_ctx = o && o->max_ctx ? o->max_ctx : 32768;
    const char *pe = getenv("DS4_FWD_PROFILE");
    f->profile = pe && *pe == '1';
    const char *te = getenv("DS4_FWD_TRACE");
    f->trace = te && *te == '1';
    if (f->trace)
        fprintf(stderr, "eng_fwd: open (%s, chunk %u, context %u)\n",
                f->exact ? "exact" : "QAT", f->C, f->max_ctx);
    const dsv4_hparams *hp = &f->hp;
    swbuf b = {0};
    int rc = check_dims(f, err, errlen);
    if (!rc) {
        f->L = ds4_xcalloc(hp->n_layer, sizeof *f->L);
        for (uint32_t l = 0; l < hp->n_layer && !rc; l++)
            rc = setup_layer(f, &b, (int)l, err, errlen);
    }
    eng_tensor_ref r;
    if (!rc && eng_model_tensor(m, DSV4_T_TOKEN_EMBD, -1, &r))
        rc = fail(err, errlen, "token_embd not on the device");
    if (!rc) {
        f->embd_buf = r.buf;
        f->embd_off = r.off;
        f->embd_type = r.type == DS4_TYPE_F32 ? 0 : r.type == DS4_TYPE_F16 ? 1
                       : r.type == DS4_TYPE_BF16 ? 2 : 99;
        if (f->embd_type == 99)
            rc = fail(err, errlen, "token_embd type %u unsupported", (unsigned)r.type);
    }
    if (!rc)
        rc = get_w(f, DSV4_T_OUTPUT_HC_FN, -1, &f->out_hc_fn, err, errlen) ||
             get_w(f, DSV4_T_OUTPUT, -1, &f->output, err, errlen) ||
             sw_tensor(f, &b, DSV4_T_OUTPUT_NORM, -1, &f->out_norm, err, errlen) ||
             sw_tensor(f, &b, DSV4_T_OUTPUT_HC_BASE, -1, &f->out_hc_base, err, errlen) ||
             sw_tensor(f, &b, DSV4_T_OUTPUT_HC_SCALE, -1, &f->out_hc_scale, err, errlen)
                 ? -1 : 0;
    if (!rc) {
        /* RoPE inverse frequencies: the reference's tables, bit for bit */
        float *fr = ds4_xmalloc(sizeof(float) * (hp->n_rot / 2 + 1));
        eng_ref_rope_freqs(fr, hp->n_rot, hp->rope_freq_base, 0, 1, 1, 0, 0);
        f->freq_main = sw_add(&b, fr, hp->n_rot / 2);
        eng_ref_rope_freqs(fr, hp->n_rot, hp->compress_rope_freq_base, 1,
                           hp->rope_scale_factor, (double)hp->rope_orig_ctx,
                           hp->yarn_beta_fast, hp->yarn_beta_slow);
        f->freq_comp = sw_add(&b, fr, hp->n_rot / 2);
        free(fr);
        plan_state(f);
        f->sw_bytes = b.n * 4;
        f->sw = fwd_alloc(f, f->sw_bytes, err, errlen);
        if (!f->sw || eng_cl_write(cl, f->sw, 0, b.v, f->sw_bytes))
            rc = f->sw ? cl_fail(f, err, errlen, "small weights") : -1;
    }
    free(b.v);
    if (f->trace)
        fprintf(stderr, "eng_fwd: open: weights set up (rc %d)\n", rc);
    if (!rc)
        rc = setup_scratch(f, err, errlen);
    if (f->trace)
        fprintf(stderr, "eng_fwd: open: scratch (rc %d)\n", rc);
    if (!rc) {
        /* every kernel this model needs exists (a build problem shows now) */
        const char *names[] = {"fwd_embed", "fwd_hc_pre", "fwd_hc_post",
                               "fwd_head_pre", "fwd_rows_finish", "fwd_ring_save",
                               "fwd_comp_pool", "fwd_comp_save", "fwd_idx_score",
                               "fwd_idx_topk", "fwd_attend", "fwd_swiglu",
                               "fwd_moe_route", "fwd_moe_plan", "fwd_moe_combine"};
        for (size_t i = 0; i < sizeof names / sizeof names[0] && !rc; i++)
            if (!eng_cl_kernel(cl, names[i]))
                rc = cl_fail(f, err, errlen, "kernels");
        for (uint32_t l = 0; l < hp->n_layer && !rc; l++) {
            char nm[64];
            const char *sg = exp_suffix(f->L[l].gate.type);
            const char *sd = exp_suffix(f->L[l].down.type);
            snprintf(nm, sizeof nm, "fwd_moe_gateup_%s", sg ? sg : "?");
            if (!eng_cl_kernel(cl, nm))
                rc = cl_fail(f, err, errlen, "kernels");
            snprintf(nm, sizeof nm, "fwd_moe_down_%s", sd ? sd : "?");
            if (!rc && !eng_cl_kernel(cl, nm))
                rc = cl_fail(f, err, errlen, "kernels");
        }
    }
    if (rc) {
        eng_fwd_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

void eng_fwd_close(eng_fwd *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_prof; i++)
        fprintf(stderr, "eng_fwd profile: %-40s %8.3f s %8llu calls\n",
                f->prof[i].name, f->prof[i].s, (unsigned long long)f->prof[i].n);
    if (f->trace)
        fprintf(stderr, "eng_fwd: close\n");
    for (uint32_t i = 0; i < f->n_owned; i++)
        clReleaseMemObject(f->owned[i]);
    free(f->owned);
    if (f->L)
        for (uint32_t l = 0; l < f->hp.n_layer; l++) {
            free(f->L[l].gate.parts);
            free(f->L[l].up.parts);
            free(f->L[l].down.parts);
        }
    free(f->L);
    free(f);
}

void eng_fwd_set_profile(eng_fwd *f, int on) { f->profile = on != 0; }

void eng_fwd_profile_reset(eng_fwd *f) { f->n_prof = 0; }

int eng_fwd_profile_count(const eng_fwd *f) { return f->n_prof; }

void eng_fwd_profile_entry(const eng_fwd *f, int i, const char **name, double *seconds,
                           uint64_t *calls)
{
    *name = f->prof[i].name;
    *seconds = f->prof[i].s;
    *calls = f->prof[i].n;
}

const dsv4_hparams *eng_fwd_hparams(const eng_fwd *f) { return &f->hp; }
int eng_fwd_exact(const eng_fwd *f) { return f->exact; }
uint32_t eng_fwd_max_chunk(const eng_fwd *f) { return f->C; }
uint32_t eng_fwd_max_ctx(const eng_fwd *f) { return f->max_ctx; }
uint64_t eng_fwd_scratch_bytes(const eng_fwd *f) { return f->scratch_bytes; }

uint64_t eng_fwd_seq_state_bytes(const eng_fwd *f)
{
    return f->state_floats * 4 + (uint64_t)f->hp.n_hc * f->hp.n_embd * 4;
}

/* ---- one chunk ------------------------------------------------------------ */

/* mHC pre of a sublayer: mix GEMM, then split / collapse / norm -> xn. */
static int hc_pre(eng_fwd *f, const fwd_w *fn, uint64_t scale, uint64_t base,
                  uint64_t norm, uint32_t S)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t hc = hp->n_hc, H = hp->n_embd, mixn = (2 + hc) * hc;
    if (fwd_mm(f, fn, f->h, hc * H, f->mix, mixn, S))
        return -1;
    return LAUNCH(f, "fwd_hc_pre", (size_t)FWD_WG * S, 1, FWD_WG, KM(f->h),
                  KM(f->mix), KU(mixn), KM(f->sw), KQ(scale), KQ(base), KQ(norm),
                  KM(f->post), KM(f->comb), KM(f->xn), KU(H), KU(hc),
                  KU(hp->hc_sinkhorn_iter), KF(hp->hc_eps), KF(hp->rms_eps));
}

static int hc_post(eng_fwd *f, uint32_t S)
{
    const dsv4_hparams *hp = &f->hp;
    return LAUNCH(f, "fwd_hc_post", hp->n_embd, S, FWD_WG, KM(f->h), KM(f->y),
                  KM(f->post), KM(f->comb), KU(hp->n_embd), KU(hp->n_hc));
}

/* fwd_rows_finish over nrows rows of n floats at buf + off, stride; RoPE
 * at each token's position (tpos, row r of token r / pos_div) or, with
 * use_tpos 0, at pos_base + (r / pos_div) * pos_mul. */
static int rows_finish(eng_fwd *f, cl_mem buf, uint64_t off, uint32_t stride,
                       uint32_t n, uint32_t nrows, uint32_t norm,
                       uint64_t norm_off, uint64_t freq_off, uint32_t n_rot,
                       int use_tpos, uint32_t pos_base, uint32_t pos_div,
                       uint32_t pos_mul, uint32_t qat)
{
    return LAUNCH(f, "fwd_rows_finish", (size_t)FWD_WG * nrows, 1, FWD_WG,
                  KM(buf), KQ(off), KU(stride), KU(n), KU(nrows), KM(f->sw),
                  KU(norm), KQ(norm_off), KQ(freq_off), KU(n_rot), KM(f->tpos),
                  KU(use_tpos), KU(pos_base), KU(pos_div), KU(pos_mul), KU(qat),
                  KF(f->hp.rms_eps));
}

/* One segment of a batch: S tokens of one sequence at positions pos0..,
 * rows t0.. of the chunk scratch. */
typedef struct fwd_seg {
    eng_fwd_seq *s;
    uint32_t pos0, S, t0;
} fwd_seg;

/* One compressor: projections of every token of the batch, then per
 * segment the pooling of the blocks that complete in it (norm, RoPE at the
 * block start, QAT) and its state ring. */
static int compress(eng_fwd *f, const fwd_seg *sg, uint32_t nseg, uint32_t T,
                    const fwd_comp *c, uint32_t ratio, uint64_t rows_off,
                    uint64_t skv, uint64_t ssc, uint32_t qat)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t cd = c->lanes * c->dim, H = hp->n_embd;
    if (fwd_mm(f, &c->kv, f->xn, H, f->ckv, cd, T) ||
        fwd_mm(f, &c->gate, f->xn, H, f->cg, cd, T))
        return -1;
    for (uint32_t i = 0; i < nseg; i++) {
        const fwd_seg *g = &sg[i];
        cl_mem st = g->s->state;
        uint32_t w0 = g->pos0 / ratio, nb = (g->pos0 + g->S) / ratio - w0;
        if (nb &&
            (LAUNCH(f, "fwd_comp_pool", c->dim, nb, FWD_WG, KM(f->ckv), KM(f->cg),
                    KM(st), KQ(skv), KQ(ssc), KM(f->sw), KQ(c->ape), KQ(rows_off),
                    KU(c->dim), KU(ratio), KU(c->lanes), KU(g->pos0), KU(g->t0),
                    KU(w0), KU(nb)) ||
             rows_finish(f, st, rows_off + (uint64_t)w0 * c->dim, c->dim, c->dim,
                         nb, 2, c->norm, f->freq_comp, hp->n_rot, 0, w0 * ratio, 1,
                         ratio, qat)))
            return -1;
        uint32_t nsave = g->S < c->lanes * ratio ? g->S : c->lanes * ratio;
        if (LAUNCH(f, "fwd_comp_save", cd, nsave, FWD_WG, KM(f->ckv), KM(f->cg),
                   KM(f->sw), KQ(c->ape), KM(st), KQ(skv), KQ(ssc), KU(cd),
                   KU(ratio), KU(c->lanes), KU(g->pos0), KU(g->S), KU(nsave),
                   KU(g->t0)))
            return -1;
    }
    return 0;
}

/* The lightning indexer: q heads (RoPE, QAT) and head weights for the
 * batch, then per segment the scores over its compressed indexer rows and
 * the causal top-k into f->sel. */
static int indexer(eng_fwd *f, const fwd_seg *sg, uint32_t nseg, uint32_t T,
                   const fwd_layer *L)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t iH = hp->n_idx_head, id = hp->idx_head_dim;
    if (fwd_mm(f, &L->idx_q_b, f->qr, hp->q_lora_rank, f->iq, iH * id, T) ||
        rows_finish(f, f->iq, 0, id, id, T * iH, 0, 0, f->freq_comp, hp->n_rot, 1,
                    0, iH, 1, f->iqat) ||
        fwd_mm(f, &L->idx_proj, f->xn, hp->n_embd, f->iw, iH, T))
        return -1;
    float qs = (float)(1.0 / sqrt((double)id)), ws = (float)(1.0 / sqrt((double)iH));
    for (uint32_t i = 0; i < nseg; i++) {
        const fwd_seg *g = &sg[i];
        uint32_t nc = (g->pos0 + g->S) / 4;
        if (nc == 0)
            continue;
        uint32_t per = f->score_cap / nc;
        if (per == 0)
            per = 1;
        for (uint32_t t0 = 0; t0 < g->S; t0 += per) {
            uint32_t nt = g->S - t0 < per ? g->S - t0 : per;
            if (LAUNCH(f, "fwd_idx_score", nc, nt, FWD_WG, KM(f->iq), KM(f->iw),
                       KM(g->s->state), KQ(L->icomp_rows), KM(f->scores), KU(iH),
                       KU(id), KU(g->pos0), KU(g->t0), KU(t0), KU(nt), KU(nc),
                       KU(4), KF(qs), KF(ws)) ||
                LAUNCH(f, "fwd_idx_topk", (size_t)FWD_WG * nt, 1, FWD_WG,
                       KM(f->scores), KM(f->sel), KU(g->pos0), KU(g->t0), KU(t0),
                       KU(nc), KU(hp->idx_top_k), KU(4)))
                return -1;
        }
    }
    return 0;
}

/* Grouped low-rank output: z[:, g] = out_a[g] o[:, g]; y = out_b z. */
static int attn_output(eng_fwd *f, const fwd_layer *L, uint32_t S)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t g = hp->o_groups, r = hp->o_lora_rank, nq = hp->n_head * hp->head_dim;
    uint32_t gin = nq / g;
    uint64_t rb = ds4_type_nbytes(L->out_a.type, gin) * r;
    for (uint32_t i = 0; i < g; i++) {
        fwd_w wa = L->out_a;
        wa.off += rb * i;
        wa.rows = r;
        size_t so[3] = {(size_t)i * gin * 4, 0, 0}, zo[3] = {0, 0, 0};
        size_t reg[3] = {(size_t)gin * 4, S, 1}, zreg[3] = {(size_t)r * 4, S, 1};
        size_t zd[3] = {(size_t)i * r * 4, 0, 0};
        cl_int e = clEnqueueCopyBufferRect(f->cl->queue, f->o, f->og, so, zo, reg,
                                           (size_t)nq * 4, 0, (size_t)gin * 4, 0,
                                           0, NULL, NULL);
        if (e == CL_SUCCESS && fwd_mm(f, &wa, f->og, gin, f->zg, r, S))
            return -1;
        if (e == CL_SUCCESS)
            e = clEnqueueCopyBufferRect(f->cl->queue, f->zg, f->z, zo, zd, zreg,
                                        (size_t)r * 4, 0, (size_t)g * r * 4, 0, 0,
                                        NULL, NULL);
        if (e != CL_SUCCESS) {
            snprintf(f->cl->err, sizeof f->cl->err, "group copy: %s",
                     eng_cl_strerror(e));
            return -1;
        }
    }
    return fwd_mm(f, &L->out_b, f->z, g * r, f->y, hp->n_embd, S);
}

/* Attention sublayer of layer l on the batch (h updated): projections,
 * norms, RoPE and the compressors' GEMMs over all T tokens; what reads or
 * writes a sequence's state per segment. */
static int layer_attn(eng_fwd *f, const fwd_seg *sg, uint32_t nseg, uint32_t T,
                      uint32_t l)
{
    const dsv4_hparams *hp = &f->hp;
    const fwd_layer *L = &f->L[l];
    uint32_t H = hp->n_embd, hd = hp->head_dim, ql = hp->q_lora_rank;
    uint32_t nH = hp->n_head, qat = f->exact ? 0 : 1;
    uint64_t freq = L->ratio ? f->freq_comp : f->freq_main;
    if (hc_pre(f, &L->hc_attn_fn, L->hca_scale, L->hca_base, L->attn_norm, T) ||
        fwd_mm(f, &L->q_a, f->xn, H, f->qr, ql, T) ||
        rows_finish(f, f->qr, 0, ql, ql, T, 2, L->q_a_norm, 0, 0, 0, 0, 1, 0, 0) ||
        fwd_mm(f, &L->kv, f->xn, H, f->kvc, hd, T) ||
        rows_finish(f, f->kvc, 0, hd, hd, T, 2, L->kv_norm, freq, hp->n_rot, 1, 0,
                    1, 1, qat) ||
        fwd_mm(f, &L->q_b, f->qr, ql, f->q, nH * hd, T) ||
        rows_finish(f, f->q, 0, hd, hd, T * nH, 1, 0, freq, hp->n_rot, 1, 0, nH,
                    1, 0))
        return -1;
    if (L->ratio &&
        compress(f, sg, nseg, T, &L->comp, L->ratio, L->comp_rows, L->ckv, L->csc,
                 qat))
        return -1;
    if (L->ratio == 4 &&
        (compress(f, sg, nseg, T, &L->icomp, 4, L->icomp_rows, L->ikv, L->isc,
                  f->iqat) ||
         indexer(f, sg, nseg, T, L)))
        return -1;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (uint32_t i = 0; i < nseg; i++) {
        const fwd_seg *g = &sg[i];
        uint32_t nsave = g->S < hp->n_swa ? g->S : hp->n_swa;
        if (LAUNCH(f, "fwd_attend", (size_t)FWD_WG * nH, g->S, FWD_WG, KM(f->q),
                   KM(f->kvc), KM(g->s->state), KQ(L->ring), KQ(L->comp_rows),
                   KM(f->sel), KU(L->ratio == 4), KU(hp->idx_top_k), KM(f->sw),
                   KQ(L->sinks), KQ(freq), KM(f->o), KU(nH), KU(hd), KU(hp->n_swa),
                   KU(L->ratio), KU(g->pos0), KU(g->t0), KU(hp->n_rot), KF(scale)) ||
            LAUNCH(f, "fwd_ring_save", hd, nsave, FWD_WG, KM(f->kvc),
                   KM(g->s->state), KQ(L->ring), KU(hd), KU(hp->n_swa),
                   KU(g->pos0), KU(g->S), KU(nsave), KU(g->t0)))
            return -1;
    }
    if (attn_output(f, L, T))
        return -1;
    return hc_post(f, T);
}

/* Routed experts of a layer for the chunk's choices (f->msel): plan, then
 * gate/up + SwiGLU and down per weight part, then the weighted sum into y. */
static int routed(eng_fwd *f, const fwd_layer *L, uint32_t S)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t k = hp->n_expert_used, E = hp->n_expert, H = hp->n_embd;
    uint32_t I = hp->n_ff_exp, n = S * k;
    uint32_t nbm = n / FWD_MB + E;
    if (nbm > n)
        nbm = n;
    if (LAUNCH(f, "fwd_moe_plan", 1, 1, 1, KM(f->msel), KU(n), KU(E), KM(f->cnt),
               KM(f->entries), KM(f->entry_of), KM(f->blocks), KM(f->nblocks)))
        return -1;
    char nm[64];
    float lim = hp->swiglu_clamp[L - f->L];
    snprintf(nm, sizeof nm, "fwd_moe_gateup_%s", exp_suffix(L->gate.type) ? exp_suffix(L->gate.type) : "?");
    for (uint32_t p = 0; p < L->gate.n_parts; p++) {
        const fwd_part *pg = &L->gate.parts[p], *pu = &L->up.parts[p];
        if (LAUNCH(f, nm, I, nbm, 16, KM(pg->buf), KQ(pg->off), KM(pu->buf),
                   KQ(pu->off), KQ(L->gate.ebytes), KU(pg->e0), KU(pg->e1),
                   KM(f->xn), KU(H), KU(I), KU(k), KM(f->blocks), KM(f->nblocks),
                   KM(f->entries), KM(f->mid), KF(lim)))
            return -1;
    }
    snprintf(nm, sizeof nm, "fwd_moe_down_%s", exp_suffix(L->down.type) ? exp_suffix(L->down.type) : "?");
    for (uint32_t p = 0; p < L->down.n_parts; p++) {
        const fwd_part *pd = &L->down.parts[p];
        if (LAUNCH(f, nm, H, nbm, 16, KM(pd->buf), KQ(pd->off), KQ(L->down.ebytes),
                   KU(pd->e0), KU(pd->e1), KM(f->mid), KU(I), KU(H), KM(f->blocks),
                   KM(f->nblocks), KM(f->ye)))
            return -1;
    }
    return LAUNCH(f, "fwd_moe_combine", H, S, FWD_WG, KM(f->y), KM(f->ye),
                  KM(f->mw), KM(f->entry_of), KU(H), KU(k));
}

/* MoE sublayer of layer l on the chunk (h updated). */
static int layer_ffn(eng_fwd *f, uint32_t l, uint32_t S)
{
    const dsv4_hparams *hp = &f->hp;
    const fwd_layer *L = &f->L[l];
    uint32_t H = hp->n_embd, I = hp->n_ff_exp, E = hp->n_expert;
    if (hc_pre(f, &L->hc_ffn_fn, L->hcf_scale, L->hcf_base, L->ffn_norm, S) ||
        fwd_mm(f, &L->gate_inp, f->xn, H, f->rl, E, S) ||
        LAUNCH(f, "fwd_moe_route", S, 1, 1, KM(f->rl), KU(E),
               KU(hp->n_expert_used), KM(f->ids), KU(L->hash),
               KM(L->hash ? L->tid_buf : f->ids), KQ(L->tid_off), KM(f->sw),
               KQ(L->probs_b), KF(hp->expert_weights_scale), KM(f->msel),
               KM(f->mw), KU(S)) ||
        fwd_mm(f, &L->sh_gate, f->xn, H, f->sg, I, S) ||
        fwd_mm(f, &L->sh_up, f->xn, H, f->su, I, S) ||
        LAUNCH(f, "fwd_swiglu", (size_t)S * I, 1, FWD_WG, KM(f->sg), KM(f->su),
               KM(f->smid), KU(S * I), KF(hp->swiglu_clamp[l])) ||
        fwd_mm(f, &L->sh_down, f->smid, I, f->y, H, S) ||
        routed(f, L, S))
        return -1;
    return hc_post(f, S);
}

/* Output head for n rows of streams in buffer hs (rows hc*H apart, n <=
 * FWD_HEAD_ROWS): logits read into out[n][V]. */
static int head(eng_fwd *f, cl_mem hs, uint32_t n, float *out)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t hc = hp->n_hc, H = hp->n_embd;
    if (fwd_mm(f, &f->out_hc_fn, hs, hc * H, f->mixh, hc, n) ||
        LAUNCH(f, "fwd_head_pre", (size_t)FWD_WG * n, 1, FWD_WG, KM(hs),
               KM(f->mixh), KM(f->sw), KQ(f->out_hc_scale), KQ(f->out_hc_base),
               KQ(f->out_norm), KM(f->xo), KU(H), KU(hc), KF(hp->hc_eps),
               KF(hp->rms_eps)) ||
        fwd_mm(f, &f->output, f->xo, H, f->lg, hp->n_vocab, n))
        return -1;
    return eng_cl_read(f->cl, f->lg, 0, out, (uint64_t)n * hp->n_vocab * 4);
}

/* Evaluate a batch of segments (T <= C tokens in all: ids in row order,
 * pos[t] each token's position); logits of the rows wanted (want NULL:
 * all) go to out, consecutively. The sequences' lengths and hlast are
 * updated. */
static int batch(eng_fwd *f, fwd_seg *sg, uint32_t nseg, const int32_t *ids,
                 const int32_t *pos, uint32_t T, const uint8_t *want, float *out)
{
    const dsv4_hparams *hp = &f->hp;
    uint32_t hc = hp->n_hc, H = hp->n_embd;
    if (eng_cl_write(f->cl, f->ids, 0, ids, (uint64_t)T * 4) ||
        eng_cl_write(f->cl, f->tpos, 0, pos, (uint64_t)T * 4) ||
        LAUNCH(f, "fwd_embed", H, T, FWD_WG, KM(f->embd_buf), KQ(f->embd_off),
               KU(f->embd_type), KM(f->ids), KM(f->h), KU(H), KU(hc)))
        return -1;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if (layer_attn(f, sg, nseg, T, l) || layer_ffn(f, l, T))
            return -1;
    uint64_t rowb = (uint64_t)hc * H * 4;
    for (uint32_t i = 0; i < nseg; i++) {
        cl_int e = clEnqueueCopyBuffer(f->cl->queue, f->h, sg[i].s->hlast,
                                       rowb * (sg[i].t0 + sg[i].S - 1), 0, rowb, 0,
                                       NULL, NULL);
        if (e != CL_SUCCESS) {
            snprintf(f->cl->err, sizeof f->cl->err, "copy of the last streams: %s",
                     eng_cl_strerror(e));
            return -1;
        }
    }
    /* the head over the wanted rows, FWD_HEAD_ROWS at a time: contiguous
     * runs of rows copied into hh, one head per batch of rows */
    uint32_t r = 0;
    while (out && r < T) {
        uint32_t n = 0;
        while (r < T && n < FWD_HEAD_ROWS) {
            if (want && !want[r]) {
                r++;
                continue;
            }
            uint32_t r1 = r;
            while (r1 < T && (!want || want[r1]) && n + (r1 - r) < FWD_HEAD_ROWS)
                r1++;
            cl_int e = clEnqueueCopyBuffer(f->cl->queue, f->h, f->hh, rowb * r,
                                           rowb * n, rowb * (r1 - r), 0, NULL, NULL);
            if (e != CL_SUCCESS) {
                snprintf(f->cl->err, sizeof f->cl->err, "copy of streams: %s",
                         eng_cl_strerror(e));
                return -1;
            }
            n += r1 - r;
            r = r1;
        }
        if (n && head(f, f->hh, n, out))
            return -1;
        out += (size_t)n * hp->n_vocab;
    }
    for (uint32_t i = 0; i < nseg; i++) {
        sg[i].s->n += sg[i].S;
        sg[i].s->has_hlast = 1;
    }
    return 0;
}

/* One chunk of S <= C tokens at the end of s. */
static int chunk(eng_fwd_seq *s, const int32_t *ids, uint32_t S,
                 const uint8_t *want, float *out)
{
    fwd_seg g = {s, s->n, S, 0};
    int32_t *pos = ds4_xmalloc(sizeof(int32_t) * S);
    for (uint32_t t = 0; t < S; t++)
        pos[t] = (int32_t)(s->n + t);
    int rc = batch(s->f, &g, 1, ids, pos, S, want, out);
    free(pos);
    return rc;
}

/* ---- sequences ----------------------------------------------------------- */

int eng_fwd_seq_new(eng_fwd *f, eng_fwd_seq **out, char *err, size_t errlen)
{
    *out = NULL;
    eng_fwd_seq *s = ds4_xcalloc(1, sizeof *s);
    s->f = f;
    s->state = eng_cl_alloc(f->cl, f->state_floats * 4, CL_MEM_READ_WRITE);
    s->hlast = s->state ? eng_cl_alloc(f->cl, (uint64_t)f->hp.n_hc * f->hp.n_embd * 4,
                                       CL_MEM_READ_WRITE) : NULL;
    if (!s->state || !s->hlast) {
        fail(err, errlen, "session state (%llu bytes): %s",
             (unsigned long long)eng_fwd_seq_state_bytes(f), f->cl->err);
        eng_fwd_seq_free(s);
        return -1;
    }
    /* zeroed state: a fresh sequence never reads it, but snapshots of
     * short sequences then hold no stale bytes */
    float zero = 0.0f;
    if (eng_cl_fill(f->cl, s->state, &zero, 4, 0, f->state_floats * 4)) {
        fail(err, errlen, "session state: %s", f->cl->err);
        eng_fwd_seq_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void eng_fwd_seq_free(eng_fwd_seq *s)
{
    if (!s)
        return;
    if (s->state)
        clReleaseMemObject(s->state);
    if (s->hlast)
        clReleaseMemObject(s->hlast);
    free(s);
}

uint32_t eng_fwd_seq_len(const eng_fwd_seq *s) { return s->n; }

int eng_fwd_eval(eng_fwd_seq *s, const int32_t *ids, uint32_t n,
                 uint32_t chunk_sz, float *all, char *err, size_t errlen)
{
    return eng_fwd_eval_rows(s, ids, n, chunk_sz, NULL, all, err, errlen);
}

int eng_fwd_eval_rows(eng_fwd_seq *s, const int32_t *ids, uint32_t n,
                      uint32_t chunk_sz, const uint8_t *want, float *out,
                      char *err, size_t errlen)
{
    eng_fwd *f = s->f;
    if (s->broken)
        return fail(err, errlen, "sequence unusable after a device failure");
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= f->hp.n_vocab)
            return fail(err, errlen, "token id %d at %u out of range [0,%u)",
                        ids[i], i, f->hp.n_vocab);
    if ((uint64_t)s->n + n > f->max_ctx)
        return fail(err, errlen, "%u + %u tokens exceed the context of %u", s->n,
                    n, f->max_ctx);
    if (chunk_sz == 0 || chunk_sz > f->C)
        chunk_sz = f->C;
    for (uint32_t i = 0; i < n; i += chunk_sz) {
        uint32_t S = n - i < chunk_sz ? n - i : chunk_sz;
        if (chunk(s, ids + i, S, want ? want + i : NULL, out)) {
            s->broken = 1;
            return cl_fail(f, err, errlen, "forward");
        }
        if (out) {
            uint32_t rows = S;
            if (want) {
                rows = 0;
                for (uint32_t j = 0; j < S; j++)
                    rows += want[i + j] != 0;
            }
            out += (size_t)rows * f->hp.n_vocab;
        }
    }
    return 0;
}

int eng_fwd_decode_batch(eng_fwd_seq **ss, const int32_t *ids, uint32_t n,
                         float *logits, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    eng_fwd *f = ss[0]->f;
    for (uint32_t i = 0; i < n; i++) {
        if (ss[i]->f != f)
            return fail(err, errlen, "sequences of different models");
        if (ss[i]->broken)
            return fail(err, errlen, "sequence %u unusable after a device failure", i);
        if (ids[i] < 0 || (uint32_t)ids[i] >= f->hp.n_vocab)
            return fail(err, errlen, "token id %d of sequence %u out of range [0,%u)",
                        ids[i], i, f->hp.n_vocab);
        if ((uint64_t)ss[i]->n + 1 > f->max_ctx)
            return fail(err, errlen, "sequence %u is at the context of %u", i,
                        f->max_ctx);
        for (uint32_t j = 0; j < i; j++)
            if (ss[j] == ss[i])
                return fail(err, errlen, "sequence %u appears twice", i);
    }
    fwd_seg *sg = ds4_xmalloc(sizeof *sg * (f->C < n ? f->C : n));
    int32_t *pos = ds4_xmalloc(sizeof(int32_t) * (f->C < n ? f->C : n));
    int rc = 0;
    for (uint32_t i0 = 0; i0 < n && !rc; i0 += f->C) {
        uint32_t m = n - i0 < f->C ? n - i0 : f->C;
        for (uint32_t i = 0; i < m; i++) {
            sg[i] = (fwd_seg){ss[i0 + i], ss[i0 + i]->n, 1, i};
            pos[i] = (int32_t)ss[i0 + i]->n;
        }
        if (batch(f, sg, m, ids + i0, pos, m, NULL,
                  logits ? logits + (size_t)i0 * f->hp.n_vocab : NULL)) {
            for (uint32_t i = 0; i < n; i++)
                ss[i]->broken = 1;
            rc = cl_fail(f, err, errlen, "batched decode");
        }
    }
    free(sg);
    free(pos);
    return rc;
}

int eng_fwd_logits(eng_fwd_seq *s, float *logits, char *err, size_t errlen)
{
    if (s->broken || !s->n || !s->has_hlast)
        return fail(err, errlen, "no logits: the sequence is %s",
                    s->broken ? "broken" : !s->n ? "empty" : "restored");
    if (head(s->f, s->hlast, 1, logits)) {
        s->broken = 1;
        return cl_fail(s->f, err, errlen, "head");
    }
    return 0;
}

int eng_fwd_seq_copy(eng_fwd_seq *dst, const eng_fwd_seq *src, char *err,
                     size_t errlen)
{
    eng_fwd *f = src->f;
    if (dst->f != f)
        return fail(err, errlen, "sequences of different models");
    if (src->broken)
        return fail(err, errlen, "source sequence is broken");
    cl_int e = clEnqueueCopyBuffer(f->cl->queue, src->state, dst->state, 0, 0,
                                   f->state_floats * 4, 0, NULL, NULL);
    if (e == CL_SUCCESS)
        e = clEnqueueCopyBuffer(f->cl->queue, src->hlast, dst->hlast, 0, 0,
                                (uint64_t)f->hp.n_hc * f->hp.n_embd * 4, 0, NULL,
                                NULL);
    if (e != CL_SUCCESS)
        return fail(err, errlen, "state copy: %s", eng_cl_strerror(e));
    dst->n = src->n;
    dst->has_hlast = src->has_hlast;
    dst->broken = 0;
    return 0;
}

/* ---- serialisation -------------------------------------------------------- */

/* Visit the saved regions of a length-n state: (offset, floats). */
typedef int (*region_fn)(void *ud, uint64_t off, uint64_t n);
static int regions(const eng_fwd *f, uint32_t n, region_fn fn, void *ud)
{
    const dsv4_hparams *hp = &f->hp;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const fwd_layer *L = &f->L[l];
        if (fn(ud, L->ring, (uint64_t)hp->n_swa * hp->head_dim))
            return -1;
        if (L->ratio) {
            uint64_t cs = (uint64_t)L->comp.lanes * L->ratio * L->comp.lanes *
                          hp->head_dim;
            if (fn(ud, L->comp_rows, (uint64_t)(n / L->ratio) * hp->head_dim) ||
                fn(ud, L->ckv, cs) || fn(ud, L->csc, cs))
                return -1;
        }
        if (L->ratio == 4) {
            uint64_t cs = 8ull * 2 * hp->idx_head_dim;
            if (fn(ud, L->icomp_rows, (uint64_t)(n / 4) * hp->idx_head_dim) ||
                fn(ud, L->ikv, cs) || fn(ud, L->isc, cs))
                return -1;
        }
    }
    return 0;
}

static int count_region(void *ud, uint64_t off, uint64_t n)
{
    (void)off;
    *(uint64_t *)ud += n;
    return 0;
}

uint64_t eng_fwd_state_blob_bytes(const eng_fwd *f, uint32_t n)
{
    uint64_t total = 0;
    regions(f, n, count_region, &total);
    return total * 4;
}

typedef struct xfer {
    eng_fwd *f;
    cl_mem buf;
    uint8_t *p;
    int write;
} xfer;

static int xfer_region(void *ud, uint64_t off, uint64_t n)
{
    xfer *x = ud;
    if (n == 0)
        return 0;
    int rc = x->write ? eng_cl_write(x->f->cl, x->buf, off * 4, x->p, n * 4)
                      : eng_cl_read(x->f->cl, x->buf, off * 4, x->p, n * 4);
    x->p += n * 4;
    return rc;
}

int eng_fwd_state_save(const eng_fwd_seq *s, void *dst, char *err, size_t errlen)
{
    if (s->broken)
        return fail(err, errlen, "sequence is broken");
    xfer x = {s->f, s->state, dst, 0};
    if (regions(s->f, s->n, xfer_region, &x))
        return cl_fail(s->f, err, errlen, "state read");
    return 0;
}

int eng_fwd_state_load(eng_fwd_seq *s, uint32_t n, const void *src, char *err,
                       size_t errlen)
{
    if (n > s->f->max_ctx)
        return fail(err, errlen, "state of %u tokens exceeds the context of %u",
                    n, s->f->max_ctx);
    xfer x = {s->f, s->state, (uint8_t *)src, 1};
    if (regions(s->f, n, xfer_region, &x)) {
        s->broken = 1;
        return cl_fail(s->f, err, errlen, "state write");
    }
    s->n = n;
    s->has_hlast = 0;
    s->broken = 0;
    return 0;
}
