/* gw_responses.c - OpenAI Responses API, stateless (Codex CLI's only wire
 * API): input items to the canonical conversation, output items and the
 * streamed event sequence Codex consumes:
 *
 *   response.created, response.in_progress,
 *   reasoning item: output_item.added, reasoning_summary_part.added,
 *     reasoning_summary_text.delta..., reasoning_summary_text.done,
 *     reasoning_summary_part.done, output_item.done
 *   message item: output_item.added, content_part.added,
 *     output_text.delta..., output_text.done, content_part.done,
 *     output_item.done
 *   function_call item: output_item.added, function_call_arguments.delta,
 *     function_call_arguments.done, output_item.done
 *   response.completed (response.incomplete for max_output_tokens,
 *   response.failed on an engine failure)
 *
 * Every event carries sequence_number. The reasoning item's
 * encrypted_content (when "reasoning.encrypted_content" is in include) is
 * the gateway's replay key of the turn: Codex sends it back verbatim. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_api.h"
#include "gw_sse.h"
#include "util.h"

static const char *const IN_PARTS[] = {"input_text", "output_text", "text", "refusal", NULL};

/* ---- mapping ------------------------------------------------------------- */

/* The assistant turn being assembled from consecutive output items. */
struct pending {
    gw_asst a;
    int open;
};

static void pend_flush(gw_conv *c, struct pending *p)
{
    if (p->open)
        gw_conv_assistant(c, &p->a);
    p->open = 0;
}

static gw_asst *pend_get(struct pending *p)
{
    if (!p->open) {
        gw_asst_init(&p->a);
        p->open = 1;
    }
    return &p->a;
}

static void pend_drop(struct pending *p)
{
    if (!p->open)
        return;
    gw_buf_free(&p->a.content);
    gw_buf_free(&p->a.reasoning);
    json_decref(p->a.calls);
    for (int i = 0; i < p->a.nkeys; i++)
        free(p->a.keys[i]);
    p->open = 0;
}

/* Text of a reasoning item: its reasoning_text content, else the summaries. */
static int reasoning_text(const json_t *it, const char *path, gw_buf *out, gw_err *e)
{
    json_t *content = gw_get_any(it, "content");
    json_t *summary = gw_get_any(it, "summary");
    json_t *src = json_is_array(content) && json_array_size(content) ? content : summary;
    if (src && !json_is_array(src))
        return gw_fail(e, GW_E_INVALID, path, "field '%s': expected array of parts", path);
    size_t i;
    json_t *p;
    json_array_foreach(src, i, p) {
        const char *t = json_string_value(json_object_get(p, "text"));
        if (t) {
            if (out->len)
                gw_buf_puts(out, "\n\n");
            gw_buf_puts(out, t);
        }
    }
    return 0;
}

