/* test_gw_stack.c - gatewayd live, in a real stack (tokenizerd, engined on
 * the reference backend in test mode, gatewayd) over loopback HTTP:
 *
 *   every endpoint streaming and not, with the model's output scripted by
 *   forced decoding (the engine still runs every forward pass; usage and
 *   cached counts are real); count_tokens agrees with the prompt the
 *   generation used; a tool-call round trip whose second turn reuses the
 *   whole first turn from the engine's cache thanks to exact replay (and
 *   does not when the client changed the turn); tool_choice required and
 *   named; Claude Code's billing line not breaking the prefix; error
 *   shapes and statuses (400 naming the field, context overflow, 401, 403,
 *   404, 405, 413, 429 + Retry-After); CORS only when enabled; keepalive
 *   comments during prefill; client disconnects cancelling engine jobs;
 *   stages killed (503 within a second, never a hang; a stream cut by the
 *   engine's death ends with the API's error event) and restarted without
 *   restarting the gateway; one request id in every stage's log. */
#include "gatewayd/gw_json.h"
#include "gw_stack.h"
#include "gw_test_sse.h"
#include "test.h"

#define DSML "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c"
#define EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

static gw_stack S;
static gws_proc GWA;  /* a second gateway: API keys, CORS, no test mode */
static int PORTA;

/* POST a JSON body; *j gets the parsed response body (or NULL). */
static int post(int port, const char *path, const char *body, const char *headers, gws_resp *r, json_t **j)
{
    if (gws_http(port, "POST", path, headers, body, r, 60000)) {
        CHECKF(0, "POST %s: no response", path);
        if (j)
            *j = NULL;
        return -1;
    }
    if (j)
        *j = json_loadb(r->body, r->body_len, 0, NULL);
    return r->status;
}

/* POST and parse an SSE body. */
static int post_sse(int port, const char *path, const char *body, gws_resp *r, sse_list *l)
{
    int st = post(port, path, body, NULL, r, NULL);
    sse_parse(r->body ? r->body : "", r->body_len, l);
    return st;
}

static const char *jstr(json_t *j, const char *k1, const char *k2, const char *k3)
{
    return sse_str(j, k1, k2, k3, NULL);
}

static long long jint(json_t *j, const char *k1, const char *k2, const char *k3)
{
    if (k1)
        j = json_object_get(j, k1);
    if (k2)
        j = json_object_get(j, k2);
    if (k3)
        j = json_object_get(j, k3);
    return json_is_integer(j) ? (long long)json_integer_value(j) : -1;
}

static json_t *choice0(json_t *j)
{
    return json_array_get(json_object_get(j, "choices"), 0);
}

/* ---- basics ---------------------------------------------------------------- */

