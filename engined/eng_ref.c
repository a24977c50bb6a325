/* eng_ref.c - plain-C float32 reference of the DeepSeek V4 forward pass
 * (exact mode, whole-prompt prefill). See eng_ref.h. Written from the
 * architecture notes and the HF oracle's semantics:
 *   h = 4 copies of embed[id]; per layer: mHC pre -> RMSNorm -> attention
 *   -> mHC post; mHC pre -> RMSNorm -> MoE -> mHC post; then the hc head
 *   collapse -> output_norm -> output. Dots accumulate in double. */
#include "engined/eng_ref.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/gguf.h"
#include "common/qat.h"
#include "common/quant.h"
#include "common/util.h"

struct eng_ref {
    gguf_file *f;
    dsv4_hparams hp;
    float **w;          /* [DSV4_T_COUNT * n_layer] dequantized, lazily */
    float *freq_main;   /* n_rot/2, plain RoPE (ratio-0 layers) */
    float *freq_comp;   /* n_rot/2, YaRN (compressed layers) */
    int qat;            /* eng_ref_set_qat: ENG_REF_QAT_* parts on */
};

/* ---- small numeric helpers --------------------------------------------- */

/* sum_c w[c] * x[c] in double; four partial sums only for speed. */
static double dot(const float *w, const float *x, uint32_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint32_t c = 0;
    for (; c + 4 <= n; c += 4) {
        s0 += (double)w[c] * x[c];
        s1 += (double)w[c + 1] * x[c + 1];
        s2 += (double)w[c + 2] * x[c + 2];
        s3 += (double)w[c + 3] * x[c + 3];
    }
    for (; c < n; c++)
        s0 += (double)w[c] * x[c];
    return (s0 + s1) + (s2 + s3);
}

/* Work item of a threaded matrix product. */
typedef struct mm_job {
    const float *w, *x;
    float *y;
    uint32_t rows, cols, n, r0, r1;
} mm_job;

/* Rows [r0, r1) of Y[t][r] = sum_c W[r][c] * X[t][c] (double accumulate);
 * rows outermost so a large W streams through memory once. */
static void *mm_run(void *p)
{
    const mm_job *j = p;
    for (uint32_t r = j->r0; r < j->r1; r++) {
        const float *w = j->w + (size_t)r * j->cols;
        for (uint32_t t = 0; t < j->n; t++) {
            const float *x = j->x + (size_t)t * j->cols;
            j->y[(size_t)t * j->rows + r] = (float)dot(w, x, j->cols);
        }
    }
    return NULL;
}

/* Y[n][rows] = X[n][cols] * W[rows][cols]^T, split over threads when big. */
static void mm(const float *w, uint32_t rows, uint32_t cols, const float *x,
               uint32_t n, float *y)
{
    enum { NT = 4 };
    mm_job jobs[NT];
    double work = (double)rows * cols * n;
    uint32_t nt = work > 4e7 && rows >= NT ? NT : 1;
    pthread_t th[NT];
    int started[NT] = {0};
    for (uint32_t i = 0; i < nt; i++) {
        jobs[i] = (mm_job){w, x, y, rows, cols, n, (uint32_t)((uint64_t)rows * i / nt),
                           (uint32_t)((uint64_t)rows * (i + 1) / nt)};
        if (i > 0)
            started[i] = pthread_create(&th[i], NULL, mm_run, &jobs[i]) == 0;
    }
    mm_run(&jobs[0]);
    for (uint32_t i = 1; i < nt; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            mm_run(&jobs[i]); /* no thread: do it here */
    }
}

