/* eng_model.c - open, validate, plan and upload a DeepSeek V4 GGUF (see
 * eng_model.h). */
#include "engined/eng_model.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/quant.h"
#include "common/util.h"

/* printf into err (always NUL-terminated); returns -1 for `return fail()`. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

const char *eng_fmt_bytes(uint64_t bytes, char *buf, size_t cap)
{
    if (bytes >= (1ull << 30))
        snprintf(buf, cap, "%.2f GiB", bytes / 1073741824.0);
    else if (bytes >= (1ull << 20))
        snprintf(buf, cap, "%.1f MiB", bytes / 1048576.0);
    else if (bytes >= 1024)
        snprintf(buf, cap, "%.1f KiB", bytes / 1024.0);
    else
        snprintf(buf, cap, "%" PRIu64 " B", bytes);
    return buf;
}

/* ---- open ---------------------------------------------------------------- */

/* Slot of (id, layer) in the index; globals use layer -1. */
static size_t index_slot(const dsv4_hparams *hp, int id, int layer)
{
    return (size_t)id * (hp->n_layer + 1) + (size_t)(layer + 1);
}

/* Fill the tensor table from the validated file, in ds4's order. */
static int build_table(eng_model *m, char *err, size_t errlen)
{
    size_t n = dsv4_expected_tensors(&m->hp, NULL, 0);
    dsv4_tensor_spec *specs = ds4_xcalloc(n ? n : 1, sizeof *specs);
    dsv4_expected_tensors(&m->hp, specs, n);
    size_t slots = (size_t)DSV4_T_COUNT * (m->hp.n_layer + 1);
    m->index = ds4_xmalloc(slots * sizeof *m->index);
    for (size_t i = 0; i < slots; i++)
        m->index[i] = -1;
    m->tensors = ds4_xcalloc(n ? n : 1, sizeof *m->tensors);
    for (size_t i = 0; i < n; i++) {
        const gguf_tensor *gt = gguf_find_tensor(m->f, specs[i].name);
        if (!gt) { /* the validator checked presence; be safe anyway */
            fail(err, errlen, "tensor '%s' is missing", specs[i].name);
            free(specs);
            return -1;
        }
        eng_tensor *t = &m->tensors[m->n_tensors];
        snprintf(t->name, sizeof t->name, "%s", specs[i].name);
        t->id = specs[i].id;
        t->layer = dsv4_tensor_is_layer(t->id) ? specs[i].layer : -1;
        t->type = gt->type;
        t->n_dims = gt->n_dims;
        memcpy(t->ne, gt->ne, sizeof t->ne);
        t->file_off = m->f->data_offset + gt->offset;
        t->nbytes = gt->nbytes;
        t->data = gt->data;
        m->index[index_slot(&m->hp, t->id, t->layer)] = (int32_t)m->n_tensors;
        m->n_tensors++;
    }
    free(specs);
    return 0;
}