static void t_basics(void)
{
    gws_resp r;
    json_t *j;
    CHECK(gws_http(S.port, "GET", "/health", NULL, NULL, &r, 5000) == 0 && r.status == 200);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    CHECK(!strcmp(jstr(j, "status", NULL, NULL), "ok"));
    CHECK(json_is_true(json_object_get(json_object_get(json_object_get(j, "stages"), "engined"), "ready")));
    json_decref(j);
    char rid[64];
    CHECK(gws_header(&r, "X-Request-Id", rid, sizeof rid) && strlen(rid) == 36);
    gws_resp_free(&r);

    CHECK(gws_http(S.port, "GET", "/v1/models", NULL, NULL, &r, 5000) == 0 && r.status == 200);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    CHECK(!strcmp(jstr(m, "id", NULL, NULL), "deepseek-v4-flash"));
    CHECK(jint(m, "context_length", NULL, NULL) == 2048); /* learned from engined */
    json_decref(j);
    gws_resp_free(&r);
    CHECK(gws_http(S.port, "GET", "/v1/models/deepseek-v4-flash", NULL, NULL, &r, 5000) == 0 && r.status == 200);
    gws_resp_free(&r);
    CHECK(gws_http(S.port, "GET", "/v1/models/gpt-9", NULL, NULL, &r, 5000) == 0 && r.status == 404);
    gws_resp_free(&r);

    CHECK(gws_http(S.port, "GET", "/metrics", NULL, NULL, &r, 5000) == 0 && r.status == 200);
    CHECK(strstr(r.body, "ds4_engined_jobs_submitted_total{instance=") != NULL);
    CHECK(strstr(r.body, "ds4_tokenizerd_render_requests_total{instance=") != NULL);
    CHECK(strstr(r.body, "ds4_gatewayd_http_requests_total{instance=") != NULL);
    CHECK(strstr(r.body, "ds4_gatewayd_replay_entries") != NULL);
    gws_resp_free(&r);

    /* unknown path, wrong method, Claude Code's HEAD / preflight */
    CHECK(gws_http(S.port, "POST", "/v1/nothing", NULL, "{}", &r, 5000) == 0 && r.status == 404);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    CHECK(!strcmp(jstr(j, "error", "type", NULL), "not_found_error"));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(gws_http(S.port, "GET", "/v1/chat/completions", NULL, NULL, &r, 5000) == 0 && r.status == 405);
    gws_resp_free(&r);
    CHECK(gws_http(S.port, "HEAD", "/", NULL, NULL, &r, 5000) == 0 && r.status == 404);
    gws_resp_free(&r);
    /* no CORS unless asked */
    CHECK(gws_http(S.port, "OPTIONS", "/v1/chat/completions", "Origin: http://x\r\n", NULL, &r, 5000) == 0);
    char v[128];
    CHECK(r.status == 405 && !gws_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    gws_resp_free(&r);
}

/* ---- every endpoint, streaming and not ------------------------------------- */

static void t_endpoints(void)
{
    gws_resp r;
    json_t *j;
    sse_list l;
    /* the prompt tokenizerd counts is the prompt the engine ran */
    CHECK(post(S.port, "/v1/messages/count_tokens?beta=true",
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}]}", NULL, &r, &j) == 200);
    long long count = jint(j, "input_tokens", NULL, NULL);
    CHECK(count > 3);
    json_decref(j);
    gws_resp_free(&r);

    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],\"ds4_test_output\":\"Hmm.</think>Hello world" EOS "\"}",
               NULL, &r, &j) == 200);
    json_t *msg = json_object_get(choice0(j), "message");
    CHECK(!strcmp(jstr(msg, "content", NULL, NULL), "Hello world"));
    CHECK(!strcmp(jstr(msg, "reasoning_content", NULL, NULL), "Hmm."));
    CHECK(!strcmp(jstr(choice0(j), "finish_reason", NULL, NULL), "stop"));
    CHECK(jint(j, "usage", "prompt_tokens", NULL) == count);
    CHECK(jint(j, "usage", "completion_tokens", NULL) >= 5);
    json_decref(j);
    gws_resp_free(&r);

    CHECK(post_sse(S.port, "/v1/chat/completions",
                   "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],"
                   "\"ds4_test_output\":\"Hmm.</think>Hello world" EOS "\"}", &r, &l) == 200);
    char ct[128];
    CHECK(gws_header(&r, "Content-Type", ct, sizeof ct) && !strcmp(ct, "text/event-stream"));
    gw_buf text = {0};
    gw_buf_puts(&text, "");
    long long prompt = -1, cached = -1;
    for (size_t i = 0; i < l.n; i++) {
        const char *s = jstr(json_object_get(choice0(l.ev[i].data), "delta"), "content", NULL, NULL);
        if (s)
            gw_buf_puts(&text, s);
        if (json_object_get(l.ev[i].data, "usage")) {
            prompt = jint(l.ev[i].data, "usage", "prompt_tokens", NULL);
            cached = jint(l.ev[i].data, "usage", "prompt_tokens_details", "cached_tokens");
        }
    }
    CHECK(!strcmp(text.p, "Hello world"));
    CHECK(prompt == count && cached >= 0 && cached <= prompt);
    CHECK(l.n && !strcmp(json_string_value(l.ev[l.n - 1].data), "[DONE]"));
    gw_buf_free(&text);
    sse_free(&l);
    gws_resp_free(&r);

    /* response_format: the official "## Response Format" block is rendered */
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],\"response_format\":{\"type\":\"json_schema\","
               "\"json_schema\":{\"name\":\"g\",\"schema\":{\"type\":\"object\",\"properties\":{\"greeting\":{\"type\":\"string\"}}}}},"
               "\"ds4_test_output\":\"ok</think>{\\\"greeting\\\":\\\"hi\\\"}" EOS "\"}", NULL, &r, &j) == 200);
    CHECK(jint(j, "usage", "prompt_tokens", NULL) > count + 10);
    CHECK(!strcmp(jstr(json_object_get(choice0(j), "message"), "content", NULL, NULL), "{\"greeting\":\"hi\"}"));
    json_decref(j);
    gws_resp_free(&r);

    /* logprobs from the engine: one entry per generated token, alternatives */
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],\"logprobs\":true,\"top_logprobs\":2,"
               "\"reasoning_effort\":\"none\",\"ds4_test_output\":\"Hello there\"}", NULL, &r, &j) == 200);
    json_t *lp = json_object_get(json_object_get(choice0(j), "logprobs"), "content");
    CHECK(json_array_size(lp) == (size_t)jint(j, "usage", "completion_tokens", NULL) && json_array_size(lp) >= 2);
    CHECK(!strcmp(jstr(json_array_get(lp, 0), "token", NULL, NULL), "Hello"));
    CHECK(json_real_value(json_object_get(json_array_get(lp, 0), "logprob")) <= 0);
    CHECK(json_array_size(json_object_get(json_array_get(lp, 0), "top_logprobs")) == 2);
    json_decref(j);
    gws_resp_free(&r);

    CHECK(post(S.port, "/v1/completions", "{\"prompt\":\"Once upon\",\"max_tokens\":8,\"ds4_test_output\":\" a time" EOS "\"}",
               NULL, &r, &j) == 200);
    CHECK(!strcmp(jstr(choice0(j), "text", NULL, NULL), " a time"));
    CHECK(!strcmp(jstr(choice0(j), "finish_reason", NULL, NULL), "stop"));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(post_sse(S.port, "/completions", "{\"prompt\":\"Once upon\",\"stream\":true,\"ds4_test_output\":\" a time\"}",
                   &r, &l) == 200);
    CHECK(l.n >= 3 && !strcmp(json_string_value(l.ev[l.n - 1].data), "[DONE]"));
    CHECK(!strcmp(jstr(choice0(l.ev[l.n - 2].data), "finish_reason", NULL, NULL), "length")); /* forced ids ran out */
    sse_free(&l);
    gws_resp_free(&r);

    CHECK(post(S.port, "/v1/responses", "{\"input\":\"Say hi\",\"reasoning\":{\"effort\":\"none\"},\"ds4_test_output\":\"Hi!" EOS "\"}",
               NULL, &r, &j) == 200);
    json_t *out = json_object_get(j, "output");
    CHECK(json_array_size(out) == 1);
    CHECK(!strcmp(jstr(json_array_get(json_object_get(json_array_get(out, 0), "content"), 0), "text", NULL, NULL), "Hi!"));
    CHECK(!strcmp(jstr(j, "status", NULL, NULL), "completed"));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(post_sse(S.port, "/v1/responses", "{\"input\":\"Say hi\",\"stream\":true,\"ds4_test_output\":\"ok</think>Hi!" EOS "\"}",
                   &r, &l) == 200);
    CHECK(l.n > 8 && !strcmp(l.ev[0].name, "response.created") && !strcmp(l.ev[l.n - 1].name, "response.completed"));
    CHECK(jint(l.ev[l.n - 1].data, "response", "usage", "input_tokens") > 3);
    sse_free(&l);
    gws_resp_free(&r);

    CHECK(post(S.port, "/v1/messages?beta=true",
               "{\"model\":\"claude-x\",\"max_tokens\":32000,\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],"
               "\"ds4_test_output\":\"Hmm.</think>Hello" EOS "\"}", NULL, &r, &j) == 200);
    CHECK(!strcmp(jstr(j, "model", NULL, NULL), "claude-x"));
    CHECK(!strcmp(jstr(json_array_get(json_object_get(j, "content"), 1), "text", NULL, NULL), "Hello"));
    CHECK(jint(j, "usage", "input_tokens", NULL) + jint(j, "usage", "cache_read_input_tokens", NULL) == count);
    json_decref(j);
    gws_resp_free(&r);
    CHECK(post_sse(S.port, "/v1/messages", "{\"stream\":true,\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],"
                   "\"ds4_test_output\":\"Hmm.</think>Hello" EOS "\"}", &r, &l) == 200);
    CHECK(l.n > 6 && !strcmp(l.ev[0].name, "message_start") && !strcmp(l.ev[l.n - 1].name, "message_stop"));
    sse_free(&l);
    gws_resp_free(&r);
}

