/* gw_openai.c - OpenAI chat completions and (legacy) completions: request
 * mapping, streamed chunks, response bodies, error shape.
 *
 * Chat streams: a role chunk, then deltas (reasoning_content, content,
 * tool_calls: a header chunk with id and name, then the arguments), a chunk
 * with finish_reason, the usage chunk (choices: []) when
 * stream_options.include_usage is set, and "data: [DONE]". A failure after
 * the stream started is one {"error":{...}} chunk, then [DONE]. */
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_sse.h"
#include "util.h"

static const char *const TEXT_PARTS[] = {"text", "input_text", "output_text", NULL};
static const char *const ASST_PARTS[] = {"text", "output_text", "refusal", NULL};

/* ---- errors and shared pieces ------------------------------------------ */

static const char *openai_type(int kind)
{
    switch (kind) {
    case GW_E_AUTH: return "authentication_error";
    case GW_E_PERMISSION: return "permission_error";
    case GW_E_NOT_FOUND: return "not_found_error";
    case GW_E_RATE_LIMIT: return "rate_limit_error";
    case GW_E_SERVER:
    case GW_E_UNAVAILABLE: return "server_error";
    default: return "invalid_request_error";
    }
}

json_t *gw_openai_error_json(const gw_err *e)
{
    json_t *er = json_object();
    json_object_set_new(er, "message", json_string(e->msg));
    json_object_set_new(er, "type", json_string(openai_type(e->kind)));
    json_object_set_new(er, "param", e->param[0] ? json_string(e->param) : json_null());
    json_object_set_new(er, "code", e->code[0] ? json_string(e->code) : json_null());
    return json_pack("{s:o}", "error", er);
}

json_t *gw_error_json(int api, const gw_err *e)
{
    if (api == GW_API_MESSAGES || api == GW_API_COUNT)
        return gw_anthropic_error_json(e);
    return gw_openai_error_json(e);
}

const gw_api_ops *gw_api_ops_for(int api)
{
    switch (api) {
    case GW_API_CHAT: return &gw_ops_chat;
    case GW_API_COMPLETIONS: return &gw_ops_completions;
    case GW_API_RESPONSES: return &gw_ops_responses;
    case GW_API_MESSAGES: return &gw_ops_messages;
    default: return NULL;
    }
}

json_t *gw_usage_openai(const gw_gen *g)
{
    return json_pack("{s:I,s:I,s:I,s:{s:I},s:{s:I}}", "prompt_tokens", (json_int_t)g->prompt_tokens,
                     "completion_tokens", (json_int_t)g->completion_tokens, "total_tokens",
                     (json_int_t)(g->prompt_tokens + g->completion_tokens), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)g->cached_tokens, "completion_tokens_details",
                     "reasoning_tokens", (json_int_t)g->n_reasoning_tokens);
}

/* Token text and bytes of one id. */
static void token_fields(const tok_vocab *v, int32_t id, json_t *o)
{
    size_t n = 0;
    const char *b = id >= 0 ? tok_vocab_bytes(v, (uint32_t)id, &n) : NULL;
    json_object_set_new(o, "token", gw_json_str(b ? b : "", n));
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(bytes, json_integer((unsigned char)b[i]));
    json_object_set_new(o, "bytes", bytes);
}

json_t *gw_openai_logprobs(const tok_vocab *v, const json_t *entries, int top)
{
    json_t *out = json_array();
    size_t i;
    json_t *en;
    json_array_foreach(entries, i, en) {
        json_t *o = json_object();
        token_fields(v, (int32_t)json_integer_value(json_object_get(en, "id")), o);
        json_object_set_new(o, "logprob", json_real(json_number_value(json_object_get(en, "logprob"))));
        json_t *alts = json_array();
        size_t j;
        json_t *pair;
        json_array_foreach(json_object_get(en, "top"), j, pair) {
            if ((int)j >= top)
                break;
            json_t *a = json_object();
            token_fields(v, (int32_t)json_integer_value(json_array_get(pair, 0)), a);
            json_object_set_new(a, "logprob", json_real(json_number_value(json_array_get(pair, 1))));
            json_array_append_new(alts, a);
        }
        json_object_set_new(o, "top_logprobs", alts);
        json_array_append_new(out, o);
    }
    return out;
}

