/* test_tokenizer.c - the DeepSeek V4 tokenizer against its oracles:
 *  - token ids of every corpus line equal HF tokenizers' (expected-hf.jsonl,
 *    made on the GPU machine) when that file exists, else the JS reference
 *    (expected-js.jsonl) except on lines holding characters whose \s
 *    membership differs between JS and Oniguruma (reported, not failed);
 *  - invalid UTF-8 is replaced exactly as Python's errors="replace";
 *  - decode(encode(x)) == x, and the incremental detokenizer emits only
 *    valid UTF-8 whose concatenation is the whole text;
 *  - the fast BPE paths (array, heap, cache) equal a naive reference;
 *  - a GGUF carrying the same vocabulary tokenizes identically, and broken
 *    vocabularies are refused with a message.
 * Set DS4_TOKENIZER_JSON to use another tokenizer.json. */
#include <jansson.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/hash.h"
#include "common/util.h"
#include "test.h"
#include "tokenizerd/tok_bpe.h"
#include "tokenizerd/tok_detok.h"
#include "tokenizerd/tok_pretok.h"
#include "tokenizerd/tok_utf8.h"
#include "tokenizerd/tok_vocab.h"

#define DEFAULT_TOKJSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"

/* One corpus entry: the bytes given to the tokenizer, and its valid text. */
typedef struct entry {
    char *raw;
    size_t rawlen;
    char *text;       /* raw after replacement decoding */
    size_t textlen;
    int is_hex;
} entry;

static uint64_t rng_state = 0x853c49e6748fea9bull;

/* xorshift64*: seeded, reproducible. */
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Value of one lowercase hex digit, -1 otherwise. */
static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decode a lowercase hex string into a malloc'd buffer. */
static char *unhex(const char *h, size_t *n)
{
    size_t l = strlen(h) / 2;
    char *o = ds4_xmalloc(l + 1);
    for (size_t i = 0; i < l; i++)
        o[i] = (char)(hexval(h[2 * i]) * 16 + hexval(h[2 * i + 1]));
    o[l] = 0;
    *n = l;
    return o;
}

/* Split a file into lines (in place); returns the count. */
static size_t split_lines(char *buf, char ***lines)
{
    size_t n = 0, cap = 0;
    *lines = NULL;
    for (char *p = buf; *p;) {
        char *e = strchr(p, '\n');
        if (e)
            *e = 0;
        if (*p) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                *lines = ds4_xrealloc(*lines, cap * sizeof **lines);
            }
            (*lines)[n++] = p;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return n;
}

