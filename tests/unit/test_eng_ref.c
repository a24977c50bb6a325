/* test_eng_ref.c - the plain-C reference forward pass (engined/eng_ref.c):
 * mechanism checks with hand-checkable properties (Sinkhorn projection,
 * RoPE inverse and norm, YaRN ramp), then the golden comparison against the
 * HF transformers fixtures in tests/data/forward/exact-seed1: the model is
 * regenerated from its seed, its SHA-256 checked against the fixture, the
 * prompt run, and the logits compared (relative L2 <= 1e-3 at every
 * position on the stored columns; argmax equal where the oracle's top-1 /
 * top-2 gap exceeds 10x the measured error). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "common/util.h"
#include "engined/eng_ref.h"
#include "test.h"


/* Deterministic pseudo-random floats in [-1, 1). */
static float rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * (1.0 / (1ull << 23))) - 1.0f;
}

/* Sinkhorn output: rows and columns of comb sum to ~1, pre/post ranges. */
static void test_hc_split(void)
{
    uint64_t s = 7;
    enum { HC = 4, MIX = (2 + HC) * HC };
    float mix[MIX], base[MIX], scale[3] = {0.7f, 1.3f, 2.1f};
    for (int i = 0; i < MIX; i++) {
        mix[i] = 3 * rnd(&s);
        base[i] = rnd(&s);
    }
    float pre[HC], post[HC], comb[HC * HC];
    /* 20 iterations: columns (normalised last) sum to 1, rows nearly; many
     * iterations: doubly stochastic */
    static const uint32_t iters[2] = {20, 400};
    static const double row_tol[2] = {5e-2, 1e-4};
    for (int it = 0; it < 2; it++) {
        eng_ref_hc_split(mix, scale, base, HC, iters[it], 1e-6f, pre, post, comb);
        for (int j = 0; j < HC; j++) {
            double rs = 0, cs = 0;
            for (int k = 0; k < HC; k++) {
                rs += comb[j * HC + k];
                cs += comb[k * HC + j];
                CHECK(comb[j * HC + k] > 0);
            }
            CHECKF(fabs(rs - 1) < row_tol[it] && fabs(cs - 1) < 1e-5,
                   "iters %u row %d: %g col %g", iters[it], j, rs, cs);
            CHECK(pre[j] > 0 && pre[j] < 1.00001f && post[j] > 0 && post[j] < 2);
        }
    }
    /* pre[0] is exactly sigmoid(mix*scale0 + base) + eps */
    double want = 1 / (1 + exp(-(mix[0] * 0.7 + base[0]))) + 1e-6;
    CHECK(fabs(pre[0] - want) < 1e-6);
}

/* RoPE: inverse undoes it, it keeps pair norms, leaves the nope dims. */
static void test_rope(void)
{
    enum { D = 128, R = 64 };
    float fm[R / 2], fy[R / 2];
    eng_ref_rope_freqs(fm, R, 10000.0f, 0, 1, 1, 0, 0);
    eng_ref_rope_freqs(fy, R, 160000.0f, 1, 16.0f, 65536.0, 32.0f, 1.0f);
    CHECK(fm[0] == 1.0f && fabs(fm[1] - pow(10000.0, -2.0 / 64)) < 1e-7);
    /* YaRN with base 160000: dims below 15 unscaled, from 25 on divided by 16 */
    for (int i = 0; i < R / 2; i++) {
        double f = pow(160000.0, -2.0 * i / 64);
        double want = i <= 15 ? f : i >= 25 ? f / 16 : f / 16 * (i - 15) / 10.0 + f * (1 - (i - 15) / 10.0);
        CHECKF(fabs(fy[i] - want) <= 1e-6 * want, "yarn %d: %g vs %g", i, fy[i], want);
    }
    uint64_t s = 3;
    float x[D], y[D];
    for (int i = 0; i < D; i++)
        x[i] = rnd(&s);
    for (uint32_t pos = 0; pos < 5000; pos += 997) {
        memcpy(y, x, sizeof x);
        eng_ref_rope(y, D, R, fy, pos, 0);
        CHECK(memcmp(y, x, sizeof(float) * (D - R)) == 0);
        double n0 = (double)x[D - 2] * x[D - 2] + (double)x[D - 1] * x[D - 1];
        double n1 = (double)y[D - 2] * y[D - 2] + (double)y[D - 1] * y[D - 1];
        CHECK(fabs(n0 - n1) < 1e-5);
        if (pos > 0)
            CHECK(y[D - R] != x[D - R]);
        eng_ref_rope(y, D, R, fy, pos, 1);
        double e = 0;
        for (int i = 0; i < D; i++)
            e = fmax(e, fabs(y[i] - x[i]));
        CHECKF(e < 1e-5, "rope inverse at %u: %g", pos, e);
    }
}

