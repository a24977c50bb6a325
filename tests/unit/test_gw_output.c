/* test_gw_output.c - what each API sends back for a generation, without
 * daemons: model output (the real tokenizer's ids of a scripted assistant
 * text) is fed through gatewayd's generation driver exactly as GEN_EVENTs
 * would be, one token at a time, and the streamed SSE events and the
 * non-streaming bodies of chat completions, completions, Responses and
 * Messages are checked: event order and framing, reasoning / content /
 * tool-call split from the DSML, finish reasons, usage, stop strings cut
 * across tokens, parallel_tool_calls:false, malformed DSML falling back to
 * text, UTF-8 split across tokens, engine failure mid-stream, and the
 * replay memory filled so that the next request renders the exact turn. */
#include <stdarg.h>

#include "gatewayd/gw_api.h"
#include "gatewayd/gw_gen.h"
#include "gw_test_sse.h"
#include "log.h"
#include "test.h"
#include "tokenizerd/tok_bpe.h"

#define TOKJSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"
#define DSML "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c"
#define EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

static tok_vocab *V;
static tok_encoder *E;
static gw_ctx CX;

static const char *TOOL_OUT =
    "I should call the tool.</think>Let me check.\n\n<" DSML "tool_calls>\n<" DSML "invoke name=\"get_weather\">\n<" DSML
    "parameter name=\"city\" string=\"true\">Paris</" DSML "parameter>\n<" DSML
    "parameter name=\"days\" string=\"false\">3</" DSML "parameter>\n</" DSML "invoke>\n</" DSML "tool_calls>" EOS;

/* One scripted generation through the driver. */
struct run {
    gw_req req;
    gw_gen g;
    sse_list ev;
    json_t *body;
    int32_t *ids;
    size_t nids;
};

/* Map a JSON body, then feed text as generated ids (one per event) and
 * finish with the engine's finish reason. */
static void run(struct run *R, int api, const char *body_json, int start_in_reasoning, const char *text,
                const char *finish)
{
    memset(R, 0, sizeof *R);
    gw_err e;
    gw_map_opts mo = {CX.replay, 1, "deepseek-v4-flash"};
    json_t *b = json_loads(body_json, 0, NULL);
    gw_req_init(&R->req, api);
    int rc = gw_map(b, &mo, &R->req, &e);
    json_decref(b);
    CHECKF(rc == 0, "map: %s", e.msg);
    tok_ids ids = {0};
    CHECK(tok_encode(E, text, strlen(text), TOK_MODE_RAW, &ids, NULL, 0) == 0);
    R->ids = (int32_t *)ids.v;
    R->nids = ids.n;
    gw_gen_init(&R->g, &CX, &R->req, gw_api_ops_for(api), NULL, -1);
    R->g.nprompt = 100;
    gw_gen_start_output(&R->g, start_in_reasoning);
    gw_gen_on_accepted(&R->g, 40);
    size_t generated = 0;
    for (size_t i = 0; i < ids.n; i++) {
        int32_t id = (int32_t)ids.v[i];
        if (id == CX.eos_id)
            break; /* the engine reports a stop id in GEN_DONE, not as a token */
        gw_gen_feed_ids(&R->g, &id, 1, NULL);
        generated++;
    }
    gw_gen_complete(&R->g, finish, 100, 40, generated + (strcmp(finish, "stop") == 0));
    if (R->req.stream)
        sse_parse(R->g.sse.p ? R->g.sse.p : "", R->g.sse.len, &R->ev);
    else if (!R->g.failed)
        R->body = R->g.ops->body(&R->g);
}

static void run_free(struct run *R)
{
    sse_free(&R->ev);
    json_decref(R->body);
    gw_gen_free(&R->g);
    gw_req_free(&R->req);
    free(R->ids);
}

/* Concatenate a string member of every event matching name/path. */
static char *collect(sse_list *l, const char *name, const char *k1, const char *k2, const char *k3)
{
    gw_buf b = {0};
    gw_buf_puts(&b, "");
    for (size_t i = 0; i < l->n; i++) {
        if (name && strcmp(l->ev[i].name, name))
            continue;
        const char *s = sse_str(l->ev[i].data, k1, k2, k3, NULL);
        if (s)
            gw_buf_puts(&b, s);
    }
    return b.p;
}

