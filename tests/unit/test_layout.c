/* test_layout.c - the DeepSeek V4 layout: the expected tensor list against
 * the full-size q2 dump of ds4, hyper-parameter loading and its errors,
 * generated models (q2 / q4 / exact) validating and classified right,
 * mutated files rejected with the offending tensor or key named, the
 * tokenizer import, and bit-for-bit determinism of the generator. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dsv4_layout.h"
#include "common/dsv4_mkmodel.h"
#include "common/gguf.h"
#include "common/hash.h"
#include "common/quant.h"
#include "common/util.h"
#include "test.h"

/* ---- the full-size dump ------------------------------------------------- */

typedef struct dump_tensor {
    char name[DSV4_NAME_MAX];
    char type[16];
    uint64_t ne[4];
    uint32_t n_dims;
    uint64_t off;
} dump_tensor;

typedef struct dump_kv {
    char key[96];
    char type[16];
    char value[160];
} dump_kv;

typedef struct dump {
    dump_tensor *t;
    size_t nt;
    dump_kv *kv;
    size_t nkv;
    unsigned hdr_kv, hdr_tensors;
} dump;

/* Parse "ne=[a, b, c]". */
static uint32_t parse_ne(const char *p, uint64_t *ne)
{
    uint32_t n = 0;
    ne[0] = ne[1] = ne[2] = ne[3] = 1;
    p = strchr(p, '[');
    while (p && *p && *p != ']' && n < 4) {
        p++;
        ne[n++] = strtoull(p, (char **)&p, 10);
        while (*p == ' ')
            p++;
    }
    return n;
}

/* Read every metadata and tensor line of the dump. */
static int load_dump(dump *d)
{
    memset(d, 0, sizeof *d);
    FILE *f = fopen(test_data_path("ds4-layout/q2-layout-dump.txt"), "r");
    if (!f)
        return -1;
    char line[4096];
    d->t = ds4_xcalloc(2000, sizeof *d->t);
    d->kv = ds4_xcalloc(100, sizeof *d->kv);
    if (fgets(line, sizeof line, f))
        sscanf(line, "GGUF v3, %u metadata keys, %u tensors", &d->hdr_kv,
               &d->hdr_tensors);
    while (fgets(line, sizeof line, f)) {
        const char *ne = strstr(line, "ne=[");
        const char *off = strstr(line, "off=");
        if (ne && off && d->nt < 2000) {
            dump_tensor *t = &d->t[d->nt++];
            sscanf(line, " %63s %15s", t->name, t->type);
            t->n_dims = parse_ne(ne, t->ne);
            t->off = strtoull(off + 4, NULL, 10);
        } else if (d->nkv < 100) {
            dump_kv *k = &d->kv[d->nkv];
            int pos = 0;
            if (sscanf(line, " %95s %15s %n", k->key, k->type, &pos) == 2) {
                snprintf(k->value, sizeof k->value, "%s", line + pos);
                k->value[strcspn(k->value, "\n")] = 0;
                d->nkv++;
            }
        }
    }
    fclose(f);
    return 0;
}

/* Dump value of a key, or NULL. */
static const dump_kv *dump_find(const dump *d, const char *key)
{
    for (size_t i = 0; i < d->nkv; i++)
        if (strcmp(d->kv[i].key, key) == 0)
            return &d->kv[i];
    return NULL;
}

/* Compress ratios of the full model, read back from the dump's tensors:
 * a layer's attn_compressor_ape ne[1] is its ratio (no compressor: 0). */
static void dump_ratios(const dump *d, uint32_t n_layer, uint32_t *ratios)
{
    for (uint32_t i = 0; i < n_layer; i++)
        ratios[i] = 0;
    for (size_t i = 0; i < d->nt; i++) {
        unsigned il;
        char rest[64];
        if (sscanf(d->t[i].name, "blk.%u.%63s", &il, rest) == 2 &&
            strcmp(rest, "attn_compressor_ape.weight") == 0 && il < n_layer)
            ratios[il] = (uint32_t)d->t[i].ne[1];
    }
}

/* Write the dump's deepseek4.* and general.* scalar keys (with their dump
 * types) plus the per-layer arrays into a writer, skipping skip_key. */