static int map_item(gw_conv *c, struct pending *pd, const json_t *it, size_t i, gw_err *e)
{
    char p[GW_PARAM_MAX], cp[GW_PARAM_MAX];
    gw_path_idx(p, sizeof p, "input", i);
    gw_path(cp, sizeof cp, p, "content");
    if (!json_is_object(it))
        return gw_fail(e, GW_E_INVALID, p, "field '%s': expected object, got %s", p, gw_jtype(it));
    const char *type = NULL, *role = NULL;
    if (gw_get_string(it, p, "type", GW_OPT, &type, e) < 0 ||
        gw_get_string(it, p, "role", GW_OPT, &role, e) < 0)
        return -1;
    if (!type)
        type = role ? "message" : "";
    if (!strcmp(type, "message")) {
        if (!role) {
            char rp[GW_PARAM_MAX];
            gw_path(rp, sizeof rp, p, "role");
            return gw_fail(e, GW_E_INVALID, rp, "missing required field '%s'", rp);
        }
        if (!strcmp(role, "assistant")) {
            gw_asst *a = pend_get(pd);
            if (a->content.len || json_array_size(a->calls)) { /* a second message: new turn */
                pend_flush(c, pd);
                a = pend_get(pd);
            }
            const char *id = NULL;
            if (gw_get_string(it, p, "id", GW_OPT, &id, e) < 0)
                return -1;
            gw_asst_key(a, id);
            return gw_content_text(json_object_get(it, "content"), cp, IN_PARTS, &a->content, e);
        }
        pend_flush(c, pd);
        gw_buf t = {0};
        int rc = gw_content_text(json_object_get(it, "content"), cp, IN_PARTS, &t, e);
        if (!rc) {
            if (!strcmp(role, "user"))
                gw_conv_user(c, t.p ? t.p : "", t.len);
            else if (!strcmp(role, "system") || !strcmp(role, "developer"))
                gw_conv_system(c, t.p ? t.p : "", t.len);
            else {
                char rp[GW_PARAM_MAX];
                gw_path(rp, sizeof rp, p, "role");
                rc = gw_fail(e, GW_E_INVALID, rp, "field '%s': unknown role '%.40s'", rp, role);
            }
        }
        gw_buf_free(&t);
        return rc;
    }
    if (!strcmp(type, "reasoning")) {
        gw_asst *a = pend_get(pd);
        if (a->has_reasoning || a->content.len || json_array_size(a->calls)) {
            pend_flush(c, pd);
            a = pend_get(pd);
        }
        const char *enc = NULL;
        if (gw_get_string(it, p, "encrypted_content", GW_OPT, &enc, e) < 0)
            return -1;
        gw_asst_key(a, enc);
        a->has_reasoning = 1;
        return reasoning_text(it, p, &a->reasoning, e);
    }
    if (!strcmp(type, "function_call")) {
        const char *call_id = NULL, *name = NULL, *args = NULL;
        if (gw_get_string(it, p, "call_id", GW_REQ, &call_id, e) < 0 ||
            gw_get_string(it, p, "name", GW_REQ, &name, e) < 0 ||
            gw_get_string(it, p, "arguments", GW_OPT, &args, e) < 0)
            return -1;
        gw_asst_call(pend_get(pd), call_id, name, args ? args : "{}");
        return 0;
    }
    if (!strcmp(type, "function_call_output")) {
        const char *call_id = NULL;
        if (gw_get_string(it, p, "call_id", GW_REQ, &call_id, e) < 0)
            return -1;
        pend_flush(c, pd);
        gw_buf t = {0};
        char op[GW_PARAM_MAX];
        gw_path(op, sizeof op, p, "output");
        int rc = gw_content_text(json_object_get(it, "output"), op, IN_PARTS, &t, e);
        if (!rc)
            gw_conv_tool(c, call_id, t.p ? t.p : "", t.len);
        gw_buf_free(&t);
        return rc;
    }
    /* item_reference, web_search_call, custom tool items, ...: not ours */
    return 0;
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
        json_t *params = NULL;
        if (gw_get_string(t, p, "type", GW_OPT, &type, e) < 0)
            return -1;
        if (!type || strcmp(type, "function") != 0) { /* namespace, web_search, ... */
            r->n_ignored_tools++;
            continue;
        }
        if (gw_get_string(t, p, "name", GW_REQ, &name, e) < 0 ||
            gw_get_string(t, p, "description", GW_OPT, &desc, e) < 0 ||
            gw_get_object(t, p, "parameters", GW_OPT, &params, e) < 0)
            return -1;
        gw_tools_add(r, name, desc, params);
    }
    return 0;
}

int gw_map_responses(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    const char *model = NULL, *instr = NULL, *prev = NULL, *pck = NULL;
    if (gw_get_string(body, "", "model", GW_OPT, &model, e) < 0 ||
        gw_get_bool(body, "", "stream", GW_OPT, &r->stream, e) < 0 ||
        gw_get_string(body, "", "instructions", GW_OPT, &instr, e) < 0 ||
        gw_get_string(body, "", "previous_response_id", GW_OPT, &prev, e) < 0 ||
        gw_get_string(body, "", "prompt_cache_key", GW_OPT, &pck, e) < 0)
        return -1;
    if (prev)
        return gw_fail(e, GW_E_INVALID, "previous_response_id",
                       "field 'previous_response_id': this server is stateless; send the whole conversation in 'input'");
    if (model) {
        r->model = ds4_xstrdup(model);
        if (!strcmp(model, "deepseek-chat"))
            r->thinking = 0;
    }
    if (pck && *pck)
        r->session = ds4_xstrndup(pck, strnlen(pck, 128));
    if (gw_get_int(body, "", "max_output_tokens", GW_OPT, 1, INT32_MAX, &r->max_tokens, e) < 0 ||
        gw_map_sampling(body, r, e) ||
        gw_get_bool(body, "", "parallel_tool_calls", GW_OPT, &r->parallel_tool_calls, e) < 0)
        return -1;
    json_t *reasoning = NULL, *include = NULL;
    if (gw_get_object(body, "", "reasoning", GW_OPT, &reasoning, e) < 0 ||
        gw_get_array(body, "", "include", GW_OPT, &include, e) < 0)
        return -1;
    const char *effort = NULL;
    if (reasoning && gw_get_string(reasoning, "reasoning", "effort", GW_OPT, &effort, e) < 0)
        return -1;
    if (gw_map_effort(effort, "reasoning.effort", r, e))
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(include, i, v)
        if (json_is_string(v) && !strcmp(json_string_value(v), "reasoning.encrypted_content"))
            r->include_encrypted = 1;
    json_t *text = NULL;
    if (gw_get_object(body, "", "text", GW_OPT, &text, e) < 0)
        return -1;
    if (map_tools(body, r, e) || gw_map_tool_choice_openai(body, r, e) ||
        gw_map_response_format(text ? gw_get_any(text, "format") : NULL, "text.format", r, e) ||
        gw_map_test_output(body, o, r, e))
        return -1;
    json_t *input = gw_get_any(body, "input");
    if (!input)
        return gw_fail(e, GW_E_INVALID, "input", "missing required field 'input'");
    if (!json_is_string(input) && !json_is_array(input))
        return gw_fail(e, GW_E_INVALID, "input", "field 'input': expected string or array of items, got %s",
                       gw_jtype(input));
    gw_conv c;
    gw_conv_init(&c, o, r);
    if (instr)
        gw_conv_system(&c, instr, strlen(instr));
    struct pending pd = {0};
    int rc = 0;
    if (json_is_string(input)) {
        gw_conv_user(&c, json_string_value(input), json_string_length(input));
    } else {
        json_t *it;
        json_array_foreach(input, i, it)
            if ((rc = map_item(&c, &pd, it, i, e)))
                break;
    }
    if (!rc)
        pend_flush(&c, &pd);
    else
        pend_drop(&pd);
    if (!rc)
        gw_conv_finish(&c);
    gw_conv_free(&c);
    return rc;
}

