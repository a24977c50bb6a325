/* eng_backend_ref.c - the "ref" backend (see eng_backend.h): sessions over
 * the plain-C reference forward (eng_ref). A session's state is its token
 * sequence and last logits; every eval recomputes the forward of the whole
 * sequence (logits only for the rows asked), so results depend on nothing
 * but the tokens. Slow (O(n^2) over a session's life) and exact: an oracle
 * for the "cl" backend and for engined's tests on tiny models.
 *
 * Snapshot blob (little-endian):
 *   0   8  magic "DS4REFS1"
 *   8   4  version (1)
 *   12  4  n_vocab
 *   16  4  n_tokens
 *   20  4  has_logits (0 or 1)
 *   24 64  exact model fingerprint (hex, no NUL)
 *   88  .. n_tokens int32 ids, then n_vocab float logits if has_logits
 *   end 8  hash64 of every byte before it */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/model_fp.h"
#include "common/util.h"
#include "eng_backend.h"
#include "eng_ref.h"

#define REF_MAGIC "DS4REFS1"
#define REF_VERSION 1u
#define REF_HDR 88u

struct eng_backend {
    eng_ref *ref;
    ds4_model_fp fp;
    uint32_t max_ctx;
    uint64_t budget;      /* 0: unlimited */
    uint64_t used;        /* bytes held by live sessions (at max size) */
    char desc[256];
};

struct eng_session {
    eng_backend *b;
    int32_t *ids;
    uint32_t n, cap;
    float *logits;        /* n_vocab, valid when n > 0 */
    uint64_t charge;      /* bytes charged against the budget */
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

static int ref_open(const eng_backend_opts *o, eng_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o || !o->model_path)
        return fail(ENG_E_INVALID, err, errlen, "no model path");
    eng_backend *b = calloc(1, sizeof *b);
    if (!b)
        return fail(ENG_E_NOMEM, err, errlen, "out of memory");
    if (eng_ref_open(o->model_path, &b->ref, err, errlen) != 0) {
        free(b);
        eng_backend_set_errcode(ENG_E_MODEL);
        return -1;
    }
    ds4_model_fingerprint(eng_ref_file(b->ref), &b->fp);
    b->max_ctx = o->max_ctx ? o->max_ctx : 32768;
    b->budget = o->state_budget;
    const dsv4_hparams *hp = eng_ref_hparams(b->ref);
    snprintf(b->desc, sizeof b->desc,
             "ref: plain-C float32 reference on the CPU (exact mode), %u layers, "
             "hidden %u, vocab %u", hp->n_layer, hp->n_embd, hp->n_vocab);
    *out = b;
    return 0;
}

static void ref_close(eng_backend *b)
{
    if (!b)
        return;
    eng_ref_close(b->ref);
    free(b);
}

static const dsv4_hparams *ref_hparams(const eng_backend *b) { return eng_ref_hparams(b->ref); }
static const char *ref_fingerprint(const eng_backend *b) { return b->fp.exact; }
static const char *ref_describe(const eng_backend *b) { return b->desc; }
static uint64_t ref_mem_used(const eng_backend *b) { return b->used; }

/* What a session may come to hold: max_ctx ids and one logits row. */
static uint64_t session_charge(const eng_backend *b)
{
    return (uint64_t)b->max_ctx * 4 + (uint64_t)eng_ref_hparams(b->ref)->n_vocab * 4;
}

static eng_session *session_alloc(eng_backend *b, char *err, size_t errlen)
{
    uint64_t charge = session_charge(b);
    if (b->budget && b->used + charge > b->budget) {
        fail(ENG_E_NOMEM, err, errlen,
             "session state budget exhausted (%" PRIu64 " of %" PRIu64 " bytes in use, "
             "a session needs %" PRIu64 ")", b->used, b->budget, charge);
        return NULL;
    }
    eng_session *s = calloc(1, sizeof *s);
    float *lg = malloc(sizeof(float) * eng_ref_hparams(b->ref)->n_vocab);
    if (!s || !lg) {
        free(s);
        free(lg);
        fail(ENG_E_NOMEM, err, errlen, "out of memory");
        return NULL;
    }
    s->b = b;
    s->logits = lg;
    s->charge = charge;
    b->used += charge;
    return s;
}

static int ref_session_new(eng_backend *b, eng_session **out, char *err, size_t errlen)
{
    *out = session_alloc(b, err, errlen);
    return *out ? 0 : -1;
}

static void ref_session_free(eng_session *s)
{
    if (!s)
        return;
    s->b->used -= s->charge;
    free(s->ids);
    free(s->logits);
    free(s);
}

