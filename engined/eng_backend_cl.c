/* eng_backend_cl.c - the "cl" backend (see eng_backend.h): the OpenCL
 * forward pass of eng_fwd.c with the session state on the device.
 *
 * A session is an eng_fwd_seq (device state: window rings, compressed and
 * indexer rows, compressor inputs, the last token's streams) plus its
 * token ids and last logits on the host. The logits are computed lazily:
 * an eval without a logits buffer skips the output head until
 * session_logits / snapshot / fork need them.
 *
 * Tolerance of the contract's split invariance: evaluating a sequence in
 * other chunks changes only the f32 accumulation order of the GEMMs (row
 * blocks of the prefill kernels vs the decode mat-vec); measured on the
 * test models rel L2 <= 1e-6 in exact mode, and in QAT mode occasional
 * FP8/F16/FP4 rounding flips of those differences (test_eng_fwd_state.c).
 * decode_batch runs the sessions' tokens as one batch: the same bound vs
 * separate evals.
 *
 * Snapshot blob (little-endian):
 *   0   8  magic "DS4CLSN1"
 *   8   4  version (1)
 *   12  4  flags: bit 0 exact mode
 *   16  4  n_vocab        20  4  n_tokens     24  4  has_logits (0/1)
 *   28  4  n_layer        32  4  n_embd       36  4  head_dim
 *   40  4  idx_head_dim   44  4  n_swa        48  8  state bytes
 *   56  8  zero
 *   64 64  exact model fingerprint (hex, no NUL)
 *   128 .. n_tokens int32 ids, n_vocab f32 logits if has_logits, the
 *          state (eng_fwd_state_save: rings and compressor inputs whole,
 *          compressed rows up to the length)
 *   end 8  hash64 of every byte before it */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/model_fp.h"
#include "common/util.h"
#include "engined/eng_backend.h"
#include "engined/eng_cl.h"
#include "engined/eng_fwd.h"
#include "engined/eng_model.h"

#define CLB_MAGIC "DS4CLSN1"
#define CLB_VERSION 1u
#define CLB_HDR 128u

struct eng_backend {
    eng_cl cl;
    int cl_open;
    eng_model *m;
    eng_fwd *f;
    ds4_model_fp fp;
    uint32_t max_ctx;
    uint64_t budget;      /* session state bytes allowed */
    uint64_t used;        /* charged by live sessions */
    uint64_t fixed;       /* weights + scratch */
    char desc[1024];
};

struct eng_session {
    eng_backend *b;
    eng_fwd_seq *seq;
    int32_t *ids;
    uint32_t n, cap;
    float *logits;        /* n_vocab */
    int have_logits;      /* logits are those after ids[0..n) */
    uint64_t charge;
};

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    eng_backend_set_errcode(code);
    return -1;
}

/* Set the error code of a failure whose message is already in err. */
static int code(int c)
{
    eng_backend_set_errcode(c);
    return -1;
}

static void cl_close_backend(eng_backend *b)
{
    if (!b)
        return;
    eng_fwd_close(b->f);
    eng_model_close(b->m);
    if (b->cl_open)
        eng_cl_close(&b->cl);
    free(b);
}

static void on_progress(void *ud, uint64_t done, uint64_t total, const char *t)
{
    const eng_backend_opts *o = ud;
    o->progress(o->progress_ud, done, total, t);
}