static gguf_writer *dump_metadata(const dump *d, const char *skip_key,
                                  uint32_t bad_ratio_layer)
{
    gguf_writer *w = gguf_writer_new();
    uint32_t n_layer = 0;
    for (size_t i = 0; i < d->nkv; i++) {
        const dump_kv *k = &d->kv[i];
        if (skip_key && strcmp(k->key, skip_key) == 0)
            continue;
        if (strncmp(k->key, "tokenizer.", 10) == 0)
            continue;
        if (strcmp(k->type, "u32") == 0)
            gguf_w_u32(w, k->key, (uint32_t)strtoul(k->value, NULL, 10));
        else if (strcmp(k->type, "u64") == 0)
            gguf_w_u64(w, k->key, strtoull(k->value, NULL, 10));
        else if (strcmp(k->type, "f32") == 0)
            gguf_w_f32(w, k->key, (float)strtod(k->value, NULL));
        else if (strcmp(k->type, "bool") == 0)
            gguf_w_bool(w, k->key, strcmp(k->value, "True") == 0);
        else if (strcmp(k->type, "str") == 0) {
            char s[160];
            snprintf(s, sizeof s, "%s", k->value + 1);
            s[strcspn(s, "'")] = 0;
            gguf_w_str(w, k->key, s);
        }
        if (strcmp(k->key, "deepseek4.block_count") == 0)
            n_layer = (uint32_t)strtoul(k->value, NULL, 10);
    }
    uint32_t ratios[DSV4_MAX_LAYERS];
    float clamps[DSV4_MAX_LAYERS];
    dump_ratios(d, n_layer, ratios);
    for (uint32_t i = 0; i < n_layer; i++)
        clamps[i] = 10.0f;
    if (bad_ratio_layer < n_layer)
        ratios[bad_ratio_layer] = 5;
    if (!skip_key || strcmp(skip_key, "deepseek4.attention.compress_ratios"))
        gguf_w_arr(w, "deepseek4.attention.compress_ratios", GGUF_VT_UINT32,
                   ratios, n_layer);
    if (!skip_key || strcmp(skip_key, "deepseek4.swiglu_clamp_exp"))
        gguf_w_arr(w, "deepseek4.swiglu_clamp_exp", GGUF_VT_FLOAT32, clamps,
                   n_layer);
    return w;
}

/* Load hparams from a writer's bytes; returns load's rc, message in err. */
static int load_from_writer(gguf_writer *w, dsv4_hparams *hp, char *err,
                            size_t errlen)
{
    uint8_t *buf;
    uint64_t len;
    char werr[256];
    if (gguf_writer_to_mem(w, &buf, &len, werr, sizeof werr)) {
        snprintf(err, errlen, "writer: %.200s", werr);
        return -99;
    }
    gguf_file *f;
    int rc = -98;
    if (gguf_parse(buf, len, &f, werr, sizeof werr) == 0) {
        rc = dsv4_hparams_load(f, hp, err, errlen);
        gguf_close(f);
    }
    free(buf);
    return rc;
}

/* The expected list reproduces the dump exactly: names, order, ds4 types,
 * shapes, and (with alignment 32) every data offset. */
static void test_dump_tensors(const dump *d, const dsv4_hparams *hp)
{
    size_t n = dsv4_expected_tensors(hp, NULL, 0);
    CHECKF(n == 1328 && d->nt == 1328 && d->hdr_tensors == 1328,
           "expected %zu, dump %zu", n, d->nt);
    dsv4_tensor_spec *s = ds4_xcalloc(n, sizeof *s);
    CHECK(dsv4_expected_tensors(hp, s, n) == n);
    uint64_t off = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n && i < d->nt; i++) {
        const dump_tensor *t = &d->t[i];
        const ds4_type_info *ti = ds4_type_get(s[i].types[0]);
        uint64_t nel = s[i].ne[0] * s[i].ne[1] * s[i].ne[2] * s[i].ne[3];
        int ok = strcmp(t->name, s[i].name) == 0 && ti &&
                 strcmp(t->type, ti->name) == 0 && t->n_dims == s[i].n_dims &&
                 memcmp(t->ne, s[i].ne, sizeof t->ne) == 0 && t->off == off;
        if (!ok && bad++ < 5)
            fprintf(stderr, "dump #%zu %s %s [%llu,%llu,%llu] off=%llu vs "
                    "expected %s %s [%llu,%llu,%llu] off=%llu\n", i, t->name,
                    t->type, (unsigned long long)t->ne[0],
                    (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                    (unsigned long long)t->off, s[i].name,
                    ti ? ti->name : "?", (unsigned long long)s[i].ne[0],
                    (unsigned long long)s[i].ne[1],
                    (unsigned long long)s[i].ne[2], (unsigned long long)off);
        off += ds4_type_nbytes(s[i].types[0], nel);
        off = (off + 31) / 32 * 32;
    }
    CHECKF(bad == 0, "%zu tensors differ from the dump", bad);
    /* README: 80.76 GiB of tensor data. */
    CHECKF(fabs((double)off / (1024.0 * 1024 * 1024) - 80.76) < 0.01,
           "total %.3f GiB", (double)off / (1024.0 * 1024 * 1024));
    free(s);
}