/* x <- x * rsqrt(mean(x^2) + eps) (* w when w is not NULL). */
static void rms_norm(float *x, uint32_t n, const float *w, float eps)
{
    double ss = 0;
    for (uint32_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    for (uint32_t i = 0; i < n; i++)
        x[i] = w ? w[i] * (x[i] * r) : x[i] * r;
}

static float sigmoidf_(float x) { return (float)(1.0 / (1.0 + exp(-(double)x))); }

/* torch softplus (beta 1, threshold 20). */
static float softplusf_(float x) { return x > 20.0f ? x : (float)log1p(exp((double)x)); }

static float siluf_(float x) { return (float)((double)x / (1.0 + exp(-(double)x))); }

/* ---- RoPE --------------------------------------------------------------- */

void eng_ref_rope_freqs(float *inv_freq, uint32_t n_rot, float base, int yarn,
                        float factor, double orig_ctx, float beta_fast,
                        float beta_slow)
{
    uint32_t half = n_rot / 2;
    double low = 0, high = 0;
    if (yarn) {
        /* dimension at which a frequency makes `rot` turns over orig_ctx */
        double lb = 2.0 * log((double)base);
        low = floor(n_rot * log(orig_ctx / (beta_fast * 2.0 * M_PI)) / lb);
        high = ceil(n_rot * log(orig_ctx / (beta_slow * 2.0 * M_PI)) / lb);
        if (low < 0)
            low = 0;
        if (high > n_rot - 1)
            high = n_rot - 1;
        if (low == high)
            high += 0.001;
    }
    for (uint32_t i = 0; i < half; i++) {
        float pf = (float)pow((double)base, (double)(2 * i) / n_rot);
        float extra = 1.0f / pf;
        if (!yarn) {
            inv_freq[i] = extra;
            continue;
        }
        float inter = 1.0f / (factor * pf);
        float ramp = (float)((i - low) / (high - low));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ef = 1.0f - ramp; /* share of the unscaled frequency */
        inv_freq[i] = inter * (1.0f - ef) + extra * ef;
    }
}

void eng_ref_rope(float *x, uint32_t dim, uint32_t n_rot, const float *inv_freq,
                  uint32_t pos, int inverse)
{
    float *r = x + (dim - n_rot);
    for (uint32_t i = 0; i < n_rot / 2; i++) {
        float ang = inv_freq[i] * (float)pos; /* float32 product, as HF */
        float c = (float)cos((double)ang), s = (float)sin((double)ang);
        if (inverse)
            s = -s;
        float a = r[2 * i], b = r[2 * i + 1];
        r[2 * i] = a * c - b * s;
        r[2 * i + 1] = b * c + a * s;
    }
}

/* ---- mHC ---------------------------------------------------------------- */

void eng_ref_hc_split(const float *mix, const float *scale, const float *base,
                      uint32_t hc, uint32_t iters, float eps, float *pre,
                      float *post, float *comb)
{
    for (uint32_t i = 0; i < hc; i++) {
        pre[i] = sigmoidf_(mix[i] * scale[0] + base[i]) + eps;
        post[i] = 2.0f * sigmoidf_(mix[hc + i] * scale[1] + base[hc + i]);
    }
    /* comb[j][k]: softmax over k per row j, + eps, then column normalise */
    for (uint32_t j = 0; j < hc; j++) {
        float *row = comb + j * hc;
        float mx = -INFINITY;
        for (uint32_t k = 0; k < hc; k++) {
            row[k] = mix[2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k];
            mx = row[k] > mx ? row[k] : mx;
        }
        double s = 0;
        for (uint32_t k = 0; k < hc; k++)
            s += (row[k] = (float)exp((double)(row[k] - mx)));
        for (uint32_t k = 0; k < hc; k++)
            row[k] = (float)(row[k] / s) + eps;
    }
    for (uint32_t it = 0; it < iters; it++) {
        if (it > 0) { /* rows */
            for (uint32_t j = 0; j < hc; j++) {
                float s = 0;
                for (uint32_t k = 0; k < hc; k++)
                    s += comb[j * hc + k];
                for (uint32_t k = 0; k < hc; k++)
                    comb[j * hc + k] /= s + eps;
            }
        }
        for (uint32_t k = 0; k < hc; k++) { /* columns */
            float s = 0;
            for (uint32_t j = 0; j < hc; j++)
                s += comb[j * hc + k];
            for (uint32_t j = 0; j < hc; j++)
                comb[j * hc + k] /= s + eps;
        }
    }
}

/* ---- model loading ------------------------------------------------------ */

int eng_ref_open(const char *path, eng_ref **out, char *err, size_t errlen)
{
    *out = NULL;
    eng_ref *m = ds4_xcalloc(1, sizeof *m);
    dsv4_validation v;
    if (gguf_open(path, &m->f, err, errlen) ||
        dsv4_check_file(m->f, &m->hp, &v, err, errlen)) {
        eng_ref_close(m);
        return -1;
    }
    const dsv4_hparams *hp = &m->hp;
    m->w = ds4_xcalloc((size_t)DSV4_T_COUNT * hp->n_layer, sizeof *m->w);
    m->freq_main = ds4_xmalloc(sizeof(float) * (hp->n_rot / 2));
    m->freq_comp = ds4_xmalloc(sizeof(float) * (hp->n_rot / 2));
    eng_ref_rope_freqs(m->freq_main, hp->n_rot, hp->rope_freq_base, 0, 1, 1, 0, 0);
    eng_ref_rope_freqs(m->freq_comp, hp->n_rot, hp->compress_rope_freq_base, 1,
                       hp->rope_scale_factor, (double)hp->rope_orig_ctx,
                       hp->yarn_beta_fast, hp->yarn_beta_slow);
    *out = m;
    return 0;
}

void eng_ref_close(eng_ref *m)
{
    if (!m)
        return;
    if (m->w)
        for (size_t i = 0; i < (size_t)DSV4_T_COUNT * m->hp.n_layer; i++)
            free(m->w[i]);
    free(m->w);
    free(m->freq_main);
    free(m->freq_comp);
    if (m->f)
        gguf_close(m->f);
    free(m);
}

const dsv4_hparams *eng_ref_hparams(const eng_ref *m) { return &m->hp; }

int eng_ref_set_qat(eng_ref *m, int parts, char *err, size_t errlen)
{
    const dsv4_hparams *hp = &m->hp;
    if (parts & ~ENG_REF_QAT_ALL) {
        ds4_seterr(err, errlen, "unknown QAT parts 0x%x", (unsigned)parts);
        return -1;
    }
    if (parts && ((hp->head_dim - hp->n_rot) % DS4_QAT_FP8_BLOCK ||
                  hp->idx_head_dim != DS4_QAT_HADAMARD_N)) {
        ds4_seterr(err, errlen, "QAT simulation needs non-RoPE KV dims in blocks "
                   "of %d (%u) and indexer heads of %d (%u)", DS4_QAT_FP8_BLOCK,
                   hp->head_dim - hp->n_rot, DS4_QAT_HADAMARD_N, hp->idx_head_dim);
        return -1;
    }
    m->qat = parts;
    return 0;
}

const gguf_file *eng_ref_file(const eng_ref *m) { return m->f; }

/* Dequantize (once) tensor id of layer (global ids: layer ignored). */
static int load_tensor(eng_ref *m, int id, int layer, char *err, size_t errlen)
{
    int l = dsv4_tensor_is_layer(id) ? layer : 0;
    float **slot = &m->w[(size_t)id * m->hp.n_layer + l];
    if (*slot)
        return 0;
    char name[DSV4_NAME_MAX];
    dsv4_tensor_name(id, l, name);
    const gguf_tensor *t = gguf_find_tensor(m->f, name);
    if (!t) {
        ds4_seterr(err, errlen, "tensor '%s' missing", name);
        return -1;
    }
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
    float *w = ds4_xmalloc(sizeof(float) * n);
    if (ds4_dequantize(t->type, t->data, w, n)) {
        free(w);
        ds4_seterr(err, errlen, "tensor '%s': cannot dequantize its type", name);
        return -1;
    }
    *slot = w;
    return 0;
}

/* The cached float data of a tensor already loaded by load_all. */
static const float *W(const eng_ref *m, int id, int layer)
{
    int l = dsv4_tensor_is_layer(id) ? layer : 0;
    const float *w = m->w[(size_t)id * m->hp.n_layer + l];
    DS4_ASSERT(w);
    return w;
}

/* Dequantize every tensor of the layout (first forward only). */
static int load_all(eng_ref *m, char *err, size_t errlen)
{
    size_t n = dsv4_expected_tensors(&m->hp, NULL, 0);
    dsv4_tensor_spec *sp = ds4_xmalloc(sizeof *sp * n);
    dsv4_expected_tensors(&m->hp, sp, n);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = load_tensor(m, sp[i].id, sp[i].layer, err, errlen);
    free(sp);
    return rc;
}

/* ---- mHC around a sublayer --------------------------------------------- */

/* Per-token mHC pre: collapsed input x[S][H] and post[S][hc], comb[S][hc*hc]. */
static void hc_pre(const eng_ref *m, const float *h, uint32_t S, int fn_id,
                   int scale_id, int base_id, int layer, float *x, float *post,
                   float *comb)
{
    const dsv4_hparams *hp = &m->hp;
    uint32_t hc = hp->n_hc, H = hp->n_embd, mixn = (2 + hc) * hc;
    uint32_t F = hc * H;
    float *flat = ds4_xmalloc(sizeof(float) * F);
    float *mix = ds4_xmalloc(sizeof(float) * mixn);
    float pre[64];
    DS4_ASSERT(hc <= 64);
    for (uint32_t t = 0; t < S; t++) {
        const float *ht = h + (size_t)t * F;
        memcpy(flat, ht, sizeof(float) * F);
        rms_norm(flat, F, NULL, hp->rms_eps);
        mm(W(m, fn_id, layer), mixn, F, flat, 1, mix);
        eng_ref_hc_split(mix, W(m, scale_id, layer), W(m, base_id, layer), hc,
                         hp->hc_sinkhorn_iter, hp->hc_eps, pre, post + (size_t)t * hc,
                         comb + (size_t)t * hc * hc);
        float *xt = x + (size_t)t * H;
        for (uint32_t d = 0; d < H; d++) {
            float s = 0;
            for (uint32_t j = 0; j < hc; j++)
                s += pre[j] * ht[(size_t)j * H + d];
            xt[d] = s;
        }
    }
    free(flat);
    free(mix);
}

/* h[t][k] = post[k] * y[t] + sum_j comb[j][k] * h[t][j]. */
static void hc_post(const dsv4_hparams *hp, float *h, uint32_t S, const float *y,
                    const float *post, const float *comb)
{
    uint32_t hc = hp->n_hc, H = hp->n_embd;
    float *old = ds4_xmalloc(sizeof(float) * hc * H);
    for (uint32_t t = 0; t < S; t++) {
        float *ht = h + (size_t)t * hc * H;
        const float *c = comb + (size_t)t * hc * hc, *p = post + (size_t)t * hc;
        memcpy(old, ht, sizeof(float) * hc * H);
        for (uint32_t k = 0; k < hc; k++)
            for (uint32_t d = 0; d < H; d++) {
                float s = 0;
                for (uint32_t j = 0; j < hc; j++)
                    s += c[j * hc + k] * old[(size_t)j * H + d];
                ht[(size_t)k * H + d] = p[k] * y[(size_t)t * H + d] + s;
            }
    }
    free(old);
}

/* ---- compressor --------------------------------------------------------- */

/* Compressed rows out[S/ratio][dim] of the normed input xn[S][H]: per
 * complete window w, a per-channel softmax-gated sum over its tokens (and,
 * when overlapping, the previous window's tokens through the first lane),
 * RMSNorm, RoPE at position w*ratio. Returns the row count. */
static uint32_t compress(const eng_ref *m, const float *xn, uint32_t S,
                         uint32_t ratio, uint32_t dim, int overlap, int kv_id,
                         int gate_id, int ape_id, int norm_id, int layer,
                         float *out)
{
    const dsv4_hparams *hp = &m->hp;
    uint32_t H = hp->n_embd, lanes = overlap ? 2 : 1, wd = lanes * dim;
    uint32_t nw = S / ratio;
    if (nw == 0)
        return 0;
    uint32_t used = nw * ratio;
    float *kv = ds4_xmalloc(sizeof(float) * used * wd);
    float *gt = ds4_xmalloc(sizeof(float) * used * wd);
    mm(W(m, kv_id, layer), wd, H, xn, used, kv);
    mm(W(m, gate_id, layer), wd, H, xn, used, gt);
    const float *ape = W(m, ape_id, layer);
    for (uint32_t t = 0; t < used; t++)
        for (uint32_t c = 0; c < wd; c++)
            gt[(size_t)t * wd + c] += ape[(size_t)(t % ratio) * wd + c];
    /* slot s of window w: token, column offset; overlap: ratio slots of
     * the previous window (lane 0), then ratio of this one (lane 1) */
    for (uint32_t w = 0; w < nw; w++) {
        float *o = out + (size_t)w * dim;
        for (uint32_t c = 0; c < dim; c++) {
            double mx = -INFINITY;
            for (uint32_t l = 0; l < lanes; l++) {
                if (overlap && l == 0 && w == 0)
                    continue;
                uint32_t t0 = (w + l - (overlap ? 1 : 0)) * ratio;
                for (uint32_t i = 0; i < ratio; i++) {
                    double g = gt[(size_t)(t0 + i) * wd + l * dim + c];
                    mx = g > mx ? g : mx;
                }
            }
            double se = 0, acc = 0;
            for (uint32_t l = 0; l < lanes; l++) {
                if (overlap && l == 0 && w == 0)
                    continue;
                uint32_t t0 = (w + l - (overlap ? 1 : 0)) * ratio;
                for (uint32_t i = 0; i < ratio; i++) {
                    size_t at = (size_t)(t0 + i) * wd + l * dim + c;
                    double e = exp(gt[at] - mx);
                    se += e;
                    acc += e * kv[at];
                }
            }
            o[c] = (float)(acc / se);
        }
        rms_norm(o, dim, W(m, norm_id, layer), hp->rms_eps);
        eng_ref_rope(o, dim, hp->n_rot, m->freq_comp, w * ratio, 0);
        if (norm_id == DSV4_T_IDX_COMP_NORM) {
            if (m->qat & ENG_REF_QAT_INDEXER)
                ds4_indexer_qat_row(o); /* Hadamard + FP4 (dim 128) */
        } else if (m->qat & ENG_REF_QAT_KV) {
            ds4_kv_qat_row(o, dim, dim - hp->n_rot, 1); /* FP8 + F16 */
        }
    }
    free(kv);
    free(gt);
    return nw;
}

/* ---- lightning indexer -------------------------------------------------- */

/* For each query t, mark in sel[t][nc] (1/0) the top-k compressed rows among
 * the causally valid ones (j < (t+1)/ratio) by sum_h w_h relu(q_h . K_j). */
static void indexer(const eng_ref *m, int layer, const float *xn,
                    const float *qr, uint32_t S, const float *K, uint32_t nc,
                    uint8_t *sel)
{
    const dsv4_hparams *hp = &m->hp;
    uint32_t iH = hp->n_idx_head, id = hp->idx_head_dim;
    uint32_t ratio = hp->compress_ratio[layer];
    float *q = ds4_xmalloc(sizeof(float) * S * iH * id);
    float *wt = ds4_xmalloc(sizeof(float) * S * iH);
    double *sc = ds4_xmalloc(sizeof(double) * (nc ? nc : 1));
    mm(W(m, DSV4_T_IDX_ATTN_Q_B, layer), iH * id, hp->q_lora_rank, qr, S, q);
    mm(W(m, DSV4_T_IDX_PROJ, layer), iH, hp->n_embd, xn, S, wt);
    double qscale = 1.0 / sqrt((double)id), wscale = 1.0 / sqrt((double)iH);
    memset(sel, 0, (size_t)S * nc);
    for (uint32_t t = 0; t < S; t++) {
        uint32_t nv = (t + 1) / ratio;
        if (nv > nc)
            nv = nc;
        for (uint32_t h = 0; h < iH; h++) {
            eng_ref_rope(q + ((size_t)t * iH + h) * id, id, hp->n_rot, m->freq_comp, t, 0);
            if (m->qat & ENG_REF_QAT_INDEXER)
                ds4_indexer_qat_row(q + ((size_t)t * iH + h) * id);
        }
        for (uint32_t j = 0; j < nv; j++) {
            double s = 0;
            for (uint32_t h = 0; h < iH; h++) {
                const float *qh = q + ((size_t)t * iH + h) * id;
                double d = 0;
                for (uint32_t c = 0; c < id; c++)
                    d += (double)qh[c] * K[(size_t)j * id + c];
                d = d > 0 ? d * qscale : 0;
                s += d * ((double)wt[(size_t)t * iH + h] * wscale);
            }
            sc[j] = s;
        }
        uint8_t *st = sel + (size_t)t * nc;
        uint32_t k = hp->idx_top_k < nv ? hp->idx_top_k : nv;
        for (uint32_t r = 0; r < k; r++) { /* selection: k is small */
            uint32_t best = UINT32_MAX;
            for (uint32_t j = 0; j < nv; j++)
                if (!st[j] && (best == UINT32_MAX || sc[j] > sc[best]))
                    best = j;
            st[best] = 1;
        }
    }
    free(q);
    free(wt);
    free(sc);
}

/* ---- attention ---------------------------------------------------------- */

/* One head of query t: softmax (with the sink logit in the denominator
 * only) over the window rows kv[t-win+1..t] and the first nv compressed
 * rows (those with sel[j] set, when sel is given); o = weighted rows. */
static void attend(const dsv4_hparams *hp, const float *qh, uint32_t t,
                   const float *kv, const float *comp, uint32_t nv,
                   const uint8_t *sel, float sink, double *sc, float *o)
{
    uint32_t hd = hp->head_dim, n = 0;
    uint32_t s0 = t + 1 > hp->n_swa ? t + 1 - hp->n_swa : 0;
    double scale = 1.0 / sqrt((double)hd), mx = sink;
    for (uint32_t s = s0; s <= t; s++, n++) {
        sc[n] = dot(kv + (size_t)s * hd, qh, hd) * scale;
        mx = sc[n] > mx ? sc[n] : mx;
    }
    for (uint32_t j = 0; j < nv; j++, n++) {
        sc[n] = -INFINITY;
        if (sel && !sel[j])
            continue;
        sc[n] = dot(comp + (size_t)j * hd, qh, hd) * scale;
        mx = sc[n] > mx ? sc[n] : mx;
    }
    double den = exp(sink - mx);
    for (uint32_t i = 0; i < n; i++)
        den += (sc[i] = exp(sc[i] - mx));
    for (uint32_t c = 0; c < hd; c++) {
        double acc = 0;
        uint32_t i = 0;
        for (uint32_t s = s0; s <= t; s++, i++)
            acc += sc[i] * kv[(size_t)s * hd + c];
        for (uint32_t j = 0; j < nv; j++, i++)
            acc += sc[i] * comp[(size_t)j * hd + c];
        o[c] = (float)(acc / den);
    }
}

/* Attention sublayer on the normed input xn[S][H] -> out[S][H]. */
static void attention(const eng_ref *m, int layer, const float *xn, uint32_t S,
                      float *out)
{
    const dsv4_hparams *hp = &m->hp;
    uint32_t H = hp->n_embd, nH = hp->n_head, hd = hp->head_dim;
    uint32_t ql = hp->q_lora_rank, ratio = hp->compress_ratio[layer];
    const float *freq = ratio ? m->freq_comp : m->freq_main;
    float *qr = ds4_xmalloc(sizeof(float) * S * ql);
    float *q = ds4_xmalloc(sizeof(float) * S * nH * hd);
    float *kv = ds4_xmalloc(sizeof(float) * S * hd);
    mm(W(m, DSV4_T_ATTN_Q_A, layer), ql, H, xn, S, qr);
    mm(W(m, DSV4_T_ATTN_KV, layer), hd, H, xn, S, kv);
    for (uint32_t t = 0; t < S; t++) {
        rms_norm(qr + (size_t)t * ql, ql, W(m, DSV4_T_ATTN_Q_A_NORM, layer), hp->rms_eps);
        rms_norm(kv + (size_t)t * hd, hd, W(m, DSV4_T_ATTN_KV_A_NORM, layer), hp->rms_eps);
        eng_ref_rope(kv + (size_t)t * hd, hd, hp->n_rot, freq, t, 0);
        if (m->qat & ENG_REF_QAT_KV)
            ds4_kv_qat_row(kv + (size_t)t * hd, hd, hd - hp->n_rot, 1);
    }
    mm(W(m, DSV4_T_ATTN_Q_B, layer), nH * hd, ql, qr, S, q);
    for (uint32_t t = 0; t < S; t++)
        for (uint32_t h = 0; h < nH; h++) {
            float *qh = q + ((size_t)t * nH + h) * hd;
            rms_norm(qh, hd, NULL, hp->rms_eps);
            eng_ref_rope(qh, hd, hp->n_rot, freq, t, 0);
        }

    /* compressed rows and, on ratio-4 layers, the indexer's selection */
    uint32_t nc = 0;
    float *comp = NULL;
    uint8_t *sel = NULL;
    if (ratio) {
        comp = ds4_xmalloc(sizeof(float) * (S / ratio + 1) * hd);
        nc = compress(m, xn, S, ratio, hd, ratio == 4, DSV4_T_ATTN_COMP_KV,
                      DSV4_T_ATTN_COMP_GATE, DSV4_T_ATTN_COMP_APE,
                      DSV4_T_ATTN_COMP_NORM, layer, comp);
        if (ratio == 4) {
            uint32_t id = hp->idx_head_dim;
            float *ik = ds4_xmalloc(sizeof(float) * (S / ratio + 1) * id);
            compress(m, xn, S, ratio, id, 1, DSV4_T_IDX_COMP_KV,
                     DSV4_T_IDX_COMP_GATE, DSV4_T_IDX_COMP_APE,
                     DSV4_T_IDX_COMP_NORM, layer, ik);
            sel = ds4_xmalloc((size_t)S * (nc ? nc : 1));
            indexer(m, layer, xn, qr, S, ik, nc, sel);
            free(ik);
        }
    }

    /* per head: window rows + allowed compressed rows, softmax with sink */
    float *o = ds4_xmalloc(sizeof(float) * S * nH * hd);
    double *sc = ds4_xmalloc(sizeof(double) * (hp->n_swa + nc + 1));
    for (uint32_t t = 0; t < S; t++) {
        uint32_t nv = ratio ? (t + 1) / ratio : 0;
        const uint8_t *st = sel ? sel + (size_t)t * nc : NULL;
        for (uint32_t h = 0; h < nH; h++) {
            float *oh = o + ((size_t)t * nH + h) * hd;
            attend(hp, q + ((size_t)t * nH + h) * hd, t, kv, comp, nv < nc ? nv : nc,
                   st, W(m, DSV4_T_ATTN_SINKS, layer)[h], sc, oh);
            eng_ref_rope(oh, hd, hp->n_rot, freq, t, 1);
        }
    }

    /* grouped low-rank output: group g of heads -> r dims each, then out_b */
    uint32_t g = hp->o_groups, r = hp->o_lora_rank, gin = nH * hd / g;
    float *z = ds4_xmalloc(sizeof(float) * S * g * r);
    float *zg = ds4_xmalloc(sizeof(float) * r);
    const float *wa = W(m, DSV4_T_ATTN_OUTPUT_A, layer);
    for (uint32_t t = 0; t < S; t++)
        for (uint32_t gi = 0; gi < g; gi++) {
            mm(wa + (size_t)gi * r * gin, r, gin, o + (size_t)t * nH * hd + (size_t)gi * gin, 1, zg);
            memcpy(z + ((size_t)t * g + gi) * r, zg, sizeof(float) * r);
        }
    mm(W(m, DSV4_T_ATTN_OUTPUT_B, layer), H, g * r, z, S, out);
    free(zg);
    free(z);
    free(sc);
    free(o);
    free(sel);
    free(comp);
    free(qr);
    free(q);
    free(kv);
}

/* ---- MoE ---------------------------------------------------------------- */

/* One SwiGLU expert: y = down(silu(min(gate x, lim)) * clamp(up x, +-lim)). */
static void swiglu(const float *wg, const float *wu, const float *wd, uint32_t H,
                   uint32_t I, float lim, const float *x, float *mid, float *y)
{
    float *u = mid + I;
    mm(wg, I, H, x, 1, mid);
    mm(wu, I, H, x, 1, u);
    for (uint32_t i = 0; i < I; i++) {
        float gg = mid[i] > lim ? lim : mid[i];
        float uu = u[i] > lim ? lim : u[i] < -lim ? -lim : u[i];
        mid[i] = siluf_(gg) * uu;
    }
    mm(wd, H, I, mid, 1, y);
}

/* MoE sublayer on normed x[S][H] -> out[S][H]; ids pick hash routes. */
static void moe(const eng_ref *m, int layer, const int32_t *ids, const float *x,
                uint32_t S, float *out)
{
    const dsv4_hparams *hp = &m->hp;
    uint32_t H = hp->n_embd, E = hp->n_expert, k = hp->n_expert_used, I = hp->n_ff_exp;
    float lim = hp->swiglu_clamp[layer];
    int hash = (uint32_t)layer < hp->n_hash_layer;
    float *logit = ds4_xmalloc(sizeof(float) * E);
    float *score = ds4_xmalloc(sizeof(float) * E);
    float *mid = ds4_xmalloc(sizeof(float) * 2 * I);
    float *y = ds4_xmalloc(sizeof(float) * H);
    uint32_t *sel = ds4_xmalloc(sizeof(uint32_t) * k);
    uint8_t *taken = ds4_xmalloc(E);
    const float *gate = W(m, DSV4_T_FFN_GATE_EXPS, layer);
    const float *up = W(m, DSV4_T_FFN_UP_EXPS, layer);
    const float *down = W(m, DSV4_T_FFN_DOWN_EXPS, layer);
    for (uint32_t t = 0; t < S; t++) {
        const float *xt = x + (size_t)t * H;
        float *ot = out + (size_t)t * H;
        mm(W(m, DSV4_T_FFN_GATE_INP, layer), E, H, xt, 1, logit);
        for (uint32_t e = 0; e < E; e++)
            score[e] = sqrtf(softplusf_(logit[e]));
        if (hash) {
            const float *row = W(m, DSV4_T_FFN_TID2EID, layer) + (size_t)ids[t] * k;
            for (uint32_t i = 0; i < k; i++)
                sel[i] = (uint32_t)row[i];
        } else {
            const float *bias = W(m, DSV4_T_FFN_EXP_PROBS_B, layer);
            memset(taken, 0, E);
            for (uint32_t i = 0; i < k; i++) {
                uint32_t best = UINT32_MAX;
                for (uint32_t e = 0; e < E; e++)
                    if (!taken[e] && (best == UINT32_MAX ||
                                      score[e] + bias[e] > score[best] + bias[best]))
                        best = e;
                taken[best] = 1;
                sel[i] = best;
            }
        }
        double wsum = 0;
        for (uint32_t i = 0; i < k; i++)
            wsum += score[sel[i]];
        /* shared expert first, then the routed ones added */
        swiglu(W(m, DSV4_T_FFN_GATE_SHEXP, layer), W(m, DSV4_T_FFN_UP_SHEXP, layer),
               W(m, DSV4_T_FFN_DOWN_SHEXP, layer), H, I, lim, xt, mid, ot);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t e = sel[i];
            float we = (float)(score[e] / (wsum + 1e-20)) * hp->expert_weights_scale;
            swiglu(gate + (size_t)e * I * H, up + (size_t)e * I * H,
                   down + (size_t)e * H * I, H, I, lim, xt, mid, y);
            for (uint32_t d = 0; d < H; d++)
                ot[d] += y[d] * we;
        }
    }
    free(logit);
    free(score);
    free(mid);
    free(y);
    free(sel);
    free(taken);
}

