/* gw_req.c - the internal request and the mapping helpers every API module
 * uses: the conversation builder (system text joined in one leading
 * message, replay lookup of assistant turns), tools, content parts,
 * sampling fields, stop strings, reasoning effort. */
#include "gw_req.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define BILLING_PREFIX "x-anthropic-billing-header:"

void gw_req_init(gw_req *r, int api)
{
    memset(r, 0, sizeof *r);
    r->api = api;
    r->thinking = 1;
    r->max_tokens = -1;
    r->top_k = -1;
    r->parallel_tool_calls = 1;
}

void gw_req_free(gw_req *r)
{
    free(r->model);
    json_decref(r->messages);
    json_decref(r->tools);
    json_decref(r->response_format);
    free(r->tool_name);
    free(r->prompt);
    free(r->prompt_ids);
    for (size_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->test_output);
    free(r->session);
    memset(r, 0, sizeof *r);
}

int gw_map(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    switch (r->api) {
    case GW_API_CHAT: return gw_map_chat(body, o, r, e);
    case GW_API_COMPLETIONS: return gw_map_completions(body, o, r, e);
    case GW_API_RESPONSES: return gw_map_responses(body, o, r, e);
    case GW_API_MESSAGES: return gw_map_messages(body, o, r, e);
    case GW_API_COUNT: return gw_map_count_tokens(body, o, r, e);
    default: return gw_fail(e, GW_E_SERVER, NULL, "unknown API %d", r->api);
    }
}

/* ---- conversation ------------------------------------------------------ */

void gw_conv_init(gw_conv *c, const gw_map_opts *o, gw_req *r)
{
    memset(c, 0, sizeof *c);
    c->msgs = json_array();
    c->o = o;
    c->r = r;
}

void gw_conv_system(gw_conv *c, const char *s, size_t n)
{
    if (n >= sizeof BILLING_PREFIX - 1 && memcmp(s, BILLING_PREFIX, sizeof BILLING_PREFIX - 1) == 0) {
        /* Claude Code's per-request billing line: drop the line (the block
         * is only that line in the observed clients) */
        const char *nl = memchr(s, '\n', n);
        size_t skip = nl ? (size_t)(nl - s) + 1 : n;
        s += skip;
        n -= skip;
        c->r->billing_stripped = 1;
    }
    if (!n)
        return;
    if (c->system.len)
        gw_buf_puts(&c->system, "\n\n");
    gw_buf_put(&c->system, s, n);
    c->n_system++;
}

void gw_conv_user(gw_conv *c, const char *s, size_t n)
{
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("user"));
    json_object_set_new(m, "content", gw_json_str(s, n));
    json_array_append_new(c->msgs, m);
}

void gw_conv_tool(gw_conv *c, const char *call_id, const char *s, size_t n)
{
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("tool"));
    if (call_id)
        json_object_set_new(m, "tool_call_id", json_string(call_id));
    json_object_set_new(m, "content", gw_json_str(s, n));
    json_array_append_new(c->msgs, m);
}

void gw_asst_init(gw_asst *a)
{
    memset(a, 0, sizeof *a);
    a->calls = json_array();
}

void gw_asst_key(gw_asst *a, const char *key)
{
    if (key && *key && a->nkeys < (int)DS4_ARRAY_LEN(a->keys))
        a->keys[a->nkeys++] = ds4_xstrdup(key);
}

void gw_asst_call(gw_asst *a, const char *id, const char *name, const char *args)
{
    json_t *fn = json_object();
    json_object_set_new(fn, "name", json_string(name ? name : ""));
    json_object_set_new(fn, "arguments", json_string(args && *args ? args : "{}"));
    json_t *tc = json_object();
    if (id && *id)
        json_object_set_new(tc, "id", json_string(id));
    json_object_set_new(tc, "type", json_string("function"));
    json_object_set_new(tc, "function", fn);
    json_array_append_new(a->calls, tc);
}

static void asst_free(gw_asst *a)
{
    gw_buf_free(&a->content);
    gw_buf_free(&a->reasoning);
    json_decref(a->calls);
    for (int i = 0; i < a->nkeys; i++)
        free(a->keys[i]);
    memset(a, 0, sizeof *a);
}