/* The dump's metadata, written back with its types, loads to ds4's
 * constants; a missing or bad key is named. */
static void test_dump_hparams(const dump *d)
{
    CHECK(d->hdr_kv == 51 && d->nkv == 51);
    dsv4_hparams hp, full;
    char err[256] = "";
    gguf_writer *w = dump_metadata(d, NULL, UINT32_MAX);
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == 0, "%s", err);
    gguf_writer_free(w);
    dsv4_hparams_full(&full);
    CHECK(memcmp(&hp, &full, sizeof hp) == 0);
    /* The compress ratios read back from the tensors agree with the
     * dump's shown prefix "[  0,  0,  4,128, ...". */
    const dump_kv *cr = dump_find(d, "deepseek4.attention.compress_ratios");
    CHECK(cr && strstr(cr->value, "[  0,  0,  4,128,  4,128,"));
    test_dump_tensors(d, &hp);

    static const char *const required[] = {
        "deepseek4.attention.head_count", "deepseek4.block_count",
        "deepseek4.rope.scaling.original_context_length",
        "deepseek4.attention.compress_ratios", "deepseek4.swiglu_clamp_exp",
        "deepseek4.hyper_connection.epsilon", "deepseek4.expert_weights_norm",
        "general.architecture",
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(required); i++) {
        w = dump_metadata(d, required[i], UINT32_MAX);
        err[0] = 0;
        CHECKF(load_from_writer(w, &hp, err, sizeof err) == -1 &&
               strstr(err, required[i]), "%s: '%s'", required[i], err);
        gguf_writer_free(w);
    }
    /* Keys ds4 does not need are optional. */
    static const char *const optional[] = {
        "deepseek4.context_length", "deepseek4.expert_group_count",
        "deepseek4.rope.scaling.type", "general.name", "general.file_type",
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(optional); i++) {
        w = dump_metadata(d, optional[i], UINT32_MAX);
        CHECKF(load_from_writer(w, &hp, err, sizeof err) == 0, "%s: %s",
               optional[i], err);
        gguf_writer_free(w);
    }
    CHECK(hp.n_ctx == 1048576); /* defaulted: 65536 * 16 */
    /* A key of the wrong type is named with its type. */
    w = dump_metadata(d, "deepseek4.attention.head_count", UINT32_MAX);
    gguf_w_str(w, "deepseek4.attention.head_count", "64");
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == -1 &&
           strstr(err, "'deepseek4.attention.head_count' has type str"),
           "%s", err);
    gguf_writer_free(w);
    w = dump_metadata(d, "deepseek4.attention.compress_ratios", UINT32_MAX);
    float fr[43] = {0};
    gguf_w_arr(w, "deepseek4.attention.compress_ratios", GGUF_VT_FLOAT32, fr,
               43);
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == -1 &&
           strstr(err, "compress_ratios': element 0"), "%s", err);
    gguf_writer_free(w);
    uint32_t short_r[42] = {0};
    w = dump_metadata(d, "deepseek4.attention.compress_ratios", UINT32_MAX);
    gguf_w_arr(w, "deepseek4.attention.compress_ratios", GGUF_VT_UINT32,
               short_r, 42);
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == -1 &&
           strstr(err, "has 42 elements"), "%s", err);
    gguf_writer_free(w);
    w = dump_metadata(d, "general.architecture", UINT32_MAX);
    gguf_w_str(w, "general.architecture", "llama");
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == -1 &&
           strstr(err, "'llama'"), "%s", err);
    gguf_writer_free(w);
    /* u32 instead of ds4's u64 for the context lengths is accepted. */
    w = dump_metadata(d, "deepseek4.rope.scaling.original_context_length",
                      UINT32_MAX);
    gguf_w_u32(w, "deepseek4.rope.scaling.original_context_length", 65536);
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == 0 &&
           hp.rope_orig_ctx == 65536, "%s", err);
    gguf_writer_free(w);
    w = dump_metadata(d, NULL, 17);
    CHECKF(load_from_writer(w, &hp, err, sizeof err) == -1 &&
           strstr(err, "compress_ratios[17] = 5"), "%s", err);
    gguf_writer_free(w);
}