/* Session hint: prompt_cache_key, else user. */
static int map_session(const json_t *body, gw_req *r, gw_err *e)
{
    const char *s = NULL;
    if (gw_get_string(body, "", "prompt_cache_key", GW_OPT, &s, e) < 0)
        return -1;
    if (!s && gw_get_string(body, "", "user", GW_OPT, &s, e) < 0)
        return -1;
    if (s && *s)
        r->session = ds4_xstrndup(s, strnlen(s, 128));
    return 0;
}

static int map_model(const json_t *body, gw_req *r, gw_err *e)
{
    const char *m = NULL;
    if (gw_get_string(body, "", "model", GW_OPT, &m, e) < 0)
        return -1;
    if (m) {
        r->model = ds4_xstrdup(m);
        if (strcmp(m, "deepseek-chat") == 0) /* ds4's aliases */
            r->thinking = 0;
        else if (strcmp(m, "deepseek-reasoner") == 0)
            r->thinking = 1;
    }
    return 0;
}

/* "thinking": true/false or {"type": "enabled"|"disabled"|"adaptive"}. */
static int map_thinking(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *t = gw_get_any(body, "thinking");
    if (!t)
        return 0;
    if (json_is_boolean(t)) {
        r->thinking = json_is_true(t);
        return 0;
    }
    if (!json_is_object(t))
        return gw_fail(e, GW_E_INVALID, "thinking", "field 'thinking': expected boolean or object, got %s",
                       gw_jtype(t));
    const char *type = NULL;
    if (gw_get_string(t, "thinking", "type", GW_OPT, &type, e) < 0)
        return -1;
    if (type && strcmp(type, "disabled") == 0)
        r->thinking = 0;
    else if (type)
        r->thinking = 1;
    return 0;
}

static int map_stream(const json_t *body, gw_req *r, gw_err *e)
{
    if (gw_get_bool(body, "", "stream", GW_OPT, &r->stream, e) < 0)
        return -1;
    json_t *so = NULL;
    if (gw_get_object(body, "", "stream_options", GW_OPT, &so, e) < 0)
        return -1;
    if (so && gw_get_bool(so, "stream_options", "include_usage", GW_OPT, &r->include_usage, e) < 0)
        return -1;
    int64_t n = 1;
    if (gw_get_int(body, "", "n", GW_OPT, 1, 128, &n, e) < 0)
        return -1;
    if (n != 1)
        return gw_fail(e, GW_E_INVALID, "n", "field 'n': only one choice per request is supported");
    return 0;
}

/* ---- chat mapping -------------------------------------------------------- */

/* One tool call of an assistant message. */
static int map_tool_call(const json_t *tc, const char *path, gw_asst *a, gw_err *e)
{
    if (!json_is_object(tc))
        return gw_fail(e, GW_E_INVALID, path, "field '%s': expected object, got %s", path, gw_jtype(tc));
    const char *id = NULL, *name = NULL;
    json_t *fn = NULL;
    if (gw_get_string(tc, path, "id", GW_OPT, &id, e) < 0 ||
        gw_get_object(tc, path, "function", GW_REQ, &fn, e) < 0)
        return -1;
    char fp[GW_PARAM_MAX];
    gw_path(fp, sizeof fp, path, "function");
    if (gw_get_string(fn, fp, "name", GW_REQ, &name, e) < 0)
        return -1;
    json_t *args = gw_get_any(fn, "arguments");
    char *dumped = NULL;
    const char *at = "{}";
    if (args && json_is_string(args))
        at = json_string_value(args);
    else if (args && json_is_object(args))
        at = dumped = gw_json_dump(args);
    else if (args) {
        char ap[GW_PARAM_MAX];
        gw_path(ap, sizeof ap, fp, "arguments");
        return gw_fail(e, GW_E_INVALID, ap, "field '%s': expected string, got %s", ap, gw_jtype(args));
    }
    gw_asst_call(a, id, name, at);
    free(dumped);
    return 0;
}