static uint32_t ref_session_len(const eng_session *s) { return s->n; }
static const int32_t *ref_session_tokens(const eng_session *s) { return s->ids; }
static uint64_t ref_session_bytes(const eng_session *s) { return s->charge; }
static const float *ref_session_logits(const eng_session *s) { return s->n ? s->logits : NULL; }

static int reserve(eng_session *s, uint32_t need)
{
    if (need <= s->cap)
        return 0;
    uint32_t cap = s->cap ? s->cap : 256;
    while (cap < need)
        cap = cap > UINT32_MAX / 2 ? need : cap * 2;
    int32_t *p = realloc(s->ids, sizeof(int32_t) * cap);
    if (!p)
        return -1;
    s->ids = p;
    s->cap = cap;
    return 0;
}

static int ref_eval(eng_session *s, const int32_t *ids, uint32_t n, uint32_t flags,
                    float *logits, char *err, size_t errlen)
{
    eng_backend *b = s->b;
    const dsv4_hparams *hp = eng_ref_hparams(b->ref);
    if (n == 0 || !ids)
        return fail(ENG_E_INVALID, err, errlen, "no tokens to evaluate");
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
            return fail(ENG_E_INVALID, err, errlen,
                        "token id %d at position %u out of range [0,%u)", ids[i], i,
                        hp->n_vocab);
    if ((uint64_t)s->n + n > b->max_ctx)
        return fail(ENG_E_CONTEXT, err, errlen,
                    "context limit: %u tokens held + %u new > %u", s->n, n, b->max_ctx);
    if (reserve(s, s->n + n))
        return fail(ENG_E_NOMEM, err, errlen, "out of memory");
    uint32_t n0 = s->n, total = n0 + n;
    memcpy(s->ids + n0, ids, sizeof(int32_t) * n);
    uint32_t row0 = (flags & ENG_EVAL_ALL_LOGITS) ? n0 : total - 1;
    size_t V = hp->n_vocab;
    float *rows = malloc(sizeof(float) * V * (total - row0));
    if (!rows)
        return fail(ENG_E_NOMEM, err, errlen, "out of memory");
    if (eng_ref_forward_rows(b->ref, s->ids, total, row0, rows, err, errlen) != 0) {
        free(rows);
        eng_backend_set_errcode(ENG_E_MODEL);
        return -1;
    }
    memcpy(s->logits, rows + V * (total - 1 - row0), sizeof(float) * V);
    if (logits)
        memcpy(logits, rows, sizeof(float) * V * ((flags & ENG_EVAL_ALL_LOGITS) ? n : 1));
    free(rows);
    s->n = total;
    return 0;
}

static int ref_decode_batch(eng_session **s, const int32_t *ids, uint32_t n_seq, float *logits,
                            char *err, size_t errlen)
{
    if (n_seq == 0)
        return 0;
    /* validate everything first so a failure changes no session */
    for (uint32_t i = 0; i < n_seq; i++) {
        const dsv4_hparams *hp = eng_ref_hparams(s[i]->b->ref);
        if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
            return fail(ENG_E_INVALID, err, errlen, "token id %d of session %u out of range",
                        ids[i], i);
        if (s[i]->n + 1 > s[i]->b->max_ctx)
            return fail(ENG_E_CONTEXT, err, errlen, "context limit reached by session %u", i);
        for (uint32_t j = 0; j < i; j++)
            if (s[j] == s[i])
                return fail(ENG_E_INVALID, err, errlen, "session %u appears twice", i);
    }
    size_t V = eng_ref_hparams(s[0]->b->ref)->n_vocab;
    for (uint32_t i = 0; i < n_seq; i++)
        if (ref_eval(s[i], &ids[i], 1, 0, logits ? logits + V * i : NULL, err, errlen) != 0) {
            /* undo the sessions already advanced (their previous logits
             * are recomputed: the reference has no other state) */
            for (uint32_t j = 0; j < i; j++) {
                s[j]->n--;
                if (s[j]->n)
                    eng_ref_forward_rows(s[j]->b->ref, s[j]->ids, s[j]->n, s[j]->n - 1,
                                         s[j]->logits, NULL, 0);
            }
            return -1;
        }
    return 0;
}

