/* gw_anthropic.c - Anthropic Messages API (Claude Code) and count_tokens:
 * request mapping, the streamed event sequence, response body, error shape.
 *
 * Stream: message_start (usage present: Claude Code needs
 * message.usage.input_tokens), then per block content_block_start /
 * content_block_delta (thinking_delta + signature_delta, text_delta,
 * input_json_delta) / content_block_stop, in the order thinking, text,
 * tool_use; message_delta (stop_reason, usage.output_tokens);
 * message_stop. A failure after the start is an "error" event.
 *
 * The thinking block's signature is the gateway's replay key of the turn:
 * Claude Code sends the block back verbatim with it. Usage follows
 * Anthropic's meaning: input_tokens excludes the prefix read from cache,
 * which is cache_read_input_tokens. */
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_sse.h"
#include "util.h"

enum { BLK_NONE = 0, BLK_THINKING, BLK_TEXT };

static const char *anthropic_type(int kind)
{
    switch (kind) {
    case GW_E_AUTH: return "authentication_error";
    case GW_E_PERMISSION: return "permission_error";
    case GW_E_NOT_FOUND: return "not_found_error";
    case GW_E_TOO_LARGE: return "request_too_large";
    case GW_E_RATE_LIMIT: return "rate_limit_error";
    case GW_E_UNAVAILABLE: return "overloaded_error";
    case GW_E_SERVER: return "api_error";
    default: return "invalid_request_error";
    }
}

json_t *gw_anthropic_error_json(const gw_err *e)
{
    return json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", anthropic_type(e->kind),
                     "message", e->msg);
}

/* ---- mapping ------------------------------------------------------------- */

/* system: a string or text blocks. */
static int map_system_value(gw_conv *c, const json_t *v, const char *path, gw_err *e)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        gw_conv_system(c, json_string_value(v), json_string_length(v));
        return 0;
    }
    if (!json_is_array(v))
        return gw_fail(e, GW_E_INVALID, path, "field '%s': expected string or array of text blocks, got %s",
                       path, gw_jtype(v));
    size_t i;
    json_t *b;
    json_array_foreach(v, i, b) {
        char p[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, path, i);
        const char *type = NULL, *text = NULL;
        if (!json_is_object(b))
            return gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(b));
        if (gw_get_string(b, p, "type", GW_OPT, &type, e) < 0 ||
            gw_get_string(b, p, "text", GW_REQ, &text, e) < 0)
            return -1;
        gw_conv_system(c, text, strlen(text)); /* each block separately: billing line */
    }
    return 0;
}

/* A tool_result's content: a string or blocks (text kept, others named). */
static int tool_result_text(const json_t *v, const char *path, gw_buf *out, gw_err *e)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        gw_buf_put(out, json_string_value(v), json_string_length(v));
        return 0;
    }
    if (!json_is_array(v))
        return gw_fail(e, GW_E_INVALID, path, "field '%s': expected string or array, got %s", path, gw_jtype(v));
    size_t i;
    json_t *b;
    json_array_foreach(v, i, b) {
        char p[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, path, i);
        const char *type = json_string_value(json_object_get(b, "type"));
        const char *text = json_string_value(json_object_get(b, "text"));
        if (out->len)
            gw_buf_puts(out, "\n\n");
        if (type && !strcmp(type, "text") && text)
            gw_buf_puts(out, text);
        else /* an image a tool returned: the model cannot see it, say so */
            gw_buf_printf(out, "[%s content omitted: not supported by this model]", type ? type : "unknown");
    }
    return 0;
}

