/* test_eng_sample.c - the sampler on synthetic logits: greedy and its tie
 * rule, NaN/-inf handling, and the distribution of many seeded draws under
 * temperature, top_k, top_p, min_p and their combinations compared with
 * the distribution the pipeline of eng_sample.h defines (fixed seeds, so
 * the counts are exact and the test cannot flake); seeds reproduce and
 * diverge; log-probabilities normalise and rank. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engined/eng_sample.h"
#include "test.h"

#define V 8

static eng_sample_scratch SCR;

/* logits: token i gets log(p[i]) for i < n, the rest -1e9 (never kept). */
static void set_probs(float *l, const double *p, int n)
{
    for (int i = 0; i < V; i++)
        l[i] = -1e9f;
    for (int i = 0; i < n; i++)
        l[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

/* Draw N tokens; counts per token; returns how many fell outside [0,n). */
static int draw(const float *l, const eng_sample_params *sp, uint64_t seed, int N, int n,
                long *cnt)
{
    eng_rng r;
    eng_rng_seed(&r, seed);
    memset(cnt, 0, sizeof(long) * (size_t)n);
    int out = 0;
    for (int k = 0; k < N; k++) {
        int32_t t = eng_sample(l, V, sp, &r, &SCR);
        if (t >= 0 && t < n)
            cnt[t]++;
        else
            out++;
    }
    return out;
}

/* Each observed frequency within tol (absolute) of want; zeros exact. */
static void check_freq(const char *what, const long *cnt, const double *want, int n, int N,
                       double tol)
{
    for (int i = 0; i < n; i++) {
        double f = (double)cnt[i] / N;
        if (want[i] == 0)
            CHECKF(cnt[i] == 0, "%s: token %d drawn %ld times, must never be", what, i, cnt[i]);
        else
            CHECKF(fabs(f - want[i]) < tol, "%s: token %d freq %.4f want %.4f", what, i, f,
                   want[i]);
    }
}

static void test_greedy_and_edges(void)
{
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = (float)(i % 4);
    eng_sample_params sp;
    eng_sample_defaults(&sp);
    CHECK(sp.temperature == 1.0f && sp.top_p == 1.0f && sp.min_p == 0.05f && sp.top_k == 0);
    CHECK(eng_argmax(l, V) == 3); /* first of the ties (3 and 7) */
    sp.temperature = 0;
    eng_rng r;
    eng_rng_seed(&r, 1);
    uint64_t before = r.s;
    CHECK(eng_sample(l, V, &sp, &r, &SCR) == 3);
    CHECK(r.s == before); /* greedy draws nothing */
    sp.temperature = 1;
    sp.top_k = 1;
    CHECK(eng_sample(l, V, &sp, &r, &SCR) == 3);
    /* NaN and -inf are never chosen; none finite: -1 */
    for (int i = 0; i < V; i++)
        l[i] = NAN;
    l[5] = -INFINITY;
    CHECK(eng_argmax(l, V) == -1);
    sp.top_k = 0;
    CHECK(eng_sample(l, V, &sp, &r, &SCR) == -1);
    l[2] = 3.0f;
    l[3] = 2.9f;
    sp.min_p = 0;
    for (int k = 0; k < 100; k++) {
        int32_t t = eng_sample(l, V, &sp, &r, &SCR);
        CHECK(t == 2 || t == 3);
    }
    /* min_p above the top's probability ratio keeps only the top */
    for (int i = 0; i < V; i++)
        l[i] = 0;
    l[7] = 0.01f;
    sp.min_p = 1.0f;
    CHECK(eng_sample(l, V, &sp, &r, &SCR) == 7);
    /* rng: floats in [0, 1), seeds reproduce */
    eng_rng a, b;
    eng_rng_seed(&a, 0);
    eng_rng_seed(&b, 0);
    int in = 1, same = 1;
    for (int k = 0; k < 10000; k++) {
        float x = eng_rng_float(&a);
        in &= x >= 0 && x < 1;
        same &= x == eng_rng_float(&b);
    }
    CHECK(in && same);
    eng_rng_seed(&b, 1);
    CHECK(eng_rng_next(&a) != eng_rng_next(&b));
}

static void test_distributions(void)
{
    enum { N = 100000 };
    const double tol = 0.007; /* ~4.5 sigma at N = 100000 */
    static const double p[5] = {0.4, 0.3, 0.15, 0.1, 0.05};
    float l[V];
    long cnt[5];
    set_probs(l, p, 5);
    eng_sample_params sp = {.temperature = 1, .top_p = 1, .min_p = 0, .top_k = 0};
    CHECK(draw(l, &sp, 11, N, 5, cnt) == 0);
    check_freq("plain", cnt, p, 5, N, tol);
    /* temperature 2: p^(1/2) renormalised */
    double w[5], s = 0;
    for (int i = 0; i < 5; i++)
        s += (w[i] = sqrt(p[i]));
    for (int i = 0; i < 5; i++)
        w[i] /= s;
    sp.temperature = 2;
    CHECK(draw(l, &sp, 12, N, 5, cnt) == 0);
    check_freq("temperature 2", cnt, w, 5, N, tol);
    /* temperature 0.5: p^2 renormalised */
    s = 0;
    for (int i = 0; i < 5; i++)
        s += (w[i] = p[i] * p[i]);
    for (int i = 0; i < 5; i++)
        w[i] /= s;
    sp.temperature = 0.5f;
    CHECK(draw(l, &sp, 13, N, 5, cnt) == 0);
    check_freq("temperature 0.5", cnt, w, 5, N, tol);
    /* top_k 2: 0.4 : 0.3 */
    sp.temperature = 1;
    sp.top_k = 2;
    const double k2[5] = {0.4 / 0.7, 0.3 / 0.7, 0, 0, 0};
    CHECK(draw(l, &sp, 14, N, 5, cnt) == 0);
    check_freq("top_k 2", cnt, k2, 5, N, tol);
    /* top_p 0.7: the shortest prefix reaching 0.7 is {0.4, 0.3} */
    sp.top_k = 0;
    sp.top_p = 0.7f;
    CHECK(draw(l, &sp, 15, N, 5, cnt) == 0);
    check_freq("top_p 0.7", cnt, k2, 5, N, tol);
    /* top_p 0.71: one more token */
    sp.top_p = 0.71f;
    const double p3[5] = {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0};
    CHECK(draw(l, &sp, 16, N, 5, cnt) == 0);
    check_freq("top_p 0.71", cnt, p3, 5, N, tol);
    /* top_p 0: only the top token */
    sp.top_p = 0;
    const double p1[5] = {1, 0, 0, 0, 0};
    CHECK(draw(l, &sp, 17, 1000, 5, cnt) == 0);
    check_freq("top_p 0", cnt, p1, 5, 1000, 1e-9);
    /* min_p 0.3: keep p >= 0.12 -> {0.4, 0.3, 0.15} */
    sp.top_p = 1;
    sp.min_p = 0.3f;
    CHECK(draw(l, &sp, 18, N, 5, cnt) == 0);
    check_freq("min_p 0.3", cnt, p3, 5, N, tol);
    /* the ds4 default min_p 0.05 against 0.05 relative: keeps p >= 0.02 */
    sp.min_p = 0.05f;
    CHECK(draw(l, &sp, 19, N, 5, cnt) == 0);
    check_freq("min_p 0.05", cnt, p, 5, N, tol);
    /* top_k 4 then top_p 0.8 of the top-4 mass (0.95): 0.76 -> {0.4,0.3,0.15} */
    sp.min_p = 0;
    sp.top_k = 4;
    sp.top_p = 0.8f;
    CHECK(draw(l, &sp, 20, N, 5, cnt) == 0);
    check_freq("top_k 4 + top_p 0.8", cnt, p3, 5, N, tol);
    /* same seed, same draws; another seed, other draws */
    long c2[5];
    draw(l, &sp, 20, 2000, 5, cnt);
    draw(l, &sp, 20, 2000, 5, c2);
    CHECK(memcmp(cnt, c2, sizeof cnt) == 0);
    eng_rng r1, r2;
    eng_rng_seed(&r1, 5);
    eng_rng_seed(&r2, 6);
    sp.top_k = 0;
    sp.top_p = 1;
    int differ = 0;
    for (int k = 0; k < 50; k++)
        differ += eng_sample(l, V, &sp, &r1, &SCR) != eng_sample(l, V, &sp, &r2, &SCR);
    CHECK(differ > 10);
}

/* A full-size vocabulary: every draw is a token the pipeline keeps. */
static void test_big_vocab(void)
{
    enum { NV = 129280 };
    float *l = malloc(sizeof(float) * NV);
    uint64_t x = 99;
    for (int i = 0; i < NV; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 12.0);
    }
    int32_t top = eng_argmax(l, NV);
    eng_sample_params sp = {.temperature = 0.7f, .top_p = 0.9f, .min_p = 0.05f, .top_k = 40};
    eng_rng r;
    eng_rng_seed(&r, 3);
    /* 40th largest logit: the smallest a top_k 40 draw may return */
    float *sorted = malloc(sizeof(float) * NV);
    memcpy(sorted, l, sizeof(float) * NV);
    for (int k = 0; k < 40; k++) { /* partial selection sort */
        int b = k;
        for (int i = k + 1; i < NV; i++)
            if (sorted[i] > sorted[b])
                b = i;
        float t = sorted[k];
        sorted[k] = sorted[b];
        sorted[b] = t;
    }
    int ok = 1;
    for (int k = 0; k < 300; k++) {
        int32_t t = eng_sample(l, NV, &sp, &r, &SCR);
        ok &= t >= 0 && l[t] >= sorted[39] &&
              expf((l[t] - l[top]) / sp.temperature) >= sp.min_p;
    }
    CHECK(ok);
    /* logprobs: normalised, ranked, the chosen one consistent */
    int32_t ids[8];
    float lps[8], lp;
    CHECK(eng_logprobs(l, NV, 17, 8, &lp, ids, lps) == 8);
    CHECK(ids[0] == top);
    for (int k = 1; k < 8; k++)
        CHECK(lps[k] <= lps[k - 1] && l[ids[k]] <= l[ids[k - 1]]);
    double z = 0;
    for (int i = 0; i < NV; i++)
        z += exp((double)l[i] - l[top]);
    CHECK(fabs(lp - ((double)l[17] - l[top] - log(z))) < 1e-4);
    CHECK(fabs(lps[0] - (-log(z))) < 1e-4);
    free(sorted);
    free(l);
}

int main(void)
{
    test_greedy_and_edges();
    test_distributions();
    test_big_vocab();
    eng_sample_scratch_free(&SCR);
    return test_main_end("test_eng_sample");
}