static int map_chat_message(gw_conv *c, const json_t *m, size_t i, gw_err *e)
{
    char p[GW_PARAM_MAX], cp[GW_PARAM_MAX];
    gw_path_idx(p, sizeof p, "messages", i);
    gw_path(cp, sizeof cp, p, "content");
    if (!json_is_object(m))
        return gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(m));
    const char *role = NULL;
    if (gw_get_string(m, p, "role", GW_REQ, &role, e) < 0)
        return -1;
    json_t *content = json_object_get(m, "content");
    gw_buf text = {0};
    int rc = 0;
    if (!strcmp(role, "system") || !strcmp(role, "developer")) {
        if (!(rc = gw_content_text(content, cp, TEXT_PARTS, &text, e)))
            gw_conv_system(c, text.p ? text.p : "", text.len);
    } else if (!strcmp(role, "user")) {
        if (!(rc = gw_content_text(content, cp, TEXT_PARTS, &text, e)))
            gw_conv_user(c, text.p ? text.p : "", text.len);
    } else if (!strcmp(role, "tool") || !strcmp(role, "function")) {
        const char *id = NULL;
        if (gw_get_string(m, p, "tool_call_id", GW_OPT, &id, e) < 0)
            rc = -1;
        else if (!(rc = gw_content_text(content, cp, TEXT_PARTS, &text, e)))
            gw_conv_tool(c, id, text.p ? text.p : "", text.len);
    } else if (!strcmp(role, "assistant")) {
        gw_asst a;
        gw_asst_init(&a);
        const char *rs = NULL;
        json_t *tcs = NULL, *fc = NULL;
        rc = gw_content_text(content, cp, ASST_PARTS, &a.content, e);
        if (!rc && gw_get_string(m, p, "reasoning_content", GW_OPT, &rs, e) < 0)
            rc = -1;
        if (!rc && !rs && gw_get_string(m, p, "reasoning", GW_OPT, &rs, e) < 0)
            rc = -1;
        if (!rc && gw_get_array(m, p, "tool_calls", GW_OPT, &tcs, e) < 0)
            rc = -1;
        if (!rc && gw_get_object(m, p, "function_call", GW_OPT, &fc, e) < 0)
            rc = -1;
        if (!rc && rs) {
            gw_buf_puts(&a.reasoning, rs);
            a.has_reasoning = 1;
        }
        size_t k;
        json_t *tc;
        if (!rc && tcs)
            json_array_foreach(tcs, k, tc) {
                char tp[GW_PARAM_MAX], tp2[GW_PARAM_MAX];
                gw_path(tp, sizeof tp, p, "tool_calls");
                gw_path_idx(tp2, sizeof tp2, tp, k);
                if ((rc = map_tool_call(tc, tp2, &a, e)))
                    break;
            }
        if (!rc && fc) { /* legacy function_call */
            json_t *wrap = json_pack("{s:O}", "function", fc);
            char fp[GW_PARAM_MAX];
            gw_path(fp, sizeof fp, p, "function_call");
            rc = map_tool_call(wrap, fp, &a, e);
            json_decref(wrap);
        }
        if (!rc)
            gw_conv_assistant(c, &a);
        else {
            gw_buf_free(&a.content);
            gw_buf_free(&a.reasoning);
            json_decref(a.calls);
        }
    } else {
        char rp[GW_PARAM_MAX];
        gw_path(rp, sizeof rp, p, "role");
        rc = gw_fail(e, GW_E_INVALID, rp,
                     "field '%s': unknown role '%.40s' (system, developer, user, assistant, tool)", rp, role);
    }
    gw_buf_free(&text);
    return rc;
}

/* tools: [{type:"function", function:{name, description, parameters}}];
 * other types are ignored. Also the legacy "functions" list. */
static int map_chat_tools(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *tools = NULL, *fns = NULL;
    if (gw_get_array(body, "", "tools", GW_OPT, &tools, e) < 0 ||
        gw_get_array(body, "", "functions", GW_OPT, &fns, e) < 0)
        return -1;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        char p[GW_PARAM_MAX], fp[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, "tools", i);
        if (!json_is_object(t))
            return gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(t));
        const char *type = NULL, *name = NULL, *desc = NULL;
        json_t *fn = NULL, *params = NULL;
        if (gw_get_string(t, p, "type", GW_OPT, &type, e) < 0)
            return -1;
        if (type && strcmp(type, "function") != 0) {
            r->n_ignored_tools++;
            continue;
        }
        if (gw_get_object(t, p, "function", GW_REQ, &fn, e) < 0)
            return -1;
        gw_path(fp, sizeof fp, p, "function");
        if (gw_get_string(fn, fp, "name", GW_REQ, &name, e) < 0 ||
            gw_get_string(fn, fp, "description", GW_OPT, &desc, e) < 0 ||
            gw_get_object(fn, fp, "parameters", GW_OPT, &params, e) < 0)
            return -1;
        gw_tools_add(r, name, desc, params);
    }
    json_array_foreach(fns, i, t) {
        char p[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, "functions", i);
        const char *name = NULL, *desc = NULL;
        json_t *params = NULL;
        if (!json_is_object(t))
            return gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(t));
        if (gw_get_string(t, p, "name", GW_REQ, &name, e) < 0 ||
            gw_get_string(t, p, "description", GW_OPT, &desc, e) < 0 ||
            gw_get_object(t, p, "parameters", GW_OPT, &params, e) < 0)
            return -1;
        gw_tools_add(r, name, desc, params);
    }
    return 0;
}

