/* test_eng_model.c - the model loader on the device eng_cl_open() picks
 * (PoCL in CI): a generated 3-layer q2 model is opened, planned and
 * uploaded; tensors read back from the device (first, a middle expert
 * slice, last, and every tensor's checksum) equal the file's bytes; a mat-vec
 * on an uploaded Q8_0 tensor at its buffer offset matches ds4_dot_ref on
 * the file bytes; a hand-made table with big expert stacks is split between
 * experts under a small buffer limit; bad files and small budgets give
 * errors naming the tensor or the memory needed vs available.
 *
 * No OpenCL device is a failure unless DS4_ALLOW_NO_OPENCL=1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dsv4_layout.h"
#include "common/dsv4_mkmodel.h"
#include "common/gguf.h"
#include "common/hash.h"
#include "common/quant.h"
#include "common/util.h"
#include "engined/eng_cl.h"
#include "engined/eng_model.h"
#include "test.h"

static char g_path[128];  /* the generated model */
static char g_tmp[128];   /* mutated copies */

static uint64_t rng = 0x2545F4914F6CDD1Dull;

/* xorshift64 step. */
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Write len bytes of buf to path. */
static int write_bytes(const char *path, const void *buf, uint64_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(buf, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Read bytes [off, off+n) of a device buffer into a fresh allocation. */
static uint8_t *readback(eng_cl *cl, cl_mem buf, uint64_t off, uint64_t n)
{
    uint8_t *p = ds4_xmalloc(n ? n : 1);
    memset(p, 0xA5, n);
    CHECKF(eng_cl_read(cl, buf, off, p, n) == 0, "%s", cl->err);
    return p;
}

/* Whether the device copy of a tensor's part p equals the file bytes. */
static int part_matches(eng_cl *cl, const eng_model *m, const eng_tensor *t,
                        uint32_t p)
{
    eng_tensor_ref r;
    if (eng_model_tensor_part(m, t->id, t->layer, p, &r))
        return 0;
    const eng_part *pt = &m->plan.parts[t->part0 + p];
    uint8_t *got = readback(cl, r.buf, r.off, r.nbytes);
    int ok = r.nbytes == pt->bytes &&
             memcmp(got, t->data + pt->src_off, r.nbytes) == 0;
    free(got);
    return ok;
}

/* Plan invariants: aligned, inside the buffer and the limit, no overlap,
 * every tensor byte covered exactly once. */
static void check_plan_shape(const eng_model *m, const eng_plan *p)
{
    uint64_t covered = 0;
    for (uint32_t j = 0; j < p->n_parts; j++) {
        const eng_part *a = &p->parts[j];
        CHECK(a->off % ENG_MODEL_ALIGN == 0);
        CHECK(a->buf < p->n_bufs && a->off + a->bytes <= p->buf_bytes[a->buf]);
        CHECK(p->buf_bytes[a->buf] <= p->max_buf);
        if (j > 0 && p->parts[j - 1].buf == a->buf)
            CHECK(p->parts[j - 1].off + p->parts[j - 1].bytes <= a->off);
        covered += a->bytes;
    }
    CHECK(covered == p->tensor_bytes);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        sum += m->tensors[i].nbytes;
        uint64_t tb = 0;
        for (uint32_t k = 0; k < p->tensor_nparts[i]; k++)
            tb += p->parts[p->tensor_part0[i] + k].bytes;
        CHECK(tb == m->tensors[i].nbytes);
    }
    CHECK(sum == p->tensor_bytes);
}

/* y = W x on the device for an uploaded tensor vs ds4_dot_ref on the file
 * bytes. */
static void check_matvec(eng_cl *cl, const eng_model *m, const eng_tensor *t)
{
    eng_tensor_ref r;
    CHECK(eng_model_tensor(m, t->id, t->layer, &r) == 0);
    uint32_t cols = (uint32_t)t->ne[0], rows = (uint32_t)t->ne[1];
    float *x = ds4_xmalloc(cols * sizeof *x);
    for (uint32_t c = 0; c < cols; c++)
        x[c] = (float)((int)(rnd() % 2001) - 1000) / 512.0f;
    cl_mem xb = eng_cl_alloc(cl, cols * 4ull, CL_MEM_READ_WRITE);
    cl_mem yb = eng_cl_alloc(cl, rows * 4ull, CL_MEM_READ_WRITE);
    DS4_ASSERT(xb && yb);
    uint32_t poison = 0x7FC0DEADu;
    CHECK(eng_cl_write(cl, xb, 0, x, cols * 4ull) == 0);
    CHECK(eng_cl_fill(cl, yb, &poison, 4, 0, rows * 4ull) == 0);
    CHECKF(eng_cl_matvec(cl, t->type, r.buf, r.off, xb, yb, rows, cols) == 0,
           "%s", cl->err);
    float *y = ds4_xmalloc(rows * sizeof *y);
    CHECK(eng_cl_read(cl, yb, 0, y, rows * 4ull) == 0);
    uint64_t rb = ds4_type_nbytes(t->type, cols);
    float *deq = ds4_xmalloc(cols * sizeof *deq);
    int bad = 0;
    for (uint32_t i = 0; i < rows; i++) {
        double dot, mag = 0;
        CHECK(ds4_dot_ref(t->type, t->data + rb * i, x, cols, &dot) == 0);
        CHECK(ds4_dequantize(t->type, t->data + rb * i, deq, cols) == 0);
        for (uint32_t c = 0; c < cols; c++)
            mag += fabs((double)deq[c] * x[c]);
        if (!isfinite(y[i]) || fabs(y[i] - dot) > 1e-5 * mag + 1e-30) {
            if (bad++ < 4)
                fprintf(stderr, "%s row %u: got %.9g want %.9g\n", t->name,
                        i, (double)y[i], dot);
        }
    }
    CHECKF(bad == 0, "%s: %d of %u rows wrong", t->name, bad, rows);
    printf("matvec on %s (%s, %u x %u) at buffer offset %llu: ok\n",
           t->name, ds4_type_get(t->type)->name, rows, cols,
           (unsigned long long)r.off);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    free(y);
    free(deq);
}

/* Progress callback: counts calls and checks monotonic totals. */
typedef struct prog {
    int calls;
    uint64_t last, total;
} prog;

static void on_progress(void *ud, uint64_t done, uint64_t total,
                        const char *tensor)
{
    prog *p = ud;
    CHECK(done > p->last && done <= total && tensor && *tensor);
    p->last = done;
    p->total = total;
    p->calls++;
}

/* First Q8_0 matrix of a middle layer (the kernels' most common type). */
static const eng_tensor *pick_q8(const eng_model *m)
{
    const eng_tensor *best = NULL;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const eng_tensor *t = &m->tensors[i];
        if (t->type == DS4_TYPE_Q8_0 && t->n_dims == 2 && t->layer >= 1) {
            best = t;
            break;
        }
    }
    return best;
}

