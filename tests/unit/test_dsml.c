/* test_dsml.c - incremental output parser (tokenizerd/tok_dsml): the golden
 * assistant turns and crafted ones give the same events however the text is
 * split (every two-chunk split, one byte at a time, random splits); rendered
 * tool calls parse back to the Python-canonical arguments; malformed DSML
 * falls back to content; the structure state follows the text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizerd/tok_chat.h"
#include "tokenizerd/tok_dsml.h"

#define EOS "<｜end▁of▁sentence｜>"
#define D "｜DSML｜"

struct coll {
    struct tok_chat_sb reasoning, content, calls, kinds;
    int ncalls, ends, bad, utf8_bad;
};

/* Is [s, s+n) complete, valid UTF-8? */
static int utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t l = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (!l || i + l > n)
            return 0;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
        i += l;
    }
    return 1;
}

/* Record one event; adjacent text events of one kind merge into one letter. */
static void on_event(void *ud, const struct tok_dsml_event *ev)
{
    struct coll *c = ud;
    char k = "RCTE"[ev->type];
    if (c->ends)
        c->bad++; /* nothing after END */
    if (ev->type == TOK_DSML_EV_REASONING || ev->type == TOK_DSML_EV_CONTENT) {
        if (!ev->len)
            c->bad++;
        if (!utf8_ok((const unsigned char *)ev->text, ev->len))
            c->utf8_bad++;
        tok_chat_sb_put(ev->type == TOK_DSML_EV_REASONING ? &c->reasoning : &c->content, ev->text, ev->len);
    } else if (ev->type == TOK_DSML_EV_TOOL_CALL) {
        if (ev->call_index != c->ncalls)
            c->bad++;
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

/* Parse text in chunks at the given cut points (sorted), then finish. */
static void parse_cuts(struct coll *c, const char *s, size_t n, int reasoning, const size_t *cuts, size_t ncuts,
                       size_t limit)
{
    memset(c, 0, sizeof *c);
    struct tok_dsml *p = tok_dsml_new(reasoning, on_event, c);
    if (limit)
        tok_dsml_set_limit(p, limit);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        tok_dsml_feed(p, s + at, end - at);
        at = end;
    }
    tok_dsml_finish(p);
    tok_dsml_finish(p); /* idempotent */
    tok_dsml_feed(p, "late", 4);
    tok_dsml_free(p);
}

/* Same events (text, calls, order, one END). */
static int same(const struct coll *a, const struct coll *b)
{
#define EQ(f) (a->f.len == b->f.len && (a->f.len == 0 || memcmp(a->f.p, b->f.p, a->f.len) == 0))
    return EQ(reasoning) && EQ(content) && EQ(calls) && EQ(kinds) && a->ncalls == b->ncalls &&
           a->ends == 1 && b->ends == 1 && !a->bad && !b->bad;
#undef EQ
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* Parse whole, at every two-chunk split, byte by byte and at random splits;
 * all must agree. Returns the whole-text result in *out. */
static void check_splits(const char *what, const char *s, size_t n, int reasoning, struct coll *out)
{
    parse_cuts(out, s, n, reasoning, NULL, 0, 0);
    CHECKF(out->ends == 1 && !out->bad, "%s: whole parse", what);
    CHECKF(!out->utf8_bad || !utf8_ok((const unsigned char *)s, n), "%s: broken UTF-8 in events", what);
    int fails = 0;
    for (size_t k = 0; k <= n && fails < 3; k++) {
        struct coll c;
        parse_cuts(&c, s, n, reasoning, &k, 1, 0);
        if (!same(out, &c) || (c.utf8_bad && utf8_ok((const unsigned char *)s, n))) {
            fails++;
            CHECKF(0, "%s: split at %zu differs (content '%s' vs '%s')", what, k, c.content.p ? c.content.p : "",
                   out->content.p ? out->content.p : "");
        }
        coll_free(&c);
    }
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    for (size_t k = 0; k < n; k++)
        cuts[k] = k + 1;
    struct coll c;
    parse_cuts(&c, s, n, reasoning, cuts, n ? n - 1 : 0, 0);
    CHECKF(same(out, &c), "%s: byte at a time differs", what);
    CHECKF(!c.utf8_bad || !utf8_ok((const unsigned char *)s, n), "%s: byte at a time broke UTF-8", what);
    coll_free(&c);
    for (int t = 0; t < 20; t++) {
        size_t nc = 0, at = 0;
        while (at < n) {
            at += 1 + rnd() % 9;
            if (at < n)
                cuts[nc++] = at;
        }
        parse_cuts(&c, s, n, reasoning, cuts, nc, 0);
        CHECKF(same(out, &c), "%s: random split %d differs", what, t);
        coll_free(&c);
    }
    free(cuts);
}

/* Texts of the assistant turns of a golden output: what the model generated
 * after "<｜Assistant｜><think>" or "</think>", through EOS. */
static size_t golden_turns(const char *text, const char **starts, size_t *lens, int *reasoning, size_t max)
{
    size_t k = 0;
    const char *a = "<｜Assistant｜>";
    for (const char *p = text; k < max && (p = strstr(p, a)); k++) {
        p += strlen(a);
        reasoning[k] = strncmp(p, "<think>", 7) == 0;
        if (reasoning[k])
            p += 7;
        else if (strncmp(p, "</think>", 8) == 0)
            p += 8;
        const char *e = strstr(p, EOS);
        starts[k] = p;
        lens[k] = e ? (size_t)(e - p) + strlen(EOS) : strlen(p);
    }
    return k;
}

/* Every golden assistant turn, and the known parses of cases 1-3. */
static void test_golden_turns(void)
{
    for (int g = 1; g <= 4; g++) {
        char path[128];
        snprintf(path, sizeof path, "dsv4-encoding/test_output_%d.txt", g);
        char *text = test_read_file(test_data_path(path), NULL);
        CHECK(text != NULL);
        if (!text)
            continue;
        const char *st[8];
        size_t ln[8];
        int re[8];
        size_t nt = golden_turns(text, st, ln, re, 8);
        CHECK(nt >= 2);
        for (size_t t = 0; t < nt; t++) {
            struct coll c;
            char what[64];
            snprintf(what, sizeof what, "golden %d turn %zu", g, t);
            check_splits(what, st[t], ln[t], re[t], &c);
            if (g == 1 && t == 0) {
                CHECK(c.reasoning.p && strcmp(c.reasoning.p, "The user wants to know the weather in Beijing. I should "
                                                             "use the get_weather tool.") == 0);
                CHECK(c.content.len == 0);
                CHECK(c.ncalls == 1 && strcmp(c.calls.p, "get_weather\x1f{\"location\": \"Beijing\", \"unit\": "
                                                         "\"celsius\"}\x1e") == 0);
                CHECK(c.kinds.p && strcmp(c.kinds.p, "RTE") == 0);
            }
            if (g == 1 && t == 1) {
                CHECK(c.reasoning.p && strcmp(c.reasoning.p, "Got the weather data. Let me format a nice response.") == 0);
                CHECK(c.content.p && strstr(c.content.p, "22°C") && c.ncalls == 0);
            }
            if (g == 2 && t == 1) {
                CHECK(c.reasoning.p && strcmp(c.reasoning.p, "The user asks about the capital of France. It is Paris.") == 0);
                CHECK(c.content.p && strcmp(c.content.p, "The capital of France is Paris.") == 0);
            }
            if (g == 2 && t == 0)
                CHECK(c.reasoning.len == 0 && c.content.p && strcmp(c.content.p, "Hi there! How can I help you?") == 0);
            if (g == 3 && t == 0)
                CHECK(c.ncalls == 1 && strcmp(c.calls.p, "search\x1f{\"queries\": \"小柴胡冲剂 布洛芬 相互作用 一起吃\"}\x1e") == 0);
            if (g == 4 && t == 1)
                CHECK(c.content.p && strcmp(c.content.p, "<｜action｜>Search") == 0);
            coll_free(&c);
        }
        free(text);
    }
}

/* Crafted outputs: several calls, both string kinds, nested values, unicode. */
static void test_crafted(void)
{
    static const char multi[] =
        "Let me check.\n\n<" D "tool_calls>\n<" D "invoke name=\"read\">\n<" D "parameter name=\"path\" "
        "string=\"true\">/tmp/a \"b\"\\c\n😀 <x> & </" D "parameter>\n<" D "parameter name=\"opts\" string=\"false\">"
        "{\"depth\": [1, {\"x\": null}], \"f\": 1.5}</" D "parameter>\n</" D "invoke>\n<" D "invoke name=\"noargs\">\n\n</" D
        "invoke>\n<" D "invoke name=\"w\">\n<" D "parameter name=\"n\" string=\"false\">42</" D "parameter>\n<" D
        "parameter name=\"e\" string=\"true\"></" D "parameter>\n<" D "parameter name=\"bad\" string=\"false\">{oops</" D
        "parameter>\n</" D "invoke>\n</" D "tool_calls>" EOS "ignored after EOS";
    struct coll c;
    check_splits("multi", multi, strlen(multi), 0, &c);
    CHECK(c.content.p && strcmp(c.content.p, "Let me check.") == 0);
    CHECK(c.ncalls == 3);
    CHECK(c.calls.p && strcmp(c.calls.p, "read\x1f{\"path\": \"/tmp/a \\\"b\\\"\\\\c\\n😀 <x> & \", \"opts\": {\"depth\": "
                                         "[1, {\"x\": null}], \"f\": 1.5}}\x1e"
                                         "noargs\x1f{}\x1e"
                                         "w\x1f{\"n\": 42, \"e\": \"\", \"bad\": \"{oops\"}\x1e") == 0);
    CHECK(c.kinds.p && strcmp(c.kinds.p, "CTTTE") == 0);
    coll_free(&c);

    static const char think[] = "a </thin b <" D "tool_calls> c <think></think>content < x <｜end" EOS;
    check_splits("think", think, strlen(think), 1, &c);
    CHECK(c.reasoning.p && strcmp(c.reasoning.p, "a </thin b <" D "tool_calls> c <think>") == 0);
    CHECK(c.content.p && strcmp(c.content.p, "content < x <｜end") == 0);
    CHECK(c.kinds.p && strcmp(c.kinds.p, "RCE") == 0);
    coll_free(&c);

    static const char explicit_think[] = "<think>r</think>\n\nc\n\n\n";
    check_splits("explicit think", explicit_think, strlen(explicit_think), 0, &c);
    CHECK(c.reasoning.p && strcmp(c.reasoning.p, "r") == 0 && c.content.p && strcmp(c.content.p, "\n\nc\n\n\n") == 0);
    coll_free(&c);

    static const char after[] = "x\n<" D "tool_calls>\n<" D "invoke name=\"f\">\n</" D "invoke>\n</" D
                                "tool_calls>trailing\n\n\n<" D "tool_calls>\n<" D "invoke name=\"g\"  >\n</" D "invoke>\n</" D
                                "tool_calls>";
    check_splits("after", after, strlen(after), 0, &c);
    CHECK(c.content.p && strcmp(c.content.p, "xtrailing\n") == 0);
    CHECK(c.ncalls == 2 && strcmp(c.calls.p, "f\x1f{}\x1eg\x1f{}\x1e") == 0);
    CHECK(c.kinds.p && strcmp(c.kinds.p, "CTCTE") == 0);
    coll_free(&c);

    /* Attributes in either order, tabs and CR as whitespace. */
    static const char order[] = "<" D "tool_calls>\r\n<" D "invoke\tname=\"f\">\n<" D "parameter string=\"false\" name=\"k\">"
                                "[true]</" D "parameter></" D "invoke></" D "tool_calls>";
    check_splits("order", order, strlen(order), 0, &c);
    CHECK(c.ncalls == 1 && strcmp(c.calls.p, "f\x1f{\"k\": [true]}\x1e") == 0 && c.content.len == 0);
    coll_free(&c);

    /* A block cut off after a complete invoke keeps the call. */
    static const char cut[] = "<" D "tool_calls>\n<" D "invoke name=\"f\">\n</" D "invoke>\n";
    check_splits("cut", cut, strlen(cut), 0, &c);
    CHECK(c.ncalls == 1 && c.content.len == 0);
    coll_free(&c);
}

/* Rendered tool calls (tok_chat) parse back to Python-canonical arguments. */
static void rand_str(struct tok_chat_sb *b, int key)
{
    static const char *const atoms[] = {"a", "Z", "0", " ", "_", "é", "中", "😀", "\\\\", "\\\"", "\\n", "\\t",
                                        "<", ">", "&", "/", "\\u0001", "\\u00e9", "｜", "DSML"};
    int n = (int)(rnd() % 8);
    tok_chat_sb_puts(b, "\"");
    for (int i = 0; i < n + key; i++) {
        const char *a = atoms[rnd() % (key ? 8 : 20)];
        tok_chat_sb_puts(b, a);
    }
    tok_chat_sb_puts(b, "\"");
}

static void rand_value(struct tok_chat_sb *b, int depth)
{
    switch (rnd() % (depth > 2 ? 5 : 7)) {
    case 0: rand_str(b, 0); break;
    case 1: {
        char t[32];
        snprintf(t, sizeof t, "%lld", (long long)(rnd() % 2000000) - 1000000);
        tok_chat_sb_puts(b, t);
        break;
    }
    case 2: {
        char t[48];
        snprintf(t, sizeof t, "%.*g", (int)(1 + rnd() % 17), ((double)(int64_t)rnd()) / (double)(1ull << (rnd() % 62)));
        tok_chat_sb_puts(b, t);
        break;
    }
    case 3: tok_chat_sb_puts(b, rnd() & 1 ? "true" : "false"); break;
    case 4: tok_chat_sb_puts(b, "null"); break;
    case 5:
        tok_chat_sb_puts(b, "[");
        for (int i = 0, n = (int)(rnd() % 4); i < n; i++) {
            if (i)
                tok_chat_sb_puts(b, ",");
            rand_value(b, depth + 1);
        }
        tok_chat_sb_puts(b, "]");
        break;
    default:
        tok_chat_sb_puts(b, "{");
        for (int i = 0, n = (int)(rnd() % 4); i < n; i++) {
            if (i)
                tok_chat_sb_puts(b, ",");
            rand_str(b, 1);
            tok_chat_sb_puts(b, ":");
            rand_value(b, depth + 1);
        }
        tok_chat_sb_puts(b, "}");
    }
}

static void test_roundtrip(void)
{
    for (int it = 0; it < 150; it++) {
        struct tok_chat_sb args[3] = {{0}}, req = {0};
        int ncalls = 1 + (int)(rnd() % 3);
        tok_chat_sb_puts(&req, "{\"thinking_mode\":\"thinking\",\"drop_thinking\":false,\"messages\":["
                               "{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"reasoning_content\":"
                               "\"think é\",\"content\":\"c\",\"tool_calls\":[");
        for (int k = 0; k < ncalls; k++) {
            tok_chat_sb_puts(&args[k], "{");
            for (int i = 0, n = (int)(rnd() % 5); i < n; i++) {
                if (i)
                    tok_chat_sb_puts(&args[k], ",");
                rand_str(&args[k], 1);
                tok_chat_sb_puts(&args[k], ":");
                rand_value(&args[k], 0);
            }
            tok_chat_sb_puts(&args[k], "}");
            struct tok_chat_sb q = {0};
            tok_chat_json_quote(&q, args[k].p, args[k].len);
            tok_chat_sb_puts(&req, k ? ",{\"function\":{\"name\":\"fn" : "{\"function\":{\"name\":\"fn");
            char d[4] = {(char)('0' + k), 0};
            tok_chat_sb_puts(&req, d);
            tok_chat_sb_puts(&req, "\",\"arguments\":");
            tok_chat_sb_put(&req, q.p, q.len);
            tok_chat_sb_puts(&req, "}}");
            tok_chat_sb_free(&q);
        }
        tok_chat_sb_puts(&req, "]}]}");
        struct tok_chat_result r;
        char err[256] = "";
        int rc = tok_chat_render(req.p, req.len, NULL, &r, err, sizeof err);
        CHECKF(rc == 0, "roundtrip %d: %s", it, err);
        if (rc == 0) {
            const char *gen = strstr(r.text, "<｜Assistant｜><think>") + strlen("<｜Assistant｜><think>");
            struct coll c;
            char what[32];
            snprintf(what, sizeof what, "roundtrip %d", it);
            if (it < 30)
                check_splits(what, gen, strlen(gen), 1, &c);
            else
                parse_cuts(&c, gen, strlen(gen), 1, NULL, 0, 0);
            struct tok_chat_sb want = {0};
            for (int k = 0; k < ncalls; k++) {
                char nm[24];
                snprintf(nm, sizeof nm, "fn%d\x1f", k);
                tok_chat_sb_puts(&want, nm);
                CHECK(tok_chat_json_canon(args[k].p, args[k].len, &want) == 0);
                tok_chat_sb_puts(&want, "\x1e");
            }
            CHECKF(c.ncalls == ncalls && c.calls.p && strcmp(c.calls.p, want.p) == 0, "%s: got %s want %s", what,
                   c.calls.p ? c.calls.p : "", want.p);
            CHECK(c.reasoning.p && strcmp(c.reasoning.p, "think é") == 0 && c.content.p && strcmp(c.content.p, "c") == 0);
            tok_chat_sb_free(&want);
            coll_free(&c);
            tok_chat_result_free(&r);
        }
        for (int k = 0; k < 3; k++)
            tok_chat_sb_free(&args[k]);
        tok_chat_sb_free(&req);
    }
}

/* Malformed DSML: all of it comes back as content, nothing crashes. */
static void test_malformed(void)
{
#define OPEN "x\n\n<" D "tool_calls>\n"
    static const char *const cases[] = {
        OPEN "<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"maybe\">v</" D "parameter>\n</" D
             "invoke>\n</" D "tool_calls>",
        OPEN "<" D "invoke name=\"f\" foo=\"bar\">\n</" D "invoke>\n</" D "tool_calls>",
        OPEN "<" D "invokename=\"f\">\n</" D "invoke>",
        OPEN "junk<" D "invoke name=\"f\">",
        OPEN "<" D "invoke>\n</" D "invoke>",
        OPEN "<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"true\">1</" D "parameter>\n<" D
             "parameter name=\"a\" string=\"true\">2</" D "parameter>\n</" D "invoke>",
        OPEN "<" D "invoke name=\"f\nx\">",
        OPEN "<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"true\">v</" D "invoke>\n</" D "tool_calls>",
        OPEN "<" D "invoke name=\"f\">\n<" D "parameter name=\"a\">v</" D "parameter>",
        OPEN "<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"true\">unterminated",
        OPEN "<" D "invoke name=\"f\"",
        OPEN "<" D "invo",
        OPEN "</" D "invoke>",
        OPEN "<" D "invoke name=f>",
        OPEN "<" D "invoke name=\"f\">\n<" D "tool_calls>",
        "\n\n<" D "tool_calls><" D "tool_calls>",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct coll c;
        char what[32];
        snprintf(what, sizeof what, "malformed %zu", i);
        check_splits(what, cases[i], strlen(cases[i]), 0, &c);
        CHECKF(c.ncalls == 0 && c.content.p && strcmp(c.content.p, cases[i]) == 0, "%s: content '%s'", what,
               c.content.p ? c.content.p : "");
        coll_free(&c);
    }
    /* A good invoke, then a bad one: one call, the bad invoke as content. */
    static const char mixed[] = "<" D "tool_calls>\n<" D "invoke name=\"f\">\n</" D "invoke>\n<" D "invoke name=\"g\" x=\"1\">tail";
    struct coll c;
    check_splits("mixed", mixed, strlen(mixed), 0, &c);
    CHECK(c.ncalls == 1 && c.content.p && strcmp(c.content.p, "\n<" D "invoke name=\"g\" x=\"1\">tail") == 0);
    coll_free(&c);
    /* EOS inside a value cuts the invoke: content up to EOS, then END. */
    static const char eos[] = OPEN "<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"true\">abc" EOS "more";
    check_splits("eos in value", eos, strlen(eos), 0, &c);
    CHECK(c.ncalls == 0 && c.content.p && c.content.len == strlen(eos) - strlen(EOS) - 4 &&
          memcmp(c.content.p, eos, c.content.len) == 0);
    coll_free(&c);
    /* EOS where a tag was expected. */
    static const char eos2[] = OPEN "<" D "invoke name=\"f\">\n" EOS "more";
    check_splits("eos in invoke", eos2, strlen(eos2), 0, &c);
    CHECK(c.ncalls == 0 && c.content.p && c.content.len == strlen(eos2) - strlen(EOS) - 4);
    coll_free(&c);
}

/* Huge inputs: bounded pending text, everything still delivered. */
static void test_huge(void)
{
    size_t n = 3u << 20;
    char *s = malloc(n + 200);
    size_t h = (size_t)sprintf(s, "<" D "tool_calls>\n<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"true\">");
    for (size_t i = h; i < n; i++)
        s[i] = (char)('a' + rnd() % 26);
    struct coll c;
    parse_cuts(&c, s, n, 0, NULL, 0, 1u << 20);
    CHECK(c.ncalls == 0 && c.content.len == n && memcmp(c.content.p, s, n) == 0 && c.ends == 1);
    coll_free(&c);
    /* Under the limit the same call parses. */
    size_t m = (size_t)sprintf(s + 200000, "</" D "parameter>\n</" D "invoke>\n</" D "tool_calls>");
    parse_cuts(&c, s, 200000 + m, 0, NULL, 0, 1u << 20);
    CHECK(c.ncalls == 1 && c.content.len == 0 && c.calls.len == 200000 - h + 12);
    coll_free(&c);
    /* Plain text of any size passes straight through. */
    for (size_t i = 0; i < n; i++)
        s[i] = (char)(' ' + rnd() % 90);
    size_t cuts[3] = {1, n / 2, n - 1};
    parse_cuts(&c, s, n, 0, cuts, 3, 0);
    CHECK(c.content.len == n && memcmp(c.content.p, s, n) == 0);
    coll_free(&c);
    free(s);
}

/* Random fragment soup: no crash, every split agrees. */
static void test_fuzz(void)
{
    static const char *const frags[] = {"<" D "tool_calls>", "</" D "tool_calls>", "<" D "invoke", "</" D "invoke>",
                                        "<" D "parameter", "</" D "parameter>", " name=\"f\"", " string=\"true\"",
                                        " string=\"false\"", ">", "\n", "\n\n", "<think>", "</think>", "<", "｜",
                                        "\"", "{\"a\": 1}", "text", "é", "\xff", "\xe4\xb8", "<｜end", EOS, " "};
    for (int it = 0; it < 150; it++) {
        struct tok_chat_sb b = {0};
        int n = (int)(rnd() % 40);
        for (int i = 0; i < n; i++)
            tok_chat_sb_puts(&b, frags[rnd() % (sizeof frags / sizeof *frags)]);
        struct coll c;
        char what[32];
        snprintf(what, sizeof what, "fuzz %d", it);
        check_splits(what, b.p ? b.p : "", b.len, (int)(rnd() & 1), &c);
        CHECK(c.reasoning.len + c.content.len <= b.len);
        coll_free(&c);
        tok_chat_sb_free(&b);
    }
}

/* The structure state for the engine's greedy decoding. */
static void test_struct_state(void)
{
    struct coll c = {0};
    struct tok_dsml *p = tok_dsml_new(1, on_event, &c);
    const char *steps[][2] = {
        {"reasoning", "T"}, {"</think>", "T"}, {"Sure", "T"}, {"\n\n", "T"}, {"<", "T"}, {D, "S"},
        {"tool_calls>", "S"}, {"\n<" D "invoke name=\"f\">\n<" D "parameter name=\"a\" string=\"true\">", "V"},
        {"Beijing", "V"}, {"</", "V"}, {D, "S"}, {"parameter>", "S"}, {"\n<" D "parameter name=\"b\" string=\"false\">", "J"},
        {"[1, ", "J"}, {"2]</" D "parameter>\n</" D "invoke>\n</" D "tool_calls>", "T"}, {EOS, "D"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        tok_dsml_feed(p, steps[i][0], strlen(steps[i][0]));
        int want = steps[i][1][0] == 'T' ? TOK_DSML_ST_TEXT : steps[i][1][0] == 'S' ? TOK_DSML_ST_STRUCT
                 : steps[i][1][0] == 'V' ? TOK_DSML_ST_VALUE_STR : steps[i][1][0] == 'J' ? TOK_DSML_ST_VALUE_JSON
                                                                                        : TOK_DSML_ST_DONE;
        CHECKF(tok_dsml_struct_state(p) == want, "step %zu (%s): state %d want %d", i, steps[i][0],
               tok_dsml_struct_state(p), want);
    }
    CHECK(tok_dsml_n_calls(p) == 1 && c.ends == 1);
    CHECK(c.calls.p && strcmp(c.calls.p, "f\x1f{\"a\": \"Beijing\", \"b\": [1, 2]}\x1e") == 0);
    tok_dsml_free(p);
    coll_free(&c);
    /* A UTF-8 character split across feeds is delivered whole. */
    memset(&c, 0, sizeof c);
    p = tok_dsml_new(0, on_event, &c);
    tok_dsml_feed(p, "a\xc3", 2);
    CHECK(c.content.len == 1);
    tok_dsml_feed(p, "\xa9", 1);
    CHECK(c.content.len == 3 && c.utf8_bad == 0);
    /* Only a possible tag start is held back. */
    tok_dsml_feed(p, "Hello <", 7);
    CHECK(c.content.len == 9);
    tok_dsml_feed(p, "b> x\n", 5);
    CHECK(c.content.len == 14); /* "\n" may precede a block opening */
    tok_dsml_feed(p, "\n", 1);
    CHECK(c.content.len == 14);
    tok_dsml_feed(p, "y", 1);
    CHECK(c.content.len == 17 && memcmp(c.content.p + 9, "<b> x\n\ny", 8) == 0);
    tok_dsml_finish(p);
    tok_dsml_free(p);
    coll_free(&c);
}

int main(void)
{
    test_golden_turns();
    test_crafted();
    test_roundtrip();
    test_malformed();
    test_huge();
    test_fuzz();
    test_struct_state();
    return test_main_end("test_dsml");
}
