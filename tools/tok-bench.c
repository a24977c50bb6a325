/* tok-bench - single-thread throughput of the DeepSeek V4 tokenizer.
 *
 *   tok-bench [--json tokenizer.json | --gguf model.gguf] [--file PATH]
 *             [--mb 50] [--mode raw|plain] [--no-cache-warm]
 *
 * Text: the corpus tests/data/tokenizer/corpus.jsonl (every entry, as its
 * own request) or --file (cut into ~64 KB requests at newlines), repeated
 * until --mb megabytes have been tokenized. Reports MB/s and tokens/s of
 * encoding, and tokens/s of streaming detokenization of the result. The
 * corpus repeats, so the BPE cache hit rate is printed too: real text
 * misses more often (a --file of varied text shows that case). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "opts.h"
#include "tokenizerd/tok_bpe.h"
#include "tokenizerd/tok_detok.h"
#include "tokenizerd/tok_vocab.h"
#include "util.h"

struct cfg {
    const char *json;
    const char *gguf;
    const char *file;
    const char *corpus;
    const char *mode;
    double mb;
};

/* Requests to tokenize: pointers into one owned buffer. */
typedef struct reqs {
    char *buf;
    size_t n;
    size_t *off, *len;
    size_t total;
} reqs;

/* Append one request (offset and length into r->buf). */
static void reqs_add(reqs *r, size_t off, size_t len, size_t *cap)
{
    if (r->n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        r->off = ds4_xrealloc(r->off, *cap * sizeof *r->off);
        r->len = ds4_xrealloc(r->len, *cap * sizeof *r->len);
    }
    r->off[r->n] = off;
    r->len[r->n] = len;
    r->n++;
    r->total += len;
}

/* Every text entry of the corpus (hex entries skipped). */
static int load_corpus(const char *path, reqs *r)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tok-bench: cannot open %s\n", path);
        return -1;
    }
    tok_buf all = {0};
    char line[1 << 16];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (json_is_string(j)) {
            size_t off = all.len;
            tok_buf_append(&all, json_string_value(j), json_string_length(j));
            if (json_string_length(j))
                reqs_add(r, off, json_string_length(j), &cap);
        }
        json_decref(j);
    }
    fclose(f);
    r->buf = all.data;
    return r->n ? 0 : -1;
}

/* A text file, cut into ~64 KB requests at newlines. */
static int load_file(const char *path, reqs *r)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tok-bench: cannot open %s\n", path);
        return -1;
    }
    tok_buf all = {0};
    char chunk[1 << 16];
    size_t got, cap = 0;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        tok_buf_append(&all, chunk, got);
    fclose(f);
    for (size_t i = 0; i < all.len;) {
        size_t end = i + 65536 < all.len ? i + 65536 : all.len;
        const char *nl = end < all.len ? memchr(all.data + end, '\n', all.len - end) : NULL;
        end = nl ? (size_t)(nl - all.data) + 1 : all.len;
        reqs_add(r, i, end - i, &cap);
        i = end;
    }
    r->buf = all.data;
    return r->n ? 0 : -1;
}

/* Load the vocabulary from whichever source was named. */
static tok_vocab *load_vocab(const struct cfg *c, gguf_file **gf)
{
    char err[512];
    tok_vocab *v = NULL;
    int rc;
    if (c->gguf) {
        rc = gguf_open(c->gguf, gf, err, sizeof err);
        if (rc == 0)
            rc = tok_vocab_from_gguf(*gf, &v, err, sizeof err);
    } else {
        rc = tok_vocab_from_json_file(c->json, &v, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "tok-bench: %s\n", err);
        return NULL;
    }
    return v;
}

/* CPU time of this thread: throughput per core, even on a busy machine. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Encode requests round-robin until target bytes; returns tokens made. */
static uint64_t run_encode(tok_encoder *e, const reqs *r, uint64_t target, int mode,
                           uint64_t *bytes, tok_ids *keep)
{
    char err[256];
    uint64_t toks = 0;
    tok_ids ids = {0};
    *bytes = 0;
    for (size_t i = 0; *bytes < target; i = (i + 1) % r->n) {
        ids.n = 0;
        if (tok_encode(e, r->buf + r->off[i], r->len[i], mode, &ids, err, sizeof err)) {
            fprintf(stderr, "tok-bench: %s\n", err);
            exit(1);
        }
        toks += ids.n;
        *bytes += r->len[i];
        if (keep && keep->n < (1u << 24))
            tok_ids_append(keep, ids.v, ids.n);
    }
    tok_ids_free(&ids);
    return toks;
}

