/* fuzz_chat.c - libFuzzer target for the chat renderer (tok_chat_render)
 * and the Python-compatible JSON it parses (tok_pyjson).
 *
 * Input: one option byte (bit 0 thinking, bit 1 effort_max, bit 2
 * drop_thinking, bit 3 add_bos, bit 4 a context size large enough for Think
 * Max), then the canonical messages JSON (arbitrary bytes).
 *
 * Properties: the renderer either fails with a non-empty NUL-terminated
 * message, or its pieces cover the text exactly: in order, contiguous, none
 * empty, kinds and raw fields in range, RAW pieces naming a message; text is
 * NUL-terminated at len. As a by-product the same bytes go through
 * tok_chat_json_valid / tok_chat_json_canon, and canonical output must be
 * a fixed point (canon(canon(x)) == canon(x)). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizerd/tok_chat.h"

/* Report a broken property and abort so the fuzzer keeps the input. */
static void die(const char *what)
{
    fprintf(stderr, "fuzz_chat: %s\n", what);
    abort();
}

/* Check that the pieces of r tile r->text exactly. */
static void check_pieces(const struct tok_chat_result *r)
{
    if (!r->text || r->text[r->len] != 0)
        die("text not NUL-terminated at len");
    size_t off = 0;
    for (size_t i = 0; i < r->n_pieces; i++) {
        const struct tok_chat_piece *p = &r->pieces[i];
        if (p->off != off)
            die("pieces not contiguous");
        if (p->len == 0)
            die("empty piece");
        if (p->len > r->len - off)
            die("piece past the end of the text");
        if (p->kind < TOK_PIECE_TEMPLATE || p->kind > TOK_PIECE_RAW)
            die("bad piece kind");
        if (p->kind == TOK_PIECE_RAW &&
            (p->msg_index < 0 || (p->raw_field != TOK_RAW_REASONING && p->raw_field != TOK_RAW_BODY)))
            die("raw piece without a message or field");
        if (p->kind != TOK_PIECE_RAW && p->raw_field != TOK_RAW_NONE)
            die("raw field on a non-raw piece");
        off += p->len;
    }
    if (off != r->len)
        die("pieces do not cover the text");
    if (r->ends_with < TOK_CHAT_END_OTHER || r->ends_with > TOK_CHAT_END_THINK_CLOSE)
        die("bad ends_with");
}

/* Canonical JSON must be valid and a fixed point of canonicalization. */
static void check_canon(const char *s, size_t n)
{
    struct tok_chat_sb a = {0}, b = {0};
    if (tok_chat_json_canon(s, n, &a) == 0) {
        if (tok_chat_json_canon(a.p, a.len, &b) != 0)
            die("canonical JSON does not parse");
        if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
            die("canon is not idempotent");
    }
    (void)tok_chat_json_valid(s, n);
    tok_chat_sb_free(&a);
    tok_chat_sb_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ob = data[0];
    const char *json = (const char *)data + 1;
    size_t len = size - 1;
    struct tok_chat_opts o;
    tok_chat_opts_default(&o);
    o.thinking = ob & 1;
    o.effort_max = (ob >> 1) & 1;
    o.drop_thinking = (ob >> 2) & 1;
    o.add_bos = (ob >> 3) & 1;
    o.ctx_size = (ob & 16) ? TOK_CHAT_THINK_MAX_MIN_CTX : 4096;

    struct tok_chat_result r;
    memset(&r, 0x5a, sizeof r); /* poison: a failure must not look like output */
    char err[256];
    memset(err, 0, sizeof err);
    if (tok_chat_render(json, len, &o, &r, err, sizeof err) == 0) {
        check_pieces(&r);
        tok_chat_result_free(&r);
    } else if (!err[0] || !memchr(err, 0, sizeof err)) {
        die("render failed without a message");
    }
    check_canon(json, len);
    return 0;
}