static int cl_open_backend(const eng_backend_opts *o, eng_backend **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    if (!o || !o->model_path)
        return fail(ENG_E_INVALID, err, errlen, "no model path");
    eng_backend *b = ds4_xcalloc(1, sizeof *b);
    if (eng_cl_open(&b->cl)) {
        fail(ENG_E_DEVICE, err, errlen, "%s", b->cl.err);
        free(b);
        return -1;
    }
    b->cl_open = 1;
    if (eng_cl_build(&b->cl, NULL)) {
        fail(ENG_E_DEVICE, err, errlen, "%s", b->cl.err);
        cl_close_backend(b);
        return -1;
    }
    if (eng_model_open(o->model_path, &b->m, err, errlen)) {
        cl_close_backend(b);
        eng_backend_set_errcode(ENG_E_MODEL);
        return -1;
    }
    eng_plan plan;
    if (eng_model_plan(b->m, &b->cl, NULL, &plan, err, errlen)) {
        cl_close_backend(b);
        eng_backend_set_errcode(ENG_E_NOMEM);
        return -1;
    }
    int rc = eng_model_upload(b->m, &b->cl, &plan, o->progress ? on_progress : NULL,
                              (void *)o, err, errlen);
    uint64_t weights = plan.total_bytes;
    eng_plan_free(&plan);
    if (rc) {
        cl_close_backend(b);
        eng_backend_set_errcode(ENG_E_NOMEM);
        return -1;
    }
    b->max_ctx = o->max_ctx ? o->max_ctx : 32768;
    eng_fwd_opts fo = {o->exact, o->prefill_chunk ? o->prefill_chunk : 512, b->max_ctx};
    if (eng_fwd_open(&b->cl, b->m, &fo, &b->f, err, errlen)) {
        cl_close_backend(b);
        eng_backend_set_errcode(ENG_E_DEVICE);
        return -1;
    }
    ds4_model_fingerprint(b->m->f, &b->fp);
    b->fixed = weights + eng_fwd_scratch_bytes(b->f);
    b->budget = o->state_budget;
    if (!b->budget) {
        /* 90% of the device memory left after weights and scratch */
        uint64_t g = b->cl.info.global_mem;
        b->budget = g > b->fixed ? (g - b->fixed) / 10 * 9 : 0;
    }
    const dsv4_hparams *hp = &b->m->hp;
    snprintf(b->desc, sizeof b->desc,
             "cl: %s (%s), %s mode, %u layers, hidden %u, vocab %u, chunk %u, "
             "context %u, %.1f MiB state per session", b->cl.info.name,
             b->cl.info.platform, o->exact ? "exact" : "QAT", hp->n_layer,
             hp->n_embd, hp->n_vocab, fo.max_chunk, b->max_ctx,
             eng_fwd_seq_state_bytes(b->f) / 1048576.0);
    *out = b;
    return 0;
}

static const dsv4_hparams *cl_hparams(const eng_backend *b) { return &b->m->hp; }
static const char *cl_fingerprint(const eng_backend *b) { return b->fp.exact; }
static const char *cl_describe(const eng_backend *b) { return b->desc; }
static uint64_t cl_mem_used(const eng_backend *b) { return b->fixed + b->used; }

static eng_session *session_alloc(eng_backend *b, char *err, size_t errlen)
{
    uint64_t charge = eng_fwd_seq_state_bytes(b->f);
    if (b->used + charge > b->budget) {
        fail(ENG_E_NOMEM, err, errlen,
             "session state budget exhausted (%" PRIu64 " of %" PRIu64 " bytes in "
             "use, a session needs %" PRIu64 ")", b->used, b->budget, charge);
        return NULL;
    }
    eng_session *s = ds4_xcalloc(1, sizeof *s);
    if (eng_fwd_seq_new(b->f, &s->seq, err, errlen)) {
        free(s);
        eng_backend_set_errcode(ENG_E_NOMEM);
        return NULL;
    }
    s->b = b;
    s->logits = ds4_xmalloc(sizeof(float) * b->m->hp.n_vocab);
    s->charge = charge;
    b->used += charge;
    return s;
}

static int cl_session_new(eng_backend *b, eng_session **out, char *err, size_t errlen)
{
    *out = session_alloc(b, err, errlen);
    return *out ? 0 : -1;
}

static void cl_session_free(eng_session *s)
{
    if (!s)
        return;
    s->b->used -= s->charge;
    eng_fwd_seq_free(s->seq);
    free(s->ids);
    free(s->logits);
    free(s);
}