/* Chat delta of event i (choices[0].delta). */
static json_t *delta(sse_list *l, size_t i)
{
    return json_object_get(json_array_get(json_object_get(l->ev[i].data, "choices"), 0), "delta");
}

static void test_chat(void)
{
    struct run R;
    run(&R, GW_API_CHAT,
        "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1,
        TOOL_OUT, "stop");
    sse_list *l = &R.ev;
    CHECK(!l->bad && l->complete && l->n >= 6);
    CHECK(!strcmp(sse_str(delta(l, 0), "role", NULL), "assistant"));
    gw_buf rs = {0}, ct = {0};
    gw_buf_puts(&rs, "");
    gw_buf_puts(&ct, "");
    size_t tc_head = 0, tc_args = 0, fin = 0, usage = 0;
    for (size_t i = 0; i < l->n; i++) {
        json_t *d = delta(l, i);
        const char *s;
        if ((s = sse_str(d, "reasoning_content", NULL)))
            gw_buf_puts(&rs, s);
        if ((s = sse_str(d, "content", NULL)))
            gw_buf_puts(&ct, s);
        json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
        if (tc && json_object_get(tc, "id")) {
            tc_head = i;
            CHECK(!strcmp(sse_str(tc, "function", "name", NULL), "get_weather"));
            CHECK(!strncmp(sse_str(tc, "id", NULL), "call_", 5));
        } else if (tc) {
            tc_args = i;
            CHECK(!strcmp(sse_str(tc, "function", "arguments", NULL), "{\"city\": \"Paris\", \"days\": 3}"));
        }
        const char *fr = sse_str(json_array_get(json_object_get(l->ev[i].data, "choices"), 0), "finish_reason", NULL);
        if (fr) {
            fin = i;
            CHECK(!strcmp(fr, "tool_calls"));
        }
        json_t *u = json_object_get(l->ev[i].data, "usage");
        if (u) {
            usage = i;
            CHECK(json_array_size(json_object_get(l->ev[i].data, "choices")) == 0);
            CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == 100);
            CHECK(json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens")) == 40);
            CHECK(json_integer_value(json_object_get(json_object_get(u, "completion_tokens_details"), "reasoning_tokens")) > 0);
        }
    }
    CHECKF(!strcmp(rs.p, "I should call the tool."), "reasoning '%s'", rs.p);
    CHECKF(!strcmp(ct.p, "Let me check."), "content '%s'", ct.p);
    CHECK(tc_head && tc_args == tc_head + 1 && fin > tc_args && usage == fin + 1);
    CHECK(json_is_string(l->ev[l->n - 1].data) && !strcmp(json_string_value(l->ev[l->n - 1].data), "[DONE]"));
    gw_buf_free(&rs);
    gw_buf_free(&ct);
    run_free(&R);

    /* non-streaming: the same turn as one body */
    run(&R, GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1, TOOL_OUT, "stop");
    json_t *m = json_object_get(json_array_get(json_object_get(R.body, "choices"), 0), "message");
    CHECK(!strcmp(sse_str(R.body, "object", NULL), "chat.completion"));
    CHECK(!strcmp(sse_str(m, "content", NULL), "Let me check."));
    CHECK(!strcmp(sse_str(m, "reasoning_content", NULL), "I should call the tool."));
    json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
    CHECK(!strcmp(sse_str(tc, "function", "arguments", NULL), "{\"city\": \"Paris\", \"days\": 3}"));
    CHECK(!strcmp(sse_str(json_array_get(json_object_get(R.body, "choices"), 0), "finish_reason", NULL), "tool_calls"));
    /* the next request echoes the turn: it renders from the replay memory */
    char next[1024];
    snprintf(next, sizeof next,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"Let me check.\","
             "\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
             "\"{\\\"days\\\":3,\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"%s\",\"content\":\"sunny\"}]}",
             sse_str(tc, "id", NULL), sse_str(tc, "id", NULL));
    gw_req nr;
    gw_err e;
    gw_map_opts mo = {CX.replay, 1, "x"};
    json_t *nb = json_loads(next, 0, NULL);
    gw_req_init(&nr, GW_API_CHAT);
    CHECK(gw_map(nb, &mo, &nr, &e) == 0 && nr.n_replayed == 1);
    json_t *raw = json_object_get(json_array_get(nr.messages, 1), "_ds4_raw");
    CHECK(!strcmp(sse_str(raw, "reasoning", NULL), "I should call the tool."));
    const char *body = sse_str(raw, "body", NULL);
    CHECK(body && !strncmp(body, "Let me check.\n\n<" DSML "tool_calls>", 16 + strlen(DSML) + 11));
    CHECK(body && strstr(body, "</" DSML "tool_calls>") && !strstr(body, EOS));
    /* the ids are exactly the sampled ones: reasoning, </think>, body */
    json_t *rids = json_object_get(raw, "reasoning_ids"), *bids = json_object_get(raw, "body_ids");
    CHECK(json_array_size(rids) + 1 + json_array_size(bids) + 1 == R.nids);
    int same = 1;
    for (size_t i = 0; i < json_array_size(bids); i++)
        same &= json_integer_value(json_array_get(bids, i)) == R.ids[json_array_size(rids) + 1 + i];
    CHECK(same);
    json_decref(nb);
    gw_req_free(&nr);
    run_free(&R);

    /* chat mode, length, no usage chunk unless asked */
    run(&R, GW_API_CHAT, "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 0, "Hello there", "length");
    char *c = collect(&R.ev, NULL, "choices", NULL, NULL);
    free(c);
    int found_len = 0, found_usage = 0;
    for (size_t i = 0; i < R.ev.n; i++) {
        const char *fr = sse_str(json_array_get(json_object_get(R.ev.ev[i].data, "choices"), 0), "finish_reason", NULL);
        found_len |= fr && !strcmp(fr, "length");
        found_usage |= json_object_get(R.ev.ev[i].data, "usage") != NULL;
        CHECK(!sse_str(delta(&R.ev, i), "reasoning_content", NULL));
    }
    CHECK(found_len && !found_usage);
    run_free(&R);
}

static void test_anthropic(void)
{
    struct run R;
    run(&R, GW_API_MESSAGES, "{\"stream\":true,\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1,
        TOOL_OUT, "stop");
    sse_list *l = &R.ev;
    CHECK(!l->bad && l->n > 8);
    /* every event's data.type equals its event name */
    for (size_t i = 0; i < l->n; i++)
        CHECKF(!strcmp(l->ev[i].name, sse_str(l->ev[i].data, "type", NULL)), "event %s", l->ev[i].name);
    CHECK(!strcmp(l->ev[0].name, "message_start"));
    json_t *u = json_object_get(json_object_get(l->ev[0].data, "message"), "usage");
    CHECK(json_integer_value(json_object_get(u, "input_tokens")) == 60);
    CHECK(json_integer_value(json_object_get(u, "cache_read_input_tokens")) == 40);
    /* block sequence: thinking(0), text(1), tool_use(2) */
    const char *want[] = {"thinking", "text", "tool_use"};
    int starts = 0, stops = 0, sig = 0;
    for (size_t i = 0; i < l->n; i++) {
        json_t *d = l->ev[i].data;
        if (!strcmp(l->ev[i].name, "content_block_start")) {
            CHECK(json_integer_value(json_object_get(d, "index")) == starts);
            CHECK(starts < 3 && !strcmp(sse_str(d, "content_block", "type", NULL), want[starts]));
            if (starts == 2) {
                CHECK(!strncmp(sse_str(d, "content_block", "id", NULL), "toolu_", 6));
                CHECK(json_object_size(json_object_get(json_object_get(d, "content_block"), "input")) == 0);
            }
            starts++;
        } else if (!strcmp(l->ev[i].name, "content_block_stop")) {
            CHECK(json_integer_value(json_object_get(d, "index")) == stops);
            stops++;
        } else if (!strcmp(l->ev[i].name, "content_block_delta")) {
            CHECK(json_integer_value(json_object_get(d, "index")) == starts - 1 && stops == starts - 1);
            const char *dt = sse_str(d, "delta", "type", NULL);
            if (!strcmp(dt, "signature_delta")) {
                sig++;
                CHECK(!strncmp(sse_str(d, "delta", "signature", NULL), "ds4r_", 5));
            }
            if (!strcmp(dt, "input_json_delta"))
                CHECK(!strcmp(sse_str(d, "delta", "partial_json", NULL), "{\"city\": \"Paris\", \"days\": 3}"));
        }
    }
    CHECK(starts == 3 && stops == 3 && sig == 1);
    char *th = collect(l, "content_block_delta", "delta", "thinking", NULL);
    char *tx = collect(l, "content_block_delta", "delta", "text", NULL);
    CHECK(!strcmp(th, "I should call the tool.") && !strcmp(tx, "Let me check."));
    free(th);
    free(tx);
    CHECK(!strcmp(l->ev[l->n - 2].name, "message_delta"));
    CHECK(!strcmp(sse_str(l->ev[l->n - 2].data, "delta", "stop_reason", NULL), "tool_use"));
    CHECK(json_integer_value(json_object_get(json_object_get(l->ev[l->n - 2].data, "usage"), "output_tokens")) > 0);
    CHECK(!strcmp(l->ev[l->n - 1].name, "message_stop"));
    run_free(&R);

    run(&R, GW_API_MESSAGES, "{\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1, TOOL_OUT, "stop");
    json_t *c = json_object_get(R.body, "content");
    CHECK(json_array_size(c) == 3);
    CHECK(!strcmp(sse_str(json_array_get(c, 0), "type", NULL), "thinking"));
    CHECK(!strcmp(sse_str(json_array_get(c, 0), "signature", NULL), R.g.turn_key));
    CHECK(!strcmp(sse_str(json_array_get(c, 1), "text", NULL), "Let me check."));
    json_t *in = json_object_get(json_array_get(c, 2), "input");
    CHECK(!strcmp(sse_str(in, "city", NULL), "Paris") && json_integer_value(json_object_get(in, "days")) == 3);
    CHECK(!strcmp(sse_str(R.body, "stop_reason", NULL), "tool_use") && json_is_null(json_object_get(R.body, "stop_sequence")));
    CHECK(!strcmp(sse_str(R.body, "type", NULL), "message") && !strcmp(sse_str(R.body, "role", NULL), "assistant"));
    run_free(&R);

    /* stop sequence split across tokens; the rest is not shown */
    run(&R, GW_API_MESSAGES, "{\"stop_sequences\":[\"STOPHERE\"],\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 0,
        "Hello world STOPHERE and more text" EOS, "stop");
    CHECK(!strcmp(sse_str(json_array_get(json_object_get(R.body, "content"), 0), "text", NULL), "Hello world "));
    CHECK(!strcmp(sse_str(R.body, "stop_reason", NULL), "stop_sequence"));
    CHECK(!strcmp(sse_str(R.body, "stop_sequence", NULL), "STOPHERE"));
    run_free(&R);
    /* a stop prefix that never completes is released at the end */
    run(&R, GW_API_MESSAGES, "{\"stop_sequences\":[\"XYZQ\"],\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 0,
        "abc XYZ" EOS, "stop");
    CHECK(!strcmp(sse_str(json_array_get(json_object_get(R.body, "content"), 0), "text", NULL), "abc XYZ"));
    CHECK(!strcmp(sse_str(R.body, "stop_reason", NULL), "end_turn"));
    run_free(&R);

    /* engine failure mid-stream: an error event ends the stream */
    run(&R, GW_API_MESSAGES, "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 0, "partial", "error");
    CHECK(!strcmp(R.ev.ev[R.ev.n - 1].name, "error"));
    CHECK(!strcmp(sse_str(R.ev.ev[R.ev.n - 1].data, "error", "type", NULL), "api_error"));
    run_free(&R);
}

static void test_responses(void)
{
    struct run R;
    run(&R, GW_API_RESPONSES,
        "{\"stream\":true,\"include\":[\"reasoning.encrypted_content\"],\"input\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1,
        TOOL_OUT, "stop");
    sse_list *l = &R.ev;
    CHECK(!l->bad && l->n > 10);
    for (size_t i = 0; i < l->n; i++) {
        CHECK(json_integer_value(json_object_get(l->ev[i].data, "sequence_number")) == (json_int_t)i);
        CHECK(!strcmp(l->ev[i].name, sse_str(l->ev[i].data, "type", NULL)));
    }
    CHECK(!strcmp(l->ev[0].name, "response.created") && !strcmp(l->ev[1].name, "response.in_progress"));
    CHECK(!strcmp(sse_str(l->ev[0].data, "response", "status", NULL), "in_progress"));
    /* items added/done in order, one open at a time */
    const char *want[] = {"reasoning", "message", "function_call"};
    int added = 0, done = 0;
    for (size_t i = 0; i < l->n; i++) {
        json_t *d = l->ev[i].data;
        if (!strcmp(l->ev[i].name, "response.output_item.added")) {
            CHECK(added == done && json_integer_value(json_object_get(d, "output_index")) == added);
            CHECK(added < 3 && !strcmp(sse_str(d, "item", "type", NULL), want[added]));
            added++;
        } else if (!strcmp(l->ev[i].name, "response.output_item.done")) {
            CHECK(json_integer_value(json_object_get(d, "output_index")) == done);
            if (done == 2) {
                CHECK(!strcmp(sse_str(d, "item", "arguments", NULL), "{\"city\": \"Paris\", \"days\": 3}"));
                CHECK(!strcmp(sse_str(d, "item", "name", NULL), "get_weather"));
                CHECK(!strncmp(sse_str(d, "item", "call_id", NULL), "call_", 5));
                CHECK(!strcmp(sse_str(d, "item", "status", NULL), "completed"));
            }
            if (done == 0)
                CHECK(!strncmp(sse_str(d, "item", "encrypted_content", NULL), "ds4r_", 5));
            done++;
        }
    }
    CHECK(added == 3 && done == 3);
    char *rs = collect(l, "response.reasoning_summary_text.delta", "delta", NULL, NULL);
    char *tx = collect(l, "response.output_text.delta", "delta", NULL, NULL);
    CHECK(!strcmp(rs, "I should call the tool.") && !strcmp(tx, "Let me check."));
    free(rs);
    free(tx);
    json_t *last = l->ev[l->n - 1].data;
    CHECK(!strcmp(l->ev[l->n - 1].name, "response.completed"));
    CHECK(!strcmp(sse_str(last, "response", "status", NULL), "completed"));
    json_t *resp = json_object_get(last, "response");
    CHECK(json_array_size(json_object_get(resp, "output")) == 3);
    json_t *u = json_object_get(resp, "usage");
    CHECK(json_integer_value(json_object_get(u, "input_tokens")) == 100);
    CHECK(json_integer_value(json_object_get(json_object_get(u, "input_tokens_details"), "cached_tokens")) == 40);
    CHECK(json_integer_value(json_object_get(u, "total_tokens")) ==
          100 + json_integer_value(json_object_get(u, "output_tokens")));
    run_free(&R);

    run(&R, GW_API_RESPONSES, "{\"input\":\"q\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":{\"type\":\"object\"}},"
                              "{\"type\":\"web_search\"}]}", 0, "Just text" EOS, "stop");
    json_t *tl = json_object_get(R.body, "tools"); /* the function tools offered are echoed */
    CHECK(json_array_size(tl) == 1 && !strcmp(sse_str(json_array_get(tl, 0), "name", NULL), "f"));
    json_t *out = json_object_get(R.body, "output");
    CHECK(json_array_size(out) == 1 && !strcmp(sse_str(json_array_get(out, 0), "type", NULL), "message"));
    CHECK(!strcmp(sse_str(json_array_get(json_object_get(json_array_get(out, 0), "content"), 0), "text", NULL), "Just text"));
    CHECK(!strcmp(sse_str(R.body, "status", NULL), "completed") && !strcmp(sse_str(R.body, "object", NULL), "response"));
    run_free(&R);

    /* max_output_tokens reached: response.incomplete */
    run(&R, GW_API_RESPONSES, "{\"stream\":true,\"input\":\"q\",\"max_output_tokens\":3}", 0, "a b c", "length");
    CHECK(!strcmp(R.ev.ev[R.ev.n - 1].name, "response.incomplete"));
    CHECK(!strcmp(sse_str(R.ev.ev[R.ev.n - 1].data, "response", "incomplete_details", "reason", NULL), "max_output_tokens"));
    run_free(&R);
    /* engine failure: response.failed */
    run(&R, GW_API_RESPONSES, "{\"stream\":true,\"input\":\"q\"}", 0, "a", "error");
    CHECK(!strcmp(R.ev.ev[R.ev.n - 1].name, "response.failed"));
    CHECK(sse_str(R.ev.ev[R.ev.n - 1].data, "response", "error", "message", NULL) != NULL);
    run_free(&R);
}

static void test_misc(void)
{
    struct run R;
    /* parallel_tool_calls: false keeps the first call */
    static const char two[] = "</think><" DSML "tool_calls>\n<" DSML "invoke name=\"a\">\n</" DSML "invoke>\n<" DSML
                              "invoke name=\"b\">\n</" DSML "invoke>\n</" DSML "tool_calls>" EOS;
    run(&R, GW_API_CHAT, "{\"parallel_tool_calls\":false,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1, two, "stop");
    json_t *tcs = json_object_get(json_object_get(json_array_get(json_object_get(R.body, "choices"), 0), "message"), "tool_calls");
    CHECK(json_array_size(tcs) == 1 && !strcmp(sse_str(json_array_get(tcs, 0), "function", "name", NULL), "a"));
    CHECK(!strcmp(sse_str(json_array_get(tcs, 0), "function", "arguments", NULL), "{}"));
    run_free(&R);
    run(&R, GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1, two, "stop");
    tcs = json_object_get(json_object_get(json_array_get(json_object_get(R.body, "choices"), 0), "message"), "tool_calls");
    CHECK(json_array_size(tcs) == 2);
    run_free(&R);
    /* malformed DSML comes back as text, not as a broken tool call */
    static const char bad[] = "</think>X<" DSML "tool_calls>\n<" DSML "invoke nome=\"a\">oops" EOS;
    run(&R, GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 1, bad, "stop");
    json_t *m = json_object_get(json_array_get(json_object_get(R.body, "choices"), 0), "message");
    CHECK(!json_object_get(m, "tool_calls"));
    CHECK(strstr(sse_str(m, "content", NULL), "oops") != NULL);
    CHECK(!strcmp(sse_str(json_array_get(json_object_get(R.body, "choices"), 0), "finish_reason", NULL), "stop"));
    run_free(&R);
    /* multi-byte characters split across byte-level tokens come out whole */
    run(&R, GW_API_CHAT, "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 0,
        "\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\xf0\x9f\x87\xaf\xf0\x9f\x87\xb5" EOS, "stop");
    char *ct = collect(&R.ev, NULL, "choices", NULL, NULL);
    free(ct);
    gw_buf all = {0};
    gw_buf_puts(&all, "");
    for (size_t i = 0; i < R.ev.n; i++) {
        const char *s = sse_str(delta(&R.ev, i), "content", NULL);
        if (s) {
            CHECK(gw_utf8_valid(s, strlen(s)));
            gw_buf_puts(&all, s);
        }
    }
    CHECK(!strcmp(all.p, "\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\xf0\x9f\x87\xaf\xf0\x9f\x87\xb5"));
    gw_buf_free(&all);
    run_free(&R);
    /* completions: plain continuation, no DSML parsing, echo, stop */
    run(&R, GW_API_COMPLETIONS, "{\"prompt\":\"P:\",\"echo\":true,\"stop\":[\"END\"]}", 0, " <think>raw</think> textEND more", "stop");
    json_t *ch = json_array_get(json_object_get(R.body, "choices"), 0);
    CHECK(!strcmp(sse_str(ch, "text", NULL), "P: <think>raw</think> text"));
    CHECK(!strcmp(sse_str(ch, "finish_reason", NULL), "stop") && !strcmp(sse_str(R.body, "object", NULL), "text_completion"));
    run_free(&R);
    run(&R, GW_API_COMPLETIONS, "{\"prompt\":\"P\",\"stream\":true}", 0, "abc", "length");
    char *t = collect(&R.ev, NULL, "choices", NULL, NULL);
    free(t);
    gw_buf tx = {0};
    gw_buf_puts(&tx, "");
    for (size_t i = 0; i < R.ev.n; i++) {
        const char *s = sse_str(json_array_get(json_object_get(R.ev.ev[i].data, "choices"), 0), "text", NULL);
        if (s)
            gw_buf_puts(&tx, s);
    }
    CHECK(!strcmp(tx.p, "abc"));
    CHECK(!strcmp(json_string_value(R.ev.ev[R.ev.n - 1].data), "[DONE]"));
    gw_buf_free(&tx);
    run_free(&R);
    /* engine failure on the chat stream: an error chunk, then [DONE] */
    run(&R, GW_API_CHAT, "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 0, "x", "error");
    CHECK(json_object_get(R.ev.ev[R.ev.n - 2].data, "error") != NULL);
    CHECK(!strcmp(sse_str(R.ev.ev[R.ev.n - 2].data, "error", "type", NULL), "server_error"));
    CHECK(!strcmp(json_string_value(R.ev.ev[R.ev.n - 1].data), "[DONE]"));
    run_free(&R);
}

/* --test-script picking (agent tests): match strings, order, reuse. */
static void test_script(void)
{
    gw_ctx cx = {0};
    pthread_mutex_init(&cx.script_mu, NULL);
    cx.test_script = json_loads("[{\"match\":\"title generator\",\"output\":\"T\"},\"A1\","
                                "{\"match\":\"opencode\",\"output\":\"O1\"},{\"match\":\"opencode\",\"output\":\"O2\"}]",
                                0, NULL);
    char err[128];
    CHECK(gw_script_check(cx.test_script, err, sizeof err) == 0);
    json_t *title = json_loads("[{\"role\":\"system\",\"content\":\"You are a title generator\"}]", 0, NULL);
    json_t *oc = json_loads("[{\"role\":\"system\",\"content\":\"You are opencode\"}]", 0, NULL);
    json_t *other = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    CHECK(!strcmp(gw_ctx_script_pick(&cx, title, NULL), "T"));
    CHECK(!strcmp(gw_ctx_script_pick(&cx, oc, NULL), "O1"));
    CHECK(!strcmp(gw_ctx_script_pick(&cx, oc, NULL), "O2"));
    CHECK(!strcmp(gw_ctx_script_pick(&cx, title, NULL), "T")); /* used up: the last candidate again */
    CHECK(!strcmp(gw_ctx_script_pick(&cx, oc, NULL), "O2"));
    CHECK(!strcmp(gw_ctx_script_pick(&cx, other, NULL), "A1")); /* no match string: the bare texts */
    CHECK(!strcmp(gw_ctx_script_pick(&cx, other, NULL), "A1"));
    json_t *bad = json_loads("[{\"match\":\"x\"}]", 0, NULL);
    CHECK(gw_script_check(bad, err, sizeof err) == -1);
    json_decref(bad);
    json_decref(title);
    json_decref(oc);
    json_decref(other);
    json_decref(cx.test_script);
    free(cx.script_used);
}

int main(void)
{
    ds4_log_set_level(DS4_LOG_WARN);
    const char *tj = getenv("DS4_TOKENIZER_JSON");
    char err[256];
    if (tok_vocab_from_json_file(tj && *tj ? tj : TOKJSON, &V, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    E = tok_encoder_new(V, err, sizeof err);
    CX.replay = gw_replay_new(1000, 1 << 24);
    CX.model_name = "deepseek-v4-flash";
    CX.n_ctx = 32768;
    gw_ctx_set_vocab(&CX, V);
    test_chat();
    test_anthropic();
    test_responses();
    test_misc();
    test_script();
    gw_replay_free(CX.replay);
    tok_encoder_free(E);
    tok_vocab_free(V);
    return test_main_end("test_gw_output");
}