/* Open, plan, upload the generated model and read tensors back. */
static void test_load(eng_cl *cl, int have_kernels)
{
    eng_model *m;
    char err[1024];
    CHECKF(eng_model_open(g_path, &m, err, sizeof err) == 0, "%s", err);
    if (!m)
        return;
    CHECK(m->hp.n_layer == 3 && m->n_tensors == m->val.n_tensors);
    CHECK(m->val.kind == DSV4_LAYOUT_Q2);
    /* the table agrees with the file and with dsv4_tensor_name */
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const eng_tensor *t = &m->tensors[i];
        char name[DSV4_NAME_MAX];
        const gguf_tensor *gt = gguf_find_tensor(m->f, t->name);
        CHECK(gt && gt->nbytes == t->nbytes && gt->type == t->type);
        CHECK(strcmp(dsv4_tensor_name(t->id, t->layer, name), t->name) == 0);
        CHECK(eng_model_find(m, t->id, t->layer) == t);
        CHECK(t->file_off == m->f->data_offset + gt->offset &&
              t->data == m->f->base + t->file_off);
    }
    CHECK(eng_model_find(m, DSV4_T_ATTN_COMP_KV, 0) == NULL); /* ratio 0 */
    CHECK(eng_model_find(m, DSV4_T_ATTN_COMP_KV, 1) != NULL);
    CHECK(eng_model_find(m, DSV4_T_ATTN_Q_A, 3) == NULL);
    CHECK(eng_model_find(m, DSV4_T_COUNT, 0) == NULL);

    eng_plan plan;
    eng_plan_opts o = {.reserve = 1 << 20};
    CHECKF(eng_model_plan(m, cl, &o, &plan, err, sizeof err) == 0, "%s", err);
    check_plan_shape(m, &plan);
    CHECK(plan.n_split == 0 && plan.tensor_bytes == m->val.tensor_bytes);
    eng_plan_print(m, &plan, stdout);

    /* the same model in 80 MiB buffers: the embedding alone is 63 MiB, so
     * the tensors need more than one buffer */
    eng_plan small;
    eng_plan_opts o2 = {.reserve = 0, .max_buf = 80ull << 20};
    CHECKF(eng_model_plan(m, cl, &o2, &small, err, sizeof err) == 0, "%s",
           err);
    check_plan_shape(m, &small);
    CHECK(small.n_bufs >= 2);

    prog pr = {0};
    CHECKF(eng_model_upload(m, cl, &small, on_progress, &pr, err,
                            sizeof err) == 0, "%s", err);
    CHECK(pr.calls >= (int)m->n_tensors && pr.last == small.tensor_bytes);
    if (m->bufs) {
        eng_tensor_ref r;
        const eng_tensor *first = &m->tensors[0];
        const eng_tensor *last = &m->tensors[m->n_tensors - 1];
        CHECK(part_matches(cl, m, first, 0));
        CHECK(part_matches(cl, m, last, 0));
        /* a middle expert slice of a routed stack */
        const eng_tensor *ex = eng_model_find(m, DSV4_T_FFN_DOWN_EXPS, 1);
        CHECK(ex && ex->ne[2] >= 3);
        if (ex) {
            uint32_t e = (uint32_t)ex->ne[2] / 2;
            uint64_t per = ex->nbytes / ex->ne[2];
            cl_mem b;
            uint64_t off;
            CHECK(eng_model_expert(m, ex->id, 1, e, &b, &off) == 0);
            uint8_t *got = readback(cl, b, off, per);
            CHECK(memcmp(got, ex->data + per * e, per) == 0);
            free(got);
            CHECK(eng_model_expert(m, ex->id, 1, (uint32_t)ex->ne[2], &b,
                                   &off) == -1);
        }
        /* every tensor, by checksum */
        int bad = 0;
        for (uint32_t i = 0; i < m->n_tensors; i++)
            for (uint32_t p = 0; p < m->tensors[i].n_parts; p++)
                bad += !part_matches(cl, m, &m->tensors[i], p);
        CHECKF(bad == 0, "%d tensor parts differ from the file", bad);
        CHECK(eng_model_tensor(m, DSV4_T_OUTPUT, 99, &r) == 0 &&
              r.t == last && r.type == last->type && r.ne[1] == last->ne[1]);
        CHECK(eng_model_tensor(m, DSV4_T_IDX_PROJ, 0, &r) == -1);
        const eng_tensor *q8 = pick_q8(m);
        CHECK(q8 != NULL);
        if (q8 && have_kernels)
            check_matvec(cl, m, q8);
    }
    eng_plan_free(&plan);
    eng_plan_free(&small);
    eng_model_close(m);
}

