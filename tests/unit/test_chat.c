/* test_chat.c - chat rendering (tokenizerd/tok_chat): the official golden
 * pairs byte for byte, the embedded constants against the official constants
 * file, hand-derived extra cases, piece kinds, exact replay, Python JSON
 * re-serialization, and errors for bad requests. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizerd/tok_chat.h"

/* Render json with opts; returns 0 on success. */
static int render(const char *json, const struct tok_chat_opts *o, struct tok_chat_result *r, char *err,
                  size_t errlen)
{
    return tok_chat_render(json, strlen(json), o, r, err, errlen);
}

/* Pieces tile the text exactly, in order, with valid kinds. */
static int pieces_tile(const struct tok_chat_result *r)
{
    size_t off = 0;
    for (size_t i = 0; i < r->n_pieces; i++) {
        const struct tok_chat_piece *p = &r->pieces[i];
        if (p->off != off || p->len == 0 || p->kind < 0 || p->kind > TOK_PIECE_RAW)
            return 0;
        off += p->len;
    }
    return off == r->len && strlen(r->text) == r->len;
}

/* Kind of the piece that holds byte offset off. */
static int kind_at(const struct tok_chat_result *r, size_t off)
{
    for (size_t i = 0; i < r->n_pieces; i++)
        if (off >= r->pieces[i].off && off < r->pieces[i].off + r->pieces[i].len)
            return r->pieces[i].kind;
    return -1;
}

/* Every occurrence of tok lies entirely inside one TEMPLATE piece. */
static int token_only_in_template(const struct tok_chat_result *r, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = r->text; (p = strstr(p, tok)); p++) {
        size_t off = (size_t)(p - r->text);
        if (kind_at(r, off) != TOK_PIECE_TEMPLATE || kind_at(r, off + n - 1) != TOK_PIECE_TEMPLATE)
            return 0;
        for (size_t i = 0; i < r->n_pieces; i++)
            if (off >= r->pieces[i].off && off < r->pieces[i].off + r->pieces[i].len)
                if (off + n > r->pieces[i].off + r->pieces[i].len)
                    return 0;
    }
    return 1;
}

static const char *const control_tokens[] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                                             "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜",
                                             "<｜latest_reminder｜>", "<｜action｜>", "<｜query｜>"};

/* Report the first differing byte of two texts. */
static void show_diff(const char *what, const char *got, size_t gn, const char *want, size_t wn)
{
    size_t k = 0;
    while (k < gn && k < wn && got[k] == want[k])
        k++;
    fprintf(stderr, "%s: differs at byte %zu: got [%.50s] want [%.50s]\n", what, k, got + (k < gn ? k : gn),
            want + (k < wn ? k : wn));
}