/* ---- output -------------------------------------------------------------- */

json_t *gw_usage_responses(const gw_gen *g)
{
    return json_pack("{s:I,s:{s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)g->prompt_tokens,
                     "input_tokens_details", "cached_tokens", (json_int_t)g->cached_tokens,
                     "output_tokens", (json_int_t)g->completion_tokens, "output_tokens_details",
                     "reasoning_tokens", (json_int_t)g->n_reasoning_tokens, "total_tokens",
                     (json_int_t)(g->prompt_tokens + g->completion_tokens));
}

static json_t *reasoning_item(gw_gen *g, const char *status)
{
    json_t *it = json_pack("{s:s,s:s,s:[{s:s,s:o}]}", "type", "reasoning", "id", g->rs_item, "summary",
                           "type", "summary_text", "text",
                           gw_json_str(g->reasoning.p ? g->reasoning.p : "", g->reasoning.len));
    if (g->req->include_encrypted)
        json_object_set_new(it, "encrypted_content", json_string(g->turn_key));
    if (status)
        json_object_set_new(it, "status", json_string(status));
    return it;
}

static json_t *text_part(const char *s, size_t n)
{
    return json_pack("{s:s,s:o,s:[]}", "type", "output_text", "text", gw_json_str(s, n), "annotations");
}

static json_t *message_item(gw_gen *g, const char *id, const char *s, size_t n, const char *status)
{
    json_t *content = json_array();
    if (strcmp(status, "in_progress") != 0)
        json_array_append_new(content, text_part(s, n));
    return json_pack("{s:s,s:s,s:s,s:s,s:o}", "type", "message", "id", id, "status", status, "role",
                     "assistant", "content", content);
}

static json_t *call_item(const gw_call *c, const char *status)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "function_call", "id", c->item_id, "call_id",
                     c->id, "name", c->name, "arguments", strcmp(status, "in_progress") ? c->args : "",
                     "status", status);
}

static const char *resp_status(const gw_gen *g)
{
    if (g->failed)
        return "failed";
    if (!g->done)
        return "in_progress";
    return g->finish == GW_FIN_LENGTH ? "incomplete" : "completed";
}