/* ---- whole model -------------------------------------------------------- */

int eng_ref_forward(eng_ref *m, const int32_t *ids, uint32_t n, float *logits,
                    char *err, size_t errlen)
{
    return eng_ref_forward_rows(m, ids, n, 0, logits, err, errlen);
}

int eng_ref_forward_rows(eng_ref *m, const int32_t *ids, uint32_t n, uint32_t row0,
                         float *logits, char *err, size_t errlen)
{
    const dsv4_hparams *hp = &m->hp;
    for (uint32_t t = 0; t < n; t++)
        if (ids[t] < 0 || (uint32_t)ids[t] >= hp->n_vocab) {
            ds4_seterr(err, errlen, "token id %d at position %u out of range [0,%u)",
                       ids[t], t, hp->n_vocab);
            return -1;
        }
    if (n == 0)
        return 0;
    if (row0 >= n) {
        ds4_seterr(err, errlen, "first logits row %u not below %u tokens", row0, n);
        return -1;
    }
    if (load_all(m, err, errlen))
        return -1;
    uint32_t H = hp->n_embd, hc = hp->n_hc;
    float *h = ds4_xmalloc(sizeof(float) * n * hc * H);
    float *x = ds4_xmalloc(sizeof(float) * n * H);
    float *y = ds4_xmalloc(sizeof(float) * n * H);
    float *post = ds4_xmalloc(sizeof(float) * n * hc);
    float *comb = ds4_xmalloc(sizeof(float) * n * hc * hc);
    const float *emb = W(m, DSV4_T_TOKEN_EMBD, -1);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t j = 0; j < hc; j++)
            memcpy(h + ((size_t)t * hc + j) * H, emb + (size_t)ids[t] * H, sizeof(float) * H);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        int L = (int)l;
        hc_pre(m, h, n, DSV4_T_HC_ATTN_FN, DSV4_T_HC_ATTN_SCALE, DSV4_T_HC_ATTN_BASE, L, x, post, comb);
        for (uint32_t t = 0; t < n; t++)
            rms_norm(x + (size_t)t * H, H, W(m, DSV4_T_ATTN_NORM, L), hp->rms_eps);
        attention(m, L, x, n, y);
        hc_post(hp, h, n, y, post, comb);
        hc_pre(m, h, n, DSV4_T_HC_FFN_FN, DSV4_T_HC_FFN_SCALE, DSV4_T_HC_FFN_BASE, L, x, post, comb);
        for (uint32_t t = 0; t < n; t++)
            rms_norm(x + (size_t)t * H, H, W(m, DSV4_T_FFN_NORM, L), hp->rms_eps);
        moe(m, L, ids, x, n, y);
        hc_post(hp, h, n, y, post, comb);
    }
    /* head: hc collapse without Sinkhorn, output norm, output projection */
    float *flat = ds4_xmalloc(sizeof(float) * hc * H);
    float mix[64];
    DS4_ASSERT(hc <= 64);
    const float *fn = W(m, DSV4_T_OUTPUT_HC_FN, -1), *base = W(m, DSV4_T_OUTPUT_HC_BASE, -1);
    float sc0 = W(m, DSV4_T_OUTPUT_HC_SCALE, -1)[0];
    for (uint32_t t = row0; t < n; t++) {
        const float *ht = h + (size_t)t * hc * H;
        memcpy(flat, ht, sizeof(float) * hc * H);
        rms_norm(flat, hc * H, NULL, hp->rms_eps);
        mm(fn, hc, hc * H, flat, 1, mix);
        float *xt = x + (size_t)t * H;
        for (uint32_t d = 0; d < H; d++)
            xt[d] = 0;
        for (uint32_t j = 0; j < hc; j++) {
            float p = sigmoidf_(mix[j] * sc0 + base[j]) + hp->hc_eps;
            for (uint32_t d = 0; d < H; d++)
                xt[d] += p * ht[(size_t)j * H + d];
        }
        rms_norm(xt, H, W(m, DSV4_T_OUTPUT_NORM, -1), hp->rms_eps);
    }
    mm(W(m, DSV4_T_OUTPUT, -1), hp->n_vocab, H, x + (size_t)row0 * H, n - row0, logits);
    free(flat);
    free(h);
    free(x);
    free(y);
    free(post);
    free(comb);
    return 0;
}