/* The four official golden pairs render byte for byte. */
static void test_goldens(void)
{
    const int thinking[5] = {0, 1, 1, 1, 0};
    for (int i = 1; i <= 4; i++) {
        char path[128];
        size_t n, m;
        snprintf(path, sizeof path, "dsv4-encoding/test_input_%d.json", i);
        char *in = test_read_file(test_data_path(path), &n);
        snprintf(path, sizeof path, "dsv4-encoding/test_output_%d.txt", i);
        char *want = test_read_file(test_data_path(path), &m);
        CHECK(in && want);
        if (!in || !want)
            continue;
        struct tok_chat_opts o;
        tok_chat_opts_default(&o);
        o.thinking = thinking[i];
        struct tok_chat_result r;
        char err[256] = "";
        int rc = tok_chat_render(in, n, &o, &r, err, sizeof err);
        CHECKF(rc == 0, "golden %d: %s", i, err);
        if (rc == 0) {
            int same = r.len == m && memcmp(r.text, want, m) == 0;
            CHECKF(same, "golden %d", i);
            if (!same)
                show_diff(path, r.text, r.len, want, m);
            CHECK(pieces_tile(&r));
            for (size_t t = 0; t < sizeof control_tokens / sizeof *control_tokens; t++)
                CHECKF(token_only_in_template(&r, control_tokens[t]), "golden %d token %s", i, control_tokens[t]);
            CHECK(r.ends_with == TOK_CHAT_END_OTHER); /* every golden ends with EOS */
            CHECK(r.pieces[0].kind == TOK_PIECE_TEMPLATE && r.pieces[0].msg_index == -1);
            tok_chat_result_free(&r);
        }
        free(in);
        free(want);
    }
    /* Case 1: the user text and the tool schema JSON are CONTENT. */
    size_t n;
    char *in = test_read_file(test_data_path("dsv4-encoding/test_input_1.json"), &n);
    struct tok_chat_result r;
    if (in && tok_chat_render(in, n, NULL, &r, NULL, 0) == 0) {
        const char *u = strstr(r.text, "What's the weather");
        const char *s = strstr(r.text, "{\"name\": \"get_weather\"");
        const char *b = strstr(r.text, "Beijing</");
        CHECK(u && kind_at(&r, (size_t)(u - r.text)) == TOK_PIECE_CONTENT);
        CHECK(s && kind_at(&r, (size_t)(s - r.text)) == TOK_PIECE_CONTENT);
        CHECK(b && kind_at(&r, (size_t)(b - r.text)) == TOK_PIECE_CONTENT);
        CHECK(b && kind_at(&r, (size_t)(b - r.text) + 7) == TOK_PIECE_TEMPLATE);
        /* The first user message is input index 1. */
        CHECK(u && r.pieces[0].msg_index == -1);
        for (size_t i = 0; u && i < r.n_pieces; i++)
            if ((size_t)(u - r.text) >= r.pieces[i].off && (size_t)(u - r.text) < r.pieces[i].off + r.pieces[i].len)
                CHECK(r.pieces[i].msg_index == 1);
        tok_chat_result_free(&r);
    }
    free(in);
}

/* The embedded strings equal official-encoder-constants.json. */
static void test_constants(void)
{
    json_error_t je;
    json_t *root = json_load_file(test_data_path("dsv4-encoding/official-encoder-constants.json"), 0, &je);
    CHECKF(root != NULL, "%s", je.text);
    if (!root)
        return;
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(root, key, v)
    {
        if (json_is_string(v)) {
            const char *mine = tok_chat_constant(key);
            CHECKF(mine && strcmp(mine, json_string_value(v)) == 0, "constant %s", key);
            n++;
        } else if (json_is_object(v)) {
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
            {
                char name[128];
                snprintf(name, sizeof name, "%s.%s", key, k2);
                const char *mine = tok_chat_constant(name);
                CHECKF(mine && strcmp(mine, json_string_value(v2)) == 0, "constant %s", name);
                n++;
            }
        }
    }
    CHECK(n == 27);
    CHECK(tok_chat_constant("no_such_constant") == NULL);
    json_decref(root);
}

/* Hand-derived cases in tests/data/chat. */
static void test_extra_cases(void)
{
    static const char *const cases[] = {"think_max", "think_max_gated", "think_max_chat", "drop_developer",
                                        "keep_thinking", "parallel_tools", "reminder_task",
                                        "response_format_wo_eos", "top_tools_no_system", "bad_arguments",
                                        "tool_array_content", "user_plain_text"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char p[128];
        size_t n, m;
        snprintf(p, sizeof p, "chat/%s.json", cases[i]);
        char *in = test_read_file(test_data_path(p), &n);
        snprintf(p, sizeof p, "chat/%s.txt", cases[i]);
        char *want = test_read_file(test_data_path(p), &m);
        CHECK(in && want);
        struct tok_chat_result r;
        char err[256] = "";
        if (in && want) {
            struct tok_chat_opts o;
            tok_chat_opts_default(&o);
            int rc = tok_chat_render(in, n, &o, &r, err, sizeof err);
            CHECKF(rc == 0, "%s: %s", cases[i], err);
            if (rc == 0) {
                int same = r.len == m && memcmp(r.text, want, m) == 0;
                CHECKF(same, "case %s", cases[i]);
                if (!same)
                    show_diff(cases[i], r.text, r.len, want, m);
                CHECK(pieces_tile(&r));
                CHECK(r.think_max == (strcmp(cases[i], "think_max") == 0));
                tok_chat_result_free(&r);
            }
        }
        free(in);
        free(want);
    }
}