/* A hand-made table: one global tensor and a layer with an 8-expert
 * stack of 40 KiB experts, to exercise splitting and its errors. */
static eng_model *synth_model(uint8_t **blob)
{
    eng_model *m = ds4_xcalloc(1, sizeof *m);
    m->path = ds4_xstrdup("synthetic");
    m->hp.n_layer = 1;
    size_t slots = (size_t)DSV4_T_COUNT * 2;
    m->index = ds4_xmalloc(slots * sizeof *m->index);
    for (size_t i = 0; i < slots; i++)
        m->index[i] = -1;
    m->tensors = ds4_xcalloc(3, sizeof *m->tensors);
    static const struct { int id, layer; uint64_t ne0, ne1, ne2; } d[] = {
        {DSV4_T_TOKEN_EMBD, -1, 1000, 7, 1},       /* F32, 28000 bytes */
        {DSV4_T_FFN_UP_EXPS, 0, 2560, 4, 8},       /* 8 experts x 40 KiB */
        {DSV4_T_FFN_NORM, 0, 300, 1, 1},
    };
    uint64_t total = 0;
    for (int i = 0; i < 3; i++)
        total += d[i].ne0 * d[i].ne1 * d[i].ne2 * 4;
    *blob = ds4_xmalloc(total);
    for (uint64_t i = 0; i < total; i++)
        (*blob)[i] = (uint8_t)rnd();
    uint64_t off = 0;
    for (int i = 0; i < 3; i++) {
        eng_tensor *t = &m->tensors[i];
        dsv4_tensor_name(d[i].id, d[i].layer, t->name);
        t->id = d[i].id;
        t->layer = d[i].layer;
        t->type = DS4_TYPE_F32;
        t->n_dims = d[i].ne2 > 1 ? 3 : 2;
        t->ne[0] = d[i].ne0, t->ne[1] = d[i].ne1, t->ne[2] = d[i].ne2;
        t->ne[3] = 1;
        t->nbytes = d[i].ne0 * d[i].ne1 * d[i].ne2 * 4;
        t->data = *blob + off;
        off += t->nbytes;
        m->index[(size_t)t->id * 2 + (size_t)(t->layer + 1)] = i;
    }
    m->n_tensors = 3;
    return m;
}

