/* ds4-logits - diagnostics: run a prompt through the engine and print the
 * next-token top-k logprobs (or dump every logit) so the result can be
 * compared with other engines (llama.cpp, ds4, HF transformers).
 *
 *   ds4-logits -m MODEL.gguf (--text STR | --text-file F | --ids LIST |
 *              --ids-file F) [--backend cl|ref] [--exact] [--device D]
 *              [--chunk N] [--top-k K] [--all] [--full FILE] [--json]
 *              [--tokens]
 *
 * Text is tokenized like HF's encode(add_special_tokens=False) with the
 * vocabulary of the GGUF (special-token strings become their ids). Ids are
 * decimal, separated by commas, spaces or newlines.
 * --backend: "cl" (default; the OpenCL engine, QAT mode unless --exact) or
 * "ref" (the plain-C float32 reference, always exact). --device picks the
 * OpenCL device (index or name substring; DS4_CL_PLATFORM/DS4_CL_DEVICE
 * also work). --all: every position, not just the last. --full FILE: the
 * selected rows' logits as raw little-endian float32 (n_vocab per row).
 * --json: one JSON object per position instead of the table. --tokens: the
 * prompt's ids and token texts first. Timings (load, tokenize, forward) go
 * to stderr.
 * Exit status: 0 done, 1 error (message on stderr), 64 usage. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/gguf.h"
#include "common/util.h"
#include "engined/eng_backend.h"
#include "tokenizerd/tok_bpe.h"
#include "tokenizerd/tok_vocab.h"

typedef struct lg_opts {
    const char *model, *text, *text_file, *ids, *ids_file, *backend, *device, *full;
    int exact, all, json, tokens;
    uint32_t chunk, top_k;
} lg_opts;

static int usage(void)
{
    fprintf(stderr,
            "usage: ds4-logits -m MODEL.gguf (--text STR | --text-file F | --ids LIST | "
            "--ids-file F)\n"
            "                  [--backend cl|ref] [--exact] [--device D] [--chunk N] "
            "[--top-k K]\n"
            "                  [--all] [--full FILE] [--json] [--tokens]\n");
    return 64;
}

static int parse_args(int argc, char **argv, lg_opts *o)
{
    memset(o, 0, sizeof *o);
    o->backend = "cl";
    o->top_k = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **str = NULL;
        if (strcmp(a, "--exact") == 0) {
            o->exact = 1;
            continue;
        } else if (strcmp(a, "--all") == 0) {
            o->all = 1;
            continue;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        } else if (strcmp(a, "--tokens") == 0) {
            o->tokens = 1;
            continue;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ds4-logits: %s needs a value\n", a);
            return usage();
        }
        const char *v = argv[++i];
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0)
            str = &o->model;
        else if (strcmp(a, "--text") == 0)
            str = &o->text;
        else if (strcmp(a, "--text-file") == 0)
            str = &o->text_file;
        else if (strcmp(a, "--ids") == 0)
            str = &o->ids;
        else if (strcmp(a, "--ids-file") == 0)
            str = &o->ids_file;
        else if (strcmp(a, "--backend") == 0)
            str = &o->backend;
        else if (strcmp(a, "--device") == 0)
            str = &o->device;
        else if (strcmp(a, "--full") == 0)
            str = &o->full;
        else if (strcmp(a, "--chunk") == 0 || strcmp(a, "--top-k") == 0) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end || !*v || n > (1u << 20) || (a[2] == 'c' && n == 0)) {
                fprintf(stderr, "ds4-logits: bad value '%s' for %s\n", v, a);
                return usage();
            }
            *(a[2] == 'c' ? &o->chunk : &o->top_k) = (uint32_t)n;
            continue;
        } else {
            fprintf(stderr, "ds4-logits: unknown option '%s'\n", a);
            return usage();
        }
        *str = v;
    }
    int inputs = !!o->text + !!o->text_file + !!o->ids + !!o->ids_file;
    if (!o->model || inputs != 1) {
        fprintf(stderr, "ds4-logits: need -m MODEL and exactly one prompt input\n");
        return usage();
    }
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
}

/* Decimal ids separated by commas or whitespace. 0 or -1 (message). */
static int parse_ids(const char *s, int32_t **out, uint32_t *n)
{
    size_t cap = 64;
    *n = 0;
    *out = malloc(cap * sizeof **out);
    while (*out && *s) {
        while (*s == ',' || *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            s++;
        if (!*s)
            break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "ds4-logits: bad token id near '%.20s'\n", s);
            return -1;
        }
        if (*n == cap) {
            int32_t *p = realloc(*out, 2 * cap * sizeof **out);
            if (!p)
                break;
            *out = p;
            cap *= 2;
        }
        (*out)[(*n)++] = (int32_t)v;
        s = end;
    }
    if (!*out) {
        fprintf(stderr, "ds4-logits: out of memory\n");
        return -1;
    }
    return 0;
}