/* Is name one of the request's tools? */
static int has_tool(const gw_req *r, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && strcmp(n, name) == 0)
            return 1;
    }
    return 0;
}

/* OpenAI tool_choice: "none" | "auto" | "required" |
 * {"type":"function","function":{"name"}} (Responses: {"type":"function","name"}). */
int gw_map_tool_choice_openai(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *tc = gw_get_any(body, "tool_choice");
    if (!tc)
        return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "none"))
            r->tool_choice = GW_TC_NONE;
        else if (!strcmp(s, "auto"))
            r->tool_choice = GW_TC_AUTO;
        else if (!strcmp(s, "required"))
            r->tool_choice = GW_TC_REQUIRED;
        else
            return gw_fail(e, GW_E_INVALID, "tool_choice",
                           "field 'tool_choice': unknown value '%.40s' (none, auto, required, or a named function)", s);
    } else if (json_is_object(tc)) {
        const char *name = NULL, *type = NULL;
        json_t *fn = NULL;
        if (gw_get_string(tc, "tool_choice", "type", GW_OPT, &type, e) < 0 ||
            gw_get_object(tc, "tool_choice", "function", GW_OPT, &fn, e) < 0)
            return -1;
        if (fn && gw_get_string(fn, "tool_choice.function", "name", GW_REQ, &name, e) < 0)
            return -1;
        if (!fn && gw_get_string(tc, "tool_choice", "name", GW_OPT, &name, e) < 0)
            return -1;
        if (!name) {
            if (type && (!strcmp(type, "auto") || !strcmp(type, "none") || !strcmp(type, "required"))) {
                json_t *s = json_string(type);
                json_t *b = json_pack("{s:o}", "tool_choice", s);
                int rc = gw_map_tool_choice_openai(b, r, e);
                json_decref(b);
                return rc;
            }
            return gw_fail(e, GW_E_INVALID, "tool_choice", "field 'tool_choice': a named choice needs a function name");
        }
        r->tool_choice = GW_TC_NAMED;
        free(r->tool_name);
        r->tool_name = ds4_xstrdup(name);
    } else {
        return gw_fail(e, GW_E_INVALID, "tool_choice", "field 'tool_choice': expected string or object, got %s",
                       gw_jtype(tc));
    }
    if ((r->tool_choice == GW_TC_REQUIRED || r->tool_choice == GW_TC_NAMED) && !r->tools)
        return gw_fail(e, GW_E_INVALID, "tool_choice", "field 'tool_choice': '%s' needs at least one tool",
                       r->tool_choice == GW_TC_NAMED ? "a named tool" : "required");
    if (r->tool_choice == GW_TC_NAMED && !has_tool(r, r->tool_name))
        return gw_fail(e, GW_E_INVALID, "tool_choice", "field 'tool_choice': no tool named '%.64s'", r->tool_name);
    return 0;
}