/* Splitting between experts, and the errors of the planner. */
static void test_split(eng_cl *cl)
{
    uint8_t *blob;
    eng_model *m = synth_model(&blob);
    char err[1024];
    eng_plan p;
    /* 100 KiB buffers: 2 experts (80 KiB) per part, 4 parts */
    eng_plan_opts o = {.budget = 1ull << 30, .max_buf = 100 << 10};
    CHECKF(eng_model_plan(m, NULL, &o, &p, err, sizeof err) == 0, "%s", err);
    check_plan_shape(m, &p);
    CHECK(p.n_split == 1 && p.tensor_nparts[1] == 4 && p.tensor_nparts[0] == 1);
    for (uint32_t k = 0; k < p.tensor_nparts[1]; k++) {
        const eng_part *a = &p.parts[p.tensor_part0[1] + k];
        CHECK(a->e0 == 2 * k && a->e1 == 2 * k + 2 && a->bytes == 80 << 10);
    }
    char errbuf[1024];
    CHECKF(eng_model_upload(m, cl, &p, NULL, NULL, errbuf, sizeof errbuf) == 0,
           "%s", errbuf);
    const eng_tensor *t = &m->tensors[1];
    uint64_t per = t->nbytes / 8;
    for (uint32_t e = 0; e < 8 && m->bufs; e++) {
        cl_mem b;
        uint64_t off;
        CHECK(eng_model_expert(m, t->id, 0, e, &b, &off) == 0);
        uint8_t *got = readback(cl, b, off, per);
        CHECKF(memcmp(got, t->data + per * e, per) == 0, "expert %u", e);
        free(got);
    }
    eng_tensor_ref r;
    CHECK(eng_model_tensor_part(m, t->id, 0, 3, &r) == 0 && r.n_parts == 4 &&
          r.e0 == 6 && r.e1 == 8);
    CHECK(eng_model_tensor_part(m, t->id, 0, 4, &r) == -1);
    eng_plan_free(&p);

    /* one expert larger than a buffer */
    o.max_buf = 32 << 10;
    CHECK(eng_model_plan(m, NULL, &o, &p, err, sizeof err) == -1);
    CHECKF(strstr(err, "'blk.0.ffn_up_exps.weight': one expert (40.0 KiB)"),
           "%s", err);
    /* a non-expert tensor larger than a buffer */
    o.max_buf = 20 << 10;
    CHECK(eng_model_plan(m, NULL, &o, &p, err, sizeof err) == -1);
    CHECKF(strstr(err, "tensor 'token_embd.weight' (27.3 KiB) is larger "
                  "than the device's largest buffer (20.0 KiB)"), "%s", err);
    /* budget too small, in bytes */
    o = (eng_plan_opts){.budget = 300 << 10, .reserve = 64 << 10,
                        .max_buf = 1 << 20};
    CHECK(eng_model_plan(m, NULL, &o, &p, err, sizeof err) == -1);
    CHECKF(strstr(err, "needs 412.7 KiB") && strstr(err, "has 300.0 KiB") &&
           strstr(err, "64.0 KiB reserve"), "%s", err);
    eng_model_close(m);
    free(blob);
}