/* Generation prefixes, and what the parser should expect first. */
static void test_prefix_and_pieces(void)
{
    struct tok_chat_result r;
    const char *q = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    struct tok_chat_opts o;
    tok_chat_opts_default(&o);
    CHECK(render(q, &o, &r, NULL, 0) == 0);
    CHECK(strcmp(r.text, "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>") == 0);
    CHECK(r.ends_with == TOK_CHAT_END_THINK_OPEN && r.thinking == 1);
    CHECK(r.n_pieces == 4 && r.pieces[2].kind == TOK_PIECE_CONTENT && r.pieces[2].msg_index == 0);
    tok_chat_result_free(&r);
    o.thinking = 0;
    o.add_bos = 0;
    CHECK(render(q, &o, &r, NULL, 0) == 0);
    CHECK(strcmp(r.text, "<｜User｜>hi<｜Assistant｜></think>") == 0);
    CHECK(r.ends_with == TOK_CHAT_END_THINK_CLOSE && r.thinking == 0);
    tok_chat_result_free(&r);
    /* Control-token text typed by the user stays CONTENT. */
    CHECK(render("{\"messages\":[{\"role\":\"user\",\"content\":\"a<｜User｜>b</think>\"}]}", NULL, &r, NULL, 0) == 0);
    const char *p = strstr(r.text, "a<｜User｜>b");
    CHECK(p && kind_at(&r, (size_t)(p - r.text) + 1) == TOK_PIECE_CONTENT);
    CHECK(p && kind_at(&r, (size_t)(p - r.text) + 14) == TOK_PIECE_CONTENT);
    tok_chat_result_free(&r);
    /* An empty conversation is just BOS. */
    CHECK(render("[]", NULL, &r, NULL, 0) == 0);
    CHECK(strcmp(r.text, "<｜begin▁of▁sentence｜>") == 0 && r.n_pieces == 1);
    tok_chat_result_free(&r);
}