/* Range checks on hand-made parameter sets. */
static void test_hparams_check(void)
{
    dsv4_hparams hp;
    char err[256];
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    hp = o.hp;
    CHECKF(dsv4_hparams_check(&hp, err, sizeof err) == 0, "%s", err);
    hp.n_rot = 256; /* > head dim */
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1 &&
          strstr(err, "rope.dimension_count"));
    hp = o.hp;
    hp.n_head = 3; /* not a multiple of 2 groups */
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1 &&
          strstr(err, "output_group_count"));
    hp = o.hp;
    hp.n_expert_used = 9;
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1 &&
          strstr(err, "expert_used_count"));
    hp = o.hp;
    hp.idx_head_dim = 96; /* not a power of two */
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1 &&
          strstr(err, "indexer.key_length"));
    hp = o.hp;
    hp.head_dim = hp.value_dim = 96; /* 32 non-RoPE dims: no FP8 block */
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1);
    hp = o.hp;
    hp.n_embd = 0;
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1 &&
          strstr(err, "embedding_length"));
    char name[DSV4_NAME_MAX];
    CHECK(strcmp(dsv4_tensor_name(DSV4_T_ATTN_Q_A, 3, name),
                 "blk.3.attn_q_a.weight") == 0);
    CHECK(strcmp(dsv4_tensor_name(DSV4_T_FFN_EXP_PROBS_B, 41, name),
                 "blk.41.exp_probs_b.bias") == 0);
    CHECK(strcmp(dsv4_tensor_name(DSV4_T_OUTPUT, 7, name),
                 "output.weight") == 0);
    hp = o.hp;
    hp.rms_eps = NAN;
    CHECK(dsv4_hparams_check(&hp, err, sizeof err) == -1 &&
          strstr(err, "epsilon"));
}

/* ---- tokenizer ---------------------------------------------------------- */

/* Write text to a temp file; returns its path (static). */
static const char *temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_layout_%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* The real tokenizer, and the pair form of merges, gaps, conflicts. */
static void test_tokenizer(const dsv4_tokdata *t)
{
    CHECK(t->n_tokens == 129280);
    CHECK(t->bos == 0 && t->eos == 1);
    CHECK(t->token_types[0] == 3 && t->token_types[2] == 3);
    CHECK(t->token_types[3] == 1 && t->token_types[127999] == 1);
    CHECK(t->token_types[128803] == 4); /* <｜User｜>: special=false */
    CHECK(t->token_types[129279] == 3); /* <｜image｜> */
    CHECK(strcmp(t->tokens[128821], "<think>") == 0);
    CHECK(t->n_merges == 127741 && strcmp(t->merges[0], "\xc4\xa0 t") == 0);

    const char *base_pre = "{\"added_tokens\":[{\"id\":0,\"content\":"
        "\"<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>\","
        "\"special\":true},{\"id\":3,\"content\":\"<\xef\xbd\x9c" "end\xe2\x96\x81"
        "of\xe2\x96\x81sentence\xef\xbd\x9c>\",\"special\":true}],\"model\":"
        "{\"type\":\"BPE\",\"vocab\":{\"a\":1,\"b\":2%s},\"merges\":%s}}";
    char json[1024];
    dsv4_tokdata *s;
    char err[256];
    snprintf(json, sizeof json, base_pre, "", "[[\"a\",\"b\"],\"b a\"]");
    CHECKF(dsv4_tokdata_load(temp_file(json), &s, err, sizeof err) == 0,
           "%s", err);
    if (s) {
        CHECK(s->n_tokens == 4 && s->eos == 3 && s->n_merges == 2);
        CHECK(strcmp(s->merges[0], "a b") == 0 &&
              strcmp(s->merges[1], "b a") == 0);
        dsv4_tokdata_free(s);
    }
    snprintf(json, sizeof json, base_pre, ",\"c\":5", "[]"); /* gap at 4 */
    CHECK(dsv4_tokdata_load(temp_file(json), &s, err, sizeof err) == -1 &&
          strstr(err, "no token has id 4"));
    snprintf(json, sizeof json, base_pre, ",\"c\":3", "[]"); /* id 3 twice */
    CHECK(dsv4_tokdata_load(temp_file(json), &s, err, sizeof err) == -1 &&
          strstr(err, "id 3"));
    snprintf(json, sizeof json, base_pre, "", "[[\"a\"]]");
    CHECK(dsv4_tokdata_load(temp_file(json), &s, err, sizeof err) == -1 &&
          strstr(err, "merges[0]"));
    CHECK(dsv4_tokdata_load(temp_file("{\"model\":"), &s, err,
                            sizeof err) == -1);
    unlink(temp_file(""));
}