void gw_conv_assistant(gw_conv *c, gw_asst *a)
{
    size_t nc = json_array_size(a->calls);
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string("assistant"));
    json_object_set_new(m, "content", gw_json_str(a->content.p ? a->content.p : "", a->content.len));
    if (a->has_reasoning)
        json_object_set_new(m, "reasoning_content",
                            gw_json_str(a->reasoning.p ? a->reasoning.p : "", a->reasoning.len));
    if (nc)
        json_object_set(m, "tool_calls", a->calls);
    if (c->o && c->o->replay) {
        gw_replay_call *calls = ds4_xcalloc(nc + 1, sizeof *calls);
        for (size_t i = 0; i < nc; i++) {
            json_t *tc = json_array_get(a->calls, i);
            json_t *fn = json_object_get(tc, "function");
            calls[i].id = json_string_value(json_object_get(tc, "id"));
            calls[i].name = json_string_value(json_object_get(fn, "name"));
            calls[i].args = json_string_value(json_object_get(fn, "arguments"));
        }
        json_t *raw = gw_replay_lookup(c->o->replay, (const char *const *)a->keys, (size_t)a->nkeys,
                                       a->content.p ? a->content.p : "", a->content.len, calls, nc);
        if (raw) {
            json_object_set_new(m, "_ds4_raw", raw);
            c->r->n_replayed++;
        }
        free(calls);
    }
    json_array_append_new(c->msgs, m);
    asst_free(a);
}

void gw_conv_finish(gw_conv *c)
{
    json_t *all = json_array();
    if (c->system.len || c->r->response_format) {
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("system"));
        json_object_set_new(m, "content", gw_json_str(c->system.p ? c->system.p : "", c->system.len));
        if (c->r->response_format)
            json_object_set(m, "response_format", c->r->response_format);
        json_array_append_new(all, m);
    }
    size_t i;
    json_t *m;
    json_array_foreach(c->msgs, i, m)
        json_array_append(all, m);
    json_decref(c->r->messages);
    c->r->messages = all;
    c->r->n_system_parts = c->n_system;
}

void gw_conv_free(gw_conv *c)
{
    gw_buf_free(&c->system);
    json_decref(c->msgs);
    memset(c, 0, sizeof *c);
}

/* ---- tools, content, sampling ------------------------------------------ */

void gw_tools_add(gw_req *r, const char *name, const char *desc, const json_t *params)
{
    if (!r->tools)
        r->tools = json_array();
    json_t *fn = json_object();
    json_object_set_new(fn, "name", json_string(name));
    if (desc)
        json_object_set_new(fn, "description", json_string(desc));
    json_object_set_new(fn, "parameters",
                        params ? json_deep_copy(params) : json_pack("{s:s,s:{}}", "type", "object",
                                                                     "properties"));
    json_t *t = json_object();
    json_object_set_new(t, "type", json_string("function"));
    json_object_set_new(t, "function", fn);
    json_array_append_new(r->tools, t);
}

static int type_ok(const char *t, const char *const *ok)
{
    for (; *ok; ok++)
        if (strcmp(t, *ok) == 0)
            return 1;
    return 0;
}

int gw_content_text(const json_t *v, const char *path, const char *const *ok_types,
                    gw_buf *out, gw_err *e)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        gw_buf_put(out, json_string_value(v), json_string_length(v));
        return 0;
    }
    if (!json_is_array(v))
        return gw_fail(e, GW_E_INVALID, path, "field '%s': expected string or array of content parts, got %s",
                       path, gw_jtype(v));
    size_t i;
    json_t *p;
    int first = 1;
    json_array_foreach(v, i, p) {
        char pp[GW_PARAM_MAX];
        gw_path_idx(pp, sizeof pp, path, i);
        if (json_is_string(p)) { /* tolerated: a bare string part */
            if (!first)
                gw_buf_puts(out, "\n\n");
            gw_buf_put(out, json_string_value(p), json_string_length(p));
            first = 0;
            continue;
        }
        if (!json_is_object(p))
            return gw_fail(e, GW_E_INVALID, pp, "field '%s': expected object, got %s", pp, gw_jtype(p));
        const char *type = NULL, *text = NULL;
        if (gw_get_string(p, pp, "type", GW_REQ, &type, e) < 0)
            return -1;
        if (!type_ok(type, ok_types))
            return gw_fail(e, GW_E_INVALID, pp,
                           "field '%s': content part type '%s' is not supported (the model reads text only)",
                           pp, type);
        if (gw_get_string(p, pp, "text", GW_REQ, &text, e) < 0) {
            /* refusal parts carry "refusal" instead of "text" */
            if (gw_get_string(p, pp, "refusal", GW_OPT, &text, e) <= 0) {
                char tp[GW_PARAM_MAX];
                gw_path(tp, sizeof tp, pp, "text");
                return gw_fail(e, GW_E_INVALID, tp, "missing required field '%s'", tp);
            }
        }
        if (!first)
            gw_buf_puts(out, "\n\n");
        gw_buf_puts(out, text);
        first = 0;
    }
    return 0;
}