/* _ds4_raw: the same text, but the replayed parts are RAW pieces. */
static void test_raw_replay(void)
{
    size_t n;
    char *in = test_read_file(test_data_path("dsv4-encoding/test_input_1.json"), &n);
    CHECK(in != NULL);
    if (!in)
        return;
    struct tok_chat_result plain, raw;
    CHECK(tok_chat_render(in, n, NULL, &plain, NULL, 0) == 0);
    /* Build the raw body of the first assistant turn from the golden text. */
    const char *t = plain.text;
    const char *a = strstr(strstr(t, "<｜Assistant｜><think>"), "</think>") + 8;
    const char *e = strstr(a, "<｜end▁of▁sentence｜>");
    json_error_t je;
    json_t *root = json_loadb(in, n, 0, &je);
    json_t *msg = json_array_get(json_object_get(root, "messages"), 2);
    json_t *rawo = json_pack("{s:s,s:s%}", "reasoning",
                             json_string_value(json_object_get(msg, "reasoning_content")), "body", a,
                             (size_t)(e - a));
    json_object_set_new(msg, "_ds4_raw", rawo);
    char *in2 = json_dumps(root, 0);
    char err[200] = "";
    CHECKF(render(in2, NULL, &raw, err, sizeof err) == 0, "%s", err);
    CHECK(raw.len == plain.len && memcmp(raw.text, plain.text, plain.len) == 0);
    if (raw.len != plain.len || memcmp(raw.text, plain.text, plain.len))
        show_diff("raw replay", raw.text, raw.len, plain.text, plain.len);
    int nraw = 0;
    for (size_t i = 0; i < raw.n_pieces; i++) {
        const struct tok_chat_piece *p = &raw.pieces[i];
        if (p->kind != TOK_PIECE_RAW)
            continue;
        nraw++;
        CHECK(p->msg_index == 2);
        if (p->raw_field == TOK_RAW_BODY)
            CHECK(p->len == (size_t)(e - a) && memcmp(raw.text + p->off, a, p->len) == 0);
        else
            CHECK(p->raw_field == TOK_RAW_REASONING && memcmp(raw.text + p->off, "The user wants", 14) == 0);
        /* </think> and EOS around it stay TEMPLATE. */
        CHECK(i + 1 < raw.n_pieces && raw.pieces[i + 1].kind == TOK_PIECE_TEMPLATE);
    }
    CHECK(nraw == 2);
    tok_chat_result_free(&raw);
    free(in2);
    /* A body that differs from the canonical DSML is replayed verbatim. */
    json_object_set_new(rawo, "body", json_string("\n\n<｜DSML｜tool_calls>\n  odd spacing"));
    in2 = json_dumps(root, 0);
    CHECK(render(in2, NULL, &raw, NULL, 0) == 0);
    CHECK(strstr(raw.text, "</think>\n\n<｜DSML｜tool_calls>\n  odd spacing<｜end▁of▁sentence｜>") != NULL);
    tok_chat_result_free(&raw);
    free(in2);
    /* Where reasoning is dropped, only the body is replayed. */
    json_t *arr = json_array();
    json_array_append_new(arr, json_pack("{s:s,s:s}", "role", "user", "content", "q1"));
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:{s:s,s:s}}", "role", "assistant", "content", "x",
                                         "reasoning_content", "r", "_ds4_raw", "reasoning", "RR", "body", "BODY"));
    json_array_append_new(arr, json_pack("{s:s,s:s}", "role", "user", "content", "q2"));
    in2 = json_dumps(arr, 0);
    CHECK(render(in2, NULL, &raw, NULL, 0) == 0);
    CHECK(strcmp(raw.text, "<｜begin▁of▁sentence｜><｜User｜>q1<｜Assistant｜></think>BODY<｜end▁of▁sentence｜>"
                           "<｜User｜>q2<｜Assistant｜><think>") == 0);
    tok_chat_result_free(&raw);
    free(in2);
    json_decref(arr);
    json_decref(root);
    tok_chat_result_free(&plain);
    free(in);
}