/* ---- generated models --------------------------------------------------- */

typedef struct model {
    uint8_t *buf;
    uint64_t len;
    gguf_file *f;
    char sha[65];
} model;

/* Generate into memory and parse. */
static int gen(const dsv4_mkmodel_opts *o, model *m)
{
    char err[256];
    memset(m, 0, sizeof *m);
    if (dsv4_mkmodel_to_mem(o, &m->buf, &m->len, err, sizeof err)) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return -1;
    }
    uint8_t d[32];
    ds4_sha256(m->buf, m->len, d);
    ds4_hex(d, 32, m->sha);
    if (gguf_parse(m->buf, m->len, &m->f, err, sizeof err)) {
        fprintf(stderr, "parse: %s\n", err);
        return -1;
    }
    return 0;
}

static void model_free(model *m)
{
    gguf_close(m->f);
    free(m->buf);
}

/* Full check of a file: load + validate; kind or -1, message in err. */
static int check(const gguf_file *f, char *err, size_t errlen,
                 dsv4_validation *res)
{
    dsv4_hparams *hp = ds4_xmalloc(sizeof *hp);
    dsv4_validation r;
    int rc = dsv4_check_file(f, hp, res ? res : &r, err, errlen);
    free(hp);
    return rc ? -1 : (res ? res : &r)->kind;
}

/* Apply one edit to m and run the full check on the result. */
static int check_edited(const model *m, const dsv4_gguf_edit *e, char *err,
                        size_t errlen)
{
    dsv4_build *b;
    char werr[256];
    if (dsv4_gguf_rewrite(m->f, e, &b, werr, sizeof werr)) {
        snprintf(err, errlen, "rewrite: %.200s", werr);
        return -99;
    }
    uint8_t *buf;
    uint64_t len;
    int rc = -98;
    if (gguf_writer_to_mem(dsv4_build_writer(b), &buf, &len, werr,
                           sizeof werr) == 0) {
        gguf_file *f;
        if (gguf_parse(buf, len, &f, werr, sizeof werr) == 0) {
            rc = check(f, err, errlen, NULL);
            gguf_close(f);
        }
        free(buf);
    }
    dsv4_build_free(b);
    return rc;
}

/* Small q2-capable options: few layers and experts keep the quantizers'
 * work (the slow part) small; the vocab stays the real one. */
static void small_opts(dsv4_mkmodel_opts *o, const dsv4_tokdata *tok, int layout)
{
    static const uint32_t ratios[] = {0, 4, 128};
    dsv4_mkmodel_defaults(o);
    o->tok = tok;
    o->layout = layout;
    o->hp.n_vocab = tok->n_tokens;
    o->hp.n_layer = 3;
    for (uint32_t i = 0; i < 3; i++)
        o->hp.compress_ratio[i] = ratios[i];
    o->hp.n_hash_layer = 2; /* layer 2 is bias-routed */
    o->hp.n_expert = 2;
    o->hp.n_expert_used = 2;
}

/* tid2eid rows: expert ids in range and distinct within a token. */
static void check_tid2eid(const gguf_file *f, const char *name, uint32_t k,
                          uint32_t E)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    CHECK(t && t->type == DS4_TYPE_I32 && t->ne[0] == k);
    if (!t)
        return;
    const int32_t *v = t->data;
    uint64_t bad = 0, hist[64] = {0};
    for (uint64_t tok = 0; tok < t->ne[1]; tok++)
        for (uint32_t j = 0; j < k; j++) {
            int32_t e = v[tok * k + j];
            bad += e < 0 || (uint32_t)e >= E;
            for (uint32_t i = 0; i < j; i++)
                bad += v[tok * k + i] == e;
            if (e >= 0 && e < 64)
                hist[e]++;
        }
    CHECK(bad == 0);
    for (uint32_t e = 0; e < E && e < 64; e++) /* every expert used */
        CHECK(hist[e] > t->ne[1] * k / E / 2);
}

/* The same values underlie every layout: F32 tensors are identical, and a
 * Q8_0 tensor of the q2 file is close to the exact file's F16 values. */