static uint32_t cl_session_len(const eng_session *s) { return s->n; }
static const int32_t *cl_session_tokens(const eng_session *s) { return s->ids; }
static uint64_t cl_session_bytes(const eng_session *s) { return s->charge; }

/* The last logits, computing them from the device state if needed. */
static int need_logits(eng_session *s, char *err, size_t errlen)
{
    if (s->have_logits || s->n == 0)
        return 0;
    if (eng_fwd_logits(s->seq, s->logits, err, errlen))
        return code(ENG_E_DEVICE);
    s->have_logits = 1;
    return 0;
}

static const float *cl_session_logits(const eng_session *s)
{
    eng_session *w = (eng_session *)s; /* the cache is logically const */
    if (s->n == 0 || need_logits(w, NULL, 0))
        return NULL;
    return s->logits;
}

static void reserve(eng_session *s, uint32_t need)
{
    if (need <= s->cap)
        return;
    uint32_t cap = s->cap ? s->cap : 256;
    while (cap < need)
        cap = cap > UINT32_MAX / 2 ? need : cap * 2;
    s->ids = ds4_xrealloc(s->ids, sizeof(int32_t) * cap);
    s->cap = cap;
}

/* Argument checks shared by eval and decode_batch (nothing changes). */
static int check_eval(const eng_session *s, const int32_t *ids, uint32_t n, char *err,
                      size_t errlen)
{
    const dsv4_hparams *hp = &s->b->m->hp;
    if (n == 0 || !ids)
        return fail(ENG_E_INVALID, err, errlen, "no tokens to evaluate");
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
            return fail(ENG_E_INVALID, err, errlen,
                        "token id %d at position %u out of range [0,%u)", ids[i], i,
                        hp->n_vocab);
    if ((uint64_t)s->n + n > s->b->max_ctx)
        return fail(ENG_E_CONTEXT, err, errlen,
                    "context limit: %u tokens held + %u new > %u", s->n, n,
                    s->b->max_ctx);
    return 0;
}

static int cl_eval(eng_session *s, const int32_t *ids, uint32_t n, uint32_t flags,
                   float *logits, char *err, size_t errlen)
{
    if (check_eval(s, ids, n, err, errlen))
        return -1;
    size_t V = s->b->m->hp.n_vocab;
    int all = (flags & ENG_EVAL_ALL_LOGITS) && logits;
    int rc;
    if (all) {
        rc = eng_fwd_eval_rows(s->seq, ids, n, 0, NULL, logits, err, errlen);
    } else if (logits) {
        uint8_t *want = ds4_xcalloc(n, 1);
        want[n - 1] = 1;
        rc = eng_fwd_eval_rows(s->seq, ids, n, 0, want, s->logits, err, errlen);
        free(want);
    } else {
        rc = eng_fwd_eval_rows(s->seq, ids, n, 0, NULL, NULL, err, errlen);
    }
    if (rc)
        return code(ENG_E_DEVICE);
    reserve(s, s->n + n);
    memcpy(s->ids + s->n, ids, sizeof(int32_t) * n);
    s->n += n;
    s->have_logits = logits != NULL;
    if (all)
        memcpy(s->logits, logits + (n - 1) * V, sizeof(float) * V);
    else if (logits)
        memcpy(logits, s->logits, sizeof(float) * V);
    return 0;
}

/* One decode step for every session at once (eng_fwd_decode_batch: the
 * weights are read once for the batch). */