/* The full-size q2 layout without a file: 80.76 GiB of tensors (SPEC 4),
 * too big for an H100 (79.65 GiB, 19.8 GiB buffers), 3 buffers on an H200
 * (139.8 GiB, 34.95 GiB buffers); no upload without data. */
static void test_full_size(eng_cl *cl)
{
    dsv4_hparams *hp = ds4_xmalloc(sizeof *hp);
    dsv4_hparams_full(hp);
    eng_model *m = eng_model_virtual(hp);
    free(hp);
    CHECK(m->n_tensors == 1328);
    eng_plan p;
    char err[1024];
    eng_plan_opts h100 = {.budget = 81559ull << 20, .reserve = 1ull << 30,
                          .max_buf = (uint64_t)(19.8 * 1073741824.0)};
    CHECK(eng_model_plan(m, NULL, &h100, &p, err, sizeof err) == -1);
    CHECKF(strstr(err, "the model needs 81.76 GiB (80.76 GiB of weights in 5 "
                  "buffers + 1.00 GiB reserve), the device has 79.65 GiB"),
           "%s", err);
    eng_plan_opts h200 = {.budget = (uint64_t)(139.8 * 1073741824.0),
                          .reserve = 1ull << 30,
                          .max_buf = (uint64_t)(34.95 * 1073741824.0)};
    CHECKF(eng_model_plan(m, NULL, &h200, &p, err, sizeof err) == 0, "%s",
           err);
    check_plan_shape(m, &p);
    CHECK(p.n_bufs == 3 && p.n_split == 0);
    CHECKF(p.tensor_bytes > 80.755 * 1073741824.0 &&
           p.tensor_bytes < 80.765 * 1073741824.0, "%llu",
           (unsigned long long)p.tensor_bytes);
    CHECK(eng_model_upload(m, cl, &p, NULL, NULL, err, sizeof err) == -1 &&
          strstr(err, "has no data to upload"));
    eng_plan_free(&p);
    eng_model_close(m);
}

/* Run open on a file with one edit; the error must be the validator's. */
static void check_edit(const gguf_file *src, const dsv4_gguf_edit *e,
                       const char *want)
{
    dsv4_build *b;
    char err[1024], verr[1024] = "";
    CHECKF(dsv4_gguf_rewrite(src, e, &b, err, sizeof err) == 0, "%s", err);
    if (!b)
        return;
    CHECKF(gguf_writer_write(dsv4_build_writer(b), g_tmp, err, sizeof err) ==
           0, "%s", err);
    dsv4_build_free(b);
    gguf_file *f;
    if (gguf_open(g_tmp, &f, err, sizeof err) == 0) {
        dsv4_hparams *hp = ds4_xmalloc(sizeof *hp);
        dsv4_validation v;
        CHECK(dsv4_check_file(f, hp, &v, verr, sizeof verr) == -1);
        free(hp);
        gguf_close(f);
    }
    eng_model *m;
    CHECK(eng_model_open(g_tmp, &m, err, sizeof err) == -1 && m == NULL);
    char full[1200];
    snprintf(full, sizeof full, "%s: %s", g_tmp, verr);
    CHECKF(strcmp(err, full) == 0 && strstr(err, want), "%s", err);
}