/* ---- tools ----------------------------------------------------------------- */

#define TOOLS "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"object\"}}}}}]"

static void t_tools(void)
{
    gws_resp r;
    json_t *j;
    /* the model writes its JSON argument compactly, unlike the canonical
     * rendering: only exact replay reproduces the sampled tokens */
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"call f\"}],\"tools\":" TOOLS ","
               "\"ds4_test_output\":\"ok</think>\\n\\n<" DSML "tool_calls>\\n<" DSML "invoke name=\\\"f\\\">\\n<" DSML
               "parameter name=\\\"n\\\" string=\\\"false\\\">{\\\"a\\\":1}</" DSML "parameter>\\n</" DSML "invoke>\\n</" DSML
               "tool_calls>" EOS "\"}", NULL, &r, &j) == 200);
    json_t *m = json_object_get(choice0(j), "message");
    json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
    CHECK(!strcmp(jstr(choice0(j), "finish_reason", NULL, NULL), "tool_calls"));
    CHECK(!strcmp(jstr(tc, "function", "name", NULL), "f"));
    CHECK(!strcmp(jstr(tc, "function", "arguments", NULL), "{\"n\": {\"a\":1}}"));
    long long p1 = jint(j, "usage", "prompt_tokens", NULL), c1 = jint(j, "usage", "completion_tokens", NULL);
    char id[80];
    snprintf(id, sizeof id, "%s", jstr(tc, "id", NULL, NULL));
    json_decref(j);
    gws_resp_free(&r);

    /* turn 2 as a client sends it: arguments re-serialized, reasoning echoed */
    char body[2048];
    const char *fmt = "{\"messages\":[{\"role\":\"user\",\"content\":\"call f\"},{\"role\":\"assistant\",\"content\":\"%s\","
                      "\"reasoning_content\":\"ok\",\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"function\":"
                      "{\"name\":\"f\",\"arguments\":\"{\\\"n\\\":{\\\"a\\\":1}}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"%s\","
                      "\"content\":\"42\"}],\"tools\":" TOOLS ",\"ds4_test_output\":\"ok</think>Done." EOS "\"}";
    snprintf(body, sizeof body, fmt, "", id, id);
    CHECK(post(S.port, "/v1/chat/completions", body, NULL, &r, &j) == 200);
    long long cached = jint(j, "usage", "prompt_tokens_details", "cached_tokens");
    CHECKF(cached == p1 + c1 - 1, "replayed turn: cached %lld, want %lld (prompt %lld + generated %lld - EOS)", cached,
           p1 + c1 - 1, p1, c1);
    CHECK(!strcmp(jstr(json_object_get(choice0(j), "message"), "content", NULL, NULL), "Done."));
    json_decref(j);
    gws_resp_free(&r);
    /* the client edited the turn: canonical rendering, the cache stops earlier */
    snprintf(body, sizeof body, fmt, "edited", id, id);
    CHECK(post(S.port, "/v1/chat/completions", body, NULL, &r, &j) == 200);
    long long cached2 = jint(j, "usage", "prompt_tokens_details", "cached_tokens");
    CHECKF(cached2 >= 0 && cached2 < p1 + c1 - 1, "edited turn: cached %lld", cached2);
    json_decref(j);
    gws_resp_free(&r);

    /* tool_choice required: the DSML opening is prefilled, the model names the tool */
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":" TOOLS ",\"tool_choice\":\"required\","
               "\"ds4_test_output\":\"<" DSML "invoke name=\\\"f\\\">\\n</" DSML "invoke>\\n</" DSML "tool_calls>" EOS "\"}",
               NULL, &r, &j) == 200);
    tc = json_array_get(json_object_get(json_object_get(choice0(j), "message"), "tool_calls"), 0);
    CHECK(tc && !strcmp(jstr(tc, "function", "name", NULL), "f") && !strcmp(jstr(tc, "function", "arguments", NULL), "{}"));
    json_decref(j);
    gws_resp_free(&r);
    /* named (Anthropic "tool"): the invoke header is prefilled too */
    CHECK(post(S.port, "/v1/messages",
               "{\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"g\",\"input_schema\":"
               "{\"type\":\"object\"}}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"g\"},"
               "\"ds4_test_output\":\"<" DSML "parameter name=\\\"q\\\" string=\\\"true\\\">v</" DSML "parameter>\\n</" DSML
               "invoke>\\n</" DSML "tool_calls>" EOS "\"}", NULL, &r, &j) == 200);
    json_t *blk = json_array_get(json_object_get(j, "content"), 0);
    CHECK(!strcmp(jstr(blk, "type", NULL, NULL), "tool_use") && !strcmp(jstr(blk, "name", NULL, NULL), "g"));
    CHECK(!strcmp(jstr(blk, "input", "q", NULL), "v"));
    CHECK(!strcmp(jstr(j, "stop_reason", NULL, NULL), "tool_use"));
    json_decref(j);
    gws_resp_free(&r);
}