static int cl_decode_batch(eng_session **s, const int32_t *ids, uint32_t n_seq,
                           float *logits, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < n_seq; i++) {
        if (!s[i])
            return fail(ENG_E_INVALID, err, errlen, "session %u is NULL", i);
        if (check_eval(s[i], &ids[i], 1, err, errlen))
            return -1;
        for (uint32_t j = 0; j < i; j++)
            if (s[j] == s[i])
                return fail(ENG_E_INVALID, err, errlen, "session %u appears twice", i);
        if (s[i]->b != s[0]->b)
            return fail(ENG_E_INVALID, err, errlen, "sessions of different backends");
    }
    if (n_seq == 0)
        return 0;
    size_t V = s[0]->b->m->hp.n_vocab;
    eng_fwd_seq **seqs = ds4_xmalloc(sizeof *seqs * n_seq);
    for (uint32_t i = 0; i < n_seq; i++)
        seqs[i] = s[i]->seq;
    int rc = eng_fwd_decode_batch(seqs, ids, n_seq, logits, err, errlen);
    free(seqs);
    if (rc)
        return code(ENG_E_DEVICE); /* the sessions' state is lost anyway */
    for (uint32_t i = 0; i < n_seq; i++) {
        reserve(s[i], s[i]->n + 1);
        s[i]->ids[s[i]->n++] = ids[i];
        s[i]->have_logits = logits != NULL;
        if (logits)
            memcpy(s[i]->logits, logits + V * i, sizeof(float) * V);
    }
    return 0;
}