/* Python json.dumps equivalence of the re-serializer. */
static void test_json_canon(void)
{
    static const char *const pairs[][2] = {
        {"1.0", "1.0"}, {"1e2", "100.0"}, {"-0", "0"}, {"-0.0", "-0.0"}, {"0.1", "0.1"},
        {"1e-5", "1e-05"}, {"1e16", "1e+16"}, {"1e15", "1000000000000000.0"}, {"0.0001", "0.0001"},
        {"123.456e-7", "1.23456e-05"}, {"1.5e300", "1.5e+300"}, {"2.5E-300", "2.5e-300"},
        {"1e400", "Infinity"}, {"-1e400", "-Infinity"}, {"NaN", "NaN"}, {"3.141592653589793", "3.141592653589793"},
        {"0.30000000000000004", "0.30000000000000004"}, {"99999999999999999999999", "99999999999999999999999"},
        {"[]", "[]"}, {"{}", "{}"}, {" [1,{\"a\":[true,false,null]}] ", "[1, {\"a\": [true, false, null]}]"},
        {"\"\\u00e9\\ud83d\\ude00\\u0001\\/\\b\\f\\n\\r\\t\\\"\\\\\\u007f\"", "\"é😀\\u0001/\\b\\f\\n\\r\\t\\\"\\\\\x7f\""},
        {"{\"a\":1,\"b\":2,\"a\":3}", "{\"a\": 3, \"b\": 2}"},
        {"\"\\u2028\"", "\"\xe2\x80\xa8\""},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        struct tok_chat_sb b = {0};
        int rc = tok_chat_json_canon(pairs[i][0], strlen(pairs[i][0]), &b);
        CHECKF(rc == 0 && b.p && strcmp(b.p, pairs[i][1]) == 0, "canon(%s) = %s, want %s", pairs[i][0],
               b.p ? b.p : "(error)", pairs[i][1]);
        tok_chat_sb_free(&b);
    }
    static const char *const bad[] = {"", "[1,]", "{\"a\"}", "01", "1.", "\"\\ud800\"", "\"a\nb\"", "[1] x",
                                      "\"\xff\"", "tru", "-", "{\"a\":1,}", "[[[[[[[["};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct tok_chat_sb b = {0};
        CHECKF(tok_chat_json_canon(bad[i], strlen(bad[i]), &b) == -1, "bad %zu accepted", i);
        CHECK(!tok_chat_json_valid(bad[i], strlen(bad[i])));
        tok_chat_sb_free(&b);
    }
    CHECK(!tok_chat_json_valid("NaN", 3)); /* strict JSON for argument values */
    CHECK(tok_chat_json_valid(" {\"a\": [1, 2.5e3]} ", 19));
    /* Deep nesting is refused, not a stack overflow. */
    size_t deep = 100000;
    char *d = malloc(deep * 2);
    memset(d, '[', deep);
    memset(d + deep, ']', deep);
    CHECK(!tok_chat_json_valid(d, deep * 2));
    free(d);
    /* Random doubles: shortest repr that reads back to the same value. */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double v;
        uint64_t bits = s;
        memcpy(&v, &bits, sizeof v);
        if (v != v || v - v != 0)
            continue;
        char lit[64];
        snprintf(lit, sizeof lit, "%.17g", v);
        if (!strpbrk(lit, ".e"))
            strcat(lit, ".0");
        struct tok_chat_sb b = {0};
        CHECK(tok_chat_json_canon(lit, strlen(lit), &b) == 0);
        CHECKF(b.p && strtod(b.p, NULL) == v && strlen(b.p) <= strlen(lit) + 4, "%s -> %s", lit, b.p);
        tok_chat_sb_free(&b);
    }
}

/* Bad requests fail with a message naming the field. */
static void test_errors(void)
{
    static const char *const cases[][2] = {
        {"", "invalid JSON"},
        {"{\"messages\": [", "invalid JSON"},
        {"42", "request"},
        {"{}", "messages: missing"},
        {"{\"messages\": {}}", "messages: expected an array"},
        {"[1]", "messages[0]: expected an object"},
        {"[{\"content\":\"x\"}]", "messages[0].role: missing"},
        {"[{\"role\":7}]", "messages[0].role: expected a string"},
        {"[{\"role\":\"user\"},{\"role\":\"bot\"}]", "messages[1].role: unknown role \"bot\""},
        {"[{\"role\":\"user\",\"content\":5}]", "messages[0].content"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}]", "messages[0].content"},
        {"[{\"role\":\"developer\",\"content\":\"\"}]", "messages[0].content"},
        {"[{\"role\":\"assistant\",\"reasoning_content\":1}]", "messages[0].reasoning_content"},
        {"[{\"role\":\"assistant\",\"tool_calls\":{}}]", "messages[0].tool_calls"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[1]}]", "messages[0].tool_calls[0]"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{}]}]", "messages[0].tool_calls[0].function"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}]",
         "messages[0].tool_calls[0].function.name"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\"}}]}]",
         "messages[0].tool_calls[0].function.arguments"},
        {"[{\"role\":\"tool\",\"content\":{}}]", "messages[0].content"},
        {"[{\"role\":\"tool\",\"content\":\"x\",\"tool_call_id\":3}]", "messages[0].tool_call_id"},
        {"[{\"role\":\"tool\",\"content\":[1]}]", "messages[0].content[0]"},
        {"[{\"role\":\"system\",\"tools\":{}}]", "messages[0].tools"},
        {"[{\"role\":\"system\",\"tools\":[1]}]", "messages[0].tools[0]"},
        {"[{\"role\":\"system\",\"response_format\":\"x\"}]", "messages[0].response_format"},
        {"[{\"role\":\"user\",\"task\":\"fly\"}]", "messages[0].task"},
        {"[{\"role\":\"assistant\",\"wo_eos\":1}]", "messages[0].wo_eos"},
        {"[{\"role\":\"assistant\",\"_ds4_raw\":\"x\"}]", "messages[0]._ds4_raw"},
        {"[{\"role\":\"assistant\",\"_ds4_raw\":{\"body\":1}}]", "messages[0]._ds4_raw.body"},
        {"{\"messages\":[],\"tools\":5}", "tools: expected an array"},
        {"{\"messages\":[],\"thinking_mode\":\"deep\"}", "thinking_mode"},
        {"{\"messages\":[],\"thinking\":\"yes\"}", "thinking: expected a boolean"},
        {"{\"messages\":[],\"reasoning_effort\":\"ultra\"}", "reasoning_effort"},
        {"{\"messages\":[],\"context_size\":-1}", "context_size"},
        {"{\"messages\":[],\"context_size\":1.5}", "context_size"},
        {"{\"messages\":[],\"drop_thinking\":0}", "drop_thinking"},
        {"[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]", "invalid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct tok_chat_result r;
        char err[256];
        memset(err, 'X', sizeof err);
        err[sizeof err - 1] = 0;
        int rc = render(cases[i][0], NULL, &r, err, sizeof err);
        CHECKF(rc == -1 && strstr(err, cases[i][1]) != NULL, "case %zu: rc %d err '%s', want '%s'", i, rc, err,
               cases[i][1]);
        CHECK(r.text == NULL && r.pieces == NULL);
        if (rc == 0)
            tok_chat_result_free(&r);
    }
}