static int ref_fork(const eng_session *src, eng_session **out, char *err, size_t errlen)
{
    eng_session *s = session_alloc(src->b, err, errlen);
    if (!s)
        return -1;
    if (reserve(s, src->n ? src->n : 1)) {
        ref_session_free(s);
        return fail(ENG_E_NOMEM, err, errlen, "out of memory");
    }
    if (src->n)
        memcpy(s->ids, src->ids, sizeof(int32_t) * src->n);
    s->n = src->n;
    memcpy(s->logits, src->logits, sizeof(float) * eng_ref_hparams(src->b->ref)->n_vocab);
    *out = s;
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int ref_snapshot(const eng_session *s, void **blob, size_t *len, char *err, size_t errlen)
{
    uint32_t V = eng_ref_hparams(s->b->ref)->n_vocab;
    int has = s->n > 0;
    size_t sz = REF_HDR + (size_t)s->n * 4 + (has ? (size_t)V * 4 : 0) + 8;
    uint8_t *p = malloc(sz);
    if (!p)
        return fail(ENG_E_NOMEM, err, errlen, "out of memory");
    memcpy(p, REF_MAGIC, 8);
    put32(p + 8, REF_VERSION);
    put32(p + 12, V);
    put32(p + 16, s->n);
    put32(p + 20, (uint32_t)has);
    memcpy(p + 24, s->b->fp.exact, 64);
    size_t o = REF_HDR;
    for (uint32_t i = 0; i < s->n; i++, o += 4)
        put32(p + o, (uint32_t)s->ids[i]);
    if (has) {
        memcpy(p + o, s->logits, (size_t)V * 4); /* host order: little-endian targets */
        o += (size_t)V * 4;
    }
    uint64_t h = ds4_hash64(p, o, 0);
    for (int i = 0; i < 8; i++)
        p[o + i] = (uint8_t)(h >> (8 * i));
    *blob = p;
    *len = sz;
    return 0;
}

static int ref_restore(eng_backend *b, const void *blob, size_t len, eng_session **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    const uint8_t *p = blob;
    uint32_t V = eng_ref_hparams(b->ref)->n_vocab;
    if (!p || len < REF_HDR + 8 || memcmp(p, REF_MAGIC, 8) != 0)
        return fail(ENG_E_BADSTATE, err, errlen, "not a ref-backend session snapshot");
    if (get32(p + 8) != REF_VERSION)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot version %u, expected %u",
                    get32(p + 8), REF_VERSION);
    uint32_t n = get32(p + 16), has = get32(p + 20);
    if (get32(p + 12) != V || has > 1 || (has != (n > 0)))
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot dimensions do not match this model");
    if (memcmp(p + 24, b->fp.exact, 64) != 0)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot is of another model (fingerprint)");
    if (n > b->max_ctx)
        return fail(ENG_E_CONTEXT, err, errlen, "snapshot holds %u tokens, context is %u", n,
                    b->max_ctx);
    size_t body = (size_t)n * 4 + (has ? (size_t)V * 4 : 0);
    if (len != REF_HDR + body + 8)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot size %zu, expected %zu", len,
                    (size_t)REF_HDR + body + 8);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | p[REF_HDR + body + i];
    if (ds4_hash64(p, REF_HDR + body, 0) != h)
        return fail(ENG_E_BADSTATE, err, errlen, "snapshot checksum mismatch");
    for (uint32_t i = 0; i < n; i++) {
        int32_t id = (int32_t)get32(p + REF_HDR + 4 * (size_t)i);
        if (id < 0 || (uint32_t)id >= V)
            return fail(ENG_E_BADSTATE, err, errlen, "snapshot token %u out of range", i);
    }
    eng_session *s = session_alloc(b, err, errlen);
    if (!s)
        return -1;
    if (reserve(s, n ? n : 1)) {
        ref_session_free(s);
        return fail(ENG_E_NOMEM, err, errlen, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++)
        s->ids[i] = (int32_t)get32(p + REF_HDR + 4 * (size_t)i);
    s->n = n;
    if (has)
        memcpy(s->logits, p + REF_HDR + (size_t)n * 4, (size_t)V * 4);
    *out = s;
    return 0;
}

const eng_backend_ops eng_backend_ref_ops = {
    .name = "ref",
    .open = ref_open,
    .close = ref_close,
    .hparams = ref_hparams,
    .fingerprint = ref_fingerprint,
    .describe = ref_describe,
    .mem_used = ref_mem_used,
    .session_new = ref_session_new,
    .session_free = ref_session_free,
    .session_len = ref_session_len,
    .session_tokens = ref_session_tokens,
    .session_bytes = ref_session_bytes,
    .eval = ref_eval,
    .decode_batch = ref_decode_batch,
    .session_logits = ref_session_logits,
    .fork = ref_fork,
    .snapshot = ref_snapshot,
    .restore = ref_restore,
};
