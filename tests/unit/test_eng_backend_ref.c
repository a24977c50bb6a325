/* test_eng_backend_ref.c - the eng_backend contract on the "ref" backend:
 * logits independent of how a sequence is split into evals (and equal to
 * the reference's full forward), ALL_LOGITS rows, snapshot/restore/fork
 * continuing identically, hostile or foreign snapshots refused, context
 * limit and bad ids refused with the session unchanged, decode_batch equal
 * to separate evals, the state budget enforced. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "engined/eng_backend.h"
#include "engined/eng_ref.h"
#include "test.h"

#ifndef DSV4_TOKENIZER_JSON
#define DSV4_TOKENIZER_JSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"
#endif

static char g_path[2][256];

static int make_model(int which, uint64_t seed)
{
    dsv4_tokdata *tok = NULL;
    char err[512];
    const char *path = getenv("DS4_TOKENIZER_JSON");
    CHECKF(dsv4_tokdata_load(path ? path : DSV4_TOKENIZER_JSON, &tok, err, sizeof err) == 0,
           "%s", err);
    if (!tok)
        return -1;
    static const uint32_t ratios[] = {0, 4, 128};
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.seed = seed;
    o.hp.n_vocab = tok->n_tokens;
    o.hp.n_layer = 3;
    for (uint32_t i = 0; i < 3; i++)
        o.hp.compress_ratio[i] = ratios[i];
    o.hp.n_hash_layer = 1;
    o.hp.n_expert = 4;
    o.hp.n_expert_used = 2;
    int rc = dsv4_mkmodel_write(&o, g_path[which], NULL, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    dsv4_tokdata_free(tok);
    return rc;
}

static int same(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

int main(void)
{
    for (int i = 0; i < 2; i++)
        snprintf(g_path[i], sizeof g_path[i], "/tmp/test_eng_backend_ref_%d_%d.gguf",
                 (int)getpid(), i);
    if (make_model(0, 3) || make_model(1, 4))
        goto out;
    const eng_backend_ops *ops = eng_backend_find("ref");
    CHECK(ops != NULL);
    CHECK(eng_backend_find("nonesuch") == NULL);
    if (!ops)
        goto out;
    char err[512];
    eng_backend *b = NULL, *b2 = NULL;
    eng_backend_opts o = {.model_path = g_path[0], .max_ctx = 200};
    CHECKF(ops->open(&o, &b, err, sizeof err) == 0, "%s", err);
    eng_backend_opts o2 = {.model_path = g_path[1], .max_ctx = 200};
    CHECKF(ops->open(&o2, &b2, err, sizeof err) == 0, "%s", err);
    eng_backend_opts bad = {.model_path = "/nonexistent.gguf"};
    eng_backend *bb = NULL;
    CHECK(ops->open(&bad, &bb, err, sizeof err) != 0 && bb == NULL);
    CHECK(eng_backend_errcode() == ENG_E_MODEL);
    if (!b || !b2)
        goto out;
    const dsv4_hparams *hp = ops->hparams(b);
    size_t V = hp->n_vocab;
    CHECK(strlen(ops->fingerprint(b)) == 64);
    CHECK(strcmp(ops->fingerprint(b), ops->fingerprint(b2)) != 0);

    /* a prompt of 150 ids (crosses a ratio-128 block and wraps the window) */
    enum { N = 150 };
    int32_t ids[N];
    uint64_t r = 12345;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(1000 + (r >> 33) % 50000);
    }
    /* oracle: the reference's full forward, last rows */
    eng_ref *ref = NULL;
    CHECKF(eng_ref_open(g_path[0], &ref, err, sizeof err) == 0, "%s", err);
    float *want = malloc(sizeof(float) * V * 3);
    CHECKF(eng_ref_forward_rows(ref, ids, N, N - 3, want, err, sizeof err) == 0, "%s", err);
    eng_ref_close(ref);

    eng_session *s1 = NULL, *s2 = NULL;
    float *lg = malloc(sizeof(float) * V * 3);
    CHECK(ops->session_new(b, &s1, err, sizeof err) == 0);
    CHECK(ops->session_len(s1) == 0 && ops->session_logits(s1) == NULL);
    /* one eval of everything but the last three, then ALL_LOGITS of three */
    CHECK(ops->eval(s1, ids, N - 3, 0, lg, err, sizeof err) == 0);
    CHECK(ops->eval(s1, ids + N - 3, 3, ENG_EVAL_ALL_LOGITS, lg, err, sizeof err) == 0);
    CHECK(same(lg, want, V * 3));
    CHECK(ops->session_len(s1) == N);
    CHECK(memcmp(ops->session_tokens(s1), ids, sizeof ids) == 0);
    CHECK(same(ops->session_logits(s1), want + 2 * V, V));
    /* split differently: 1 + 70 + rest one by one at the end */
    CHECK(ops->session_new(b, &s2, err, sizeof err) == 0);
    CHECK(ops->eval(s2, ids, 1, 0, NULL, err, sizeof err) == 0);
    CHECK(ops->eval(s2, ids + 1, 70, 0, NULL, err, sizeof err) == 0);
    CHECK(ops->eval(s2, ids + 71, N - 73, 0, NULL, err, sizeof err) == 0);
    CHECK(ops->eval(s2, ids + N - 2, 1, 0, lg, err, sizeof err) == 0);
    CHECK(same(lg, want + V, V));
    /* decode_batch of (s2 <- last id) equals the eval result */
    eng_session *pair[2] = {s2, NULL};
    int32_t next[2] = {ids[N - 1], 7};
    CHECK(ops->decode_batch(pair, next, 1, lg, err, sizeof err) == 0);
    CHECK(same(lg, want + 2 * V, V));

    /* bad ids and context limit leave the session unchanged */
    int32_t badid = (int32_t)V;
    CHECK(ops->eval(s1, &badid, 1, 0, lg, err, sizeof err) != 0);
    CHECK(eng_backend_errcode() == ENG_E_INVALID);
    int32_t neg = -1;
    CHECK(ops->eval(s1, &neg, 1, 0, lg, err, sizeof err) != 0);
    int32_t many[60];
    for (int i = 0; i < 60; i++)
        many[i] = 100 + i;
    CHECK(ops->eval(s1, many, 60, 0, lg, err, sizeof err) != 0);
    CHECK(eng_backend_errcode() == ENG_E_CONTEXT);
    CHECK(strstr(err, "context") != NULL);
    CHECK(ops->session_len(s1) == N && same(ops->session_logits(s1), want + 2 * V, V));
    CHECK(ops->eval(s1, many, 0, 0, lg, err, sizeof err) != 0);
    /* decode_batch with one bad member changes no session */
    eng_session *s3 = NULL;
    CHECK(ops->fork(s1, &s3, err, sizeof err) == 0);
    pair[0] = s1;
    pair[1] = s3;
    int32_t mixed[2] = {5, (int32_t)V + 3};
    CHECK(ops->decode_batch(pair, mixed, 2, lg, err, sizeof err) != 0);
    CHECK(ops->session_len(s1) == N && ops->session_len(s3) == N);
    pair[1] = s1;
    int32_t dup[2] = {5, 6};
    CHECK(ops->decode_batch(pair, dup, 2, lg, err, sizeof err) != 0);

    /* fork: independent continuation equal to the original's */
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    int32_t cont[4] = {42, 4242, 17, 99};
    CHECK(ops->eval(s3, cont, 4, 0, la, err, sizeof err) == 0);
    CHECK(ops->session_len(s1) == N);
    /* snapshot of s1, restore, same continuation */
    void *blob = NULL;
    size_t blen = 0;
    CHECK(ops->snapshot(s1, &blob, &blen, err, sizeof err) == 0);
    eng_session *s4 = NULL;
    CHECKF(ops->restore(b, blob, blen, &s4, err, sizeof err) == 0, "%s", err);
    if (s4) {
        CHECK(ops->session_len(s4) == N);
        CHECK(same(ops->session_logits(s4), want + 2 * V, V));
        CHECK(ops->eval(s4, cont, 4, 0, lb, err, sizeof err) == 0);
        CHECK(same(la, lb, V));
        ops->session_free(s4);
    }
    /* decode_batch of two sessions equals their separate evals */
    eng_session *s5 = NULL;
    CHECK(ops->restore(b, blob, blen, &s5, err, sizeof err) == 0);
    pair[0] = s1;
    pair[1] = s5;
    int32_t two[2] = {42, 43};
    float *l2 = malloc(sizeof(float) * V * 2);
    CHECK(ops->decode_batch(pair, two, 2, l2, err, sizeof err) == 0);
    eng_session *s6 = NULL;
    CHECK(ops->restore(b, blob, blen, &s6, err, sizeof err) == 0);
    CHECK(ops->eval(s6, &two[1], 1, 0, lb, err, sizeof err) == 0);
    CHECK(same(l2 + V, lb, V));

    /* hostile snapshots: every single-byte corruption of the header and a
     * sample of the body, truncations, another model's fingerprint */
    uint8_t *cp = malloc(blen);
    int refused = 0, tried = 0;
    for (size_t i = 0; i < blen; i += (i < 128 ? 1 : 997)) {
        memcpy(cp, blob, blen);
        cp[i] ^= 0x41;
        eng_session *x = NULL;
        tried++;
        if (ops->restore(b, cp, blen, &x, err, sizeof err) != 0 && x == NULL)
            refused++;
        else
            ops->session_free(x);
    }
    CHECKF(refused == tried, "%d of %d corrupted snapshots refused", refused, tried);
    for (size_t cut = 0; cut < blen; cut += blen / 13 + 1) {
        eng_session *x = NULL;
        CHECK(ops->restore(b, blob, cut, &x, err, sizeof err) != 0 && x == NULL);
    }
    eng_session *x = NULL;
    CHECK(ops->restore(b2, blob, blen, &x, err, sizeof err) != 0 && x == NULL);
    CHECK(eng_backend_errcode() == ENG_E_BADSTATE && strstr(err, "model") != NULL);
    free(cp);
    free(blob);
    /* empty session snapshot round-trips */
    eng_session *e = NULL, *e2 = NULL;
    CHECK(ops->session_new(b, &e, err, sizeof err) == 0);
    CHECK(ops->snapshot(e, &blob, &blen, err, sizeof err) == 0);
    CHECK(ops->restore(b, blob, blen, &e2, err, sizeof err) == 0 && ops->session_len(e2) == 0);
    free(blob);
    ops->session_free(e);
    ops->session_free(e2);

    ops->session_free(s1);
    ops->session_free(s2);
    ops->session_free(s3);
    ops->session_free(s5);
    ops->session_free(s6);
    CHECK(ops->mem_used(b) == 0);
    ops->close(b);
    ops->close(b2);

    /* the state budget: room for exactly two sessions */
    eng_backend_opts ob = {.model_path = g_path[0], .max_ctx = 100};
    CHECK(ops->open(&ob, &b, err, sizeof err) == 0);
    if (b) {
        eng_session *a1 = NULL, *a2 = NULL, *a3 = NULL;
        CHECK(ops->session_new(b, &a1, err, sizeof err) == 0);
        uint64_t one = ops->session_bytes(a1);
        ops->session_free(a1);
        ops->close(b);
        ob.state_budget = 2 * one;
        CHECK(ops->open(&ob, &b, err, sizeof err) == 0);
        CHECK(ops->session_new(b, &a1, err, sizeof err) == 0);
        CHECK(ops->session_new(b, &a2, err, sizeof err) == 0);
        CHECK(ops->session_new(b, &a3, err, sizeof err) != 0 && a3 == NULL);
        CHECK(eng_backend_errcode() == ENG_E_NOMEM && strstr(err, "budget") != NULL);
        ops->session_free(a2);
        CHECK(ops->session_new(b, &a3, err, sizeof err) == 0);
        ops->session_free(a1);
        ops->session_free(a3);
        ops->close(b);
    }
    free(want);
    free(lg);
    free(la);
    free(lb);
    free(l2);
out:
    for (int i = 0; i < 2; i++)
        unlink(g_path[i]);
    return test_main_end("eng_backend_ref");
}