/* The response object (output: the given items, usage when done). */
static json_t *response_obj(gw_gen *g, json_t *output)
{
    gw_req *r = g->req;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(g->id));
    json_object_set_new(o, "object", json_string("response"));
    json_object_set_new(o, "created_at", json_integer(g->created));
    json_object_set_new(o, "status", json_string(resp_status(g)));
    json_object_set_new(o, "model", json_string(r->model ? r->model : g->cx->model_name));
    json_object_set_new(o, "output", output);
    json_object_set_new(o, "parallel_tool_calls", json_boolean(r->parallel_tool_calls));
    json_object_set_new(o, "tool_choice",
                        json_string(r->tool_choice == GW_TC_NONE       ? "none"
                                    : r->tool_choice == GW_TC_REQUIRED ? "required"
                                                                       : "auto"));
    json_t *tools = json_array(); /* the function tools offered, echoed */
    size_t ti;
    json_t *t;
    json_array_foreach(r->tools, ti, t) {
        json_t *fn = json_object_get(t, "function");
        json_t *e = json_pack("{s:s,s:O,s:O,s:b}", "type", "function", "name", json_object_get(fn, "name"),
                              "parameters", json_object_get(fn, "parameters"), "strict", 0);
        if (json_object_get(fn, "description"))
            json_object_set(e, "description", json_object_get(fn, "description"));
        json_array_append_new(tools, e);
    }
    json_object_set_new(o, "tools", tools);
    json_object_set_new(o, "instructions", json_null());
    json_object_set_new(o, "temperature", r->has_temperature ? json_real(r->temperature) : json_null());
    json_object_set_new(o, "top_p", r->has_top_p ? json_real(r->top_p) : json_null());
    json_object_set_new(o, "store", json_false());
    json_object_set_new(o, "previous_response_id", json_null());
    json_object_set_new(o, "max_output_tokens", r->max_tokens > 0 ? json_integer(r->max_tokens) : json_null());
    json_object_set_new(o, "reasoning", json_pack("{s:s,s:n}", "effort",
                                                  !r->thinking ? "none" : r->effort_max ? "max" : "high",
                                                  "summary"));
    json_object_set_new(o, "text", json_pack("{s:{s:s}}", "format", "type", "text"));
    json_object_set_new(o, "truncation", json_string("disabled"));
    json_object_set_new(o, "metadata", json_object());
    json_object_set_new(o, "incomplete_details",
                        g->done && !g->failed && g->finish == GW_FIN_LENGTH
                            ? json_pack("{s:s}", "reason", "max_output_tokens") : json_null());
    if (g->failed)
        json_object_set_new(o, "error", json_pack("{s:s,s:s}", "code",
                                                  g->err.code[0] ? g->err.code
                                                  : g->err.kind == GW_E_RATE_LIMIT ? "rate_limit_exceeded"
                                                                                   : "server_error",
                                                  "message", g->err.msg));
    else
        json_object_set_new(o, "error", json_null());
    json_object_set_new(o, "usage", g->done && !g->failed ? gw_usage_responses(g) : json_null());
    return o;
}

static json_t *all_items(gw_gen *g)
{
    json_t *out = json_array();
    if (g->reasoning.len)
        json_array_append_new(out, reasoning_item(g, NULL));
    if (g->content.len)
        json_array_append_new(out, message_item(g, g->msg_item, g->content.p, g->content.len, "completed"));
    for (size_t i = 0; i < g->ncalls; i++)
        json_array_append_new(out, call_item(&g->calls[i], "completed"));
    return out;
}

static json_t *resp_body(gw_gen *g)
{
    return response_obj(g, all_items(g));
}

/* One streamed event with its sequence number. */
static void ev(gw_gen *g, const char *type, json_t *o)
{
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "sequence_number", json_integer(g->s_seq++));
    gw_sse_event(&g->sse, type, o);
}

static void item_done(gw_gen *g, int idx, json_t *item)
{
    if (!g->s_items)
        g->s_items = json_array();
    json_array_append(g->s_items, item);
    ev(g, "response.output_item.done", json_pack("{s:i,s:o}", "output_index", idx, "item", item));
}

static void close_reasoning(gw_gen *g)
{
    if (g->s_rs_idx < 0)
        return;
    int idx = g->s_rs_idx;
    json_t *text = gw_json_str(g->reasoning.p ? g->reasoning.p : "", g->reasoning.len);
    ev(g, "response.reasoning_summary_text.done",
       json_pack("{s:s,s:i,s:i,s:O}", "item_id", g->rs_item, "output_index", idx, "summary_index", 0,
                 "text", text));
    ev(g, "response.reasoning_summary_part.done",
       json_pack("{s:s,s:i,s:i,s:{s:s,s:o}}", "item_id", g->rs_item, "output_index", idx,
                 "summary_index", 0, "part", "type", "summary_text", "text", text));
    item_done(g, idx, reasoning_item(g, NULL));
    g->s_rs_idx = -1;
}