static void check_same_values(const gguf_file *q2, const gguf_file *ex)
{
    const gguf_tensor *a = gguf_find_tensor(q2, "blk.1.attn_sinks.weight");
    const gguf_tensor *b = gguf_find_tensor(ex, "blk.1.attn_sinks.weight");
    CHECK(a && b && a->nbytes == b->nbytes &&
          memcmp(a->data, b->data, a->nbytes) == 0);
    a = gguf_find_tensor(q2, "blk.2.attn_kv.weight");
    b = gguf_find_tensor(ex, "blk.2.attn_kv.weight");
    CHECK(a && b && a->type == DS4_TYPE_Q8_0 && b->type == DS4_TYPE_F16);
    if (!a || !b)
        return;
    uint64_t n = a->ne[0] * a->ne[1];
    float *x = ds4_xmalloc(n * sizeof *x), *y = ds4_xmalloc(n * sizeof *y);
    CHECK(ds4_dequantize(a->type, a->data, x, n) == 0);
    CHECK(ds4_dequantize(b->type, b->data, y, n) == 0);
    double err = 0, norm = 0;
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < n; i++) {
        err += (x[i] - y[i]) * (double)(x[i] - y[i]);
        norm += y[i] * (double)y[i];
        zeros += y[i] == 0;
    }
    CHECKF(err < norm * 1e-4, "q8_0 vs exact rel err %g", err / norm);
    CHECK(zeros < n / 100); /* ~1/2047 of values are 0 */
    /* ~1/sqrt(fan_in) scale: rms close to 1/sqrt(256) within 2x */
    double rms = sqrt(norm / (double)n);
    CHECKF(rms > 0.5 / 16 && rms < 2.0 / 16, "rms %g", rms);
    free(x);
    free(y);
}

/* Mutations of a valid exact model: each rejected naming the culprit. */
static void test_mutations(const model *m)
{
    char err[512] = "";
    dsv4_gguf_edit e = {.drop_tensor = "blk.3.attn_kv.weight"};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "'blk.3.attn_kv.weight' is missing"), "%s", err);
    /* Q8_0 is less precise than the F16 ds4 uses for compressors. */
    e = (dsv4_gguf_edit){.retype_tensor = "blk.2.attn_compressor_kv.weight",
                         .new_type = DS4_TYPE_Q8_0};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "'blk.2.attn_compressor_kv.weight': type Q8_0, "
                  "expected F16 or F32"), "%s", err);
    /* F32 where ds4 has F16 is accepted (more precise). */
    e = (dsv4_gguf_edit){.retype_tensor = "blk.0.ffn_gate_inp.weight",
                         .new_type = DS4_TYPE_F32};
    CHECKF(check_edited(m, &e, err, sizeof err) == DSV4_LAYOUT_EXTENDED,
           "%s", err);
    e = (dsv4_gguf_edit){.grow_tensor = "blk.4.attn_sinks.weight"};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "'blk.4.attn_sinks.weight': shape [5], expected [4]"),
           "%s", err);
    e = (dsv4_gguf_edit){.grow_tensor = "blk.5.ffn_down_exps.weight"};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "'blk.5.ffn_down_exps.weight': shape [256, 256, 9], "
                  "expected [256, 256, 8]"), "%s", err);
    e = (dsv4_gguf_edit){.drop_key = "deepseek4.attention.indexer.top_k"};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "deepseek4.attention.indexer.top_k"), "%s", err);
    e = (dsv4_gguf_edit){.drop_key = "tokenizer.ggml.merges"};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "tokenizer.ggml.merges"), "%s", err);
    /* Keys ds4 does not read may go. */
    e = (dsv4_gguf_edit){.drop_key = "tokenizer.ggml.token_type"};
    CHECKF(check_edited(m, &e, err, sizeof err) == DSV4_LAYOUT_EXTENDED,
           "%s", err);
    /* An extra tensor is allowed, counted and named. */
    dsv4_build *b;
    dsv4_gguf_edit none = {0};
    CHECK(dsv4_gguf_rewrite(m->f, &none, &b, err, sizeof err) == 0);
    static const float extra[4] = {1, 2, 3, 4};
    const uint64_t ne[1] = {4};
    gguf_w_tensor(dsv4_build_writer(b), "mtp.0.enorm.weight", DS4_TYPE_F32, 1,
                  ne, extra, sizeof extra);
    uint8_t *buf;
    uint64_t len;
    gguf_file *f;
    if (gguf_writer_to_mem(dsv4_build_writer(b), &buf, &len, err,
                           sizeof err) == 0) {
        if (gguf_parse(buf, len, &f, err, sizeof err) == 0) {
            dsv4_validation res;
            CHECKF(check(f, err, sizeof err, &res) == DSV4_LAYOUT_EXTENDED,
                   "%s", err);
            CHECK(res.n_extra == 1 &&
                  strcmp(res.first_extra, "mtp.0.enorm.weight") == 0);
            gguf_close(f);
        } else {
            CHECKF(0, "%s", err);
        }
        free(buf);
    } else {
        CHECKF(0, "%s", err);
    }
    dsv4_build_free(b);
    /* The output head (after every layer) is checked too. */
    e = (dsv4_gguf_edit){.drop_tensor = "output.weight"};
    CHECKF(check_edited(m, &e, err, sizeof err) == -1 &&
           strstr(err, "'output.weight' is missing"), "%s", err);
}