static int map_user(gw_conv *c, const json_t *content, const char *cp, gw_err *e)
{
    if (json_is_string(content) || !content || json_is_null(content)) {
        gw_conv_user(c, json_string_value(content) ? json_string_value(content) : "",
                     json_string_value(content) ? json_string_length(content) : 0);
        return 0;
    }
    if (!json_is_array(content))
        return gw_fail(e, GW_E_INVALID, cp, "field '%s': expected string or array of blocks, got %s", cp,
                       gw_jtype(content));
    gw_buf text = {0};
    int rc = 0, have_text = 0;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b) {
        char p[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, cp, i);
        const char *type = NULL;
        if (!json_is_object(b)) {
            rc = gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(b));
            break;
        }
        if ((rc = gw_get_string(b, p, "type", GW_REQ, &type, e)) < 0)
            break;
        rc = 0;
        if (!strcmp(type, "tool_result")) {
            const char *id = NULL;
            gw_buf t = {0};
            char tp[GW_PARAM_MAX];
            gw_path(tp, sizeof tp, p, "content");
            if (gw_get_string(b, p, "tool_use_id", GW_REQ, &id, e) < 0 ||
                tool_result_text(json_object_get(b, "content"), tp, &t, e)) {
                gw_buf_free(&t);
                rc = -1;
                break;
            }
            gw_conv_tool(c, id, t.p ? t.p : "", t.len);
            gw_buf_free(&t);
        } else if (!strcmp(type, "text")) {
            const char *s = NULL;
            if ((rc = gw_get_string(b, p, "text", GW_REQ, &s, e)) < 0)
                break;
            rc = 0;
            if (have_text)
                gw_buf_puts(&text, "\n\n");
            gw_buf_puts(&text, s);
            have_text = 1;
        } else {
            rc = gw_fail(e, GW_E_INVALID, p,
                         "field '%s': content block type '%.40s' is not supported (the model reads text only)",
                         p, type);
            break;
        }
    }
    if (!rc && have_text)
        gw_conv_user(c, text.p, text.len);
    gw_buf_free(&text);
    return rc;
}

static int map_assistant(gw_conv *c, const json_t *content, const char *cp, gw_err *e)
{
    gw_asst a;
    gw_asst_init(&a);
    int rc = 0;
    if (json_is_string(content)) {
        gw_buf_put(&a.content, json_string_value(content), json_string_length(content));
    } else if (json_is_array(content)) {
        size_t i;
        json_t *b;
        json_array_foreach(content, i, b) {
            char p[GW_PARAM_MAX];
            gw_path_idx(p, sizeof p, cp, i);
            const char *type = NULL;
            if (!json_is_object(b)) {
                rc = gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(b));
                break;
            }
            if (gw_get_string(b, p, "type", GW_REQ, &type, e) < 0) {
                rc = -1;
                break;
            }
            if (!strcmp(type, "text")) {
                const char *s = NULL;
                if (gw_get_string(b, p, "text", GW_REQ, &s, e) < 0) {
                    rc = -1;
                    break;
                }
                gw_buf_puts(&a.content, s); /* our own blocks concatenate */
            } else if (!strcmp(type, "thinking")) {
                const char *t = NULL, *sig = NULL;
                if (gw_get_string(b, p, "thinking", GW_OPT, &t, e) < 0 ||
                    gw_get_string(b, p, "signature", GW_OPT, &sig, e) < 0) {
                    rc = -1;
                    break;
                }
                if (t) {
                    gw_buf_puts(&a.reasoning, t);
                    a.has_reasoning = 1;
                }
                gw_asst_key(&a, sig);
            } else if (!strcmp(type, "tool_use")) {
                const char *id = NULL, *name = NULL;
                json_t *input = NULL;
                if (gw_get_string(b, p, "id", GW_OPT, &id, e) < 0 ||
                    gw_get_string(b, p, "name", GW_REQ, &name, e) < 0 ||
                    gw_get_object(b, p, "input", GW_OPT, &input, e) < 0) {
                    rc = -1;
                    break;
                }
                char *args = input ? gw_json_dump(input) : ds4_xstrdup("{}");
                gw_asst_call(&a, id, name, args);
                free(args);
            }
            /* redacted_thinking, server tool blocks: nothing to render */
        }
    } else if (content && !json_is_null(content)) {
        rc = gw_fail(e, GW_E_INVALID, cp, "field '%s': expected string or array of blocks, got %s", cp,
                     gw_jtype(content));
    }
    if (!rc) {
        gw_conv_assistant(c, &a);
    } else {
        gw_buf_free(&a.content);
        gw_buf_free(&a.reasoning);
        json_decref(a.calls);
        for (int i = 0; i < a.nkeys; i++)
            free(a.keys[i]);
    }
    return rc;
}