/* The text of the open message item: content since it was opened. */
static void close_message(gw_gen *g)
{
    if (g->s_msg_idx < 0)
        return;
    int idx = g->s_msg_idx;
    const char *s = g->content.p ? g->content.p + g->s_open_idx : "";
    size_t n = g->content.len - (size_t)g->s_open_idx;
    const char *id = g->s_item;
    ev(g, "response.output_text.done",
       json_pack("{s:s,s:i,s:i,s:o,s:[]}", "item_id", id, "output_index", idx, "content_index", 0, "text",
                 gw_json_str(s, n), "logprobs"));
    ev(g, "response.content_part.done",
       json_pack("{s:s,s:i,s:i,s:o}", "item_id", id, "output_index", idx, "content_index", 0, "part",
                 text_part(s, n)));
    item_done(g, idx, message_item(g, id, s, n, "completed"));
    g->s_msg_idx = -1;
}

static void resp_begin(gw_gen *g)
{
    ev(g, "response.created", json_pack("{s:o}", "response", response_obj(g, json_array())));
    ev(g, "response.in_progress", json_pack("{s:o}", "response", response_obj(g, json_array())));
}

static void resp_reasoning(gw_gen *g, const char *s, size_t n)
{
    if (g->s_rs_idx < 0) {
        close_message(g);
        g->s_rs_idx = g->s_idx++;
        json_t *it = json_pack("{s:s,s:s,s:[]}", "type", "reasoning", "id", g->rs_item, "summary");
        ev(g, "response.output_item.added", json_pack("{s:i,s:o}", "output_index", g->s_rs_idx, "item", it));
        ev(g, "response.reasoning_summary_part.added",
           json_pack("{s:s,s:i,s:i,s:{s:s,s:s}}", "item_id", g->rs_item, "output_index", g->s_rs_idx,
                     "summary_index", 0, "part", "type", "summary_text", "text", ""));
    }
    ev(g, "response.reasoning_summary_text.delta",
       json_pack("{s:s,s:i,s:i,s:o}", "item_id", g->rs_item, "output_index", g->s_rs_idx, "summary_index",
                 0, "delta", gw_json_str(s, n)));
}

static void resp_content(gw_gen *g, const char *s, size_t n)
{
    /* the driver has already appended s to g->content */
    if (g->s_msg_idx < 0) {
        close_reasoning(g);
        g->s_msg_idx = g->s_idx++;
        g->s_open_idx = (int)(g->content.len - n);
        /* the first message item has the id remembered for replay */
        if (g->s_open_idx == 0)
            snprintf(g->s_item, sizeof g->s_item, "%s", g->msg_item);
        else
            gw_rand_id(g->s_item, sizeof g->s_item, "msg_");
        const char *id = g->s_item;
        ev(g, "response.output_item.added",
           json_pack("{s:i,s:o}", "output_index", g->s_msg_idx, "item", message_item(g, id, "", 0, "in_progress")));
        ev(g, "response.content_part.added",
           json_pack("{s:s,s:i,s:i,s:o}", "item_id", id, "output_index", g->s_msg_idx, "content_index", 0,
                     "part", text_part("", 0)));
    }
    ev(g, "response.output_text.delta",
       json_pack("{s:s,s:i,s:i,s:o,s:[]}", "item_id", g->s_item, "output_index",
                 g->s_msg_idx, "content_index", 0, "delta", gw_json_str(s, n), "logprobs"));
}

static void resp_tool_call(gw_gen *g, size_t i)
{
    close_reasoning(g);
    close_message(g);
    const gw_call *c = &g->calls[i];
    int idx = g->s_idx++;
    ev(g, "response.output_item.added", json_pack("{s:i,s:o}", "output_index", idx, "item", call_item(c, "in_progress")));
    ev(g, "response.function_call_arguments.delta",
       json_pack("{s:s,s:i,s:s}", "item_id", c->item_id, "output_index", idx, "delta", c->args));
    ev(g, "response.function_call_arguments.done",
       json_pack("{s:s,s:i,s:s}", "item_id", c->item_id, "output_index", idx, "arguments", c->args));
    item_done(g, idx, call_item(c, "completed"));
}

static void resp_end(gw_gen *g)
{
    close_reasoning(g);
    close_message(g);
    json_t *items = g->s_items ? json_incref(g->s_items) : json_array();
    const char *type = g->failed                    ? "response.failed"
                       : g->finish == GW_FIN_LENGTH ? "response.incomplete"
                                                    : "response.completed";
    ev(g, type, json_pack("{s:o}", "response", response_obj(g, items)));
}

const gw_api_ops gw_ops_responses = {
    .call_prefix = "call_",
    .s_begin = resp_begin,
    .s_reasoning = resp_reasoning,
    .s_content = resp_content,
    .s_tool_call = resp_tool_call,
    .s_end = resp_end,
    .body = resp_body,
};
