/* test_eng_synth.c - synthetic device weights for the benchmark: every
 * tensor of a layout-only model is filled on the device; the values read
 * back and dequantized with common/quant are finite, in each recipe's
 * range (norms near 1, weight matrices near the target standard deviation
 * with a small mean), tid2eid holds distinct valid experts per token; the
 * bytes are deterministic in the seed and independent of how the plan
 * splits expert tensors across buffers; another seed gives other bytes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dsv4_mkmodel.h"
#include "common/quant.h"
#include "engined/eng_cl.h"
#include "engined/eng_model.h"
#include "engined/eng_synth.h"
#include "test.h"

/* Every tensor's bytes, read back part by part. */
static uint8_t **read_all(eng_model *m, eng_cl *cl)
{
    uint8_t **out = calloc(m->n_tensors, sizeof *out);
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const eng_tensor *t = &m->tensors[i];
        out[i] = malloc(t->nbytes);
        for (uint32_t p = 0; p < t->n_parts; p++) {
            const eng_part *pt = &m->plan.parts[t->part0 + p];
            CHECK(eng_cl_read(cl, m->bufs[pt->buf], pt->off, out[i] + pt->src_off,
                              pt->bytes) == 0);
        }
    }
    return out;
}

static void free_all(uint8_t **b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(b[i]);
    free(b);
}

static int synth(eng_model *m, eng_cl *cl, uint64_t max_buf, uint64_t seed, uint32_t *n_split)
{
    eng_plan_opts po = {.budget = 1ull << 32, .reserve = 1, .max_buf = max_buf};
    eng_plan plan;
    char err[512];
    int rc = eng_model_plan(m, cl, &po, &plan, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc)
        return -1;
    *n_split = plan.n_split;
    rc = eng_synth_fill(m, cl, &plan, seed, NULL, NULL, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    eng_plan_free(&plan);
    return rc;
}

int main(void)
{
    eng_cl cl;
    if (eng_cl_open(&cl) != 0 || eng_cl_build(&cl, NULL) != 0) {
        const char *allow = getenv("DS4_ALLOW_NO_OPENCL");
        if (allow && strcmp(allow, "1") == 0) {
            printf("SKIP: no OpenCL device (%s)\n", cl.err);
            return 0;
        }
        fprintf(stderr, "OpenCL: %s\n", cl.err);
        CHECK(!"OpenCL device");
        return test_main_end("eng_synth");
    }
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    dsv4_hparams hp = o.hp;
    hp.n_vocab = 512;
    hp.n_layer = 2;
    hp.compress_ratio[0] = 4;
    hp.compress_ratio[1] = 128;
    hp.n_hash_layer = 1;
    hp.n_expert = 64;
    char err[512];
    CHECKF(dsv4_hparams_check(&hp, err, sizeof err) == 0, "%s", err);
    eng_model *m = eng_model_virtual(&hp);

    uint32_t split_a = 0, split_b = 0;
    if (synth(m, &cl, 768 << 10, 11, &split_a))
        goto out;
    uint8_t **a = read_all(m, &cl);
    CHECKF(split_a > 0, "the small-buffer plan splits expert tensors (%u split)", split_a);

    int checked_q = 0, checked_norm = 0, checked_tid = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const eng_tensor *t = &m->tensors[i];
        if (t->id == DSV4_T_FFN_TID2EID) {
            const int32_t *ids = (const int32_t *)a[i];
            uint32_t k = (uint32_t)t->ne[0], bad = 0;
            uint32_t hist[64] = {0};
            for (uint64_t tok = 0; tok < t->ne[1]; tok++)
                for (uint32_t j = 0; j < k; j++) {
                    int32_t e = ids[tok * k + j];
                    if (e < 0 || (uint32_t)e >= hp.n_expert) {
                        bad++;
                        continue;
                    }
                    hist[e]++;
                    for (uint32_t j2 = 0; j2 < j; j2++)
                        bad += ids[tok * k + j2] == e;
                }
            CHECKF(bad == 0, "%s: %u invalid or repeated expert ids", t->name, bad);
            uint32_t used = 0;
            for (uint32_t e = 0; e < hp.n_expert; e++)
                used += hist[e] > 0;
            CHECKF(used == hp.n_expert, "%s: only %u experts used", t->name, used);
            checked_tid++;
            continue;
        }
        uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        float *v = malloc(sizeof(float) * n);
        CHECK(ds4_dequantize(t->type, a[i], v, n) == 0);
        double s = 0, s2 = 0, lo = INFINITY, hi = -INFINITY;
        uint64_t nonfinite = 0;
        for (uint64_t j = 0; j < n; j++) {
            if (!isfinite(v[j])) {
                nonfinite++;
                continue;
            }
            s += v[j];
            s2 += (double)v[j] * v[j];
            lo = fmin(lo, v[j]);
            hi = fmax(hi, v[j]);
        }
        CHECKF(nonfinite == 0, "%s: %llu non-finite values", t->name,
               (unsigned long long)nonfinite);
        double mean = s / n, sd = sqrt(fmax(0, s2 / n - mean * mean));
        dsv4_value_recipe r;
        dsv4_mk_recipe(t->id, t->ne[0], &r);
        double rlo = ldexp(r.off + r.lo, -r.k), rhi = ldexp(r.off + r.hi, -r.k);
        if (t->type == DS4_TYPE_F32 || t->type == DS4_TYPE_F16 || t->type == DS4_TYPE_BF16) {
            double tol = (rhi - rlo) * 0.01;
            CHECKF(lo >= rlo - tol && hi <= rhi + tol, "%s: values in [%g, %g], recipe [%g, %g]",
                   t->name, lo, hi, rlo, rhi);
            if (r.off > 0)
                checked_norm++;
        } else {
            double want = eng_synth_target_std(t->id, t->ne[0]);
            CHECKF(sd > 0.5 * want && sd < 2.0 * want, "%s (%s): std %g, target %g", t->name,
                   ds4_type_get(t->type)->name, sd, want);
            CHECKF(fabs(mean) < 0.5 * want, "%s (%s): mean %g, std target %g", t->name,
                   ds4_type_get(t->type)->name, mean, want);
            checked_q++;
        }
        free(v);
    }
    CHECK(checked_q > 10 && checked_norm > 4 && checked_tid == 1);

    /* the same seed with another split: the same bytes */
    if (synth(m, &cl, 64ull << 20, 11, &split_b) == 0) {
        CHECK(split_b == 0);
        uint8_t **b = read_all(m, &cl);
        uint32_t diff = 0;
        for (uint32_t i = 0; i < m->n_tensors; i++)
            diff += memcmp(a[i], b[i], m->tensors[i].nbytes) != 0;
        CHECKF(diff == 0, "%u tensors differ between two splits", diff);
        free_all(b, m->n_tensors);
    }
    /* another seed: other bytes in every tensor with more than a few values */
    if (synth(m, &cl, 64ull << 20, 12, &split_b) == 0) {
        uint8_t **b = read_all(m, &cl);
        uint32_t same = 0;
        for (uint32_t i = 0; i < m->n_tensors; i++)
            same += m->tensors[i].nbytes > 64 && memcmp(a[i], b[i], m->tensors[i].nbytes) == 0;
        CHECKF(same == 0, "%u tensors identical across seeds", same);
        free_all(b, m->n_tensors);
    }
    free_all(a, m->n_tensors);
out:
    eng_model_close(m);
    eng_cl_close(&cl);
    return test_main_end("eng_synth");
}