static int map_tools(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *tools = NULL;
    if (gw_get_array(body, "", "tools", GW_OPT, &tools, e) < 0)
        return -1;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        char p[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, "tools", i);
        if (!json_is_object(t))
            return gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(t));
        const char *type = NULL, *name = NULL, *desc = NULL;
        json_t *schema = NULL;
        if (gw_get_string(t, p, "type", GW_OPT, &type, e) < 0)
            return -1;
        if (type && strcmp(type, "custom") != 0) { /* server tools (web_search_..., bash_...) */
            r->n_ignored_tools++;
            continue;
        }
        if (gw_get_string(t, p, "name", GW_REQ, &name, e) < 0 ||
            gw_get_string(t, p, "description", GW_OPT, &desc, e) < 0 ||
            gw_get_object(t, p, "input_schema", GW_OPT, &schema, e) < 0)
            return -1;
        gw_tools_add(r, name, desc, schema);
    }
    return 0;
}

static int map_tool_choice(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *tc = NULL;
    if (gw_get_object(body, "", "tool_choice", GW_OPT, &tc, e) < 0)
        return -1;
    if (!tc)
        return 0;
    const char *type = NULL, *name = NULL;
    int dis = 0;
    if (gw_get_string(tc, "tool_choice", "type", GW_REQ, &type, e) < 0 ||
        gw_get_bool(tc, "tool_choice", "disable_parallel_tool_use", GW_OPT, &dis, e) < 0)
        return -1;
    if (dis)
        r->parallel_tool_calls = 0;
    if (!strcmp(type, "auto"))
        r->tool_choice = GW_TC_AUTO;
    else if (!strcmp(type, "none"))
        r->tool_choice = GW_TC_NONE;
    else if (!strcmp(type, "any"))
        r->tool_choice = GW_TC_REQUIRED;
    else if (!strcmp(type, "tool")) {
        if (gw_get_string(tc, "tool_choice", "name", GW_REQ, &name, e) < 0)
            return -1;
        r->tool_choice = GW_TC_NAMED;
        r->tool_name = ds4_xstrdup(name);
    } else {
        return gw_fail(e, GW_E_INVALID, "tool_choice.type",
                       "field 'tool_choice.type': unknown value '%.40s' (auto, any, tool, none)", type);
    }
    if ((r->tool_choice == GW_TC_REQUIRED || r->tool_choice == GW_TC_NAMED) && !r->tools)
        return gw_fail(e, GW_E_INVALID, "tool_choice", "field 'tool_choice': needs at least one tool");
    if (r->tool_choice == GW_TC_NAMED) {
        size_t i;
        json_t *t;
        int found = 0;
        json_array_foreach(r->tools, i, t) {
            const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
            found |= n && !strcmp(n, name);
        }
        if (!found)
            return gw_fail(e, GW_E_INVALID, "tool_choice.name", "field 'tool_choice.name': no tool named '%.64s'",
                           name);
    }
    return 0;
}

/* thinking {type: enabled|adaptive|disabled}, output_config.effort. */
static int map_thinking(const json_t *body, gw_req *r, gw_err *e)
{
    json_t *t = NULL, *oc = NULL;
    const char *type = NULL, *effort = NULL;
    if (gw_get_object(body, "", "thinking", GW_OPT, &t, e) < 0 ||
        gw_get_object(body, "", "output_config", GW_OPT, &oc, e) < 0)
        return -1;
    if (t && gw_get_string(t, "thinking", "type", GW_OPT, &type, e) < 0)
        return -1;
    if (oc && gw_get_string(oc, "output_config", "effort", GW_OPT, &effort, e) < 0)
        return -1;
    if (effort && gw_map_effort(effort, "output_config.effort", r, e))
        return -1;
    if (type)
        r->thinking = strcmp(type, "disabled") != 0;
    return 0;
}