/* Claude Code's billing line changes with the prompt; stripped, the next
 * turn (its nonce changed) still extends the cached prefix, and the plain
 * answer of the first turn is replayed exactly (its thinking signature). */
static void t_billing_line(void)
{
    const char *sys = "\"system\":[{\"type\":\"text\",\"text\":\"x-anthropic-billing-header: cc_version=2.1.197.%s; "
                      "cc_entrypoint=sdk-cli;\"},{\"type\":\"text\",\"text\":\"You are a careful agent.\"}]";
    /* Claude Code always sends tools; with tools the official encoder keeps
     * earlier reasoning (without, it drops it, and the previous turn can no
     * longer be a cached prefix) */
    const char *tools = "\"tools\":[{\"name\":\"Bash\",\"input_schema\":{\"type\":\"object\"}}],";
    char body[2048], s1[512];
    gws_resp r;
    json_t *j;
    snprintf(s1, sizeof s1, sys, "1c0");
    snprintf(body, sizeof body, "{\"max_tokens\":100,%s,%s\"messages\":[{\"role\":\"user\",\"content\":\"Tell me.\"}],"
             "\"ds4_test_output\":\"Let me think.</think>Prefixes matter." EOS "\"}", s1, tools);
    CHECK(post(S.port, "/v1/messages", body, NULL, &r, &j) == 200);
    long long in1 = jint(j, "usage", "input_tokens", NULL) + jint(j, "usage", "cache_read_input_tokens", NULL);
    long long out1 = jint(j, "usage", "output_tokens", NULL);
    char sig[80];
    snprintf(sig, sizeof sig, "%s", jstr(json_array_get(json_object_get(j, "content"), 0), "signature", NULL, NULL));
    CHECK(!strncmp(sig, "ds4r_", 5));
    json_decref(j);
    gws_resp_free(&r);
    snprintf(s1, sizeof s1, sys, "0cf");
    snprintf(body, sizeof body, "{\"max_tokens\":100,%s,%s\"messages\":[{\"role\":\"user\",\"content\":\"Tell me.\"},"
             "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"Let me think.\",\"signature\":\"%s\"},"
             "{\"type\":\"text\",\"text\":\"Prefixes matter.\"}]},{\"role\":\"user\",\"content\":\"More.\"}],"
             "\"ds4_test_output\":\"ok</think>Yes." EOS "\"}", s1, tools, sig);
    CHECK(post(S.port, "/v1/messages", body, NULL, &r, &j) == 200);
    long long cr = jint(j, "usage", "cache_read_input_tokens", NULL);
    CHECKF(cr == in1 + out1 - 1, "billing nonce changed: cache_read %lld, want %lld", cr, in1 + out1 - 1);
    json_decref(j);
    gws_resp_free(&r);
}