/* Load a corpus (.jsonl under tests/data) into entries. */
static size_t load_corpus(const char *rel, entry **out)
{
    char *buf = test_read_file(test_data_path(rel), NULL);
    CHECK(buf != NULL);
    if (!buf)
        return 0;
    char **lines;
    size_t n = split_lines(buf, &lines);
    entry *es = ds4_xcalloc(n ? n : 1, sizeof *es);
    for (size_t i = 0; i < n; i++) {
        json_error_t je;
        json_t *j = json_loads(lines[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        CHECKF(j != NULL, "corpus line %zu: %s", i + 1, je.text);
        if (!j) {
            es[i].raw = ds4_xstrdup("");
            es[i].text = ds4_xstrdup("");
            continue;
        }
        if (json_is_string(j)) {
            es[i].rawlen = json_string_length(j);
            es[i].raw = ds4_xmalloc(es[i].rawlen + 1);
            memcpy(es[i].raw, json_string_value(j), es[i].rawlen + 1);
        } else {
            es[i].raw = unhex(json_string_value(json_object_get(j, "hex")), &es[i].rawlen);
            es[i].is_hex = 1;
        }
        tok_buf b = {0};
        tok_utf8_sanitize(es[i].raw, es[i].rawlen, &b);
        es[i].text = b.data;
        es[i].textlen = b.len;
        json_decref(j);
    }
    free(lines);
    free(buf);
    *out = es;
    return n;
}

/* sha256 (hex) of a file under tests/data. */
static void file_sha256(const char *rel, char hex[65])
{
    size_t len = 0;
    char *buf = test_read_file(test_data_path(rel), &len);
    uint8_t d[32];
    ds4_sha256(buf ? buf : "", buf ? len : 0, d);
    ds4_hex(d, 32, hex);
    free(buf);
}

/* Load an expected-ids file: header line, then one array per line; the
 * header must name the sha256 of the corpus it was made from (a stale
 * fixture is an error, not a silent pass or fail). Returns the number of
 * rows, or -1 when the file is absent. */
static long load_expected(const char *rel, const char *corpus_rel, tok_ids **rows)
{
    FILE *f = fopen(test_data_path(rel), "rb");
    if (!f)
        return -1;
    fclose(f);
    char *buf = test_read_file(test_data_path(rel), NULL);
    char **lines;
    size_t n = split_lines(buf, &lines);
    char hex[65];
    file_sha256(corpus_rel, hex);
    json_t *hdr = n ? json_loads(lines[0], 0, NULL) : NULL;
    const char *want = json_string_value(json_object_get(hdr, "corpus_sha256"));
    CHECKF(want && strcmp(want, hex) == 0, "%s was made from another %s (sha256 %s, now %s): "
           "regenerate it", rel, corpus_rel, want ? want : "?", hex);
    json_decref(hdr);
    *rows = ds4_xcalloc(n ? n : 1, sizeof **rows);
    long k = 0;
    for (size_t i = 1; i < n; i++, k++) {
        json_t *a = json_loads(lines[i], 0, NULL);
        CHECKF(json_is_array(a), "%s line %zu is not an id array", rel, i + 1);
        size_t j;
        json_t *v;
        json_array_foreach(a, j, v) tok_ids_push(&(*rows)[k], (uint32_t)json_integer_value(v));
        json_decref(a);
    }
    free(lines);
    free(buf);
    return k;
}

/* True if s contains a character whose \s membership differs between
 * JavaScript and Oniguruma (U+0085 NEL, U+FEFF BOM). */
static int has_js_hf_space(const char *s, size_t n)
{
    return memmem(s, n, "\xC2\x85", 2) || memmem(s, n, "\xEF\xBB\xBF", 3);
}

/* Print where two id lists diverge, with the text of the tokens around. */
static void report_diff(const tok_vocab *v, size_t line, const tok_ids *got, const tok_ids *want,
                        const char *who)
{
    size_t i = 0;
    while (i < got->n && i < want->n && got->v[i] == want->v[i])
        i++;
    fprintf(stderr, "  line %zu: ids diverge from %s at index %zu (got %zu ids, want %zu)\n",
            line, who, i, got->n, want->n);
    for (int side = 0; side < 2; side++) {
        const tok_ids *a = side ? want : got;
        fprintf(stderr, "    %s:", side ? "want" : "got ");
        for (size_t k = i > 2 ? i - 2 : 0; k < a->n && k < i + 4; k++) {
            const char *t = tok_vocab_text(v, a->v[k]);
            fprintf(stderr, " %u'%s'", a->v[k], t ? t : "?");
        }
        fputc('\n', stderr);
    }
}

/* Same ids in the same order. */
static int ids_equal(const tok_ids *a, const tok_ids *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

/* The differential test proper: HF ids when the fixture exists, else JS. */
static void test_corpus(const tok_vocab *v, tok_encoder *e, entry *es, size_t n,
                        const char *corpus_rel, const char *hf_rel, const char *js_rel)
{
    tok_ids *hf = NULL, *js = NULL;
    long nhf = load_expected(hf_rel, corpus_rel, &hf);
    long njs = nhf < 0 ? load_expected(js_rel, corpus_rel, &js) : -1;
    tok_ids *want = nhf >= 0 ? hf : js;
    long nwant = nhf >= 0 ? nhf : njs;
    const char *who = nhf >= 0 ? "HF" : "JS";
    CHECKF(nwant == (long)n, "%s expected file has %ld rows, corpus %zu", who, nwant, n);
    size_t mism = 0, known = 0;
    char err[256];
    for (size_t i = 0; i < n && (long)i < nwant; i++) {
        tok_ids got = {0};
        CHECK(tok_encode(e, es[i].raw, es[i].rawlen, TOK_MODE_RAW, &got, err, sizeof err) == 0);
        if (!ids_equal(&got, &want[i])) {
            if (nhf < 0 && has_js_hf_space(es[i].text, es[i].textlen)) {
                known++;
                fprintf(stderr, "  note: line %zu differs from JS on U+0085/U+FEFF "
                        "(JS \\s differs from HF; not failed)\n", i + 1);
            } else {
                mism++;
                report_diff(v, i + 1, &got, &want[i], who);
            }
        }
        tok_ids_free(&got);
    }
    CHECKF(mism == 0, "%zu of %zu corpus lines differ from %s", mism, n, who);
    printf("%s: %zu lines vs %s: %zu mismatches, %zu known JS/HF whitespace lines\n", corpus_rel,
           n, who, mism, known);
    for (long i = 0; i < nwant; i++)
        tok_ids_free(&want[i]);
    free(want);
}

/* Round trips: decode, incremental decode, plain mode. */
static void test_roundtrip(const tok_vocab *v, tok_encoder *e, entry *es, size_t n)
{
    char err[256];
    for (size_t i = 0; i < n; i++) {
        tok_ids ids = {0}, plain = {0};
        CHECK(tok_encode(e, es[i].raw, es[i].rawlen, TOK_MODE_RAW, &ids, err, sizeof err) == 0);
        CHECK(tok_encode(e, es[i].raw, es[i].rawlen, TOK_MODE_PLAIN, &plain, err, sizeof err) == 0);
        tok_buf dec = {0};
        CHECK(tok_decode_text(v, ids.v, ids.n, &dec, NULL) == 0);
        CHECKF(dec.len == es[i].textlen && memcmp(dec.data, es[i].text, dec.len) == 0,
               "line %zu: decode(encode(x)) != x", i + 1);
        /* plain mode never yields an added token and also round-trips */
        int has_added = 0, plain_added = 0;
        for (size_t k = 0; k < ids.n; k++)
            has_added |= tok_vocab_is_added(v, ids.v[k]);
        for (size_t k = 0; k < plain.n; k++)
            plain_added |= tok_vocab_is_added(v, plain.v[k]);
        CHECKF(!plain_added, "line %zu: plain mode produced an added token", i + 1);
        if (!has_added)
            CHECKF(ids_equal(&ids, &plain), "line %zu: plain != raw without added tokens", i + 1);
        tok_buf pdec = {0};
        CHECK(tok_decode_text(v, plain.v, plain.n, &pdec, NULL) == 0);
        CHECKF(pdec.len == es[i].textlen && memcmp(pdec.data, es[i].text, pdec.len) == 0,
               "line %zu: plain decode differs", i + 1);
        /* streaming: every chunk valid, concatenation exact */
        tok_detok d;
        tok_detok_init(&d, v);
        tok_buf all = {0};
        int bad_chunk = 0;
        for (size_t k = 0; k <= ids.n; k++) {
            tok_buf chunk = {0};
            if (k < ids.n)
                CHECK(tok_detok_feed(&d, ids.v[k], &chunk) == 0);
            else
                tok_detok_flush(&d, &chunk);
            bad_chunk |= tok_utf8_valid_prefix(chunk.data ? chunk.data : "", chunk.len) != chunk.len;
            tok_buf_append(&all, chunk.data ? chunk.data : "", chunk.len);
            tok_buf_free(&chunk);
        }
        CHECKF(!bad_chunk, "line %zu: a streamed chunk was invalid UTF-8", i + 1);
        CHECKF(all.len == es[i].textlen && memcmp(all.data, es[i].text, all.len) == 0,
               "line %zu: streamed text differs", i + 1);
        tok_buf_free(&all);
        tok_buf_free(&dec);
        tok_buf_free(&pdec);
        tok_ids_free(&ids);
        tok_ids_free(&plain);
    }
}

/* Replacement decoding against Python-derived expectations. */
static void test_invalid_utf8(const tok_vocab *v, tok_encoder *e)
{
    char *buf = test_read_file(test_data_path("tokenizer/invalid-utf8.jsonl"), NULL);
    CHECK(buf != NULL);
    if (!buf)
        return;
    char **lines;
    size_t n = split_lines(buf, &lines), bad = 0;
    char err[256];
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(lines[i], JSON_ALLOW_NUL, NULL);
        size_t rl, wl = json_string_length(json_object_get(j, "replaced"));
        char *raw = unhex(json_string_value(json_object_get(j, "hex")), &rl);
        const char *want = json_string_value(json_object_get(j, "replaced"));
        tok_buf got = {0};
        got.len = 0;
        tok_buf_append(&got, "\x5A\x5A", 2); /* poison prefix, then cut */
        got.len = 0;
        tok_utf8_sanitize(raw, rl, &got);
        if (got.len != wl || memcmp(got.data, want, wl) != 0) {
            bad++;
            fprintf(stderr, "  invalid-utf8 line %zu (%s): replacement differs from Python\n",
                    i + 1, json_string_value(json_object_get(j, "hex")));
        }
        /* tokenizing the bytes equals tokenizing Python's string */
        tok_ids a = {0}, b = {0};
        CHECK(tok_encode(e, raw, rl, TOK_MODE_RAW, &a, err, sizeof err) == 0);
        CHECK(tok_encode(e, want, wl, TOK_MODE_RAW, &b, err, sizeof err) == 0);
        CHECKF(ids_equal(&a, &b), "invalid-utf8 line %zu: ids differ", i + 1);
        tok_ids_free(&a);
        tok_ids_free(&b);
        tok_buf_free(&got);
        free(raw);
        json_decref(j);
    }
    CHECKF(bad == 0, "%zu of %zu invalid UTF-8 cases differ from Python", bad, n);
    CHECK(n >= 300);
    (void)v;
    free(lines);
    free(buf);
}

/* Streaming detokenizer on random id sequences (which split characters
 * anywhere): chunks are valid, total equals the one-shot lossy decode. */
static void test_stream_random(const tok_vocab *v)
{
    for (int round = 0; round < 300; round++) {
        size_t n = 1 + rnd() % 40;
        uint32_t ids[40];
        for (size_t i = 0; i < n; i++) {
            /* bias toward byte tokens and tokens with high bytes */
            uint32_t r = (uint32_t)(rnd() % 4 == 0 ? v->byte_id[rnd() % 256] : rnd() % v->n);
            ids[i] = r;
        }
        tok_detok d;
        tok_detok_init(&d, v);
        tok_buf all = {0}, want = {0};
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            size_t before = all.len;
            CHECK(tok_detok_feed(&d, ids[i], &all) == 0);
            bad |= tok_utf8_valid_prefix(all.data + before, all.len - before) != all.len - before;
            bad |= tok_detok_pending(&d) > 3;
        }
        tok_detok_flush(&d, &all);
        CHECK(tok_decode_text(v, ids, n, &want, NULL) == 0);
        CHECKF(!bad, "round %d: invalid chunk or pending > 3", round);
        CHECKF(all.len == want.len && memcmp(all.data, want.data, all.len) == 0,
               "round %d: streamed != one-shot decode", round);
        tok_buf_free(&all);
        tok_buf_free(&want);
    }
    /* out-of-range ids are refused without emitting */
    tok_detok d;
    tok_detok_init(&d, v);
    tok_buf out = {0};
    CHECK(tok_detok_feed(&d, v->n, &out) == -1 && out.len == 0);
    uint32_t badids[2] = {5, v->n + 7};
    size_t where = 99;
    CHECK(tok_decode_text(v, badids, 2, &out, &where) == -1 && where == 1);
    /* a character split over three byte tokens is held, then completed */
    const uint8_t euro[3] = {0xE2, 0x82, 0xAC};
    tok_detok_init(&d, v);
    CHECK(tok_detok_feed(&d, v->byte_id[euro[0]], &out) == 0 && out.len == 0);
    CHECK(tok_detok_feed(&d, v->byte_id[euro[1]], &out) == 0 && out.len == 0);
    CHECK(tok_detok_feed(&d, v->byte_id[euro[2]], &out) == 0 && out.len == 3);
    CHECK(memcmp(out.data, "\xE2\x82\xAC", 3) == 0);
    /* an incomplete tail becomes U+FFFD at flush; a broken one at once */
    out.len = 0;
    CHECK(tok_detok_feed(&d, v->byte_id[0xF0], &out) == 0 && out.len == 0);
    tok_detok_flush(&d, &out);
    CHECK(out.len == 3 && memcmp(out.data, TOK_UTF8_REPLACEMENT, 3) == 0);
    out.len = 0;
    CHECK(tok_detok_feed(&d, v->byte_id[0xE2], &out) == 0 && out.len == 0);
    CHECK(tok_detok_feed(&d, v->byte_id['A'], &out) == 0);
    CHECK(out.len == 4 && memcmp(out.data, TOK_UTF8_REPLACEMENT "A", 4) == 0);
    tok_buf_free(&out);
}

/* Fast BPE paths against the naive reference on random pieces. */
static void test_bpe_paths(const tok_vocab *v, tok_encoder *e)
{
    static const char *const alpha[] = {"a", "e", "t", "th", "in", "er", " ", "\xC3\xA9",
                                        "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "0", "\n", "ing",
                                        "\xD0\xB0", "ab"};
    int bad = 0;
    for (int round = 0; round < 600; round++) {
        tok_buf p = {0};
        size_t target = round < 400 ? 1 + rnd() % 40 : 100 + rnd() % 700;
        while (p.len < target) {
            if (rnd() % 5 == 0) {
                char c = (char)(rnd() % 256);
                tok_buf_append(&p, &c, 1);
            } else {
                const char *a = alpha[rnd() % DS4_ARRAY_LEN(alpha)];
                tok_buf_append(&p, a, strlen(a));
            }
        }
        for (int pass = 0; pass < 2; pass++) { /* second pass hits the cache */
            tok_ids fast = {0}, ref = {0};
            tok_bpe_piece(e, p.data, p.len, &fast);
            tok_bpe_piece_ref(v, p.data, p.len, &ref);
            bad += !ids_equal(&fast, &ref);
            tok_buf dec = {0};
            tok_decode_bytes(v, fast.v, fast.n, &dec, NULL);
            bad += dec.len != p.len || memcmp(dec.data, p.data, p.len) != 0;
            tok_buf_free(&dec);
            tok_ids_free(&fast);
            tok_ids_free(&ref);
        }
        tok_buf_free(&p);
    }
    CHECKF(bad == 0, "%d BPE results differ from the reference", bad);
    uint64_t hits, misses;
    tok_encoder_stats(e, &hits, &misses);
    CHECK(hits > 0 && misses > 0);
}

/* Pieces for a few hand-checked inputs (HF semantics worked out by hand). */
typedef struct pieces {
    char buf[512];
    size_t len;
} pieces;

/* Pre-tokenizer callback: append the piece and a "|" separator. */
static int collect(const char *s, size_t n, void *user)
{
    pieces *p = user;
    if (p->len + n + 1 < sizeof p->buf) {
        memcpy(p->buf + p->len, s, n);
        p->len += n;
        p->buf[p->len++] = '|';
        p->buf[p->len] = 0;
    }
    return 0;
}

/* Pre-tokenizer callback: count pieces in lens[0], keep the first two
 * lengths in lens[1] and lens[2]. */
static int count_piece(const char *s, size_t n, void *user)
{
    size_t *lens = user;
    if (lens[0] < 2)
        lens[1 + lens[0]] = n;
    lens[0]++;
    return 0;
}

/* Hand-derived pieces, including the U+0085 / U+180E whitespace cases. */
static void test_pretok(void)
{
    static const char *const cases[][2] = {
        {"Hello world", "Hello| world|"},
        {"  12345 abc", "  |123|45| abc|"},
        {"a  b", "a| | b|"},
        {"x\n\n  y", "x|\n\n| | y|"},
        {"foo.bar(baz);\n", "foo|.bar|(baz|);\n|"},
        {"\xE4\xB8\xAD\xE6\x96\x87" "abc", "\xE4\xB8\xAD\xE6\x96\x87|abc|"},
        {"don't", "don|'t|"},
        {"a\xC2\x85 b", "a|\xC2\x85| b|"},           /* U+0085 is \s for HF */
        {"a \xE1\xA0\x8E" "b", "a| |\xE1\xA0\x8E" "b|"}, /* U+180E is not */
        {"\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4", "\xD9\xA1\xD9\xA2\xD9\xA3|\xD9\xA4|"},
    };
    char err[256];
    tok_pretok *p = tok_pretok_new(err, sizeof err);
    CHECK(p != NULL);
    if (!p)
        return;
    for (size_t i = 0; i < DS4_ARRAY_LEN(cases); i++) {
        pieces got = {{0}, 0};
        CHECK(tok_pretok_split(p, cases[i][0], strlen(cases[i][0]), collect, &got, err, sizeof err) == 0);
        CHECKF(strcmp(got.buf, cases[i][1]) == 0, "pretok case %zu: got '%s' want '%s'", i,
               got.buf, cases[i][1]);
    }
    pieces got = {{0}, 0};
    CHECK(tok_pretok_split(p, "a\xFF", 2, collect, &got, err, sizeof err) == -1);
    /* a whitespace run longer than PCRE2's default match limit (10M) */
    size_t n = 11000000;
    char *big = ds4_xmalloc(n + 1);
    memset(big, ' ', n);
    big[n] = 'x';
    size_t lens[4] = {0, 0, 0, 0};
    int rc = tok_pretok_split(p, big, n + 1, count_piece, lens, err, sizeof err);
    CHECKF(rc == 0, "11M spaces: %s", err);
    CHECK(lens[0] == 2 && lens[1] == n - 1 && lens[2] == 2);
    free(big);
    tok_pretok_free(p);
}

/* Added tokens found by string, with the kinds tokenizer.json gives them. */
static void test_vocab_basics(const tok_vocab *v)
{
    CHECK(v->n == 129280);
    CHECK(v->n_merges == 127741);
    CHECK(v->n_added == 1283);
    static const char *const user[] = {"<\xEF\xBD\x9CUser\xEF\xBD\x9C>", "<think>", "</think>",
                                       "\xEF\xBD\x9C" "DSML\xEF\xBD\x9C",
                                       "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>"};
    for (size_t i = 0; i < DS4_ARRAY_LEN(user); i++) {
        int32_t id = tok_vocab_added(v, user[i]);
        CHECKF(id >= 0 && v->type[id] == TOK_T_USER, "%s should be a non-special added token", user[i]);
        size_t len;
        const char *b = id >= 0 ? tok_vocab_bytes(v, (uint32_t)id, &len) : NULL;
        CHECK(b && len == strlen(user[i]) && memcmp(b, user[i], len) == 0);
    }
    int32_t bos = tok_vocab_added(v, "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
    CHECK(bos >= 0 && v->type[bos] == TOK_T_CONTROL);
    CHECK(tok_vocab_added(v, "<think") == -1);
    CHECK(tok_vocab_added(v, "hello") == -1);
    CHECK(tok_vocab_lookup(v, "\xC4\xA0the", 5) >= 0); /* "Ġthe" */
}

/* Random bytes (biased toward UTF-8 lead/continuation bytes and added-token
 * fragments) in both modes: never an error, and decoding gives back the
 * replacement-decoded input. */
static void test_random_bytes(const tok_vocab *v, tok_encoder *e)
{
    static const char *const frag[] = {"<\xEF\xBD\x9C", "\xEF\xBD\x9C>", "<think>", "User",
                                       "\xE2\x96\x81", " ", "\n", "\r\n", "\xC2\x85"};
    static const uint8_t bias[] = {0x00, 0x20, 0x41, 0x0A, 0x80, 0xBF, 0xC2, 0xE0, 0xED,
                                   0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
    char err[256];
    int bad = 0;
    for (int round = 0; round < 2000; round++) {
        tok_buf in = {0}, want = {0};
        size_t n = rnd() % 120;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rnd();
            if (r % 7 == 0) {
                const char *f = frag[(r >> 8) % DS4_ARRAY_LEN(frag)];
                tok_buf_append(&in, f, strlen(f));
            } else {
                uint8_t b = r % 3 ? bias[(r >> 8) % sizeof bias] : (uint8_t)(r >> 16);
                tok_buf_append(&in, &b, 1);
            }
        }
        tok_utf8_sanitize(in.data ? in.data : "", in.len, &want);
        for (int mode = 0; mode < 2; mode++) {
            tok_ids ids = {0};
            tok_buf got = {0};
            bad += tok_encode(e, in.data ? in.data : "", in.len, mode ? TOK_MODE_PLAIN : TOK_MODE_RAW,
                              &ids, err, sizeof err) != 0;
            bad += tok_decode_text(v, ids.v, ids.n, &got, NULL) != 0;
            bad += got.len != want.len || (got.len && memcmp(got.data, want.data, got.len) != 0);
            tok_buf_free(&got);
            tok_ids_free(&ids);
        }
        tok_buf_free(&in);
        tok_buf_free(&want);
    }
    CHECKF(bad == 0, "%d random byte strings failed to round-trip", bad);
}

/* Huge inputs: no JIT stack failure, heap BPE, exact round trip. */
static void test_large(const tok_vocab *v, tok_encoder *e)
{
    static const char *const unit[] = {" ", "a", "7", "\xE4\xB8\xAD", "\n", "!", "\xC2\x85"};
    char err[256];
    for (size_t u = 0; u < DS4_ARRAY_LEN(unit); u++) {
        tok_buf s = {0};
        while (s.len < 300000)
            tok_buf_append(&s, unit[u], strlen(unit[u]));
        tok_ids ids = {0};
        int rc = tok_encode(e, s.data, s.len, TOK_MODE_RAW, &ids, err, sizeof err);
        CHECKF(rc == 0, "large input %zu: %s", u, err);
        tok_buf d = {0};
        tok_decode_bytes(v, ids.v, ids.n, &d, NULL);
        CHECKF(d.len == s.len && memcmp(d.data, s.data, s.len) == 0, "large input %zu round trip", u);
        tok_buf_free(&d);
        tok_ids_free(&ids);
        tok_buf_free(&s);
    }
}

/* Write the vocabulary of v as GGUF tokenizer.ggml.* metadata. */
static uint8_t *vocab_to_gguf(const tok_vocab *v, int drop_byte, int bad_merge, int no_types,
                              uint64_t *len)
{
    gguf_writer *w = gguf_writer_new();
    const char **toks = ds4_xcalloc(v->n, sizeof *toks);
    uint64_t *lens = ds4_xcalloc(v->n, sizeof *lens);
    int32_t *types = ds4_xcalloc(v->n, sizeof *types);
    for (uint32_t i = 0; i < v->n; i++) {
        toks[i] = tok_vocab_text(v, i);
        lens[i] = v->text_len[i];
        types[i] = v->type[i] == TOK_T_CONTROL ? 3 : v->type[i] == TOK_T_USER ? 4 : 1;
    }
    if (drop_byte)
        toks[v->byte_id['A']] = "not-A";
    if (drop_byte)
        lens[v->byte_id['A']] = 5;
    /* merges in rank order, rebuilt from the hash table */
    char **merges = ds4_xcalloc(v->n_merges, sizeof *merges);
    for (uint32_t i = 0; i <= v->mmask; i++) {
        if (v->merges[i].key == UINT64_MAX)
            continue;
        uint32_t a = (uint32_t)(v->merges[i].key >> 32), b = (uint32_t)v->merges[i].key;
        char *m = NULL;
        if (asprintf(&m, "%s %s", tok_vocab_text(v, a), tok_vocab_text(v, b)) < 0)
            abort();
        merges[v->merges[i].rank] = m;
    }
    if (bad_merge) {
        free(merges[5]);
        merges[5] = strdup("zzzzqqq\xC4\xA0 q");
    }
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "joyai-llm");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, lens, v->n);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, v->n_merges);
    if (!no_types)
        gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, types, v->n);
    uint8_t *buf = NULL;
    char err[256];
    CHECKF(gguf_writer_to_mem(w, &buf, len, err, sizeof err) == 0, "gguf write: %s", err);
    gguf_writer_free(w);
    for (uint32_t i = 0; i < v->n_merges; i++)
        free(merges[i]);
    free(merges);
    free(toks);
    free(lens);
    free(types);
    return buf;
}