int eng_model_open(const char *path, eng_model **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    eng_model *m = ds4_xcalloc(1, sizeof *m);
    char e[1024];
    if (gguf_open(path, &m->f, e, sizeof e)) { /* names the path itself */
        fail(err, errlen, "%s", e);
        free(m);
        return -1;
    }
    m->path = ds4_xstrdup(path);
    if (dsv4_check_file(m->f, &m->hp, &m->val, e, sizeof e)) {
        fail(err, errlen, "%s: %s", path, e);
        eng_model_close(m);
        return -1;
    }
    if (build_table(m, e, sizeof e)) {
        fail(err, errlen, "%s: %s", path, e);
        eng_model_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

eng_model *eng_model_virtual(const dsv4_hparams *hp)
{
    eng_model *m = ds4_xcalloc(1, sizeof *m);
    m->path = ds4_xstrdup("(layout only, ds4 q2 types)");
    m->hp = *hp;
    m->val.kind = DSV4_LAYOUT_Q2;
    size_t n = dsv4_expected_tensors(hp, NULL, 0);
    dsv4_tensor_spec *specs = ds4_xcalloc(n ? n : 1, sizeof *specs);
    dsv4_expected_tensors(hp, specs, n);
    size_t slots = (size_t)DSV4_T_COUNT * (hp->n_layer + 1);
    m->index = ds4_xmalloc(slots * sizeof *m->index);
    for (size_t i = 0; i < slots; i++)
        m->index[i] = -1;
    m->tensors = ds4_xcalloc(n ? n : 1, sizeof *m->tensors);
    for (size_t i = 0; i < n; i++) {
        eng_tensor *t = &m->tensors[i];
        snprintf(t->name, sizeof t->name, "%s", specs[i].name);
        t->id = specs[i].id;
        t->layer = dsv4_tensor_is_layer(t->id) ? specs[i].layer : -1;
        t->type = specs[i].types[0];
        t->n_dims = specs[i].n_dims;
        memcpy(t->ne, specs[i].ne, sizeof t->ne);
        t->nbytes = ds4_type_nbytes(t->type, t->ne[0] * t->ne[1] * t->ne[2] *
                                                 t->ne[3]);
        m->val.tensor_bytes += t->nbytes;
        m->index[index_slot(hp, t->id, t->layer)] = (int32_t)i;
    }
    m->n_tensors = (uint32_t)n;
    m->val.n_tensors = n;
    free(specs);
    return m;
}

const eng_tensor *eng_model_find(const eng_model *m, int id, int layer)
{
    if (!m || id < 0 || id >= DSV4_T_COUNT)
        return NULL;
    if (!dsv4_tensor_is_layer(id))
        layer = -1;
    else if (layer < 0 || (uint32_t)layer >= m->hp.n_layer)
        return NULL;
    int32_t i = m->index[index_slot(&m->hp, id, layer)];
    return i < 0 ? NULL : &m->tensors[i];
}

/* ---- plan ---------------------------------------------------------------- */

/* Whether a tensor id is a routed-expert stack (experts outermost). */
static int is_routed_expert(int id)
{
    return id == DSV4_T_FFN_GATE_EXPS || id == DSV4_T_FFN_UP_EXPS ||
           id == DSV4_T_FFN_DOWN_EXPS;
}

/* Number of experts of a tensor: its outermost dim for routed stacks. */
static uint32_t n_experts_of(const eng_tensor *t)
{
    return is_routed_expert(t->id) ? (uint32_t)t->ne[t->n_dims - 1] : 1;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Growable plan arrays while packing. */
typedef struct packer {
    eng_plan *p;
    uint32_t cap_parts, cap_bufs;
    uint64_t align;
} packer;

/* Put bytes of tensor ti (source offset src, experts e0..e1) into the
 * current buffer, or a new one when they do not fit. */
static void place(packer *k, uint32_t ti, uint64_t src, uint64_t bytes,
                  uint32_t e0, uint32_t e1)
{
    eng_plan *p = k->p;
    uint64_t off = p->n_bufs ? align_up(p->buf_bytes[p->n_bufs - 1], k->align)
                             : 0;
    if (p->n_bufs == 0 || off + bytes > p->max_buf) {
        if (p->n_bufs == k->cap_bufs) {
            k->cap_bufs = k->cap_bufs ? 2 * k->cap_bufs : 8;
            p->buf_bytes = ds4_xrealloc(p->buf_bytes,
                                        k->cap_bufs * sizeof *p->buf_bytes);
        }
        p->buf_bytes[p->n_bufs++] = 0;
        off = 0;
    }
    if (p->n_parts == k->cap_parts) {
        k->cap_parts = k->cap_parts ? 2 * k->cap_parts : 64;
        p->parts = ds4_xrealloc(p->parts, k->cap_parts * sizeof *p->parts);
    }
    p->parts[p->n_parts++] = (eng_part){ti, p->n_bufs - 1, off, src, bytes,
                                        e0, e1};
    p->buf_bytes[p->n_bufs - 1] = off + bytes;
}

/* Place one tensor, splitting a routed-expert stack between experts when
 * it exceeds a buffer. 0, or -1 naming a tensor that cannot be placed. */
static int place_tensor(packer *k, const eng_model *m, uint32_t ti,
                        char *err, size_t errlen)
{
    const eng_tensor *t = &m->tensors[ti];
    eng_plan *p = k->p;
    uint32_t ne = n_experts_of(t);
    p->tensor_part0[ti] = p->n_parts;
    if (t->nbytes <= p->max_buf) {
        place(k, ti, 0, t->nbytes, 0, ne);
        p->tensor_nparts[ti] = 1;
        return 0;
    }
    char a[32], b[32];
    if (!is_routed_expert(t->id) || t->nbytes % ne)
        return fail(err, errlen, "tensor '%s' (%s) is larger than the "
                    "device's largest buffer (%s) and cannot be split",
                    t->name, eng_fmt_bytes(t->nbytes, a, sizeof a),
                    eng_fmt_bytes(p->max_buf, b, sizeof b));
    uint64_t per = t->nbytes / ne;
    uint64_t fit = p->max_buf / per;
    if (fit == 0)
        return fail(err, errlen, "tensor '%s': one expert (%s) is larger "
                    "than the device's largest buffer (%s)", t->name,
                    eng_fmt_bytes(per, a, sizeof a),
                    eng_fmt_bytes(p->max_buf, b, sizeof b));
    for (uint32_t e = 0; e < ne; e += (uint32_t)fit) {
        uint32_t e1 = e + fit < ne ? e + (uint32_t)fit : ne;
        place(k, ti, per * e, per * (e1 - e), e, e1);
    }
    p->tensor_nparts[ti] = p->n_parts - p->tensor_part0[ti];
    p->n_split++;
    return 0;
}

/* Device memory to plan against: opts, DS4_DEVICE_MEM_MB, the device. */
static int plan_budget(const eng_cl *cl, const eng_plan_opts *o,
                       eng_plan *p, char *err, size_t errlen)
{
    const char *env = getenv("DS4_DEVICE_MEM_MB");
    if (o && o->budget) {
        p->available = o->budget;
    } else if (env && *env) {
        char *end;
        unsigned long long mb = strtoull(env, &end, 10);
        if (*end || mb == 0 || mb > (1ull << 40))
            return fail(err, errlen, "DS4_DEVICE_MEM_MB='%s' is not a "
                        "positive number of MiB", env);
        p->available = mb << 20;
        p->budget_from_env = 1;
    } else if (cl) {
        p->available = cl->info.global_mem;
    } else {
        return fail(err, errlen, "no device and no memory budget given");
    }
    if (o && o->max_buf)
        p->max_buf = o->max_buf;
    else if (cl && cl->info.max_alloc)
        p->max_buf = cl->info.max_alloc;
    else
        return fail(err, errlen, "no device and no buffer limit given");
    p->reserve = o ? o->reserve : 0;
    return 0;
}

int eng_model_plan(const eng_model *m, const eng_cl *cl,
                   const eng_plan_opts *opts, eng_plan *p, char *err,
                   size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (plan_budget(cl, opts, p, err, errlen))
        return -1;
    packer k = {p, 0, 0, ENG_MODEL_ALIGN};
    if (cl && cl->info.base_align > k.align)
        k.align = cl->info.base_align;
    p->max_buf = p->max_buf / k.align * k.align;
    p->align = (uint32_t)k.align;
    uint32_t n = m->n_tensors;
    p->tensor_part0 = ds4_xcalloc(n ? n : 1, sizeof *p->tensor_part0);
    p->tensor_nparts = ds4_xcalloc(n ? n : 1, sizeof *p->tensor_nparts);
    for (uint32_t i = 0; i < n; i++) {
        if (place_tensor(&k, m, i, err, errlen)) {
            eng_plan_free(p);
            return -1;
        }
        p->tensor_bytes += m->tensors[i].nbytes;
    }
    for (uint32_t b = 0; b < p->n_bufs; b++)
        p->total_bytes += p->buf_bytes[b];
    if (p->total_bytes + p->reserve > p->available) {
        char a[32], r[32], t[32], v[32];
        fail(err, errlen, "not enough device memory: the model needs %s "
             "(%s of weights in %u buffer%s + %s reserve), %s has %s%s",
             eng_fmt_bytes(p->total_bytes + p->reserve, a, sizeof a),
             eng_fmt_bytes(p->total_bytes, t, sizeof t), p->n_bufs,
             p->n_bufs == 1 ? "" : "s",
             eng_fmt_bytes(p->reserve, r, sizeof r),
             cl ? cl->info.name : "the device",
             eng_fmt_bytes(p->available, v, sizeof v),
             p->budget_from_env ? " (DS4_DEVICE_MEM_MB)" : "");
        eng_plan_free(p);
        return -1;
    }
    return 0;
}

void eng_plan_free(eng_plan *p)
{
    if (!p)
        return;
    free(p->buf_bytes);
    free(p->parts);
    free(p->tensor_part0);
    free(p->tensor_nparts);
    memset(p, 0, sizeof *p);
}

void eng_plan_print(const eng_model *m, const eng_plan *p, FILE *out)
{
    char a[32], b[32];
    fprintf(out, "model: %s (%s, %u layers, %u tensors, %s)\n",
            m->path, dsv4_layout_name(m->val.kind), m->hp.n_layer,
            m->n_tensors, eng_fmt_bytes(p->tensor_bytes, a, sizeof a));
    fprintf(out, "buffers: %u (largest allowed %s, offsets aligned to %u)\n",
            p->n_bufs, eng_fmt_bytes(p->max_buf, a, sizeof a),
            (unsigned)p->align);
    for (uint32_t i = 0; i < p->n_bufs; i++) {
        uint32_t first = UINT32_MAX, last = 0;
        for (uint32_t j = 0; j < p->n_parts; j++)
            if (p->parts[j].buf == i) {
                first = first == UINT32_MAX ? j : first;
                last = j;
            }
        fprintf(out, "  buf %3u  %12" PRIu64 " bytes (%s)  %s .. %s\n", i,
                p->buf_bytes[i], eng_fmt_bytes(p->buf_bytes[i], a, sizeof a),
                first == UINT32_MAX ? "-" :
                    m->tensors[p->parts[first].tensor].name,
                first == UINT32_MAX ? "-" :
                    m->tensors[p->parts[last].tensor].name);
    }
    if (p->n_split)
        fprintf(out, "split tensors: %u (between whole experts)\n",
                p->n_split);
    fprintf(out, "device memory: %s needed (%s buffers + %s reserve), %s "
            "available%s\n",
            eng_fmt_bytes(p->total_bytes + p->reserve, a, sizeof a),
            eng_fmt_bytes(p->total_bytes, b, sizeof b),
            eng_fmt_bytes(p->reserve, (char[32]){0}, 32),
            eng_fmt_bytes(p->available, (char[32]){0}, 32),
            p->budget_from_env ? " (DS4_DEVICE_MEM_MB)" : "");
}

/* ---- upload -------------------------------------------------------------- */

/* Deep copy of a plan (the model keeps its own). */
static void plan_copy(eng_plan *dst, const eng_plan *src, uint32_t n_tensors)
{
    *dst = *src;
    dst->buf_bytes = ds4_xmalloc((src->n_bufs ? src->n_bufs : 1) *
                                 sizeof *dst->buf_bytes);
    memcpy(dst->buf_bytes, src->buf_bytes,
           src->n_bufs * sizeof *dst->buf_bytes);
    dst->parts = ds4_xmalloc((src->n_parts ? src->n_parts : 1) *
                             sizeof *dst->parts);
    memcpy(dst->parts, src->parts, src->n_parts * sizeof *dst->parts);
    size_t tb = (n_tensors ? n_tensors : 1) * sizeof(uint32_t);
    dst->tensor_part0 = ds4_xmalloc(tb);
    dst->tensor_nparts = ds4_xmalloc(tb);
    memcpy(dst->tensor_part0, src->tensor_part0, n_tensors * sizeof(uint32_t));
    memcpy(dst->tensor_nparts, src->tensor_nparts,
           n_tensors * sizeof(uint32_t));
}

/* Release the model's device buffers and its plan copy. */
static void release_bufs(eng_model *m)
{
    for (uint32_t i = 0; i < m->n_bufs; i++)
        if (m->bufs[i])
            clReleaseMemObject(m->bufs[i]);
    free(m->bufs);
    m->bufs = NULL;
    m->n_bufs = 0;
    eng_plan_free(&m->plan);
}

/* Copy one part from the mapping in chunks. 0 or -1 (cl->err set). */
static int upload_part(eng_model *m, eng_cl *cl, const eng_part *pt,
                       uint64_t *done, uint64_t total, eng_progress_fn cb,
                       void *ud)
{
    const eng_tensor *t = &m->tensors[pt->tensor];
    for (uint64_t o = 0; o < pt->bytes; o += ENG_MODEL_CHUNK) {
        uint64_t n = pt->bytes - o < ENG_MODEL_CHUNK ? pt->bytes - o
                                                     : ENG_MODEL_CHUNK;
        if (eng_cl_write(cl, m->bufs[pt->buf], pt->off + o,
                         t->data + pt->src_off + o, n))
            return -1;
        *done += n;
        if (cb)
            cb(ud, *done, total, t->name);
    }
    return 0;
}

int eng_model_alloc(eng_model *m, eng_cl *cl, const eng_plan *plan, char *err,
                    size_t errlen)
{
    release_bufs(m);
    m->bufs = ds4_xcalloc(plan->n_bufs ? plan->n_bufs : 1, sizeof *m->bufs);
    m->n_bufs = plan->n_bufs;
    for (uint32_t i = 0; i < plan->n_bufs; i++) {
        m->bufs[i] = eng_cl_alloc(cl, plan->buf_bytes[i], CL_MEM_READ_ONLY);
        if (!m->bufs[i]) {
            fail(err, errlen, "buffer %u of %u: %s", i, plan->n_bufs,
                 cl->err);
            release_bufs(m);
            return -1;
        }
    }
    plan_copy(&m->plan, plan, m->n_tensors);
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        m->tensors[i].part0 = plan->tensor_part0[i];
        m->tensors[i].n_parts = plan->tensor_nparts[i];
    }
    return 0;
}

int eng_model_upload(eng_model *m, eng_cl *cl, const eng_plan *plan,
                     eng_progress_fn progress, void *ud, char *err,
                     size_t errlen)
{
    release_bufs(m);
    for (uint32_t i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].data)
            return fail(err, errlen, "%s: tensor '%s' has no data to upload "
                        "(a layout-only model)", m->path, m->tensors[i].name);
    uint64_t t0 = ds4_now_ns();
    if (eng_model_alloc(m, cl, plan, err, errlen))
        return -1;
    uint64_t done = 0;
    for (uint32_t j = 0; j < plan->n_parts; j++) {
        if (upload_part(m, cl, &plan->parts[j], &done, plan->tensor_bytes,
                        progress, ud)) {
            fail(err, errlen, "uploading tensor '%s': %s",
                 m->tensors[plan->parts[j].tensor].name, cl->err);
            release_bufs(m);
            return -1;
        }
    }
    if (eng_cl_finish(cl)) {
        fail(err, errlen, "upload: %s", cl->err);
        release_bufs(m);
        return -1;
    }
    m->upload_s = (ds4_now_ns() - t0) / 1e9;
    return 0;
}

/* ---- lookup -------------------------------------------------------------- */

int eng_model_tensor_part(const eng_model *m, int id, int layer, uint32_t p,
                          eng_tensor_ref *ref)
{
    memset(ref, 0, sizeof *ref);
    const eng_tensor *t = eng_model_find(m, id, layer);
    if (!t || !m->bufs || p >= t->n_parts)
        return -1;
    const eng_part *pt = &m->plan.parts[t->part0 + p];
    ref->buf = m->bufs[pt->buf];
    ref->off = pt->off;
    ref->type = t->type;
    ref->n_dims = t->n_dims;
    memcpy(ref->ne, t->ne, sizeof ref->ne);
    ref->nbytes = pt->bytes;
    ref->n_parts = t->n_parts;
    ref->e0 = pt->e0;
    ref->e1 = pt->e1;
    ref->t = t;
    return 0;
}

int eng_model_tensor(const eng_model *m, int id, int layer,
                     eng_tensor_ref *ref)
{
    return eng_model_tensor_part(m, id, layer, 0, ref);
}

int eng_model_expert(const eng_model *m, int id, int layer, uint32_t e,
                     cl_mem *buf, uint64_t *off)
{
    const eng_tensor *t = eng_model_find(m, id, layer);
    if (!t || !m->bufs || !is_routed_expert(id) || e >= n_experts_of(t))
        return -1;
    uint64_t per = t->nbytes / n_experts_of(t);
    for (uint32_t p = 0; p < t->n_parts; p++) {
        const eng_part *pt = &m->plan.parts[t->part0 + p];
        if (e >= pt->e0 && e < pt->e1) {
            *buf = m->bufs[pt->buf];
            *off = pt->off + per * (e - pt->e0);
            return 0;
        }
    }
    return -1;
}

void eng_model_close(eng_model *m)
{
    if (!m)
        return;
    release_bufs(m);
    gguf_close(m->f);
    free(m->tensors);
    free(m->index);
    free(m->path);
    free(m);
}