/* ---- errors ---------------------------------------------------------------- */

static void expect_status(int port, const char *path, const char *body, const char *headers, int status,
                          const char *type, const char *param)
{
    gws_resp r;
    json_t *j;
    int st = post(port, path, body, headers, &r, &j);
    CHECKF(st == status, "%s: status %d want %d: %.300s", path, st, status, r.body);
    int anth = strstr(path, "/v1/messages") != NULL;
    if (anth)
        CHECKF(j && !strcmp(jstr(j, "type", NULL, NULL), "error") && !strcmp(jstr(j, "error", "type", NULL), type),
               "%s: body %.300s", path, r.body);
    else
        CHECKF(j && !strcmp(jstr(j, "error", "type", NULL), type), "%s: body %.300s", path, r.body);
    if (param && !anth)
        CHECKF(!strcmp(jstr(j, "error", "param", NULL) ? jstr(j, "error", "param", NULL) : "", param), "param in %.300s",
               r.body);
    json_decref(j);
    gws_resp_free(&r);
}

static void t_errors(void)
{
    expect_status(S.port, "/v1/chat/completions", "{\"messages\":[", NULL, 400, "invalid_request_error", NULL);
    expect_status(S.port, "/v1/messages", "not json", NULL, 400, "invalid_request_error", NULL);
    expect_status(S.port, "/v1/responses", "[1,2]", NULL, 400, "invalid_request_error", NULL);
    expect_status(S.port, "/v1/chat/completions", "{\"messages\":\"hi\"}", NULL, 400, "invalid_request_error", "messages");
    expect_status(S.port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":\"5\"}",
                  NULL, 400, "invalid_request_error", "max_tokens");
    expect_status(S.port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", NULL, 400,
                  "invalid_request_error", NULL);
    /* a prompt over the context: 400, never truncated */
    gw_buf big = {0};
    gw_buf_puts(&big, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 2500; i++)
        gw_buf_puts(&big, "word ");
    gw_buf_puts(&big, "\"}]}");
    gws_resp r;
    json_t *j;
    CHECK(post(S.port, "/v1/chat/completions", big.p, NULL, &r, &j) == 400);
    CHECK(!strcmp(jstr(j, "error", "code", NULL), "context_length_exceeded"));
    CHECK(!strcmp(jstr(j, "error", "type", NULL), "invalid_request_error"));
    json_decref(j);
    gws_resp_free(&r);
    gw_buf_reset(&big);
    gw_buf_puts(&big, "{\"max_tokens\":10,\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 2500; i++)
        gw_buf_puts(&big, "word ");
    gw_buf_puts(&big, "\"}]}");
    expect_status(S.port, "/v1/messages", big.p, NULL, 400, "invalid_request_error", NULL);
    /* over the body limit (1 MiB here) */
    gw_buf_reset(&big);
    gw_buf_puts(&big, "{\"x\":\"");
    for (int i = 0; i < (3 << 18); i++)
        gw_buf_puts(&big, "abcd");
    gw_buf_puts(&big, "\"}");
    expect_status(S.port, "/v1/messages", big.p, NULL, 413, "request_too_large", NULL);
    gw_buf_free(&big);

    /* the gateway with keys and CORS, without test mode */
    expect_status(PORTA, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, 401,
                  "authentication_error", NULL);
    expect_status(PORTA, "/v1/messages", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", "x-api-key: wrong\r\n", 401,
                  "authentication_error", NULL);
    /* refused before the body was read: the body (an agent's 600 KB) is
     * still drained, so the client reads the 401 instead of a reset */
    gw_buf agent = {0};
    gw_buf_puts(&agent, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 60000; i++)
        gw_buf_puts(&agent, "0123456789");
    gw_buf_puts(&agent, "\"}]}");
    expect_status(PORTA, "/v1/messages", agent.p, NULL, 401, "authentication_error", NULL);
    expect_status(S.port, "/v1/nowhere", agent.p, NULL, 404, "not_found_error", NULL);
    gw_buf_free(&agent);
    expect_status(PORTA, "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"ds4_test_output\":\"x\"}",
                  "Authorization: Bearer sekret\r\n", 403, "permission_error", "ds4_test_output");
    CHECK(gws_http(PORTA, "GET", "/v1/models", "x-api-key: other\r\n", NULL, &r, 5000) == 0 && r.status == 200);
    char v[256];
    CHECK(gws_header(&r, "Access-Control-Allow-Origin", v, sizeof v) && !strcmp(v, "*"));
    gws_resp_free(&r);
    CHECK(gws_http(PORTA, "GET", "/health", NULL, NULL, &r, 5000) == 0 && r.status == 200); /* public */
    gws_resp_free(&r);
    CHECK(gws_http(PORTA, "OPTIONS", "/v1/messages",
                   "Origin: http://x\r\nAccess-Control-Request-Headers: x-api-key, content-type\r\n", NULL, &r, 5000) == 0);
    CHECK(r.status == 204 && gws_header(&r, "Access-Control-Allow-Headers", v, sizeof v) &&
          !strcmp(v, "x-api-key, content-type"));
    gws_resp_free(&r);
    /* a real generation through the keyed gateway (sampled, short) */
    CHECK(post(PORTA, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":3,\"seed\":1}",
               "Authorization: Bearer sekret\r\n", &r, &j) == 200);
    CHECK(jint(j, "usage", "completion_tokens", NULL) == 3);
    CHECK(!strcmp(jstr(choice0(j), "finish_reason", NULL, NULL), "length"));
    json_decref(j);
    gws_resp_free(&r);
}

/* ---- engine load: 429, disconnects, keepalive ------------------------------- */

/* Start a streaming request on a raw socket; returns the fd once the
 * response headers (the job was accepted) arrived, else -1. */
static int open_stream(const char *path, const char *body, char *first, size_t cap)
{
    int fd = gws_connect(S.port);
    if (fd < 0 || gws_send_req(fd, "POST", path, NULL, body, strlen(body)))
        return -1;
    size_t n = 0;
    long long end = gws_now_ms() + 30000;
    while (n < cap - 1 && !strstr(first, "\r\n\r\n")) {
        struct pollfd pf = {fd, POLLIN, 0};
        long long left = end - gws_now_ms();
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            break;
        ssize_t k = recv(fd, first + n, cap - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        first[n] = 0;
    }
    return strstr(first, "\r\n\r\n") ? fd : (close(fd), -1);
}

/* Poll a counter until it reaches want (deadline). */
static long long wait_stat(const char *daemon, const char *name, long long want, int ms)
{
    long long end = gws_now_ms() + ms, v;
    while ((v = gws_stat(S.inst, daemon, name)) < want && gws_now_ms() < end)
        poll(NULL, 0, 10); /* polling a counter with a deadline */
    return v;
}

static void t_busy_and_cancel(void)
{
    long long cancelled0 = gws_stat(S.inst, "engined", "jobs_cancelled");
    long long gone0 = gws_stat(S.inst, "gatewayd", "client_disconnects");
    const char *lng = "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"write a lot\"}],\"seed\":3}";
    char h1[4096] = "", h2[4096] = "";
    int a = open_stream("/v1/chat/completions", lng, h1, sizeof h1); /* running (batch of 1) */
    CHECK(a >= 0 && strstr(h1, " 200 "));
    CHECK(wait_stat("engined", "jobs_running", 1, 10000) == 1);
    int b = open_stream("/v1/chat/completions", lng, h2, sizeof h2); /* queued (queue of 1) */
    CHECK(b >= 0 && strstr(h2, " 200 "));
    /* the queue is full: 429 with Retry-After, in each API's shape */
    gws_resp r;
    json_t *j;
    CHECK(post(S.port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 429);
    char ra[32];
    CHECK(gws_header(&r, "Retry-After", ra, sizeof ra) && !strcmp(ra, "2"));
    CHECK(!strcmp(jstr(j, "error", "type", NULL), "rate_limit_error"));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(post(S.port, "/v1/messages", "{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 429);
    CHECK(!strcmp(jstr(j, "error", "type", NULL), "rate_limit_error") && !strcmp(jstr(j, "type", NULL, NULL), "error"));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(r.ms < 2000);
    /* the clients go away: both jobs are cancelled in engined */
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    CHECK(wait_stat("engined", "jobs_cancelled", cancelled0 + 2, 10000) >= cancelled0 + 2);
    CHECK(wait_stat("gatewayd", "client_disconnects", gone0 + 2, 10000) >= gone0 + 2);

    /* a non-streaming request whose client leaves is cancelled too */
    int c = gws_connect(S.port);
    const char *nb = "{\"messages\":[{\"role\":\"user\",\"content\":\"write a lot\"}]}";
    CHECK(c >= 0 && gws_send_req(c, "POST", "/v1/chat/completions", NULL, nb, strlen(nb)) == 0);
    CHECK(wait_stat("engined", "jobs_running", 1, 10000) == 1);
    close(c);
    CHECK(wait_stat("engined", "jobs_cancelled", cancelled0 + 3, 10000) >= cancelled0 + 3);

    /* keepalive comments while the engine prefills a long prompt */
    gw_buf body = {0};
    gw_buf_puts(&body, "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 400; i++)
        gw_buf_printf(&body, "token%d ", i);
    gw_buf_puts(&body, "\"}],\"ds4_test_output\":\"x</think>y" EOS "\"}");
    sse_list l;
    CHECK(post_sse(S.port, "/v1/chat/completions", body.p, &r, &l) == 200);
    CHECKF(l.comments >= 1, "no keepalive comment during a long prefill");
    CHECK(l.n && !strcmp(json_string_value(l.ev[l.n - 1].data), "[DONE]"));
    sse_free(&l);
    gws_resp_free(&r);
    gw_buf_free(&body);
}

/* ---- stages going away ------------------------------------------------------- */

static void t_stage_down(void)
{
    gws_resp r;
    json_t *j;
    /* the request id of one HTTP request is in every stage's log */
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"id\"}],\"ds4_test_output\":\"a</think>b" EOS "\"}", NULL, &r, &j) == 200);
    char rid[64] = "";
    gws_header(&r, "X-Request-Id", rid, sizeof rid);
    json_decref(j);
    gws_resp_free(&r);
    const gws_proc *ps[] = {&S.gw, &S.tok, &S.eng};
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *log = test_read_file(ps[i]->log, &n);
        CHECKF(log && rid[0] && strstr(log, rid), "request id %s not in the %s log", rid, ps[i]->name);
        free(log);
    }

    /* engined killed: 503 at once, /health says so */
    gws_signal_wait(&S.eng, SIGKILL, 5000);
    CHECK(post(S.port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 503);
    CHECKF(r.ms < 1000, "503 took %lld ms", r.ms);
    CHECK(!strcmp(jstr(j, "error", "type", NULL), "server_error"));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(post(S.port, "/v1/messages", "{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 503);
    CHECK(r.ms < 1000);
    json_decref(j);
    gws_resp_free(&r);
    CHECK(gws_http(S.port, "GET", "/health", NULL, NULL, &r, 5000) == 0 && r.status == 503);
    gws_resp_free(&r);
    /* count_tokens needs only tokenizerd */
    CHECK(post(S.port, "/v1/messages/count_tokens", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 200);
    json_decref(j);
    gws_resp_free(&r);

    /* restarted alone: the gateway serves again without a restart */
    const char *eng_extra[] = {"--ctx", "2048", "--max-batch", "1", "--max-queue", "1", "--retry-after-ms", "2000", NULL};
    CHECK(gws_start_eng(&S, eng_extra) == 0);
    CHECK(gws_wait_health(S.port, 20000) == 0);
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"ds4_test_output\":\"a</think>b" EOS "\"}", NULL, &r, &j) == 200);
    json_decref(j);
    gws_resp_free(&r);

    /* engined dies mid-stream: the stream ends with the API's error event */
    char h[4096] = "";
    int fd = open_stream("/v1/messages", "{\"stream\":true,\"max_tokens\":2000,\"messages\":[{\"role\":\"user\",\"content\":\"go\"}]}",
                         h, sizeof h);
    CHECK(fd >= 0);
    CHECK(wait_stat("engined", "tokens_generated", 2, 10000) >= 2);
    long long t0 = gws_now_ms();
    gws_signal_wait(&S.eng, SIGKILL, 5000);
    size_t n;
    char *rest = gws_read_all(fd, &n, 10000);
    long long dt = gws_now_ms() - t0;
    close(fd);
    CHECKF(dt < 1500, "stream end took %lld ms after the engine died", dt);
    CHECK(strstr(rest, "event: error") != NULL && strstr(rest, "\"type\":\"error\"") != NULL);
    free(rest);
    CHECK(gws_start_eng(&S, eng_extra) == 0);
    CHECK(gws_wait_health(S.port, 20000) == 0);

    /* tokenizerd killed: 503 at once, also for count_tokens; restart */
    gws_signal_wait(&S.tok, SIGKILL, 5000);
    CHECK(post(S.port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 503);
    CHECK(r.ms < 1000);
    json_decref(j);
    gws_resp_free(&r);
    CHECK(post(S.port, "/v1/messages/count_tokens", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &r, &j) == 503);
    CHECK(r.ms < 1000);
    json_decref(j);
    gws_resp_free(&r);
    CHECK(gws_start_tok(&S) == 0);
    CHECK(gws_wait_health(S.port, 20000) == 0);
    CHECK(post(S.port, "/v1/responses", "{\"input\":\"q\",\"ds4_test_output\":\"a</think>b" EOS "\"}", NULL, &r, &j) == 200);
    json_decref(j);
    gws_resp_free(&r);
}

/* SIGTERM: no new connections, the stream in flight still completes, exit 0. */
static void t_drain(void)
{
    char h[4096] = "";
    int fd = open_stream("/v1/chat/completions",
                         "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"reasoning_effort\":\"none\","
                         "\"ds4_test_output\":\"one two three four five six seven eight nine ten eleven twelve" EOS "\"}",
                         h, sizeof h);
    CHECK(fd >= 0);
    kill(S.gw.pid, SIGTERM);
    /* the listening socket closes: poll connect attempts until refused */
    long long end = gws_now_ms() + 5000;
    int refused = 0;
    while (!refused && gws_now_ms() < end) {
        int c = gws_connect(S.port);
        if (c < 0)
            refused = 1;
        else {
            close(c);
            poll(NULL, 0, 10); /* retry interval of a bounded poll */
        }
    }
    CHECK(refused);
    size_t n;
    char *rest = gws_read_all(fd, &n, 10000);
    close(fd);
    CHECK(strstr(rest, "\"finish_reason\":\"stop\"") && strstr(rest, "[DONE]"));
    free(rest);
    int st = gws_signal_wait(&S.gw, 0, 10000);
    CHECKF(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "gatewayd exit status 0x%x", st);
}

int main(void)
{
    const char *eng_extra[] = {"--ctx", "2048", "--max-batch", "1", "--max-queue", "1", "--retry-after-ms", "2000", NULL};
    const char *gw_extra[] = {"--test-mode", "--keepalive-ms", "20", "--max-body-mb", "1", NULL};
    if (gws_start(&S, eng_extra, gw_extra)) {
        gws_stop(&S, NULL, 0);
        fprintf(stderr, "FAIL test_gw_stack: the stack did not start\n");
        return 1;
    }
    const char *a_extra[] = {"--api-key", "sekret,other", "--cors", NULL};
    PORTA = gws_start_gw(&S, &GWA, a_extra);
    CHECK(PORTA > 0);
    long long t0 = gws_now_ms();
    t_basics();
    t_endpoints();
    t_tools();
    t_billing_line();
    t_errors();
    t_busy_and_cancel();
    t_stage_down();
    t_drain();
    if (test_failures) {
        gws_log_tail(&S.gw, 30);
        gws_log_tail(&S.eng, 15);
    }
    fprintf(stderr, "test_gw_stack: requests took %lld ms\n", gws_now_ms() - t0);
    CHECKF(gws_stop(&S, &GWA, 1) == 0, "a daemon did not stop cleanly");
    return test_main_end("test_gw_stack");
}