int gw_map_chat(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    json_t *msgs = NULL;
    if (map_model(body, r, e) || map_stream(body, r, e) ||
        gw_get_array(body, "", "messages", GW_REQ, &msgs, e) < 0)
        return -1;
    if (!json_array_size(msgs))
        return gw_fail(e, GW_E_INVALID, "messages", "field 'messages': at least one message is required");
    const char *effort = NULL;
    json_t *reasoning = NULL;
    if (gw_get_string(body, "", "reasoning_effort", GW_OPT, &effort, e) < 0 ||
        gw_get_object(body, "", "reasoning", GW_OPT, &reasoning, e) < 0)
        return -1;
    if (!effort && reasoning && gw_get_string(reasoning, "reasoning", "effort", GW_OPT, &effort, e) < 0)
        return -1;
    if (gw_map_effort(effort, effort && reasoning && !gw_get_any(body, "reasoning_effort")
                                  ? "reasoning.effort" : "reasoning_effort", r, e) ||
        map_thinking(body, r, e))
        return -1;
    int64_t mt = -1, mct = -1;
    if (gw_get_int(body, "", "max_tokens", GW_OPT, 1, INT32_MAX, &mt, e) < 0 ||
        gw_get_int(body, "", "max_completion_tokens", GW_OPT, 1, INT32_MAX, &mct, e) < 0)
        return -1;
    r->max_tokens = mct > 0 ? mct : mt;
    if (gw_map_sampling(body, r, e) || gw_map_stop(body, "stop", r, e))
        return -1;
    int64_t tl = 0;
    if (gw_get_bool(body, "", "logprobs", GW_OPT, &r->logprobs, e) < 0 ||
        gw_get_int(body, "", "top_logprobs", GW_OPT, 0, 20, &tl, e) < 0)
        return -1;
    r->top_logprobs = (int)tl;
    if (gw_get_bool(body, "", "parallel_tool_calls", GW_OPT, &r->parallel_tool_calls, e) < 0)
        return -1;
    if (map_chat_tools(body, r, e) || gw_map_tool_choice_openai(body, r, e) ||
        gw_map_response_format(gw_get_any(body, "response_format"), "response_format", r, e) ||
        map_session(body, r, e) || gw_map_test_output(body, o, r, e))
        return -1;
    gw_conv c;
    gw_conv_init(&c, o, r);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
        if (map_chat_message(&c, m, i, e)) {
            gw_conv_free(&c);
            return -1;
        }
    gw_conv_finish(&c);
    gw_conv_free(&c);
    return 0;
}

/* ---- completions mapping ------------------------------------------------- */

/* prompt: string, [string], [int...] or [[int...]] (one prompt only). */
static int map_prompt(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *p = gw_get_any(body, "prompt");
    if (!p)
        return gw_fail(e, GW_E_INVALID, "prompt", "missing required field 'prompt'");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->prompt = ds4_xstrdup(json_string_value(p));
        return 0;
    }
    if (!json_is_array(p))
        return gw_fail(e, GW_E_INVALID, "prompt", "field 'prompt': expected string or array, got %s",
                       gw_jtype(p));
    size_t n = json_array_size(p);
    if (!n)
        return gw_fail(e, GW_E_INVALID, "prompt", "field 'prompt': empty");
    r->prompt_ids = ds4_xmalloc(n * sizeof *r->prompt_ids);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(p, i);
        char pp[GW_PARAM_MAX];
        gw_path_idx(pp, sizeof pp, "prompt", i);
        if (!json_is_integer(v)) {
            if (json_is_string(v) || json_is_array(v))
                return gw_fail(e, GW_E_INVALID, "prompt", "field 'prompt': only one prompt per request is supported");
            return gw_fail(e, GW_E_INVALID, pp, "field '%s': expected integer token id, got %s", pp, gw_jtype(v));
        }
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > INT32_MAX)
            return gw_fail(e, GW_E_INVALID, pp, "field '%s': token id out of range", pp);
        r->prompt_ids[i] = (int32_t)x;
    }
    r->n_prompt_ids = n;
    return 0;
}

int gw_map_completions(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    if (map_model(body, r, e) || map_stream(body, r, e) || map_prompt(body, r, e))
        return -1;
    if (gw_get_int(body, "", "max_tokens", GW_OPT, 1, INT32_MAX, &r->max_tokens, e) < 0)
        return -1;
    if (gw_map_sampling(body, r, e) || gw_map_stop(body, "stop", r, e))
        return -1;
    int64_t lp = -1;
    if (gw_get_int(body, "", "logprobs", GW_OPT, 0, 20, &lp, e) < 0 ||
        gw_get_bool(body, "", "echo", GW_OPT, &r->echo, e) < 0)
        return -1;
    if (lp >= 0) {
        r->logprobs = 1;
        r->top_logprobs = (int)lp;
    }
    if (r->echo && !r->prompt)
        return gw_fail(e, GW_E_INVALID, "echo", "field 'echo': only supported with a text prompt");
    return map_session(body, r, e) || gw_map_test_output(body, o, r, e) ? -1 : 0;
}

/* ---- chat output --------------------------------------------------------- */