/* A token's text with control bytes and quotes escaped (JSON-safe). */
static void put_text(FILE *f, const tok_vocab *v, uint32_t id)
{
    size_t len = 0;
    const char *t = tok_vocab_bytes(v, id, &len);
    fputc('"', f);
    for (size_t i = 0; t && i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

typedef struct cand {
    float logit;
    uint32_t id;
} cand;

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Print one row: top-k by logit (ties by id), with log-softmax. */
static void print_row(const float *row, uint32_t V, uint32_t pos, uint32_t k, int json,
                      const tok_vocab *voc)
{
    double mx = -INFINITY, sum = 0;
    for (uint32_t i = 0; i < V; i++)
        mx = row[i] > mx ? row[i] : mx;
    for (uint32_t i = 0; i < V; i++)
        sum += exp((double)row[i] - mx);
    double lse = mx + log(sum);
    if (k > V)
        k = V;
    cand *c = malloc(sizeof *c * (k ? k : 1));
    uint32_t n = 0;
    for (uint32_t i = 0; i < V && k; i++) {
        cand x = {row[i], i};
        if (n < k) {
            c[n++] = x;
            for (uint32_t j = n - 1; j > 0 && cand_cmp(&c[j], &c[j - 1]) < 0; j--) {
                cand t = c[j];
                c[j] = c[j - 1];
                c[j - 1] = t;
            }
        } else if (cand_cmp(&x, &c[k - 1]) < 0) {
            c[k - 1] = x;
            for (uint32_t j = k - 1; j > 0 && cand_cmp(&c[j], &c[j - 1]) < 0; j--) {
                cand t = c[j];
                c[j] = c[j - 1];
                c[j - 1] = t;
            }
        }
    }
    if (json) {
        printf("{\"pos\":%u,\"top\":[", pos);
        for (uint32_t j = 0; j < n; j++) {
            printf("%s{\"id\":%u,\"logit\":%.9g,\"logprob\":%.9g,\"text\":", j ? "," : "",
                   c[j].id, c[j].logit, c[j].logit - lse);
            put_text(stdout, voc, c[j].id);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("position %u:\n", pos);
        for (uint32_t j = 0; j < n; j++) {
            printf("  %2u %7u %12.6f %12.6f ", j + 1, c[j].id, c[j].logit - lse, c[j].logit);
            put_text(stdout, voc, c[j].id);
            printf("\n");
        }
    }
    free(c);
}

int main(int argc, char **argv)
{
    lg_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    if (o.device)
        setenv("DS4_CL_DEVICE", o.device, 1);
    char err[1024];
    const eng_backend_ops *ops = eng_backend_find(o.backend);
    if (!ops) {
        fprintf(stderr, "ds4-logits: no backend '%s' (cl, ref)\n", o.backend);
        return 64;
    }
    uint64_t t0 = ds4_now_ns();
    gguf_file *gf = NULL;
    tok_vocab *voc = NULL;
    if (gguf_open(o.model, &gf, err, sizeof err) || tok_vocab_from_gguf(gf, &voc, err, sizeof err)) {
        fprintf(stderr, "ds4-logits: %s: %s\n", o.model, err);
        return 1;
    }
    int32_t *ids = NULL;
    uint32_t n = 0;
    uint64_t t1 = ds4_now_ns();
    if (o.text || o.text_file) {
        size_t len = 0;
        char *text = o.text ? strdup(o.text) : read_file(o.text_file, &len);
        if (!text) {
            fprintf(stderr, "ds4-logits: %s: %s\n", o.text_file ? o.text_file : "--text",
                    strerror(errno));
            return 1;
        }
        if (o.text)
            len = strlen(text);
        tok_encoder *enc = tok_encoder_new(voc, err, sizeof err);
        tok_ids out = {0};
        if (!enc || tok_encode(enc, text, len, TOK_MODE_RAW, &out, err, sizeof err)) {
            fprintf(stderr, "ds4-logits: tokenizing: %s\n", err);
            return 1;
        }
        n = (uint32_t)out.n;
        ids = malloc(sizeof *ids * (n ? n : 1));
        for (uint32_t i = 0; i < n; i++)
            ids[i] = (int32_t)out.v[i];
        free(out.v);
        tok_encoder_free(enc);
        free(text);
    } else {
        size_t len = 0;
        char *text = o.ids ? strdup(o.ids) : read_file(o.ids_file, &len);
        if (!text) {
            fprintf(stderr, "ds4-logits: %s: %s\n", o.ids_file, strerror(errno));
            return 1;
        }
        int bad = parse_ids(text, &ids, &n);
        free(text);
        if (bad)
            return 1;
    }
    uint64_t t2 = ds4_now_ns();
    if (n == 0) {
        fprintf(stderr, "ds4-logits: the prompt has no tokens\n");
        return 1;
    }
    if (o.tokens) {
        printf("%u prompt tokens:\n", n);
        for (uint32_t i = 0; i < n; i++) {
            printf("  %5u %7d ", i, ids[i]);
            if (ids[i] >= 0 && (uint32_t)ids[i] < voc->n)
                put_text(stdout, voc, (uint32_t)ids[i]);
            printf("\n");
        }
    }
    eng_backend *b = NULL;
    eng_backend_opts bo = {.model_path = o.model, .exact = o.exact, .max_ctx = n,
                           .prefill_chunk = o.chunk};
    uint64_t t3 = ds4_now_ns();
    if (ops->open(&bo, &b, err, sizeof err)) {
        fprintf(stderr, "ds4-logits: %s\n", err);
        return 1;
    }
    uint64_t t4 = ds4_now_ns();
    const dsv4_hparams *hp = ops->hparams(b);
    uint32_t V = hp->n_vocab, rows = o.all ? n : 1;
    float *lg = malloc(sizeof(float) * V * rows);
    eng_session *s = NULL;
    if (!lg || ops->session_new(b, &s, err, sizeof err) ||
        ops->eval(s, ids, n, o.all ? ENG_EVAL_ALL_LOGITS : 0, lg, err, sizeof err)) {
        fprintf(stderr, "ds4-logits: %s\n", lg ? err : "out of memory");
        return 1;
    }
    uint64_t t5 = ds4_now_ns();
    for (uint32_t r = 0; r < rows; r++)
        print_row(lg + (size_t)V * r, V, o.all ? r : n - 1, o.top_k, o.json, voc);
    if (o.full) {
        FILE *f = fopen(o.full, "wb");
        if (!f || fwrite(lg, sizeof(float) * V, rows, f) != rows || fclose(f)) {
            fprintf(stderr, "ds4-logits: %s: %s\n", o.full, strerror(errno));
            return 1;
        }
    }
    fprintf(stderr,
            "ds4-logits: %s; %u tokens; vocabulary %.1f ms, tokenize %.1f ms, model load "
            "%.1f ms, forward %.1f ms\n",
            ops->describe(b), n, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t4 - t3) / 1e6,
            (t5 - t4) / 1e6);
    ops->session_free(s);
    ops->close(b);
    free(lg);
    free(ids);
    tok_vocab_free(voc);
    gguf_close(gf);
    return 0;
}