/* q2 model: valid, classified q2; gate/up type mismatch rejected. */
static void test_q2(const dsv4_tokdata *tok, model *q2)
{
    dsv4_mkmodel_opts o;
    small_opts(&o, tok, DSV4_MK_Q2);
    if (gen(&o, q2)) {
        CHECK(0);
        return;
    }
    char err[512] = "";
    dsv4_validation res;
    CHECKF(check(q2->f, err, sizeof err, &res) == DSV4_LAYOUT_Q2, "%s", err);
    CHECK(res.n_extra == 0 && res.n_tensors == q2->f->n_tensors);
    const gguf_tensor *t = gguf_find_tensor(q2->f, "blk.1.ffn_gate_exps.weight");
    CHECK(t && t->type == DS4_TYPE_IQ2_XXS);
    t = gguf_find_tensor(q2->f, "blk.1.ffn_down_exps.weight");
    CHECK(t && t->type == DS4_TYPE_Q2_K);
    check_tid2eid(q2->f, "blk.0.ffn_gate_tid2eid.weight", 2, 2);
    CHECK(gguf_find_tensor(q2->f, "blk.2.exp_probs_b.bias"));
    CHECK(!gguf_find_tensor(q2->f, "blk.2.ffn_gate_tid2eid.weight"));
    dsv4_gguf_edit e = {.retype_tensor = "blk.1.ffn_up_exps.weight",
                        .new_type = DS4_TYPE_Q4_K};
    CHECKF(check_edited(q2, &e, err, sizeof err) == -1 &&
           strstr(err, "'blk.1.ffn_up_exps.weight': type Q4_K differs"),
           "%s", err);
    /* down in Q4_K alone: still accepted, but no longer the q2 layout */
    e = (dsv4_gguf_edit){.retype_tensor = "blk.1.ffn_down_exps.weight",
                         .new_type = DS4_TYPE_Q4_K};
    CHECKF(check_edited(q2, &e, err, sizeof err) == DSV4_LAYOUT_EXTENDED,
           "%s", err);
    /* Determinism: a second generation gives the same bytes. */
    model again;
    if (gen(&o, &again) == 0) {
        CHECKF(strcmp(again.sha, q2->sha) == 0, "%s vs %s", again.sha,
               q2->sha);
        model_free(&again);
    }
}

/* All experts re-encoded as Q4_K: the q4 layout; one layer only: mixed. */
static void test_q4_mixed(const model *q2)
{
    char err[512] = "";
    dsv4_gguf_edit e = {.retype_tensor = "blk.*.ffn_*_exps.weight",
                        .new_type = DS4_TYPE_Q4_K};
    CHECKF(check_edited(q2, &e, err, sizeof err) == DSV4_LAYOUT_Q4, "%s", err);
    e.retype_tensor = "blk.1.ffn_*_exps.weight";
    CHECKF(check_edited(q2, &e, err, sizeof err) == DSV4_LAYOUT_MIXED, "%s",
           err);
    /* a pattern that matches nothing is an error, not a silent copy */
    e.retype_tensor = "blk.9.*";
    CHECK(check_edited(q2, &e, err, sizeof err) == -99 &&
          strstr(err, "no tensor 'blk.9.*'"));
}

/* ---- the ds4-gguf tool --------------------------------------------------- */

/* Path of the ds4-gguf binary next to this test's build dir
 * (build/tests/test_layout -> build/ds4-gguf); NULL if absent. */
static const char *tool_path(void)
{
    static char path[4096];
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = 0;
    snprintf(path, sizeof path, "%s/../ds4-gguf", exe);
    return access(path, X_OK) == 0 ? path : NULL;
}