static json_t *chunk(gw_gen *g, json_t *delta, const char *finish)
{
    json_t *ch = json_object();
    json_object_set_new(ch, "index", json_integer(0));
    json_object_set_new(ch, "delta", delta);
    json_object_set_new(ch, "logprobs", json_null());
    json_object_set_new(ch, "finish_reason", finish ? json_string(finish) : json_null());
    return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", g->id, "object", "chat.completion.chunk",
                     "created", (json_int_t)g->created, "model",
                     g->req->model ? g->req->model : g->cx->model_name, "choices", ch);
}

static void chat_begin(gw_gen *g)
{
    gw_sse_data(&g->sse, chunk(g, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL));
}

static void chat_reasoning(gw_gen *g, const char *s, size_t n)
{
    gw_sse_data(&g->sse, chunk(g, json_pack("{s:o}", "reasoning_content", gw_json_str(s, n)), NULL));
}

static void chat_content(gw_gen *g, const char *s, size_t n)
{
    gw_sse_data(&g->sse, chunk(g, json_pack("{s:o}", "content", gw_json_str(s, n)), NULL));
}

static void chat_tool_call(gw_gen *g, size_t i)
{
    const gw_call *c = &g->calls[i];
    json_t *head = json_pack("{s:[{s:I,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index", (json_int_t)i,
                             "id", c->id, "type", "function", "function", "name", c->name,
                             "arguments", "");
    gw_sse_data(&g->sse, chunk(g, head, NULL));
    json_t *args = json_pack("{s:[{s:I,s:{s:s}}]}", "tool_calls", "index", (json_int_t)i,
                             "function", "arguments", c->args);
    gw_sse_data(&g->sse, chunk(g, args, NULL));
}

static void chat_logprobs(gw_gen *g, json_t *entries)
{
    json_t *c = chunk(g, json_object(), NULL);
    json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
    json_object_set_new(ch, "logprobs",
                        json_pack("{s:o}", "content",
                                  gw_openai_logprobs(g->cx->vocab, entries, g->req->top_logprobs)));
    gw_sse_data(&g->sse, c);
}

static void chat_end(gw_gen *g)
{
    if (g->failed) {
        gw_sse_data(&g->sse, gw_openai_error_json(&g->err));
    } else {
        gw_sse_data(&g->sse, chunk(g, json_object(), gw_finish_openai(g->finish)));
        if (g->req->include_usage)
            gw_sse_data(&g->sse,
                        json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", g->id, "object",
                                  "chat.completion.chunk", "created", (json_int_t)g->created, "model",
                                  g->req->model ? g->req->model : g->cx->model_name, "choices",
                                  "usage", gw_usage_openai(g)));
        gw_gen_timings_comment(g);
    }
    gw_sse_done(&g->sse);
}

static json_t *chat_body(gw_gen *g)
{
    json_t *msg = json_object();
    json_object_set_new(msg, "role", json_string("assistant"));
    if (g->content.len || !g->ncalls)
        json_object_set_new(msg, "content", gw_json_str(g->content.p ? g->content.p : "", g->content.len));
    else
        json_object_set_new(msg, "content", json_null());
    if (g->reasoning.len)
        json_object_set_new(msg, "reasoning_content", gw_json_str(g->reasoning.p, g->reasoning.len));
    if (g->ncalls) {
        json_t *tcs = json_array();
        for (size_t i = 0; i < g->ncalls; i++)
            json_array_append_new(tcs, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", g->calls[i].id, "type",
                                                 "function", "function", "name", g->calls[i].name,
                                                 "arguments", g->calls[i].args));
        json_object_set_new(msg, "tool_calls", tcs);
    }
    json_t *lp = json_null();
    if (g->req->logprobs && g->logprobs)
        lp = json_pack("{s:o}", "content", gw_openai_logprobs(g->cx->vocab, g->logprobs, g->req->top_logprobs));
    json_t *choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "message", msg, "logprobs", lp,
                               "finish_reason", gw_finish_openai(g->finish));
    return json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", g->id, "object", "chat.completion",
                     "created", (json_int_t)g->created, "model",
                     g->req->model ? g->req->model : g->cx->model_name, "choices", choice, "usage",
                     gw_usage_openai(g));
}

const gw_api_ops gw_ops_chat = {
    .call_prefix = "call_",
    .s_begin = chat_begin,
    .s_reasoning = chat_reasoning,
    .s_content = chat_content,
    .s_tool_call = chat_tool_call,
    .s_logprobs = chat_logprobs,
    .s_end = chat_end,
    .body = chat_body,
};