/* Parse options, load, warm up, then time encoding and detokenization. */
int main(int argc, char **argv)
{
    struct cfg c;
    const struct ds4_opt opts[] = {
        {"json", 0, DS4_OPT_STRING, &c.json,
         "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json", "tokenizer.json to load"},
        {"gguf", 0, DS4_OPT_STRING, &c.gguf, NULL, "load the vocabulary from this GGUF instead"},
        {"file", 0, DS4_OPT_STRING, &c.file, NULL, "text file to tokenize instead of the corpus"},
        {"corpus", 0, DS4_OPT_STRING, &c.corpus, "tests/data/tokenizer/corpus.jsonl", "corpus (jsonl)"},
        {"mode", 0, DS4_OPT_STRING, &c.mode, "raw", "raw (split added tokens) or plain"},
        {"mb", 0, DS4_OPT_DOUBLE, &c.mb, "50", "megabytes of text to tokenize"},
        {NULL},
    };
    const struct ds4_opt *const tables[] = {opts, NULL};
    char err[256];
    c.gguf = c.file = NULL;
    if (ds4_opts_defaults(tables, err, sizeof err)) {
        fprintf(stderr, "tok-bench: %s\n", err);
        return 2;
    }
    int rc = ds4_opts_parse(tables, argc, argv, NULL, NULL, err, sizeof err);
    if (rc == DS4_OPTS_HELP) {
        ds4_opts_help(stdout, "tok-bench", "[options]", tables);
        return 0;
    }
    if (rc != DS4_OPTS_OK || c.mb <= 0 || (strcmp(c.mode, "raw") && strcmp(c.mode, "plain"))) {
        fprintf(stderr, "tok-bench: %s\n", rc ? err : "bad --mb or --mode");
        return 2;
    }
    int mode = strcmp(c.mode, "plain") == 0 ? TOK_MODE_PLAIN : TOK_MODE_RAW;
    gguf_file *gf = NULL;
    uint64_t t0 = ds4_now_ns();
    tok_vocab *v = load_vocab(&c, &gf);
    if (!v)
        return 1;
    double load_ms = (double)(ds4_now_ns() - t0) / 1e6;
    reqs r = {0};
    if ((c.file ? load_file(c.file, &r) : load_corpus(c.corpus, &r)) != 0) {
        fprintf(stderr, "tok-bench: no text to tokenize\n");
        return 1;
    }
    tok_encoder *e = tok_encoder_new(v, err, sizeof err);
    if (!e) {
        fprintf(stderr, "tok-bench: %s\n", err);
        return 1;
    }
    uint64_t bytes, target = (uint64_t)(c.mb * 1e6);
    tok_ids keep = {0};
    /* warm-up, and the ids the detokenizer measurement replays */
    run_encode(e, &r, target < 8000000 ? target : 8000000, mode, &bytes, &keep);
    t0 = ds4_now_ns();
    double c0 = cpu_s();
    uint64_t toks = run_encode(e, &r, target, mode, &bytes, NULL);
    double cpu = cpu_s() - c0;
    double sec = (double)(ds4_now_ns() - t0) / 1e9;
    uint64_t hits, misses;
    tok_encoder_stats(e, &hits, &misses);
    printf("vocabulary: %u tokens, %u merges, %u added (loaded from %s in %.0f ms)\n", v->n,
           v->n_merges, v->n_added, c.gguf ? "GGUF" : "tokenizer.json", load_ms);
    printf("text: %s, %zu requests, %.2f MB per pass, mode %s\n", c.file ? c.file : c.corpus, r.n,
           (double)r.total / 1e6, c.mode);
    printf("encode: %.1f MB in %.3f s wall, %.3f s CPU = %.1f MB/s per core, %.2f M tokens/s "
           "(%.2f bytes/token), BPE cache hit rate %.1f%%\n",
           (double)bytes / 1e6, sec, cpu, (double)bytes / 1e6 / cpu, (double)toks / 1e6 / cpu,
           (double)bytes / (double)(toks ? toks : 1),
           100.0 * (double)hits / (double)(hits + misses ? hits + misses : 1));
    /* streaming detokenization of what was produced */
    tok_detok d;
    tok_detok_init(&d, v);
    tok_buf out = {0};
    c0 = cpu_s();
    for (size_t i = 0; i < keep.n; i++) {
        if (out.len > (1u << 20))
            out.len = 0;
        tok_detok_feed(&d, keep.v[i], &out);
    }
    tok_detok_flush(&d, &out);
    sec = cpu_s() - c0;
    printf("detokenize (streaming): %zu tokens in %.3f s CPU = %.1f M tokens/s\n", keep.n, sec,
           (double)keep.n / 1e6 / (sec > 0 ? sec : 1e-9));
    tok_buf_free(&out);
    tok_ids_free(&keep);
    tok_encoder_free(e);
    tok_vocab_free(v);
    if (gf)
        gguf_close(gf);
    free(r.buf);
    free(r.off);
    free(r.len);
    return 0;
}