static int cl_fork(const eng_session *src, eng_session **out, char *err, size_t errlen)
{
    *out = NULL;
    eng_session *s = session_alloc(src->b, err, errlen);
    if (!s)
        return -1;
    if (eng_fwd_seq_copy(s->seq, src->seq, err, errlen)) {
        cl_session_free(s);
        return code(ENG_E_DEVICE);
    }
    reserve(s, src->n ? src->n : 1);
    if (src->n)
        memcpy(s->ids, src->ids, sizeof(int32_t) * src->n);
    s->n = src->n;
    s->have_logits = src->have_logits;
    memcpy(s->logits, src->logits, sizeof(float) * src->b->m->hp.n_vocab);
    *out = s;
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The fixed header fields of this backend for n tokens. */
static void put_header(const eng_backend *b, uint8_t *p, uint32_t n, int has,
                       uint64_t state)
{
    const dsv4_hparams *hp = &b->m->hp;
    memset(p, 0, CLB_HDR);
    memcpy(p, CLB_MAGIC, 8);
    put32(p + 8, CLB_VERSION);
    put32(p + 12, eng_fwd_exact(b->f) ? 1u : 0u);
    put32(p + 16, hp->n_vocab);
    put32(p + 20, n);
    put32(p + 24, (uint32_t)has);
    put32(p + 28, hp->n_layer);
    put32(p + 32, hp->n_embd);
    put32(p + 36, hp->head_dim);
    put32(p + 40, hp->idx_head_dim);
    put32(p + 44, hp->n_swa);
    put64(p + 48, state);
    memcpy(p + 64, b->fp.exact, 64);
}

static int cl_snapshot(const eng_session *cs, void **blob, size_t *len, char *err,
                       size_t errlen)
{
    eng_session *s = (eng_session *)cs;
    *blob = NULL;
    *len = 0;
    if (need_logits(s, err, errlen))
        return -1;
    const eng_backend *b = s->b;
    uint32_t V = b->m->hp.n_vocab;
    int has = s->n > 0;
    uint64_t state = eng_fwd_state_blob_bytes(b->f, s->n);
    size_t sz = CLB_HDR + (size_t)s->n * 4 + (has ? (size_t)V * 4 : 0) + state + 8;
    uint8_t *p = ds4_xmalloc(sz);
    put_header(b, p, s->n, has, state);
    size_t o = CLB_HDR;
    for (uint32_t i = 0; i < s->n; i++, o += 4)
        put32(p + o, (uint32_t)s->ids[i]);
    if (has) {
        memcpy(p + o, s->logits, (size_t)V * 4); /* little-endian hosts */
        o += (size_t)V * 4;
    }
    if (eng_fwd_state_save(s->seq, p + o, err, errlen)) {
        free(p);
        return code(ENG_E_DEVICE);
    }
    o += state;
    put64(p + o, ds4_hash64(p, o, 0));
    *blob = p;
    *len = sz;
    return 0;
}

static int cl_restore(eng_backend *b, const void *blob, size_t len, eng_session **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    const uint8_t *p = blob;
    uint32_t V = b->m->hp.n_vocab;
    if (!p || len < CLB_HDR + 8 || memcmp(p, CLB_MAGIC, 8) != 0)
        return fail(ENG_E_BADSTATE, err, errlen, "not a cl-backend session snapshot");
    if (get32(p + 8) != CLB_VERSION)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot version %u, expected %u",
                    get32(p + 8), CLB_VERSION);
    uint32_t n = get32(p + 20), has = get32(p + 24);
    if (has > 1 || has != (n > 0))
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot header inconsistent");
    if (memcmp(p + 64, b->fp.exact, 64) != 0)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot is of another model "
                    "(fingerprint)");
    if (get32(p + 12) != (eng_fwd_exact(b->f) ? 1u : 0u))
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot made in %s mode, the "
                    "backend runs in %s mode", get32(p + 12) & 1 ? "exact" : "QAT",
                    eng_fwd_exact(b->f) ? "exact" : "QAT");
    if (n > b->max_ctx)
        return fail(ENG_E_CONTEXT, err, errlen, "snapshot holds %u tokens, context "
                    "is %u", n, b->max_ctx);
    uint64_t state = eng_fwd_state_blob_bytes(b->f, n);
    uint8_t want[CLB_HDR];
    put_header(b, want, n, (int)has, state);
    if (memcmp(p, want, CLB_HDR) != 0)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot dimensions do not match "
                    "this model");
    size_t body = (size_t)n * 4 + (has ? (size_t)V * 4 : 0) + (size_t)state;
    if (len != CLB_HDR + body + 8)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot size %zu, expected %zu",
                    len, (size_t)CLB_HDR + body + 8);
    if (ds4_hash64(p, CLB_HDR + body, 0) != get64(p + CLB_HDR + body))
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot checksum mismatch");
    for (uint32_t i = 0; i < n; i++) {
        int32_t id = (int32_t)get32(p + CLB_HDR + 4 * (size_t)i);
        if (id < 0 || (uint32_t)id >= V)
            return fail(ENG_E_BADSTATE, err, errlen, "snapshot token %u out of range",
                        i);
    }
    eng_session *s = session_alloc(b, err, errlen);
    if (!s)
        return -1;
    const uint8_t *st = p + CLB_HDR + (size_t)n * 4 + (has ? (size_t)V * 4 : 0);
    if (eng_fwd_state_load(s->seq, n, st, err, errlen)) {
        cl_session_free(s);
        return code(ENG_E_DEVICE);
    }
    reserve(s, n ? n : 1);
    for (uint32_t i = 0; i < n; i++)
        s->ids[i] = (int32_t)get32(p + CLB_HDR + 4 * (size_t)i);
    s->n = n;
    if (has)
        memcpy(s->logits, p + CLB_HDR + (size_t)n * 4, (size_t)V * 4);
    s->have_logits = (int)has;
    *out = s;
    return 0;
}

const eng_backend_ops eng_backend_cl_ops = {
    .name = "cl",
    .open = cl_open_backend,
    .close = cl_close_backend,
    .hparams = cl_hparams,
    .fingerprint = cl_fingerprint,
    .describe = cl_describe,
    .mem_used = cl_mem_used,
    .session_new = cl_session_new,
    .session_free = cl_session_free,
    .session_len = cl_session_len,
    .session_tokens = cl_session_tokens,
    .session_bytes = cl_session_bytes,
    .eval = cl_eval,
    .decode_batch = cl_decode_batch,
    .session_logits = cl_session_logits,
    .fork = cl_fork,
    .snapshot = cl_snapshot,
    .restore = cl_restore,
};