/* The GGUF path gives the same ids; broken GGUF vocabularies are refused. */
static void test_gguf(const tok_vocab *jv, entry *es, size_t n)
{
    char err[256];
    static const char *const want[] = {NULL, "byte 0x41", "merge 5", "token_type"};
    for (int variant = 0; variant < 4; variant++) {
        uint64_t len = 0;
        uint8_t *buf = vocab_to_gguf(jv, variant == 1, variant == 2, variant == 3, &len);
        gguf_file *f = NULL;
        if (!buf || gguf_parse(buf, len, &f, err, sizeof err) != 0) {
            CHECKF(0, "gguf parse: %s", err);
            free(buf);
            continue;
        }
        tok_vocab *gv = NULL;
        int rc = tok_vocab_from_gguf(f, &gv, err, sizeof err);
        if (variant == 0) {
            CHECKF(rc == 0, "gguf vocab: %s", err);
            CHECK(rc != 0 || strcmp(gv->pre, "joyai-llm") == 0);
        } else {
            CHECKF(rc == -1 && strstr(err, want[variant]),
                   "broken gguf variant %d: rc %d err '%s'", variant, rc, err);
        }
        if (rc == 0) {
            tok_encoder *a = tok_encoder_new(jv, err, sizeof err);
            tok_encoder *b = tok_encoder_new(gv, err, sizeof err);
            size_t diff = 0;
            for (size_t i = 0; i < n; i++) {
                tok_ids x = {0}, y = {0};
                tok_encode(a, es[i].raw, es[i].rawlen, TOK_MODE_RAW, &x, err, sizeof err);
                tok_encode(b, es[i].raw, es[i].rawlen, TOK_MODE_RAW, &y, err, sizeof err);
                diff += !ids_equal(&x, &y);
                tok_ids_free(&x);
                tok_ids_free(&y);
            }
            CHECKF(diff == 0, "%zu corpus lines differ between json and gguf vocab", diff);
            tok_encoder_free(a);
            tok_encoder_free(b);
            tok_vocab_free(gv);
        }
        gguf_close(f);
        free(buf);
    }
}

