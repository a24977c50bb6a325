/* eng_sample.c - sampling and log-probabilities (see eng_sample.h). */
#include "eng_sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/util.h"

void eng_sample_defaults(eng_sample_params *p)
{
    p->temperature = ENG_SAMPLE_DEF_TEMPERATURE;
    p->top_p = ENG_SAMPLE_DEF_TOP_P;
    p->min_p = ENG_SAMPLE_DEF_MIN_P;
    p->top_k = ENG_SAMPLE_DEF_TOP_K;
}

/* splitmix64: spreads any seed (0 included) over the state space. */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void eng_rng_seed(eng_rng *r, uint64_t seed)
{
    r->s = splitmix64(seed);
    if (!r->s)
        r->s = 0x2545F4914F6CDD1Dull;
}

uint64_t eng_rng_next(eng_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float eng_rng_float(eng_rng *r)
{
    return (float)(eng_rng_next(r) >> 40) / 16777216.0f;
}

uint64_t eng_rng_os_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    }
    return s;
}

/* a ranks before b: larger logit, then lower id. */
static inline int better(const float *l, uint32_t a, uint32_t b)
{
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

int32_t eng_argmax(const float *logits, uint32_t n)
{
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++) {
        float v = logits[i];
        if (isnan(v) || v == -INFINITY)
            continue;
        if (best < 0 || v > logits[best])
            best = (int32_t)i;
    }
    return best;
}

static void reserve(eng_sample_scratch *scr, size_t n)
{
    if (scr->cap >= n)
        return;
    free(scr->idx);
    free(scr->w);
    scr->idx = ds4_xmalloc(n * sizeof *scr->idx);
    scr->w = ds4_xmalloc(n * sizeof *scr->w);
    scr->cap = n;
}

void eng_sample_scratch_free(eng_sample_scratch *scr)
{
    free(scr->idx);
    free(scr->w);
    memset(scr, 0, sizeof *scr);
}

