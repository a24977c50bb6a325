/* fuzz_dsml.c - libFuzzer target for the incremental DSML output parser
 * (tok_dsml).
 *
 * Input: a flag byte (bit 0: start in reasoning; bit 1: a small pending
 * limit so the fallback on an oversized invoke is reachable), a cut-count
 * byte (low 3 bits: 0..7 cuts), that many 16-bit little-endian cut
 * positions (taken modulo the text length + 1, then sorted), then the text.
 *
 * Properties (those of tests/unit/test_dsml.c): parsing the text whole, in
 * the chunks given by the cuts, and one byte at a time yields the same
 * reasoning, content, tool calls (name and arguments), the same event kind
 * sequence, exactly one END and nothing after it; text events are never
 * empty and are valid UTF-8 when the input is; tool-call arguments are
 * valid JSON; call indices count up from 0; finish is idempotent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizerd/tok_chat.h"
#include "tokenizerd/tok_dsml.h"
#include "tokenizerd/tok_utf8.h"

#define MAX_CUTS 7
#define SMALL_LIMIT 48

struct coll {
    struct tok_chat_sb reasoning, content, calls, kinds;
    int ncalls, ends, utf8_bad;
};

/* Report a broken property and abort so the fuzzer keeps the input. */
static void die(const char *what)
{
    fprintf(stderr, "fuzz_dsml: %s\n", what);
    abort();
}

/* Record one event; adjacent text events of one kind merge into one letter. */
static void on_event(void *ud, const struct tok_dsml_event *ev)
{
    struct coll *c = ud;
    if (c->ends)
        die("event after END");
    if (ev->type < TOK_DSML_EV_REASONING || ev->type > TOK_DSML_EV_END)
        die("bad event type");
    char k = "RCTE"[ev->type];
    if (ev->type == TOK_DSML_EV_REASONING || ev->type == TOK_DSML_EV_CONTENT) {
        if (!ev->len)
            die("empty text event");
        if (tok_utf8_valid_prefix(ev->text, ev->len) != ev->len)
            c->utf8_bad++;
        tok_chat_sb_put(ev->type == TOK_DSML_EV_REASONING ? &c->reasoning : &c->content, ev->text, ev->len);
    } else if (ev->type == TOK_DSML_EV_TOOL_CALL) {
        if (ev->call_index != c->ncalls)
            die("call index out of order");
        if (!tok_chat_json_valid(ev->args, ev->args_len) || ev->args_len < 2 || ev->args[0] != '{')
            die("tool call arguments are not a JSON object");
        c->ncalls++;
        tok_chat_sb_put(&c->calls, ev->name, ev->name_len);
        tok_chat_sb_put(&c->calls, "\x1f", 1);
        tok_chat_sb_put(&c->calls, ev->args, ev->args_len);
        tok_chat_sb_put(&c->calls, "\x1e", 1);
    } else {
        c->ends++;
    }
    if (!c->kinds.len || c->kinds.p[c->kinds.len - 1] != k || k == 'T')
        tok_chat_sb_put(&c->kinds, &k, 1);
}

static void coll_free(struct coll *c)
{
    tok_chat_sb_free(&c->reasoning);
    tok_chat_sb_free(&c->content);
    tok_chat_sb_free(&c->calls);
    tok_chat_sb_free(&c->kinds);
}

/* Parse s in chunks ending at cuts[0..ncuts) (sorted), then finish;
 * step > 0 instead feeds step bytes at a time. */
static void parse(struct coll *c, const char *s, size_t n, int reasoning, size_t limit, const size_t *cuts,
                  size_t ncuts, size_t step)
{
    memset(c, 0, sizeof *c);
    struct tok_dsml *p = tok_dsml_new(reasoning, on_event, c);
    if (limit)
        tok_dsml_set_limit(p, limit);
    if (step) {
        for (size_t at = 0; at < n; at += step)
            tok_dsml_feed(p, s + at, n - at < step ? n - at : step);
    } else {
        size_t at = 0;
        for (size_t i = 0; i <= ncuts; i++) {
            size_t end = i < ncuts ? cuts[i] : n;
            tok_dsml_feed(p, s + at, end - at);
            at = end;
        }
    }
    tok_dsml_finish(p);
    if (tok_dsml_struct_state(p) != TOK_DSML_ST_DONE)
        die("state after finish is not DONE");
    if (tok_dsml_n_calls(p) != c->ncalls)
        die("n_calls disagrees with the events");
    tok_dsml_finish(p); /* idempotent */
    tok_dsml_feed(p, "late", 4);
    tok_dsml_free(p);
    if (c->ends != 1)
        die("not exactly one END");
}

/* Same events (text, calls, order). */
static int same(const struct coll *a, const struct coll *b)
{
#define EQ(f) (a->f.len == b->f.len && (a->f.len == 0 || memcmp(a->f.p, b->f.p, a->f.len) == 0))
    return EQ(reasoning) && EQ(content) && EQ(calls) && EQ(kinds) && a->ncalls == b->ncalls;
#undef EQ
}

/* Sort the few cut positions (insertion sort). */
static void sort_cuts(size_t *c, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && c[j - 1] > c[j]; j--) {
            size_t t = c[j];
            c[j] = c[j - 1];
            c[j - 1] = t;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int reasoning = data[0] & 1;
    size_t limit = (data[0] & 2) ? SMALL_LIMIT : 0;
    size_t ncuts = data[1] & MAX_CUTS;
    size_t hdr = 2 + 2 * ncuts;
    if (size < hdr)
        return 0;
    const char *s = (const char *)data + hdr;
    size_t n = size - hdr;
    size_t cuts[MAX_CUTS];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = (data[2 + 2 * i] | (size_t)data[3 + 2 * i] << 8) % (n + 1);
    sort_cuts(cuts, ncuts);

    int valid = tok_utf8_valid_prefix(s, n) == n;
    struct coll whole, split, bytes;
    parse(&whole, s, n, reasoning, limit, NULL, 0, 0);
    parse(&split, s, n, reasoning, limit, cuts, ncuts, 0);
    parse(&bytes, s, n, reasoning, limit, NULL, 0, 1);
    if (!same(&whole, &split))
        die("split parse differs from the whole parse");
    if (!same(&whole, &bytes))
        die("byte-by-byte parse differs from the whole parse");
    if (valid && (whole.utf8_bad || split.utf8_bad || bytes.utf8_bad))
        die("invalid UTF-8 in events of valid input");
    if (whole.reasoning.len + whole.content.len > n)
        die("more text out than in");
    coll_free(&whole);
    coll_free(&split);
    coll_free(&bytes);
    return 0;
}