/* A minimal tokenizer.json (256 byte tokens, one merge) and broken ones. */
static char *mini_json(int variant)
{
    json_t *vocab = json_object();
    for (int b = 0, next = 256; b < 256; b++) {
        int cp = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE) ? b : next++;
        char u[5] = {0};
        tok_utf8_encode((uint32_t)cp, u);
        if (!(variant == 1 && b == 'q'))
            json_object_set_new(vocab, u, json_integer(b));
    }
    json_object_set_new(vocab, "ab", json_integer(256));
    json_t *merges = json_array();
    json_array_append_new(merges, json_string(variant == 2 ? "a c" : "a b"));
    if (variant == 5)
        json_array_append_new(merges, json_string("ab"));
    json_t *added = json_array();
    json_t *t = json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", 257, "content", "<X>", "special",
                          0, "normalized", 1, "lstrip", variant == 3, "rstrip", 0, "single_word", 0);
    json_array_append_new(added, t);
    json_t *pre = json_pack("{s:s,s:[{s:s,s:{s:s},s:s},{s:s,s:{s:s},s:s},{s:s,s:{s:s},s:s},{s:s}]}",
                            "type", "Sequence", "pretokenizers",
                            "type", "Split", "pattern", "Regex", TOK_PRETOK_HF_1, "behavior", "Isolated",
                            "type", "Split", "pattern", "Regex", variant == 4 ? "\\s+" : TOK_PRETOK_HF_2,
                            "behavior", "Isolated",
                            "type", "Split", "pattern", "Regex", TOK_PRETOK_HF_3, "behavior", "Isolated",
                            "type", "ByteLevel");
    json_t *root = json_pack("{s:o,s:o,s:{s:s,s:o,s:o}}", "added_tokens", added, "pre_tokenizer", pre,
                             "model", "type", "BPE", "vocab", vocab, "merges", merges);
    char *s = json_dumps(root, 0);
    json_decref(root);
    return s;
}

