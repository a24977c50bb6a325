/* fuzz_gw_request.c - libFuzzer target for gatewayd's request parsers:
 * an HTTP body (arbitrary bytes) through the body parser and the mapping
 * of one API to the internal request (gw_parse_body, gw_map), with a
 * replay memory holding a few turns so assistant messages are looked up.
 *
 * Input: one selector byte (bits 0-2: API 1..5 = chat, completions,
 * responses, messages, count_tokens; bit 3: test mode), then the body.
 *
 * Properties: never crashes; a refusal has an error kind and a 4xx status
 * (400, or 403 for a test-only field), a non-empty message, a param that
 * names a field or is empty, and an error body in the API's shape; an
 * accepted chat-shaped request has a non-empty canonical messages array of
 * objects with a string role (and at most one system message, first),
 * tools that are function objects, sane limits; everything it holds
 * serializes as JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gatewayd/gw_api.h"
#include "gatewayd/gw_replay.h"
#include "gatewayd/gw_req.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_gw_request: %s\n", what);
    abort();
}

static gw_replay *replay(void)
{
    static gw_replay *rp;
    if (!rp) {
        rp = gw_replay_new(64, 1 << 20);
        int32_t ids[] = {1, 2, 3};
        gw_replay_call c[] = {{"call_1", "f", "{\"a\": 1}"}, {"toolu_2", "Bash", "{\"command\": \"ls\"}"}};
        const char *keys[] = {"ds4r_1"};
        gw_replay_turn t1 = {"why", 3, "body", 4, ids, 3, ids, 3, "Run.", 4, c, 2, keys, 1};
        gw_replay_turn t2 = {NULL, 0, "Hello", 5, NULL, 0, ids, 3, "Hello", 5, NULL, 0, NULL, 0};
        gw_replay_put(rp, &t1);
        gw_replay_put(rp, &t2);
    }
    return rp;
}

static void check_req(const gw_req *r)
{
    if (r->api == GW_API_COMPLETIONS) {
        if (!r->prompt == !r->prompt_ids)
            die("completions: exactly one of prompt and prompt_ids");
    } else {
        size_t n = json_array_size(r->messages);
        if (!json_is_array(r->messages))
            die("no messages array");
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_array_get(r->messages, i);
            const char *role = json_string_value(json_object_get(m, "role"));
            if (!json_is_object(m) || !role)
                die("message without a role");
            if (!strcmp(role, "system") && i != 0)
                die("system message not first");
            if (!json_is_string(json_object_get(m, "content")))
                die("message content is not a string");
        }
        char *s = json_dumps(r->messages, JSON_COMPACT);
        if (!s)
            die("messages do not serialize");
        free(s);
    }
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        if (!json_is_string(json_object_get(fn, "name")) || !json_is_object(json_object_get(fn, "parameters")))
            die("tool is not a function with parameters");
    }
    if (r->n_stop > GW_MAX_STOP)
        die("too many stop strings");
    if (r->max_tokens == 0 || r->max_tokens < -1)
        die("max_tokens out of range");
    if ((r->tool_choice == GW_TC_NAMED) != (r->tool_name != NULL))
        die("named tool choice without a name");
    if ((r->tool_choice == GW_TC_REQUIRED || r->tool_choice == GW_TC_NAMED) && !r->tools)
        die("required tool choice without tools");
    if (r->top_logprobs < 0 || r->top_logprobs > 20)
        die("top_logprobs out of range");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int api = (data[0] & 7) % 5 + 1;
    gw_map_opts o = {replay(), (data[0] >> 3) & 1, "deepseek-v4-flash"};
    gw_err e;
    memset(&e, 0, sizeof e);
    json_t *body = gw_parse_body((const char *)data + 1, size - 1, &e);
    if (!body) {
        if (e.status != 400 || !e.msg[0])
            die("body refused without a 400 and a message");
        return 0;
    }
    gw_req r;
    gw_req_init(&r, api);
    int rc = gw_map(body, &o, &r, &e);
    if (rc) {
        if (e.status != 400 && e.status != 403)
            die("mapping refusal is not 400/403");
        if (!e.msg[0] || memchr(e.param, 0, sizeof e.param) == NULL || memchr(e.msg, 0, sizeof e.msg) == NULL)
            die("error without a message");
        json_t *eb = gw_error_json(api, &e);
        char *s = json_dumps(eb, JSON_COMPACT);
        if (!s)
            die("error body does not serialize");
        free(s);
        json_decref(eb);
    } else {
        check_req(&r);
    }
    gw_req_free(&r);
    json_decref(body);
    return 0;
}