int gw_map_messages(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    const char *model = NULL;
    json_t *msgs = NULL, *meta = NULL;
    if (gw_get_string(body, "", "model", GW_OPT, &model, e) < 0 ||
        gw_get_array(body, "", "messages", GW_REQ, &msgs, e) < 0 ||
        gw_get_int(body, "", "max_tokens", GW_OPT, 1, INT32_MAX, &r->max_tokens, e) < 0 ||
        gw_get_object(body, "", "metadata", GW_OPT, &meta, e) < 0)
        return -1;
    if (r->api == GW_API_MESSAGES && gw_get_bool(body, "", "stream", GW_OPT, &r->stream, e) < 0)
        return -1;
    if (model)
        r->model = ds4_xstrdup(model);
    const char *uid = NULL;
    if (meta && gw_get_string(meta, "metadata", "user_id", GW_OPT, &uid, e) < 0)
        return -1;
    if (uid && *uid)
        r->session = ds4_xstrndup(uid, strnlen(uid, 128));
    if (gw_map_sampling(body, r, e) || gw_map_stop(body, "stop_sequences", r, e) ||
        map_thinking(body, r, e) || map_tools(body, r, e) || map_tool_choice(body, r, e) ||
        gw_map_test_output(body, o, r, e))
        return -1;
    gw_conv c;
    gw_conv_init(&c, o, r);
    int rc = map_system_value(&c, gw_get_any(body, "system"), "system", e);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (rc)
            break;
        char p[GW_PARAM_MAX], cp[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, "messages", i);
        gw_path(cp, sizeof cp, p, "content");
        const char *role = NULL;
        if (!json_is_object(m)) {
            rc = gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(m));
            break;
        }
        if (gw_get_string(m, p, "role", GW_REQ, &role, e) < 0) {
            rc = -1;
            break;
        }
        json_t *content = json_object_get(m, "content");
        if (!strcmp(role, "user"))
            rc = map_user(&c, content, cp, e);
        else if (!strcmp(role, "assistant"))
            rc = map_assistant(&c, content, cp, e);
        else if (!strcmp(role, "system")) /* mid-conversation system (Claude Code beta) */
            rc = map_system_value(&c, content, cp, e);
        else {
            char rp[GW_PARAM_MAX];
            gw_path(rp, sizeof rp, p, "role");
            rc = gw_fail(e, GW_E_INVALID, rp, "field '%s': unknown role '%.40s' (user, assistant)", rp, role);
        }
    }
    if (!rc)
        gw_conv_finish(&c);
    gw_conv_free(&c);
    return rc;
}

int gw_map_count_tokens(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    r->api = GW_API_COUNT;
    return gw_map_messages(body, o, r, e);
}

/* ---- output -------------------------------------------------------------- */

json_t *gw_usage_anthropic(const gw_gen *g)
{
    uint64_t cached = g->cached_tokens <= g->prompt_tokens ? g->cached_tokens : g->prompt_tokens;
    return json_pack("{s:I,s:I,s:I,s:I}", "input_tokens", (json_int_t)(g->prompt_tokens - cached),
                     "output_tokens", (json_int_t)g->completion_tokens, "cache_creation_input_tokens",
                     (json_int_t)0, "cache_read_input_tokens", (json_int_t)cached);
}

static const char *model_of(const gw_gen *g)
{
    return g->req->model ? g->req->model : g->cx->model_name;
}

static json_t *tool_input(const gw_call *c)
{
    json_t *in = json_loads(c->args, 0, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        in = json_object();
    }
    return in;
}

static json_t *msg_body(gw_gen *g)
{
    json_t *content = json_array();
    if (g->reasoning.len)
        json_array_append_new(content,
                              json_pack("{s:s,s:o,s:s}", "type", "thinking", "thinking",
                                        gw_json_str(g->reasoning.p, g->reasoning.len), "signature", g->turn_key));
    if (g->content.len)
        json_array_append_new(content, json_pack("{s:s,s:o}", "type", "text", "text",
                                                 gw_json_str(g->content.p, g->content.len)));
    for (size_t i = 0; i < g->ncalls; i++)
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", g->calls[i].id,
                                                 "name", g->calls[i].name, "input", tool_input(&g->calls[i])));
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:o,s:o}", "id", g->id, "type", "message", "role", "assistant",
                     "model", model_of(g), "content", content, "stop_reason", gw_finish_anthropic(g->finish),
                     "stop_sequence", g->stop_seq ? json_string(g->stop_seq) : json_null(), "usage",
                     gw_usage_anthropic(g));
}