/* ---- completions output -------------------------------------------------- */

/* Legacy logprobs object: tokens, token_logprobs, top_logprobs, text_offset. */
static json_t *legacy_logprobs(gw_gen *g, const json_t *entries, size_t *offset)
{
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t i;
    json_t *en;
    json_array_foreach(entries, i, en) {
        size_t n = 0;
        json_int_t id = json_integer_value(json_object_get(en, "id"));
        const char *b = id >= 0 ? tok_vocab_bytes(g->cx->vocab, (uint32_t)id, &n) : NULL;
        json_array_append_new(toks, gw_json_str(b ? b : "", n));
        json_array_append_new(lps, json_real(json_number_value(json_object_get(en, "logprob"))));
        json_t *t = json_object();
        size_t j;
        json_t *pair;
        json_array_foreach(json_object_get(en, "top"), j, pair) {
            if ((int)j >= g->req->top_logprobs)
                break;
            size_t an = 0;
            json_int_t aid = json_integer_value(json_array_get(pair, 0));
            const char *ab = aid >= 0 ? tok_vocab_bytes(g->cx->vocab, (uint32_t)aid, &an) : NULL;
            json_t *key = gw_json_str(ab ? ab : "", an);
            json_object_set_new(t, json_string_value(key), json_real(json_number_value(json_array_get(pair, 1))));
            json_decref(key);
        }
        json_array_append_new(tops, t);
        json_array_append_new(offs, json_integer((json_int_t)*offset));
        *offset += n;
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *cmpl_chunk(gw_gen *g, json_t *text, const char *finish, json_t *lp)
{
    json_t *ch = json_pack("{s:o,s:i,s:o,s:o}", "text", text, "index", 0, "logprobs", lp ? lp : json_null(),
                           "finish_reason", finish ? json_string(finish) : json_null());
    return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", g->id, "object", "text_completion", "created",
                     (json_int_t)g->created, "model", g->req->model ? g->req->model : g->cx->model_name,
                     "choices", ch);
}

static void cmpl_begin(gw_gen *g)
{
    if (g->req->echo && g->req->prompt)
        gw_sse_data(&g->sse, cmpl_chunk(g, json_string(g->req->prompt), NULL, NULL));
}

static void cmpl_content(gw_gen *g, const char *s, size_t n)
{
    gw_sse_data(&g->sse, cmpl_chunk(g, gw_json_str(s, n), NULL, NULL));
}

static void cmpl_logprobs(gw_gen *g, json_t *entries)
{
    size_t off = (size_t)g->s_idx;
    gw_sse_data(&g->sse, cmpl_chunk(g, json_string(""), NULL, legacy_logprobs(g, entries, &off)));
    g->s_idx = (int)off;
}

static void cmpl_end(gw_gen *g)
{
    if (g->failed) {
        gw_sse_data(&g->sse, gw_openai_error_json(&g->err));
    } else {
        gw_sse_data(&g->sse, cmpl_chunk(g, json_string(""), gw_finish_openai(g->finish), NULL));
        if (g->req->include_usage)
            gw_sse_data(&g->sse, json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", g->id, "object",
                                           "text_completion", "created", (json_int_t)g->created,
                                           "model", g->req->model ? g->req->model : g->cx->model_name,
                                           "choices", "usage", gw_usage_openai(g)));
        gw_gen_timings_comment(g);
    }
    gw_sse_done(&g->sse);
}

static json_t *cmpl_body(gw_gen *g)
{
    gw_buf t = {0};
    if (g->req->echo && g->req->prompt)
        gw_buf_puts(&t, g->req->prompt);
    gw_buf_put(&t, g->content.p ? g->content.p : "", g->content.len);
    json_t *lp = NULL;
    if (g->req->logprobs && g->logprobs) {
        size_t off = 0;
        lp = legacy_logprobs(g, g->logprobs, &off);
    }
    json_t *body = cmpl_chunk(g, gw_json_str(t.p ? t.p : "", t.len), gw_finish_openai(g->finish), lp);
    gw_buf_free(&t);
    json_object_set_new(body, "usage", gw_usage_openai(g));
    return body;
}

const gw_api_ops gw_ops_completions = {
    .call_prefix = "call_",
    .s_begin = cmpl_begin,
    .s_content = cmpl_content,
    .s_logprobs = cmpl_logprobs,
    .s_end = cmpl_end,
    .body = cmpl_body,
};
