/* fuzz_tokenizer.c - libFuzzer target for the encoder and the detokenizers
 * over the real DeepSeek V4 vocabulary.
 *
 * The vocabulary is loaded once, from $DS4_TOKENIZER_JSON or else
 * node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json relative
 * to the current directory (the repo root in CI).
 *
 * Input: one mode byte (bit 0: 0 = TOK_MODE_RAW, 1 = TOK_MODE_PLAIN; bit 1:
 * also decode the text's bytes read as arbitrary ids), then the text
 * (arbitrary bytes, invalid UTF-8 included).
 *
 * Properties:
 *   - decode(encode(x)) == x exactly when x is valid UTF-8, and equals the
 *     Python errors="replace" decoding of x (tok_utf8_sanitize) otherwise;
 *   - every id is in the vocabulary;
 *   - the incremental detokenizer fed id by id emits only valid UTF-8
 *     chunks, and all chunks plus the flush equal tok_decode_text;
 *   - the same for arbitrary id sequences (out-of-range ids rejected with
 *     the state unchanged). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizerd/tok_bpe.h"
#include "tokenizerd/tok_detok.h"
#include "tokenizerd/tok_utf8.h"
#include "tokenizerd/tok_vocab.h"

#define DEFAULT_JSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"

static tok_vocab *g_vocab;
static tok_encoder *g_enc;

/* Report a broken property and abort so the fuzzer keeps the input. */
static void die(const char *what)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

/* Load the vocabulary and an encoder on first use. */
static void setup(void)
{
    if (g_vocab)
        return;
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (!path || !*path)
        path = DEFAULT_JSON;
    char err[256];
    if (tok_vocab_from_json_file(path, &g_vocab, err, sizeof err)) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, err);
        exit(1);
    }
    g_enc = tok_encoder_new(g_vocab, err, sizeof err);
    if (!g_enc) {
        fprintf(stderr, "fuzz_tokenizer: encoder: %s\n", err);
        exit(1);
    }
}

/* Are the bytes of b from offset `from` on valid UTF-8? */
static int tail_valid(const tok_buf *b, size_t from)
{
    return b->len == from || tok_utf8_valid_prefix(b->data + from, b->len - from) == b->len - from;
}

/* Feed ids one by one to the incremental detokenizer; every chunk must be
 * valid UTF-8 and the whole must equal tok_decode_text of the valid ids. */
static void check_stream(const uint32_t *ids, size_t n)
{
    tok_detok d;
    tok_detok_init(&d, g_vocab);
    tok_buf all = {0};
    tok_ids ok = {0};
    for (size_t i = 0; i < n; i++) {
        size_t before = all.len;
        uint8_t pend = d.npend;
        if (tok_detok_feed(&d, ids[i], &all) != 0) {
            if (ids[i] < g_vocab->n && g_vocab->type[ids[i]] != TOK_T_NONE)
                die("detok rejected a valid id");
            if (all.len != before || d.npend != pend)
                die("detok changed state on a rejected id");
            continue;
        }
        tok_ids_push(&ok, ids[i]);
        if (!tail_valid(&all, before))
            die("detok emitted invalid UTF-8");
        if (tok_detok_pending(&d) > 3)
            die("detok holds more than 3 bytes");
    }
    size_t before = all.len;
    tok_detok_flush(&d, &all);
    if (!tail_valid(&all, before))
        die("detok flush emitted invalid UTF-8");
    tok_buf ref = {0};
    size_t bad = 0;
    if (tok_decode_text(g_vocab, ok.v, ok.n, &ref, &bad) != 0)
        die("decode_text rejected ids the detok accepted");
    if (ref.len != all.len || (ref.len && memcmp(ref.data, all.data, ref.len) != 0))
        die("streamed text differs from tok_decode_text");
    tok_buf_free(&ref);
    tok_buf_free(&all);
    tok_ids_free(&ok);
}

/* Encode, check ids, decode and compare with the expected text. */
static void check_roundtrip(const char *text, size_t len, enum tok_mode mode)
{
    tok_ids ids = {0};
    char err[256];
    if (tok_encode(g_enc, text, len, mode, &ids, err, sizeof err) != 0)
        die(err);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.v[i] >= g_vocab->n || g_vocab->type[ids.v[i]] == TOK_T_NONE)
            die("encode produced an id outside the vocabulary");
    tok_buf want = {0};
    if (tok_utf8_valid_prefix(text, len) == len)
        tok_buf_append(&want, text, len);
    else
        tok_utf8_sanitize(text, len, &want);
    tok_buf got = {0};
    size_t bad = 0;
    if (tok_decode_text(g_vocab, ids.v, ids.n, &got, &bad) != 0)
        die("decode_text rejected encoder ids");
    if (got.len != want.len || (got.len && memcmp(got.data, want.data, got.len) != 0))
        die("decode(encode(x)) != replace(x)");
    check_stream(ids.v, ids.n);
    tok_buf_free(&got);
    tok_buf_free(&want);
    tok_ids_free(&ids);
}

/* Read the bytes as little-endian 24-bit ids spread a little past the
 * vocabulary, so out-of-range ids occur too. */
static void check_arbitrary_ids(const uint8_t *p, size_t n)
{
    size_t k = n / 3;
    uint32_t *ids = malloc((k ? k : 1) * sizeof *ids);
    if (!ids)
        return;
    for (size_t i = 0; i < k; i++) {
        uint32_t x = p[3 * i] | (uint32_t)p[3 * i + 1] << 8 | (uint32_t)p[3 * i + 2] << 16;
        ids[i] = x % (g_vocab->n + 16);
    }
    check_stream(ids, k);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    check_roundtrip(text, len, (mode & 1) ? TOK_MODE_PLAIN : TOK_MODE_RAW);
    if (mode & 2)
        check_arbitrary_ids(data + 1, len);
    return 0;
}