int gw_map_sampling(const json_t *body, gw_req *r, gw_err *e)
{
    int rc;
    if ((rc = gw_get_num(body, "", "temperature", GW_OPT, 0, 2, &r->temperature, e)) < 0)
        return -1;
    r->has_temperature = rc;
    if ((rc = gw_get_num(body, "", "top_p", GW_OPT, 0, 1, &r->top_p, e)) < 0)
        return -1;
    r->has_top_p = rc;
    if ((rc = gw_get_num(body, "", "min_p", GW_OPT, 0, 1, &r->min_p, e)) < 0)
        return -1;
    r->has_min_p = rc;
    int64_t k;
    if ((rc = gw_get_int(body, "", "top_k", GW_OPT, -1, 1 << 20, &k, e)) < 0)
        return -1;
    if (rc)
        r->top_k = k < 0 ? 0 : k; /* -1 (llama.cpp's "off") means off */
    if ((rc = gw_get_int(body, "", "seed", GW_OPT, INT64_MIN, INT64_MAX, &r->seed, e)) < 0)
        return -1;
    r->has_seed = rc;
    return 0;
}

int gw_map_stop(const json_t *body, const char *key, gw_req *r, gw_err *e)
{
    json_t *v = gw_get_any(body, key);
    if (!v)
        return 0;
    if (json_is_string(v)) {
        if (json_string_length(v))
            r->stop[r->n_stop++] = ds4_xstrdup(json_string_value(v));
        return 0;
    }
    if (!json_is_array(v))
        return gw_fail(e, GW_E_INVALID, key, "field '%s': expected string or array of strings, got %s",
                       key, gw_jtype(v));
    if (json_array_size(v) > GW_MAX_STOP)
        return gw_fail(e, GW_E_INVALID, key, "field '%s': at most %d stop sequences", key, GW_MAX_STOP);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        char p[GW_PARAM_MAX];
        gw_path_idx(p, sizeof p, key, i);
        if (!json_is_string(s))
            return gw_fail(e, GW_E_INVALID, p, "field '%s': expected string, got %s", p, gw_jtype(s));
        if (json_string_length(s))
            r->stop[r->n_stop++] = ds4_xstrdup(json_string_value(s));
    }
    return 0;
}

int gw_map_effort(const char *effort, const char *path, gw_req *r, gw_err *e)
{
    if (!effort)
        return 0;
    static const char *const normal[] = {"minimal", "low", "medium", "high", "xhigh", NULL};
    if (strcmp(effort, "none") == 0) {
        r->thinking = 0;
    } else if (strcmp(effort, "max") == 0) {
        r->thinking = 1;
        r->effort_max = 1;
    } else if (type_ok(effort, normal)) {
        r->thinking = 1;
        r->effort_max = 0;
    } else {
        return gw_fail(e, GW_E_INVALID, path,
                       "field '%s': unknown reasoning effort '%s' (none, minimal, low, medium, high, xhigh, max)",
                       path, effort);
    }
    return 0;
}

int gw_map_response_format(const json_t *fmt, const char *path, gw_req *r, gw_err *e)
{
    if (!fmt || json_is_null(fmt))
        return 0;
    if (!json_is_object(fmt))
        return gw_fail(e, GW_E_INVALID, path, "field '%s': expected object, got %s", path, gw_jtype(fmt));
    const char *type = NULL;
    if (gw_get_string(fmt, path, "type", GW_REQ, &type, e) < 0)
        return -1;
    json_t *schema = NULL;
    char sp[GW_PARAM_MAX];
    if (!strcmp(type, "text"))
        return 0;
    if (!strcmp(type, "json_object")) {
        schema = json_pack("{s:s}", "type", "object");
    } else if (!strcmp(type, "json_schema")) {
        json_t *js = json_object_get(fmt, "json_schema"); /* chat nests it; Responses does not */
        const json_t *holder = json_is_object(js) ? js : fmt;
        gw_path(sp, sizeof sp, path, json_is_object(js) ? "json_schema" : "");
        if (!json_is_object(js))
            snprintf(sp, sizeof sp, "%s", path);
        json_t *s = NULL;
        if (gw_get_object(holder, sp, "schema", GW_REQ, &s, e) < 0)
            return -1;
        schema = json_deep_copy(s);
    } else {
        gw_path(sp, sizeof sp, path, "type");
        return gw_fail(e, GW_E_INVALID, sp, "field '%s': unknown format '%.40s' (text, json_object, json_schema)", sp,
                       type);
    }
    json_decref(r->response_format);
    r->response_format = schema;
    return 0;
}

int gw_map_test_output(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e)
{
    const char *t = NULL;
    int rc = gw_get_string(body, "", "ds4_test_output", GW_OPT, &t, e);
    if (rc <= 0)
        return rc;
    if (!o || !o->test_mode)
        return gw_fail(e, GW_E_PERMISSION, "ds4_test_output",
                       "field 'ds4_test_output': forced decoding is only available when the stack runs with --test-mode");
    r->test_output = ds4_xstrdup(t);
    return 0;
}