/* Min-heap (worst on top) of at most k ids by `better`. */
static void heap_sift_down(const float *l, uint32_t *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t a = 2 * i + 1, b = a + 1, w = i;
        if (a < n && better(l, h[w], h[a]))
            w = a;
        if (b < n && better(l, h[w], h[b]))
            w = b;
        if (w == i)
            return;
        uint32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_sift_up(const float *l, uint32_t *h, uint32_t i)
{
    while (i) {
        uint32_t p = (i - 1) / 2;
        if (!better(l, h[p], h[i]))
            return;
        uint32_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* The k best finite ids of l into out, sorted best first; returns count. */
static uint32_t top_ids(const float *l, uint32_t n, uint32_t k, uint32_t *out)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (isnan(l[i]) || l[i] == -INFINITY)
            continue;
        if (m < k) {
            out[m] = i;
            heap_sift_up(l, out, m++);
        } else if (better(l, i, out[0])) {
            out[0] = i;
            heap_sift_down(l, out, m, 0);
        }
    }
    /* heap sort: pop the worst to the end */
    for (uint32_t e = m; e > 1; e--) {
        uint32_t t = out[0];
        out[0] = out[e - 1];
        out[e - 1] = t;
        heap_sift_down(l, out, e - 1, 0);
    }
    return m;
}

/* Max-heap (best on top) sift-down, for the top_p prefix. */
static void maxheap_sift_down(const float *l, uint32_t *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t a = 2 * i + 1, b = a + 1, w = i;
        if (a < n && better(l, h[a], h[w]))
            w = a;
        if (b < n && better(l, h[b], h[w]))
            w = b;
        if (w == i)
            return;
        uint32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The shortest most-probable prefix of the candidates idx[0..nc) whose
 * weight reaches target, moved to idx[0..k) in descending order with its
 * weights in w; returns k. A heap gives it in O(nc + k log nc) instead of
 * sorting the whole vocabulary. */
static uint32_t top_p_prefix(const float *l, uint32_t *idx, uint32_t nc, float *w, double mx,
                             double invT, double target)
{
    for (uint32_t i = nc / 2; i-- > 0;)
        maxheap_sift_down(l, idx, nc, i);
    uint32_t hn = nc, k = 0;
    double cum = 0;
    while (hn > 0) {
        uint32_t best = idx[0];
        idx[0] = idx[--hn];
        maxheap_sift_down(l, idx, hn, 0);
        idx[hn] = best; /* popped ids collect at the end, best last */
        w[k++] = (float)exp((l[best] - mx) * invT);
        cum += w[k - 1];
        if (cum >= target)
            break;
    }
    /* idx[nc-k .. nc) holds them worst-first: put them at the front, best first */
    for (uint32_t j = 0; j < k; j++) {
        uint32_t t = idx[nc - 1 - j];
        idx[nc - 1 - j] = idx[j];
        idx[j] = t;
    }
    return k;
}

int32_t eng_sample(const float *logits, uint32_t n, const eng_sample_params *p, eng_rng *rng,
                   eng_sample_scratch *scr)
{
    int32_t amax = eng_argmax(logits, n);
    if (amax < 0 || !(p->temperature > 0) || p->top_k == 1)
        return amax;
    reserve(scr, n);
    const double mx = logits[amax], invT = 1.0 / p->temperature;
    const float min_p = p->min_p > 0 ? p->min_p : 0;
    uint32_t *idx = scr->idx;
    float *w = scr->w;
    uint32_t nc = 0;
    double Z = 0;
    int sorted = 0;
    if (p->top_k > 0 && p->top_k < n) {
        uint32_t m = top_ids(logits, n, p->top_k, idx);
        for (uint32_t j = 0; j < m; j++) {
            double wi = exp((logits[idx[j]] - mx) * invT);
            Z += wi;
            if (wi >= min_p)
                w[nc] = (float)wi, idx[nc++] = idx[j];
        }
        sorted = 1;
    } else {
        /* Z (the vocabulary's total weight) matters only for a top_p cut;
         * otherwise a logit comparison finds the min_p candidates without
         * an exp per token (the exact test is then made on the few left) */
        const int need_z = p->top_p < 1.0f;
        const double lthr = min_p > 0 ? mx + log(min_p) / invT - 1e-3 : -INFINITY;
        for (uint32_t i = 0; i < n; i++) {
            float v = logits[i];
            if (isnan(v) || v == -INFINITY)
                continue;
            if (need_z) {
                double wi = expf((float)((v - mx) * invT));
                Z += wi;
                if (wi >= min_p)
                    idx[nc++] = i;
            } else if (v >= lthr && exp((v - mx) * invT) >= min_p) {
                idx[nc++] = i;
            }
        }
        if (nc && p->top_p < 1.0f)
            nc = top_p_prefix(logits, idx, nc, w, mx, invT, (double)p->top_p * Z);
        else
            for (uint32_t j = 0; j < nc; j++)
                w[j] = (float)exp((logits[idx[j]] - mx) * invT);
    }
    if (nc == 0) /* min_p above 1: only the top token is left */
        return amax;
    if (sorted && p->top_p < 1.0f) {
        double cum = 0, target = (double)p->top_p * Z;
        uint32_t keep = nc;
        for (uint32_t j = 0; j < nc; j++) {
            cum += w[j];
            if (cum >= target) {
                keep = j + 1;
                break;
            }
        }
        nc = keep;
    }
    double S = 0;
    for (uint32_t j = 0; j < nc; j++)
        S += w[j];
    double u = (double)eng_rng_float(rng) * S, acc = 0;
    for (uint32_t j = 0; j < nc; j++) {
        acc += w[j];
        if (u < acc)
            return (int32_t)idx[j];
    }
    return (int32_t)idx[nc - 1];
}

uint32_t eng_logprobs(const float *logits, uint32_t n, int32_t chosen, uint32_t k,
                      float *chosen_lp, int32_t *top, float *top_lps)
{
    int32_t amax = eng_argmax(logits, n);
    if (amax < 0) {
        *chosen_lp = -INFINITY;
        return 0;
    }
    double mx = logits[amax], Z = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!isnan(logits[i]))
            Z += exp(logits[i] - mx);
    double lz = mx + log(Z);
    *chosen_lp = chosen >= 0 && (uint32_t)chosen < n && !isnan(logits[chosen])
                     ? (float)(logits[chosen] - lz)
                     : -INFINITY;
    if (k > n)
        k = n;
    if (!k)
        return 0;
    uint32_t tmp[ENG_SAMPLE_MAX_LOGPROBS];
    uint32_t *ids = k <= ENG_SAMPLE_MAX_LOGPROBS ? tmp : ds4_xmalloc(k * sizeof *ids);
    uint32_t m = top_ids(logits, n, k, ids);
    for (uint32_t j = 0; j < m; j++) {
        top[j] = (int32_t)ids[j];
        top_lps[j] = (float)(logits[ids[j]] - lz);
    }
    if (ids != tmp)
        free(ids);
    return m;
}
