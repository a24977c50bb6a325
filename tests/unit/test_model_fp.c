/* test_model_fp.c - model fingerprints: stable for the same file, exact
 * differs across seeds and quants, both are deterministic, family is shared by the q2 and q4 files
 * of one model and differs across models. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dsv4_mkmodel.h"
#include "common/gguf.h"
#include "common/model_fp.h"
#include "test.h"

#ifndef DSV4_TOKENIZER_JSON
#define DSV4_TOKENIZER_JSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"
#endif

static dsv4_tokdata *g_tok;

static int fp_of(uint64_t seed, int layout, ds4_model_fp *fp)
{
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = g_tok;
    o.seed = seed;
    o.layout = layout;
    o.hp.n_vocab = g_tok->n_tokens;
    o.hp.n_layer = 2;
    o.hp.compress_ratio[0] = 0;
    o.hp.compress_ratio[1] = 4;
    o.hp.n_hash_layer = 1;
    uint8_t *buf = NULL;
    uint64_t len = 0;
    char err[512];
    int rc = dsv4_mkmodel_to_mem(&o, &buf, &len, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc)
        return -1;
    gguf_file *f = NULL;
    rc = gguf_parse(buf, len, &f, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc == 0) {
        ds4_model_fingerprint(f, fp);
        /* the tensor data is not hashed: flipping a weight byte keeps it */
        ds4_model_fp fp2;
        ds4_model_fingerprint(f, &fp2);
        CHECK(strcmp(fp->exact, fp2.exact) == 0 && strcmp(fp->family, fp2.family) == 0);
        buf[len - 1] ^= 0x5a;
        ds4_model_fingerprint(f, &fp2);
        CHECK(strcmp(fp->exact, fp2.exact) == 0);
        gguf_close(f);
    }
    free(buf);
    return rc;
}

int main(void)
{
    char err[512];
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (!path)
        path = DSV4_TOKENIZER_JSON;
    CHECKF(dsv4_tokdata_load(path, &g_tok, err, sizeof err) == 0, "%s", err);
    if (!g_tok)
        return test_main_end("model_fp");

    ds4_model_fp a, b, q4;
    CHECK(fp_of(1, DSV4_MK_Q2, &a) == 0);
    CHECK(fp_of(2, DSV4_MK_Q2, &b) == 0);
    CHECK(fp_of(1, DSV4_MK_Q4, &q4) == 0);
    CHECK(strlen(a.exact) == 64 && strlen(a.family) == 64);
    CHECK(strspn(a.exact, "0123456789abcdef") == 64);
    /* another seed: another model */
    CHECK(strcmp(a.exact, b.exact) != 0 && strcmp(a.family, b.family) != 0);
    /* q2 and q4 of one model: one family, two exact fingerprints */
    CHECK(strcmp(a.exact, q4.exact) != 0);
    CHECK(strcmp(a.family, q4.family) == 0);
    dsv4_tokdata_free(g_tok);
    return test_main_end("model_fp");
}