/* The loader accepts the minimal file and names what is wrong in bad ones. */
static void test_json_errors(void)
{
    char err[256];
    static const char *const want[] = {NULL, "byte 0x71", "merge 0", "lstrip", "step 1",
                                       "merge 1 is malformed"};
    for (int variant = 0; variant < 6; variant++) {
        char *js = mini_json(variant);
        tok_vocab *v = NULL;
        memset(err, 0, sizeof err);
        int rc = tok_vocab_from_json(js, strlen(js), &v, err, sizeof err);
        if (!want[variant]) {
            CHECKF(rc == 0, "mini json: %s", err);
            if (rc == 0) {
                CHECK(v->n == 258 && v->n_added == 1 && tok_vocab_added(v, "<X>") == 257);
                tok_encoder *e = tok_encoder_new(v, err, sizeof err);
                tok_ids ids = {0};
                CHECK(tok_encode(e, "ab<X>ab", 7, TOK_MODE_RAW, &ids, err, sizeof err) == 0);
                CHECK(ids.n == 3 && ids.v[0] == 256 && ids.v[1] == 257 && ids.v[2] == 256);
                tok_ids_free(&ids);
                tok_encoder_free(e);
                tok_vocab_free(v);
            }
        } else {
            CHECKF(rc == -1 && strstr(err, want[variant]), "variant %d: rc %d err '%s'", variant,
                   rc, err);
        }
        free(js);
    }
    tok_vocab *v = NULL;
    CHECK(tok_vocab_from_json("{\"model\":", 9, &v, err, sizeof err) == -1 && err[0]);
    CHECK(tok_vocab_from_json("[]", 2, &v, err, sizeof err) == -1);
    CHECK(tok_vocab_from_json_file("/nonexistent/tokenizer.json", &v, err, sizeof err) == -1);
}

