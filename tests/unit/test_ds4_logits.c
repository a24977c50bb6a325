/* test_ds4_logits.c - the diagnostics CLI: on a generated model, the
 * logits it dumps (--full) are exactly the reference forward's rows, its
 * top-k lists (--json) are those rows' largest entries with correct
 * log-softmax values, the OpenCL engine in exact mode agrees with the
 * reference, --text is tokenized like the tokenizer library, and bad input
 * is a clean error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "common/gguf.h"
#include "engined/eng_ref.h"
#include "tokenizerd/tok_bpe.h"
#include "test.h"

#ifndef DSV4_TOKENIZER_JSON
#define DSV4_TOKENIZER_JSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"
#endif

static char g_bin[4096], g_model[256], g_tmp[256];

static int tool_path(void)
{
    char self[2048] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(self, '/');
        if (!s)
            return -1;
        *s = 0;
    }
    size_t l = strlen(self);
    if (l + 12 > sizeof g_bin)
        return -1;
    memcpy(g_bin, self, l);
    memcpy(g_bin + l, "/ds4-logits", 12);
    return access(g_bin, X_OK);
}

static int run(const char *args, const char *out)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s > %s 2>%s.err", g_bin, args, out, out);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return b;
}

int main(void)
{
    if (tool_path()) {
        CHECKF(0, "ds4-logits binary not found");
        return test_main_end("ds4_logits");
    }
    snprintf(g_model, sizeof g_model, "/tmp/test_ds4_logits_%d.gguf", (int)getpid());
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_ds4_logits_%d", (int)getpid());
    char err[512], out[300], full[300], args[2048];
    snprintf(out, sizeof out, "%s.out", g_tmp);
    snprintf(full, sizeof full, "%s.f32", g_tmp);
    dsv4_tokdata *tok = NULL;
    const char *tj = getenv("DS4_TOKENIZER_JSON");
    CHECKF(dsv4_tokdata_load(tj ? tj : DSV4_TOKENIZER_JSON, &tok, err, sizeof err) == 0, "%s", err);
    if (!tok)
        return test_main_end("ds4_logits");
    static const uint32_t ratios[] = {0, 4, 128};
    dsv4_mkmodel_opts mo;
    dsv4_mkmodel_defaults(&mo);
    mo.tok = tok;
    mo.seed = 5;
    mo.hp.n_vocab = tok->n_tokens;
    mo.hp.n_layer = 3;
    for (int i = 0; i < 3; i++)
        mo.hp.compress_ratio[i] = ratios[i];
    mo.hp.n_hash_layer = 1;
    mo.hp.n_expert = 4;
    mo.hp.n_expert_used = 2;
    CHECKF(dsv4_mkmodel_write(&mo, g_model, NULL, err, sizeof err) == 0, "%s", err);
    dsv4_tokdata_free(tok);

    /* 20 prompt ids; the oracle: the reference's rows */
    enum { N = 20 };
    int32_t ids[N];
    char list[512] = "";
    for (int i = 0; i < N; i++) {
        ids[i] = 1000 + 37 * i;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", ids[i]);
    }
    eng_ref *ref = NULL;
    CHECKF(eng_ref_open(g_model, &ref, err, sizeof err) == 0, "%s", err);
    if (!ref)
        goto out;
    uint32_t V = eng_ref_hparams(ref)->n_vocab;
    float *want = malloc(sizeof(float) * V * N);
    CHECKF(eng_ref_forward(ref, ids, N, want, err, sizeof err) == 0, "%s", err);
    eng_ref_close(ref);

    /* ref backend: --full rows are exactly the reference's; --json top-5 */
    snprintf(args, sizeof args, "-m %s --backend ref --ids %s --all --top-k 5 --json --full %s",
             g_model, list, full);
    CHECK(run(args, out) == 0);
    size_t flen = 0;
    float *got = (float *)slurp(full, &flen);
    CHECKF(got && flen == sizeof(float) * V * N, "full dump of %zu bytes", flen);
    if (got && flen == sizeof(float) * V * N)
        CHECK(memcmp(got, want, flen) == 0);
    free(got);
    char *js = slurp(out, NULL);
    CHECK(js != NULL);
    int rows = 0;
    for (char *line = js ? strtok(js, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        int pos, id;
        double logit, lp;
        CHECK(sscanf(line, "{\"pos\":%d,\"top\":[{\"id\":%d,\"logit\":%lf,\"logprob\":%lf", &pos,
                     &id, &logit, &lp) == 4);
        if (pos < 0 || pos >= N)
            continue;
        const float *row = want + (size_t)V * pos;
        uint32_t best = 0;
        for (uint32_t v = 1; v < V; v++)
            best = row[v] > row[best] ? v : best;
        CHECKF((uint32_t)id == best, "pos %d: top id %d, reference argmax %u", pos, id, best);
        double mx = row[best], sum = 0;
        for (uint32_t v = 0; v < V; v++)
            sum += exp((double)row[v] - mx);
        CHECK(fabs(lp - (row[best] - mx - log(sum))) < 1e-5);
        CHECK(strstr(line, "\"text\":") != NULL);
        int n_top = 0;
        for (char *p = line; (p = strstr(p, "\"id\":")); p++)
            n_top++;
        CHECK(n_top == 5);
        rows++;
    }
    CHECK(rows == N);
    free(js);

    /* the OpenCL engine in exact mode: the same top-1 and logit at the end */
    snprintf(args, sizeof args, "-m %s --backend cl --exact --ids %s --top-k 1 --json", g_model,
             list);
    CHECK(run(args, out) == 0);
    js = slurp(out, NULL);
    if (js) {
        int pos = -1, id = -1;
        double logit = 0;
        CHECK(sscanf(js, "{\"pos\":%d,\"top\":[{\"id\":%d,\"logit\":%lf", &pos, &id, &logit) == 3);
        const float *row = want + (size_t)V * (N - 1);
        CHECK(pos == N - 1);
        CHECKF(id >= 0 && (uint32_t)id < V && fabs(logit - row[id]) < 1e-4 * (1 + fabs(row[id])),
               "cl exact: id %d logit %g, reference %g", id, logit,
               id >= 0 && (uint32_t)id < V ? row[id] : 0);
        free(js);
    }

    /* --text is tokenized like the tokenizer library (special strings too) */
    const char *text = "Hello, world!<\xef\xbd\x9cUser\xef\xbd\x9c>x";
    gguf_file *gf = NULL;
    tok_vocab *voc = NULL;
    CHECK(gguf_open(g_model, &gf, err, sizeof err) == 0 &&
          tok_vocab_from_gguf(gf, &voc, err, sizeof err) == 0);
    if (voc) {
        tok_encoder *enc = tok_encoder_new(voc, err, sizeof err);
        tok_ids ti = {0};
        CHECK(enc && tok_encode(enc, text, strlen(text), TOK_MODE_RAW, &ti, err, sizeof err) == 0);
        snprintf(args, sizeof args, "-m %s --backend ref --text '%s' --tokens --top-k 2", g_model,
                 text);
        CHECK(run(args, out) == 0);
        char *t = slurp(out, NULL);
        unsigned cnt = 0;
        CHECK(t && sscanf(t, "%u prompt tokens:", &cnt) == 1 && cnt == ti.n);
        for (size_t i = 0; t && i < ti.n; i++) {
            char want_line[64];
            snprintf(want_line, sizeof want_line, " %7u ", ti.v[i]);
            CHECKF(strstr(t, want_line) != NULL, "token %zu (%u) not listed", i, ti.v[i]);
        }
        CHECK(t && strstr(t, "\"<\xef\xbd\x9cUser\xef\xbd\x9c>\"") != NULL);
        free(t);
        free(ti.v);
        tok_encoder_free(enc);
        tok_vocab_free(voc);
    }
    gguf_close(gf);

    /* bad input: clean errors */
    snprintf(args, sizeof args, "-m /nonexistent.gguf --backend ref --ids 1,2");
    CHECK(run(args, out) == 1);
    snprintf(args, sizeof args, "-m %s --backend ref --ids 1,x", g_model);
    CHECK(run(args, out) == 1);
    snprintf(args, sizeof args, "-m %s --backend ref --ids 1,%u", g_model, V);
    CHECK(run(args, out) == 1);
    snprintf(args, sizeof args, "-m %s --backend ref", g_model);
    CHECK(run(args, out) == 64);
    snprintf(args, sizeof args, "-m %s --backend nonesuch --ids 1", g_model);
    CHECK(run(args, out) == 64);
    free(want);
out:
    unlink(g_model);
    unlink(out);
    unlink(full);
    snprintf(args, sizeof args, "%s.err", out);
    unlink(args);
    return test_main_end("ds4_logits");
}