/* Write bytes to path (no fsync: a scratch file). */
static int write_bytes(const char *path, const void *buf, uint64_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(buf, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Write m with one edit applied to path. */
static int write_edited(const model *m, const dsv4_gguf_edit *e,
                        const char *path)
{
    dsv4_build *b;
    char err[256];
    if (dsv4_gguf_rewrite(m->f, e, &b, err, sizeof err))
        return -1;
    uint8_t *buf;
    uint64_t len;
    int rc = gguf_writer_to_mem(dsv4_build_writer(b), &buf, &len, err,
                                sizeof err);
    if (rc == 0) {
        rc = write_bytes(path, buf, len);
        free(buf);
    }
    dsv4_build_free(b);
    return rc;
}

/* Run `ds4-gguf info --brief path`; exit status, verdict line in out. */
static int run_info(const char *tool, const char *path, char *out, size_t cap)
{
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "'%s' info --brief '%s'", tool, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[1024];
    out[0] = 0;
    while (fgets(line, sizeof line, p))
        if (strncmp(line, "verdict:", 8) == 0)
            snprintf(out, cap, "%s", line);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The tool's verdicts and exit codes on a good file, each mutation, and a
 * truncated file. */
static void test_tool(const model *m)
{
    const char *tool = tool_path();
    if (!tool) {
        fprintf(stderr, "note: no ds4-gguf next to the test binary; tool "
                "checks skipped (make builds it)\n");
        return;
    }
    char path[64], v[1024];
    snprintf(path, sizeof path, "/tmp/test_layout_%d.gguf", (int)getpid());
    CHECK(write_bytes(path, m->buf, m->len) == 0);
    CHECKF(run_info(tool, path, v, sizeof v) == 0 &&
           strstr(v, "valid DeepSeek V4 layout: extended layout"), "%s", v);
    static const struct {
        dsv4_gguf_edit e;
        const char *want;
    } cases[] = {
        {{.drop_tensor = "blk.5.ffn_gate_shexp.weight"},
         "INVALID DeepSeek V4 layout: tensor 'blk.5.ffn_gate_shexp.weight' "
         "is missing"},
        {{.retype_tensor = "output_hc_fn.weight", .new_type = DS4_TYPE_Q8_0},
         "tensor 'output_hc_fn.weight': type Q8_0, expected F16 or F32"},
        {{.grow_tensor = "blk.3.attn_compressor_ape.weight"},
         "tensor 'blk.3.attn_compressor_ape.weight': shape [128, 129], "
         "expected [128, 128]"},
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(cases); i++) {
        CHECK(write_edited(m, &cases[i].e, path) == 0);
        CHECKF(run_info(tool, path, v, sizeof v) == 1 &&
               strstr(v, cases[i].want), "case %zu: %s", i, v);
    }
    CHECK(write_bytes(path, m->buf, m->len / 2) == 0);
    CHECKF(run_info(tool, path, v, sizeof v) == 2 &&
           strstr(v, "unreadable"), "%s", v);
    unlink(path);
}

/* Exact model with the default test-model dimensions: valid, extended,
 * same seed same bytes, other seed other bytes; then the mutations. */
static void test_exact(const dsv4_tokdata *tok, const model *q2)
{
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.layout = DSV4_MK_EXACT;
    o.hp.n_vocab = tok->n_tokens;
    model m, m2;
    if (gen(&o, &m)) {
        CHECK(0);
        return;
    }
    char err[512] = "";
    dsv4_validation res;
    CHECKF(check(m.f, err, sizeof err, &res) == DSV4_LAYOUT_EXTENDED, "%s",
           err);
    CHECK(res.n_tensors == 178);
    const gguf_tensor *t = gguf_find_tensor(m.f, "blk.3.ffn_up_exps.weight");
    CHECK(t && t->type == DS4_TYPE_F16 && t->ne[0] == 256 && t->ne[2] == 8);
    check_tid2eid(m.f, "blk.2.ffn_gate_tid2eid.weight", 2, 8);
    if (q2->f)
        check_same_values(q2->f, m.f);
    o.seed = 2;
    if (gen(&o, &m2) == 0) {
        CHECK(strcmp(m.sha, m2.sha) != 0);
        CHECK(m.len == m2.len);
        model_free(&m2);
    }
    test_mutations(&m);
    test_tool(&m);
    model_free(&m);
}

int main(void)
{
    dump d;
    CHECK(load_dump(&d) == 0);
    test_dump_hparams(&d);
    free(d.t);
    free(d.kv);
    test_hparams_check();

    dsv4_tokdata *tok = NULL;
    char err[512];
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (!path)
        path = DSV4_TOKENIZER_JSON;
    CHECKF(dsv4_tokdata_load(path, &tok, err, sizeof err) == 0, "%s", err);
    if (tok) {
        test_tokenizer(tok);
        model q2 = {0};
        test_q2(tok, &q2);
        if (q2.f)
            test_q4_mixed(&q2);
        test_exact(tok, &q2);
        if (q2.f)
            model_free(&q2);
        dsv4_tokdata_free(tok);
    }
    return test_main_end("layout");
}