/* Load tokenizer.json once, then run every group of checks. */
int main(void)
{
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (!path || !*path)
        path = DEFAULT_TOKJSON;
    char err[256];
    tok_vocab *v = NULL;
    uint64_t t0 = ds4_now_ns();
    int rc = tok_vocab_from_json_file(path, &v, err, sizeof err);
    CHECKF(rc == 0, "%s (run scripts/deps.sh for the npm package)", err);
    if (rc)
        return test_main_end("tokenizer");
    printf("tokenizer.json loaded in %.0f ms\n", (double)(ds4_now_ns() - t0) / 1e6);
    tok_encoder *e = tok_encoder_new(v, err, sizeof err);
    CHECKF(e != NULL, "%s", err);
    if (!e)
        return test_main_end("tokenizer");
    test_vocab_basics(v);
    test_pretok();
    static const char *const sets[][3] = {
        {"tokenizer/corpus.jsonl", "tokenizer/expected-hf.jsonl", "tokenizer/expected-js.jsonl"},
        {"tokenizer/stress.jsonl", "tokenizer/expected-hf-stress.jsonl",
         "tokenizer/expected-js-stress.jsonl"},
    };
    for (size_t s = 0; s < DS4_ARRAY_LEN(sets); s++) {
        entry *es = NULL;
        size_t n = load_corpus(sets[s][0], &es);
        CHECK(n >= 300);
        test_corpus(v, e, es, n, sets[s][0], sets[s][1], sets[s][2]);
        test_roundtrip(v, e, es, n);
        if (s == 0)
            test_gguf(v, es, n);
        for (size_t i = 0; i < n; i++) {
            free(es[i].raw);
            free(es[i].text);
        }
        free(es);
    }
    test_invalid_utf8(v, e);
    test_stream_random(v);
    test_bpe_paths(v, e);
    test_random_bytes(v, e);
    test_large(v, e);
    test_json_errors();
    tok_encoder_free(e);
    tok_vocab_free(v);
    return test_main_end("tokenizer");
}