/* Read a raw fixture array of directory dir; element count (0: failure). */
static size_t rd(const char *dir, const char *name, void **p, size_t elem)
{
    char rel[512];
    size_t len = 0;
    snprintf(rel, sizeof rel, "forward/%s/%s", dir, name);
    *p = test_read_file(test_data_path(rel), &len);
    return *p ? len / elem : 0;
}

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* The golden comparison against the HF oracle's fixture in
 * tests/data/forward/<dir>, made from mkmodel --layout <layout> --seed 1. */
static void test_golden(const char *dir, int layout)
{
    char err[512], sha[65], path[] = "/tmp/test_eng_ref_XXXXXX";
    char *hdr = NULL;
    rd(dir, "header.json", (void **)&hdr, 1);
    CHECK(hdr != NULL);
    if (!hdr)
        return;
    const char *k = strstr(hdr, "\"model_sha256\"");
    char want_sha[65] = {0};
    CHECK(k && sscanf(k, "\"model_sha256\": \"%64[0-9a-f]\"", want_sha) == 1);

    dsv4_tokdata *tok = NULL;
    CHECKF(dsv4_tokdata_load(DSV4_TOKENIZER_JSON, &tok, err, sizeof err) == 0, "%s", err);
    if (!tok) {
        free(hdr);
        return;
    }
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.layout = layout;
    o.seed = 1;
    o.hp.n_vocab = tok->n_tokens;
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    int rc = dsv4_mkmodel_write(&o, path, sha, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECKF(rc == 0 && strcmp(sha, want_sha) == 0, "model sha %s, fixture %s", sha, want_sha);
    eng_ref *m = NULL;
    if (rc == 0)
        CHECKF(eng_ref_open(path, &m, err, sizeof err) == 0, "%s", err);
    unlink(path);
    dsv4_tokdata_free(tok);
    free(hdr);
    if (!m)
        return;
    uint32_t V = eng_ref_hparams(m)->n_vocab;

    int32_t *ids, *cols, *spos, *tids, *fpos;
    float *sub, *tl, *full;
    size_t S = rd(dir, "prompt.i32", (void **)&ids, 4);
    size_t nc = rd(dir, "subset_cols.i32", (void **)&cols, 4);
    size_t np = rd(dir, "subset_pos.i32", (void **)&spos, 4);
    size_t ns = rd(dir, "subset_logits.f32", (void **)&sub, 4);
    size_t nt = rd(dir, "top64_ids.i32", (void **)&tids, 4);
    size_t ntl = rd(dir, "top64_logits.f32", (void **)&tl, 4);
    size_t nf = rd(dir, "full_pos.i32", (void **)&fpos, 4);
    size_t nfl = rd(dir, "full_logits.f32", (void **)&full, 4);
    CHECK(S > 0 && nc > 0 && ns == np * nc && nt == S * 64 && ntl == nt && nfl == nf * V);
    if (!(S > 0 && nc > 0 && ns == np * nc && nt == S * 64 && ntl == nt && nfl == nf * V))
        goto out;

    float *lg = ds4_xmalloc(sizeof(float) * S * V);
    for (size_t i = 0; i < S * V; i++)
        lg[i] = NAN; /* poison */
    /* bad input is refused */
    int32_t bad = (int32_t)V;
    CHECK(eng_ref_forward(m, &bad, 1, lg, err, sizeof err) == -1 && strstr(err, "out of range"));
    uint64_t t0 = ds4_now_ns();
    rc = eng_ref_forward(m, ids, (uint32_t)S, lg, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    printf("eng_ref forward of %zu tokens: %.1f s\n", S, (ds4_now_ns() - t0) / 1e9);

    float *errs = ds4_xmalloc(sizeof(float) * S);
    size_t si = 0, checked = 0, near = 0, agree = 0, worst = 0;
    for (size_t t = 0; t < S; t++) {
        const float *row = lg + t * V;
        double dn = 0, rn = 0, maxabs = 0;
        /* stored columns: the top 64, the subset where stored, full rows */
        for (int j = 0; j < 64; j++) {
            double d = row[tids[t * 64 + j]] - (double)tl[t * 64 + j];
            dn += d * d;
            rn += (double)tl[t * 64 + j] * tl[t * 64 + j];
            maxabs = fmax(maxabs, fabs(d));
        }
        while (si < np && (size_t)spos[si] < t)
            si++;
        if (si < np && (size_t)spos[si] == t)
            for (size_t j = 0; j < nc; j++) {
                double d = row[cols[j]] - (double)sub[si * nc + j];
                dn += d * d;
                rn += (double)sub[si * nc + j] * sub[si * nc + j];
            }
        for (size_t f = 0; f < nf; f++)
            if ((size_t)fpos[f] == t)
                for (size_t v = 0; v < V; v++) {
                    double d = row[v] - (double)full[f * V + v];
                    dn += d * d;
                    rn += (double)full[f * V + v] * full[f * V + v];
                }
        errs[t] = (float)sqrt(dn / (rn > 0 ? rn : 1e-30));
        if (!(errs[t] <= 1e-3f)) /* NaN fails too */
            worst++;
        if (worst && worst <= 5 && !(errs[t] <= 1e-3f))
            fprintf(stderr, "position %zu: rel L2 %g\n", t, errs[t]);
        uint32_t am = 0;
        for (uint32_t v = 1; v < V; v++)
            if (row[v] > row[am])
                am = v;
        double gap = tl[t * 64] - (double)tl[t * 64 + 1];
        if (gap > 10 * maxabs) {
            checked++;
            agree += am == (uint32_t)tids[t * 64];
        } else {
            near++;
        }
    }
    CHECKF(worst == 0, "%zu of %zu positions over rel L2 1e-3", worst, S);
    CHECKF(agree == checked, "argmax equal at %zu of %zu positions", agree, checked);
    float *sorted = ds4_xmalloc(sizeof(float) * S);
    memcpy(sorted, errs, sizeof(float) * S);
    qsort(sorted, S, sizeof(float), cmpf);
    printf("eng_ref vs HF %s: rel L2 max %.3g median %.3g; argmax %zu/%zu, "
           "%zu near-ties\n", dir, sorted[S - 1], sorted[S / 2], agree, checked, near);
    free(sorted);
    free(errs);
    free(lg);
out:
    free(ids);
    free(cols);
    free(spos);
    free(sub);
    free(tids);
    free(tl);
    free(fpos);
    free(full);
    eng_ref_close(m);
}

int main(void)
{
    test_hc_split();
    test_rope();
    /* under the sanitizers the q2 fixture alone (it runs every dequantizer
     * the exact one does and more); the release run checks both */
    if (!test_sanitized())
        test_golden("exact-seed1", DSV4_MK_EXACT);
    else
        printf("sanitizer build: exact-seed1 golden left to the release run\n");
    test_golden("q2-seed1", DSV4_MK_Q2);
    return test_main_end("eng_ref");
}