/* Random (seeded) conversations never crash and always tile. */
static void test_random_conversations(void)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool", "latest_reminder"};
    uint64_t s = 12345;
    for (int it = 0; it < 400; it++) {
        json_t *arr = json_array();
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int n = (int)(s >> 60);
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const char *role = roles[(s >> 33) % 6];
            json_t *m = json_pack("{s:s,s:s}", "role", role, "content", (s >> 40) & 1 ? "text é" : "x");
            if ((s >> 41) % 3 == 0 && !strcmp(role, "assistant"))
                json_object_set_new(m, "tool_calls",
                                    json_pack("[{s:s,s:{s:s,s:s}}]", "id", "c", "function", "name", "f", "arguments",
                                              (s >> 42) & 1 ? "{\"a\": [1, 2]}" : "oops"));
            if ((s >> 43) % 5 == 0)
                json_object_set_new(m, "task", json_string((s >> 44) & 1 ? "action" : "title"));
            if ((s >> 45) % 4 == 0 && strcmp(role, "user"))
                json_object_set_new(m, "tools", json_pack("[{s:{s:s}}]", "function", "name", "t"));
            if (!strcmp(role, "assistant"))
                json_object_set_new(m, "reasoning_content", json_string("r"));
            json_array_append_new(arr, m);
        }
        json_t *req = json_pack("{s:o,s:b,s:s,s:i}", "messages", arr, "thinking", (int)((s >> 50) & 1),
                                "reasoning_effort", (s >> 51) & 1 ? "max" : "high", "context_size", 1 << 20);
        char *txt = json_dumps(req, 0);
        struct tok_chat_result r;
        char err[256];
        int rc = render(txt, NULL, &r, err, sizeof err);
        CHECKF(rc == 0, "random %d: %s", it, err);
        if (rc == 0) {
            CHECK(pieces_tile(&r));
            CHECK(strncmp(r.text, "<｜begin▁of▁sentence｜>", strlen("<｜begin▁of▁sentence｜>")) == 0);
            tok_chat_result_free(&r);
        }
        free(txt);
        json_decref(req);
    }
}

int main(void)
{
    test_goldens();
    test_constants();
    test_extra_cases();
    test_prefix_and_pieces();
    test_raw_replay();
    test_json_canon();
    test_errors();
    test_random_conversations();
    return test_main_end("test_chat");
}