/* Layout errors, truncation and the memory budget on the real file. */
static void test_errors(eng_cl *cl)
{
    char err[1024];
    gguf_file *src;
    CHECKF(gguf_open(g_path, &src, err, sizeof err) == 0, "%s", err);
    if (src) {
        check_edit(src, &(dsv4_gguf_edit){.drop_tensor =
                   "blk.1.attn_kv.weight"},
                   "tensor 'blk.1.attn_kv.weight' is missing");
        check_edit(src, &(dsv4_gguf_edit){.grow_tensor =
                   "blk.2.attn_compressor_ape.weight"},
                   "tensor 'blk.2.attn_compressor_ape.weight': shape");
        check_edit(src, &(dsv4_gguf_edit){.retype_tensor =
                   "blk.1.hc_attn_fn.weight", .new_type = DS4_TYPE_Q8_0},
                   "tensor 'blk.1.hc_attn_fn.weight': type Q8_0");
        /* truncated copies: several cut points, never a crash */
        static const double cuts[] = {0.0, 0.00001, 0.3, 0.5, 0.999};
        for (size_t i = 0; i < DS4_ARRAY_LEN(cuts); i++) {
            uint64_t len = (uint64_t)(src->size * cuts[i]);
            if (cuts[i] > 0.99)
                len = src->size - 1;
            CHECK(write_bytes(g_tmp, src->base, len) == 0);
            eng_model *m;
            err[0] = 0;
            CHECKF(eng_model_open(g_tmp, &m, err, sizeof err) == -1 &&
                   m == NULL && strstr(err, g_tmp) && strlen(err) >
                   strlen(g_tmp) + 10, "cut %llu: %s",
                   (unsigned long long)len, err);
        }
        printf("truncated file: %s\n", err);
        gguf_close(src);
    }
    eng_model *m;
    CHECK(eng_model_open("/nonexistent/x.gguf", &m, err, sizeof err) == -1 &&
          strstr(err, "/nonexistent/x.gguf"));

    /* DS4_DEVICE_MEM_MB smaller than the model */
    CHECKF(eng_model_open(g_path, &m, err, sizeof err) == 0, "%s", err);
    if (!m)
        return;
    eng_plan p;
    eng_plan_opts o = {.reserve = 1 << 20};
    CHECK(eng_model_plan(m, cl, &o, &p, err, sizeof err) == 0);
    char need[32], want[160];
    eng_fmt_bytes(p.total_bytes + p.reserve, need, sizeof need);
    eng_plan_free(&p);
    setenv("DS4_DEVICE_MEM_MB", "3", 1);
    CHECK(eng_model_plan(m, cl, &o, &p, err, sizeof err) == -1);
    snprintf(want, sizeof want, "the model needs %s", need);
    CHECKF(strstr(err, want) && strstr(err, "has 3.0 MiB (DS4_DEVICE_MEM_MB)"),
           "%s", err);
    printf("small budget: %s\n", err);
    setenv("DS4_DEVICE_MEM_MB", "lots", 1);
    CHECK(eng_model_plan(m, cl, &o, &p, err, sizeof err) == -1 &&
          strstr(err, "DS4_DEVICE_MEM_MB='lots'"));
    setenv("DS4_DEVICE_MEM_MB", "100000000", 1);
    CHECK(eng_model_plan(m, cl, &o, &p, err, sizeof err) == 0);
    CHECK(p.available == 100000000ull << 20 && p.budget_from_env);
    eng_plan_free(&p);
    unsetenv("DS4_DEVICE_MEM_MB");
    eng_model_close(m);
}

/* Generate the small q2 model (3 layers, 4 experts) into g_path. */
static int make_model(void)
{
    dsv4_tokdata *tok = NULL;
    char err[512];
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (!path)
        path = DSV4_TOKENIZER_JSON;
    CHECKF(dsv4_tokdata_load(path, &tok, err, sizeof err) == 0, "%s", err);
    if (!tok)
        return -1;
    static const uint32_t ratios[] = {0, 4, 128};
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.layout = DSV4_MK_Q2;
    o.seed = 7;
    o.hp.n_vocab = tok->n_tokens;
    o.hp.n_layer = 3;
    for (uint32_t i = 0; i < 3; i++)
        o.hp.compress_ratio[i] = ratios[i];
    o.hp.n_hash_layer = 1;
    o.hp.n_expert = 4;
    o.hp.n_expert_used = 2;
    int rc = dsv4_mkmodel_write(&o, g_path, NULL, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    dsv4_tokdata_free(tok);
    return rc;
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
        return test_main_end("eng_model");
    }
    unsetenv("DS4_DEVICE_MEM_MB");
    snprintf(g_path, sizeof g_path, "/tmp/test_eng_model_%d.gguf",
             (int)getpid());
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_eng_model_%d.bad.gguf",
             (int)getpid());
    int have_kernels = eng_cl_build(&cl, NULL) == 0;
    CHECKF(have_kernels, "%s", cl.err);
    test_split(&cl);
    test_full_size(&cl);
    uint64_t t0 = ds4_now_ns();
    if (make_model() == 0) {
        printf("model generated in %.2f s\n", (ds4_now_ns() - t0) / 1e9);
        test_load(&cl, have_kernels);
        test_errors(&cl);
    }
    unlink(g_path);
    unlink(g_tmp);
    eng_cl_close(&cl);
    return test_main_end("eng_model");
}