static void close_block(gw_gen *g)
{
    if (g->s_open == BLK_NONE)
        return;
    if (g->s_open == BLK_THINKING)
        gw_sse_event(&g->sse, "content_block_delta",
                     json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index", g->s_open_idx,
                               "delta", "type", "signature_delta", "signature", g->turn_key));
    gw_sse_event(&g->sse, "content_block_stop",
                 json_pack("{s:s,s:i}", "type", "content_block_stop", "index", g->s_open_idx));
    g->s_open = BLK_NONE;
}

static void open_block(gw_gen *g, int kind, json_t *block)
{
    close_block(g);
    g->s_open = kind;
    g->s_open_idx = g->s_idx++;
    gw_sse_event(&g->sse, "content_block_start",
                 json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index", g->s_open_idx,
                           "content_block", block));
}

static void msg_begin(gw_gen *g)
{
    json_t *m = json_pack("{s:s,s:s,s:s,s:[],s:s,s:n,s:n,s:o}", "id", g->id, "type", "message", "role",
                          "assistant", "content", "model", model_of(g), "stop_reason", "stop_sequence",
                          "usage", gw_usage_anthropic(g));
    gw_sse_event(&g->sse, "message_start", json_pack("{s:s,s:o}", "type", "message_start", "message", m));
}

static void msg_reasoning(gw_gen *g, const char *s, size_t n)
{
    if (g->s_open != BLK_THINKING)
        open_block(g, BLK_THINKING, json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking", "",
                                              "signature", ""));
    gw_sse_event(&g->sse, "content_block_delta",
                 json_pack("{s:s,s:i,s:{s:s,s:o}}", "type", "content_block_delta", "index", g->s_open_idx,
                           "delta", "type", "thinking_delta", "thinking", gw_json_str(s, n)));
}

static void msg_content(gw_gen *g, const char *s, size_t n)
{
    if (g->s_open != BLK_TEXT)
        open_block(g, BLK_TEXT, json_pack("{s:s,s:s}", "type", "text", "text", ""));
    gw_sse_event(&g->sse, "content_block_delta",
                 json_pack("{s:s,s:i,s:{s:s,s:o}}", "type", "content_block_delta", "index", g->s_open_idx,
                           "delta", "type", "text_delta", "text", gw_json_str(s, n)));
}

static void msg_tool_call(gw_gen *g, size_t i)
{
    const gw_call *c = &g->calls[i];
    close_block(g);
    int idx = g->s_idx++;
    gw_sse_event(&g->sse, "content_block_start",
                 json_pack("{s:s,s:i,s:{s:s,s:s,s:s,s:{}}}", "type", "content_block_start", "index", idx,
                           "content_block", "type", "tool_use", "id", c->id, "name", c->name, "input"));
    gw_sse_event(&g->sse, "content_block_delta",
                 json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index", idx, "delta",
                           "type", "input_json_delta", "partial_json", c->args));
    gw_sse_event(&g->sse, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", idx));
}

static void msg_end(gw_gen *g)
{
    close_block(g);
    if (g->failed) {
        gw_sse_event(&g->sse, "error", gw_anthropic_error_json(&g->err));
        return;
    }
    json_t *u = gw_usage_anthropic(g);
    gw_sse_event(&g->sse, "message_delta",
                 json_pack("{s:s,s:{s:s,s:o},s:o}", "type", "message_delta", "delta", "stop_reason",
                           gw_finish_anthropic(g->finish), "stop_sequence",
                           g->stop_seq ? json_string(g->stop_seq) : json_null(), "usage", u));
    gw_sse_event(&g->sse, "message_stop", json_pack("{s:s}", "type", "message_stop"));
}

const gw_api_ops gw_ops_messages = {
    .call_prefix = "toolu_",
    .s_begin = msg_begin,
    .s_reasoning = msg_reasoning,
    .s_content = msg_content,
    .s_tool_call = msg_tool_call,
    .s_end = msg_end,
    .body = msg_body,
};
