/* gw_gen.c - the generation driver (see gw_gen.h): prompt preparation at
 * tokenizerd, the engine job, output parsing, finish and replay memory. */
#include "gw_gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "tokenizerd/tok_chat.h"
#include "tokenizerd/tok_dsml.h"
#include "util.h"

#define DSML_OPEN "\n\n<\xef\xbd\x9c" "DSML\xef\xbd\x9ctool_calls>\n"
#define DSML_INVOKE "<\xef\xbd\x9c" "DSML\xef\xbd\x9cinvoke name=\""

void gw_ctx_set_vocab(gw_ctx *cx, const tok_vocab *v)
{
    cx->eos_id = tok_vocab_added(v, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    cx->think_end_id = tok_vocab_added(v, "</think>");
    __atomic_store_n(&cx->vocab, v, __ATOMIC_RELEASE);
}

const tok_vocab *gw_ctx_vocab(gw_ctx *cx)
{
    return __atomic_load_n(&cx->vocab, __ATOMIC_ACQUIRE);
}

int gw_script_check(const json_t *script, char *err, size_t errlen)
{
    if (!json_is_array(script) || !json_array_size(script)) {
        ds4_seterr(err, errlen, "expected a non-empty JSON array");
        return -1;
    }
    size_t i;
    json_t *t;
    json_array_foreach(script, i, t) {
        if (json_is_string(t))
            continue;
        if (!json_is_string(json_object_get(t, "output")) ||
            (json_object_get(t, "match") && !json_is_string(json_object_get(t, "match")))) {
            ds4_seterr(err, errlen, "entry %zu: expected a string or {\"match\": string, \"output\": string}", i);
            return -1;
        }
    }
    return 0;
}

const char *gw_ctx_script_pick(gw_ctx *cx, const json_t *messages, const char *rid)
{
    size_t n = json_array_size(cx->test_script);
    char *text = messages ? json_dumps(messages, JSON_COMPACT) : NULL;
    const char *out = NULL;
    long last = -1;
    pthread_mutex_lock(&cx->script_mu);
    if (!cx->script_used)
        cx->script_used = ds4_xcalloc(n ? n : 1, 1);
    /* entries whose match string occurs take precedence over bare ones */
    int specific = 0;
    for (size_t i = 0; i < n && !specific; i++) {
        const char *m = json_string_value(json_object_get(json_array_get(cx->test_script, i), "match"));
        specific = m && text && strstr(text, m);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(cx->test_script, i);
        const char *m = json_string_value(json_object_get(e, "match"));
        if (specific ? !(m && text && strstr(text, m)) : m != NULL)
            continue;
        last = (long)i;
        if (!cx->script_used[i]) {
            cx->script_used[i] = 1;
            break;
        }
    }
    if (last >= 0) {
        json_t *e = json_array_get(cx->test_script, (size_t)last);
        out = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "output"));
        ds4_log_req(DS4_LOG_INFO, rid, "test script: answer %ld of %zu", last + 1, n);
    }
    pthread_mutex_unlock(&cx->script_mu);
    free(text);
    return out;
}

static void stat_add(gw_gen *g, unsigned i, uint64_t v)
{
    if (g->cx->stats)
        ds4_stats_add(g->cx->stats, i, v);
}

void gw_err_from_wire(gw_err *e, int code, const char *msg, const char *field,
                      unsigned retry_after_ms)
{
    int kind;
    switch (code) {
    case DS4W_E_BUSY: kind = GW_E_RATE_LIMIT; break;
    case DS4W_E_CONTEXT_OVERFLOW:
    case DS4W_E_INVALID_REQUEST: kind = GW_E_INVALID; break;
    case DS4W_E_TOO_LARGE: kind = GW_E_TOO_LARGE; break;
    case DS4W_E_NOT_READY:
    case DS4W_E_UNAVAILABLE: kind = GW_E_UNAVAILABLE; break;
    case DS4W_E_FORBIDDEN: kind = GW_E_PERMISSION; break;
    default: kind = GW_E_SERVER; break;
    }
    gw_fail(e, kind, field, "%s", msg ? msg : ds4w_err_name(code));
    if (code == DS4W_E_CONTEXT_OVERFLOW)
        snprintf(e->code, sizeof e->code, "context_length_exceeded");
    if (code == DS4W_E_BUSY)
        e->retry_after_s = retry_after_ms ? (retry_after_ms + 999) / 1000 : 1;
}

/* Turn an ERROR message into g->err. */
static void err_from_msg(gw_err *e, const gw_msg *m)
{
    const char *field = json_string_value(json_object_get(m->json, "field"));
    json_t *ra = json_object_get(m->json, "retry_after_ms");
    gw_err_from_wire(e, gw_msg_err_code(m), gw_msg_err_text(m), field,
                     json_is_integer(ra) ? (unsigned)json_integer_value(ra) : 0);
}

const char *gw_finish_openai(int f)
{
    switch (f) {
    case GW_FIN_TOOL_CALLS: return "tool_calls";
    case GW_FIN_LENGTH: return "length";
    default: return "stop";
    }
}

const char *gw_finish_anthropic(int f)
{
    switch (f) {
    case GW_FIN_TOOL_CALLS: return "tool_use";
    case GW_FIN_LENGTH: return "max_tokens";
    case GW_FIN_STOP_SEQ: return "stop_sequence";
    default: return "end_turn";
    }
}

/* ---- output parsing ------------------------------------------------------ */

static void emit_content(gw_gen *g, const char *s, size_t n)
{
    if (!n)
        return;
    gw_buf_put(&g->content, s, n);
    if (g->stream && g->ops->s_content)
        g->ops->s_content(g, s, n);
}

/* Longest suffix of s[0..n) that is a proper prefix of some stop string. */
static size_t stop_hold_len(const gw_req *r, const char *s, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        for (size_t k = sl - 1 < n ? sl - 1 : n; k > best; k--)
            if (memcmp(s + n - k, r->stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

/* Visible text through the stop-string filter. */
static void content_text(gw_gen *g, const char *s, size_t n)
{
    if (g->stop_hit || !n)
        return;
    if (!g->req->n_stop) {
        emit_content(g, s, n);
        return;
    }
    gw_buf_put(&g->hold, s, n);
    const char *h = g->hold.p;
    size_t hl = g->hold.len, at = (size_t)-1;
    int which = -1;
    for (size_t i = 0; i < g->req->n_stop; i++) {
        const char *p = memmem(h, hl, g->req->stop[i], strlen(g->req->stop[i]));
        if (p && (size_t)(p - h) < at) {
            at = (size_t)(p - h);
            which = (int)i;
        }
    }
    if (which >= 0) {
        emit_content(g, h, at);
        g->stop_hit = 1;
        g->stop_seq = g->req->stop[which];
        gw_buf_reset(&g->hold);
        gw_gen_cancel(g, "stop sequence matched");
        return;
    }
    size_t keep = stop_hold_len(g->req, h, hl);
    emit_content(g, h, hl - keep);
    gw_buf_consume(&g->hold, hl - keep);
}

static void add_call(gw_gen *g, const char *name, size_t nl, const char *args, size_t al)
{
    if (!g->req->parallel_tool_calls && g->ncalls >= 1)
        return; /* parallel_tool_calls: false keeps the first call only */
    g->calls = ds4_xrealloc(g->calls, (g->ncalls + 1) * sizeof *g->calls);
    gw_call *c = &g->calls[g->ncalls];
    memset(c, 0, sizeof *c);
    gw_rand_id(c->id, sizeof c->id, g->ops->call_prefix);
    gw_rand_id(c->item_id, sizeof c->item_id, "fc_");
    c->name = ds4_xstrndup(name, nl);
    c->args = ds4_xstrndup(args, al);
    g->ncalls++;
    stat_add(g, DS4S_GW_tool_calls, 1);
    if (g->stream && g->ops->s_tool_call)
        g->ops->s_tool_call(g, g->ncalls - 1);
}

static void dsml_cb(void *ud, const struct tok_dsml_event *ev)
{
    gw_gen *g = ud;
    if (g->stop_hit)
        return;
    switch (ev->type) {
    case TOK_DSML_EV_REASONING:
        gw_buf_put(&g->reasoning, ev->text, ev->len);
        if (g->stream && g->ops->s_reasoning)
            g->ops->s_reasoning(g, ev->text, ev->len);
        break;
    case TOK_DSML_EV_CONTENT: content_text(g, ev->text, ev->len); break;
    case TOK_DSML_EV_TOOL_CALL: add_call(g, ev->name, ev->name_len, ev->args, ev->args_len); break;
    default: break;
    }
}

/* Detokenized text of generated tokens into the parser (or the content). */
static void feed_text(gw_gen *g, const char *s, size_t n)
{
    if (!n)
        return;
    if (g->dsml)
        tok_dsml_feed(g->dsml, s, n);
    else
        content_text(g, s, n);
}

void gw_gen_feed_ids(gw_gen *g, const int32_t *ids, size_t n, json_t *logprobs)
{
    if (n && !g->first_token_ns) {
        g->first_token_ns = ds4_now_ns();
        stat_add(g, DS4S_GW_ttft_ns, g->first_token_ns - g->start_ns);
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (g->nout == g->capout) {
            g->capout = g->capout ? g->capout * 2 : 256;
            g->out = ds4_xrealloc(g->out, g->capout * sizeof *g->out);
        }
        g->out[g->nout++] = id;
        if (g->start_in_reasoning && !g->seen_think_end) {
            if (id == g->cx->think_end_id)
                g->seen_think_end = 1;
            else
                g->n_reasoning_tokens++;
        }
        if (g->stop_hit || id == g->cx->eos_id || id < 0)
            continue;
        g->tbuf.len = 0;
        if (tok_detok_feed(&g->detok, (uint32_t)id, &g->tbuf) == 0)
            feed_text(g, g->tbuf.data, g->tbuf.len);
    }
    if (json_is_array(logprobs) && g->req->logprobs) {
        if (!g->logprobs)
            g->logprobs = json_array();
        json_array_extend(g->logprobs, logprobs);
        if (g->stream && g->ops->s_logprobs)
            g->ops->s_logprobs(g, logprobs);
    }
}

/* ---- replay memory ------------------------------------------------------- */

/* Decode ids to text; 0 when the bytes are valid UTF-8 (exact replay needs
 * the text to be exactly what the ids decode to). */
static int ids_text(const tok_vocab *v, const int32_t *ids, size_t n, tok_buf *out)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= v->n)
            return -1;
    if (tok_decode_bytes(v, (const uint32_t *)ids, n, out, NULL))
        return -1;
    return gw_utf8_valid(out->data ? out->data : "", out->len) ? 0 : -1;
}

static void store_turn(gw_gen *g)
{
    if (!g->cx->replay || g->req->api == GW_API_COMPLETIONS || g->stop_hit)
        return;
    size_t end = g->nout;
    if (end && g->out[end - 1] == g->cx->eos_id)
        end--;
    size_t rb = 0, re = 0, bb = 0;
    if (g->start_in_reasoning) {
        size_t k = 0;
        while (k < end && g->out[k] != g->cx->think_end_id)
            k++;
        if (k == end)
            return; /* cut off inside the reasoning: nothing to replay */
        re = k;
        bb = k + 1;
    }
    size_t nbody = g->nprefix + (end - bb);
    int32_t *body = ds4_xmalloc((nbody + 1) * sizeof *body);
    if (g->nprefix)
        memcpy(body, g->prefix, g->nprefix * sizeof *body);
    memcpy(body + g->nprefix, g->out + bb, (end - bb) * sizeof *body);
    tok_buf rt = {0}, bt = {0};
    tok_buf_reserve(&rt, 16);
    tok_buf_reserve(&bt, 16);
    if (ids_text(g->cx->vocab, g->out + rb, re - rb, &rt) == 0 &&
        ids_text(g->cx->vocab, body, nbody, &bt) == 0) {
        gw_replay_call *calls = ds4_xcalloc(g->ncalls + 1, sizeof *calls);
        for (size_t i = 0; i < g->ncalls; i++)
            calls[i] = (gw_replay_call){g->calls[i].id, g->calls[i].name, g->calls[i].args};
        const char *keys[2];
        size_t nk = 0;
        if (g->turn_key[0])
            keys[nk++] = g->turn_key;
        if (g->msg_item[0])
            keys[nk++] = g->msg_item;
        gw_replay_turn t = {
            .reasoning = g->start_in_reasoning ? rt.data : NULL,
            .reasoning_len = rt.len,
            .body = bt.data,
            .body_len = bt.len,
            .reasoning_ids = g->start_in_reasoning ? g->out + rb : NULL,
            .n_reasoning_ids = re - rb,
            .body_ids = body,
            .n_body_ids = nbody,
            .content = g->content.p ? g->content.p : "",
            .content_len = g->content.len,
            .calls = calls,
            .n_calls = g->ncalls,
            .keys = keys,
            .n_keys = nk,
        };
        gw_replay_put(g->cx->replay, &t);
        free(calls);
    } else {
        ds4_log_req(DS4_LOG_DEBUG, g->rid, "turn not remembered for replay (not valid UTF-8)");
    }
    tok_buf_free(&rt);
    tok_buf_free(&bt);
    free(body);
}

void gw_gen_complete(gw_gen *g, const char *ef, uint64_t prompt_tokens, uint64_t cached,
                     uint64_t completion)
{
    g->tbuf.len = 0;
    tok_detok_flush(&g->detok, &g->tbuf);
    if (!g->stop_hit)
        feed_text(g, g->tbuf.data, g->tbuf.len);
    if (g->dsml)
        tok_dsml_finish(g->dsml);
    if (!g->stop_hit && g->hold.len) {
        emit_content(g, g->hold.p, g->hold.len);
        gw_buf_reset(&g->hold);
    }
    g->prompt_tokens = prompt_tokens;
    g->cached_tokens = cached;
    g->completion_tokens = completion;
    if (g->stop_hit)
        g->finish = GW_FIN_STOP_SEQ;
    else if (strcmp(ef, "stop") == 0)
        g->finish = g->ncalls ? GW_FIN_TOOL_CALLS : GW_FIN_STOP;
    else if (strcmp(ef, "length") == 0)
        g->finish = GW_FIN_LENGTH;
    else if (strcmp(ef, "cancelled") == 0)
        g->finish = GW_FIN_CANCELLED;
    else
        g->finish = GW_FIN_ERROR;
    if (g->finish == GW_FIN_ERROR && !g->failed) {
        g->failed = 1;
        gw_fail(&g->err, GW_E_SERVER, NULL, "the engine failed during generation");
    }
    stat_add(g, DS4S_GW_prompt_tokens, prompt_tokens);
    stat_add(g, DS4S_GW_completion_tokens, completion);
    if (g->finish == GW_FIN_STOP || g->finish == GW_FIN_TOOL_CALLS || g->finish == GW_FIN_LENGTH)
        store_turn(g);
    g->done = 1;
    if (g->stream && g->began && !g->ended && g->ops->s_end) {
        g->ops->s_end(g);
        g->ended = 1;
    }
}

void gw_gen_timings_comment(gw_gen *g)
{
    if (!g->cx->test_mode || !json_is_object(g->timings))
        return;
    json_t *t = json_deep_copy(g->timings);
    if (g->first_token_ns)
        json_object_set_new(t, "gw_ttft_ms", json_real((double)(g->first_token_ns - g->start_ns) / 1e6));
    char *s = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    if (s) {
        gw_buf_puts(&g->sse, ": ds4-timings ");
        gw_buf_puts(&g->sse, s);
        gw_buf_puts(&g->sse, "\n\n");
        free(s);
    }
}

/* ---- setup --------------------------------------------------------------- */

void gw_gen_init(gw_gen *g, gw_ctx *cx, gw_req *req, const gw_api_ops *ops,
                 const uint8_t reqid_in[16], int hup_fd)
{
    memset(g, 0, sizeof *g);
    g->cx = cx;
    g->req = req;
    g->ops = ops;
    g->hup_fd = hup_fd;
    g->stream = req->stream;
    g->max_tokens = -1;
    g->s_rs_idx = g->s_msg_idx = -1;
    g->start_ns = ds4_now_ns();
    g->created = (int64_t)time(NULL);
    uint8_t reqid[16];
    if (reqid_in)
        memcpy(reqid, reqid_in, 16);
    else
        ds4w_uuid_new(reqid);
    ds4w_uuid_format(reqid, g->rid);
    g->w = cx->up ? gw_waiter_new(cx->up, reqid) : NULL; /* NULL: unit tests */
    tok_detok_init(&g->detok, cx->vocab);
    tok_buf_reserve(&g->tbuf, 64);
    gw_rand_id(g->turn_key, sizeof g->turn_key, "ds4r_");
    static const char *const idp[] = {"", "chatcmpl-", "cmpl-", "resp_", "msg_", "msg_"};
    gw_rand_id(g->id, sizeof g->id, idp[req->api >= 1 && req->api <= 5 ? req->api : 0]);
    if (req->api == GW_API_RESPONSES) {
        gw_rand_id(g->msg_item, sizeof g->msg_item, "msg_");
        gw_rand_id(g->rs_item, sizeof g->rs_item, "rs_");
    }
}

void gw_gen_free(gw_gen *g)
{
    if (g->w)
        gw_waiter_free(g->w);
    free(g->prompt);
    free(g->forced);
    free(g->prefix_text);
    free(g->prefix);
    free(g->out);
    tok_buf_free(&g->tbuf);
    if (g->dsml)
        tok_dsml_free(g->dsml);
    gw_buf_free(&g->hold);
    gw_buf_free(&g->reasoning);
    gw_buf_free(&g->content);
    for (size_t i = 0; i < g->ncalls; i++) {
        free(g->calls[i].name);
        free(g->calls[i].args);
    }
    free(g->calls);
    json_decref(g->logprobs);
    json_decref(g->timings);
    json_decref(g->s_items);
    gw_buf_free(&g->sse);
    memset(g, 0, sizeof *g);
}

/* Wait for the reply of type want from a stage. 0 with *out, -1 with e,
 * -2 when the client went away. */
static int wait_reply(gw_waiter *w, int hup_fd, int stage, uint16_t want, int timeout_ms,
                      gw_msg **out, gw_err *e)
{
    static const char *const names[] = {"tokenizerd", "engined"};
    uint64_t deadline = ds4_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = ds4_now_ns();
        int left = now >= deadline ? 0 : (int)((deadline - now) / 1000000ull) + 1;
        gw_msg *m = NULL;
        int rc = gw_waiter_next(w, hup_fd, left, &m);
        if (rc == 0) {
            gw_fail(e, GW_E_UNAVAILABLE, NULL, "%s did not answer within %d ms", names[stage],
                    timeout_ms);
            return -1;
        }
        if (rc == -1)
            return -2;
        if (rc == -2) {
            gw_fail(e, GW_E_UNAVAILABLE, NULL, "the gateway is shutting down");
            return -1;
        }
        if (m->stage != stage) {
            gw_msg_free(m);
            continue;
        }
        if (m->type == DS4W_T_ERROR) {
            err_from_msg(e, m);
            gw_msg_free(m);
            return -1;
        }
        if (m->type != want) {
            gw_msg_free(m);
            continue;
        }
        *out = m;
        return 0;
    }
}

/* One request/reply with tokenizerd. */
static int tok_call(gw_gen *g, uint16_t type, json_t *req, uint16_t want, gw_msg **out)
{
    ds4w_out o;
    ds4w_out_init(&o, type, NULL);
    if (g->cx->test_mode)
        o.flags |= DS4W_FLAG_TEST;
    ds4w_out_json(&o, req);
    json_decref(req);
    gw_waiter_send(g->w, GW_TOK, &o, 1);
    return wait_reply(g->w, g->hup_fd, GW_TOK, want, g->cx->stage_timeout_ms, out, &g->err);
}

/* TOKENIZE text in raw mode (added tokens as the model samples them). */
static int tokenize_raw(gw_gen *g, const char *text, int add_bos, int32_t **ids, size_t *n)
{
    gw_msg *m = NULL;
    int rc = tok_call(g, DS4W_T_TOKENIZE,
                      json_pack("{s:s,s:s,s:b}", "text", text, "mode", "raw", "add_bos", add_bos),
                      DS4W_T_TOKENS, &m);
    if (rc)
        return rc;
    *n = m->nids;
    *ids = m->ids;
    m->ids = NULL;
    if (!*ids)
        *ids = ds4_xmalloc(sizeof **ids);
    gw_msg_free(m);
    return 0;
}

static void append_ids(int32_t **a, size_t *na, const int32_t *b, size_t nb)
{
    *a = ds4_xrealloc(*a, (*na + nb + 1) * sizeof **a);
    memcpy(*a + *na, b, nb * sizeof *b);
    *na += nb;
}

/* RENDER_CHAT of the canonical messages. */
static int render_chat(gw_gen *g)
{
    gw_req *r = g->req;
    int forced_tool = r->tools && (r->tool_choice == GW_TC_REQUIRED || r->tool_choice == GW_TC_NAMED);
    json_t *q = json_object();
    json_object_set(q, "messages", r->messages);
    if (r->tools && r->tool_choice != GW_TC_NONE)
        json_object_set(q, "tools", r->tools);
    /* tool_choice required/named: answer in chat mode with the DSML opening
     * prefilled right after </think> (see docs/ARCHITECTURE.md) */
    json_object_set_new(q, "thinking", json_boolean(r->thinking && !forced_tool));
    if (r->effort_max && !forced_tool)
        json_object_set_new(q, "reasoning_effort", json_string("max"));
    if (g->cx->n_ctx)
        json_object_set_new(q, "n_ctx", json_integer(g->cx->n_ctx));
    gw_msg *m = NULL;
    int rc = tok_call(g, DS4W_T_RENDER_CHAT, q, DS4W_T_RENDERED, &m);
    if (rc)
        return rc;
    const char *ends = json_string_value(json_object_get(json_object_get(m->json, "meta"), "ends_with"));
    g->start_in_reasoning = ends && (strcmp(ends, "think_open") == 0 || strcmp(ends, "<think>") == 0);
    g->prompt = m->ids;
    g->nprompt = m->nids;
    m->ids = NULL;
    gw_msg_free(m);
    if (forced_tool) {
        gw_buf p = {0};
        gw_buf_puts(&p, DSML_OPEN);
        if (r->tool_choice == GW_TC_NAMED) {
            gw_buf_puts(&p, DSML_INVOKE);
            gw_buf_puts(&p, r->tool_name);
            gw_buf_puts(&p, "\">\n");
        }
        g->prefix_text = p.p;
        rc = tokenize_raw(g, g->prefix_text, 0, &g->prefix, &g->nprefix);
        if (rc)
            return rc;
        append_ids(&g->prompt, &g->nprompt, g->prefix, g->nprefix);
    }
    return 0;
}

int gw_gen_prepare(gw_gen *g)
{
    gw_req *r = g->req;
    int rc;
    if (r->api == GW_API_COMPLETIONS) {
        if (r->prompt_ids) {
            for (size_t i = 0; i < r->n_prompt_ids; i++)
                if (r->prompt_ids[i] < 0 || (uint32_t)r->prompt_ids[i] >= g->cx->vocab->n) {
                    char p[64];
                    snprintf(p, sizeof p, "prompt[%zu]", i);
                    return gw_fail(&g->err, GW_E_INVALID, p, "field '%s': token id %d is not in the vocabulary",
                                   p, r->prompt_ids[i]);
                }
            g->prompt = ds4_xmalloc((r->n_prompt_ids + 1) * sizeof *g->prompt);
            memcpy(g->prompt, r->prompt_ids, r->n_prompt_ids * sizeof *g->prompt);
            g->nprompt = r->n_prompt_ids;
        } else if ((rc = tokenize_raw(g, r->prompt ? r->prompt : "", 1, &g->prompt, &g->nprompt))) {
            return rc;
        }
    } else if ((rc = render_chat(g))) {
        return rc;
    }
    if (!g->nprompt)
        return gw_fail(&g->err, GW_E_INVALID, "prompt", "the prompt is empty");
    const char *forced = r->test_output;
    if (!forced && g->cx->test_script)
        forced = gw_ctx_script_pick(g->cx, r->api == GW_API_COMPLETIONS ? NULL : r->messages, g->rid);
    if (forced && (rc = tokenize_raw(g, forced, 0, &g->forced, &g->nforced)))
        return rc;
    uint32_t n_ctx = g->cx->n_ctx ? g->cx->n_ctx : 32768;
    if (g->nprompt >= n_ctx) {
        gw_fail(&g->err, GW_E_INVALID, r->api == GW_API_COMPLETIONS ? "prompt" : "messages",
                "This model's maximum context length is %u tokens, but the prompt has %zu tokens "
                "(the prompt must leave room for at least one generated token).",
                n_ctx, g->nprompt);
        snprintf(g->err.code, sizeof g->err.code, "context_length_exceeded");
        return -1;
    }
    uint64_t room = n_ctx - g->nprompt;
    if (r->max_tokens >= 0)
        g->max_tokens = (uint64_t)r->max_tokens < room ? r->max_tokens : (int64_t)room;
    gw_gen_start_output(g, g->start_in_reasoning);
    return 0;
}

void gw_gen_start_output(gw_gen *g, int start_in_reasoning)
{
    g->start_in_reasoning = start_in_reasoning;
    if (g->req->api != GW_API_COMPLETIONS && !g->dsml) {
        g->dsml = tok_dsml_new(start_in_reasoning, dsml_cb, g);
        if (g->prefix_text)
            tok_dsml_feed(g->dsml, g->prefix_text, strlen(g->prefix_text));
    }
}

void gw_gen_on_accepted(gw_gen *g, uint64_t cached)
{
    g->accepted = 1;
    g->next_seq = 1;
    g->cached_tokens = cached;
    g->prompt_tokens = g->nprompt;
    if (g->stream && g->ops->s_begin && !g->began) {
        g->began = 1;
        g->ops->s_begin(g);
    }
}

int gw_gen_submit(gw_gen *g)
{
    gw_req *r = g->req;
    json_t *p = json_object();
    if (g->max_tokens >= 0)
        json_object_set_new(p, "max_tokens", json_integer(g->max_tokens));
    if (r->has_temperature)
        json_object_set_new(p, "temperature", json_real(r->temperature));
    if (r->has_top_p)
        json_object_set_new(p, "top_p", json_real(r->top_p));
    if (r->top_k >= 0)
        json_object_set_new(p, "top_k", json_integer(r->top_k));
    if (r->has_min_p)
        json_object_set_new(p, "min_p", json_real(r->min_p));
    if (r->has_seed)
        json_object_set_new(p, "seed", json_integer(r->seed));
    if (g->cx->eos_id >= 0)
        json_object_set_new(p, "stop_ids", json_pack("[i]", g->cx->eos_id));
    if (r->logprobs)
        json_object_set_new(p, "logprobs", json_integer(r->top_logprobs > 0 ? r->top_logprobs : 1));
    json_object_set_new(p, "thinking", json_boolean(g->start_in_reasoning));
    json_object_set_new(p, "dsml_greedy", json_boolean(r->api != GW_API_COMPLETIONS));
    if (r->session)
        json_object_set_new(p, "session", json_string(r->session));
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_SUBMIT, NULL);
    if (g->cx->test_mode)
        o.flags |= DS4W_FLAG_TEST;
    ds4w_out_json(&o, p);
    json_decref(p);
    ds4w_out_i32(&o, g->prompt, g->nprompt);
    if (g->forced)
        ds4w_out_i32(&o, g->forced, g->nforced);
    gw_waiter_send(g->w, GW_ENG, &o, 1);
    g->submitted = 1;
    gw_msg *m = NULL;
    int rc = wait_reply(g->w, g->hup_fd, GW_ENG, DS4W_T_GEN_ACCEPTED, g->cx->stage_timeout_ms, &m,
                        &g->err);
    if (rc == -2) {
        gw_gen_cancel(g, "client gone before acceptance");
        return -2;
    }
    if (rc) {
        if (g->err.kind == GW_E_UNAVAILABLE)
            gw_gen_cancel(g, "no acceptance in time");
        g->submitted = 0; /* refused: nothing to cancel */
        return -1;
    }
    json_t *c = json_object_get(m->json, "cached_tokens");
    uint64_t cached = json_is_integer(c) ? (uint64_t)json_integer_value(c) : 0;
    gw_msg_free(m);
    ds4_log_req(DS4_LOG_DEBUG, g->rid, "accepted: %zu prompt tokens, max_tokens %lld", g->nprompt,
                (long long)g->max_tokens);
    gw_gen_on_accepted(g, cached);
    return 0;
}

void gw_gen_cancel(gw_gen *g, const char *why)
{
    if (!g->submitted || g->done || !g->w)
        return;
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_CANCEL, NULL);
    json_t *j = json_pack("{s:s}", "reason", why);
    ds4w_out_json(&o, j);
    json_decref(j);
    gw_waiter_send(g->w, GW_ENG, &o, 0);
    ds4_log_req(DS4_LOG_INFO, g->rid, "cancel sent: %s", why);
    if (!g->stop_hit)
        g->submitted = 0; /* a stop-string cancel still waits for GEN_DONE */
}

/* The stream failed after acceptance: record and close the API stream. */
static void fail_stream(gw_gen *g)
{
    g->failed = 1;
    g->finish = GW_FIN_ERROR;
    g->done = 1;
    if (g->stream && g->began && !g->ended && g->ops->s_end) {
        g->ops->s_end(g);
        g->ended = 1;
    }
}

int gw_gen_step(gw_gen *g, int timeout_ms)
{
    if (g->done)
        return 1;
    gw_msg *m = NULL;
    int rc = gw_waiter_next(g->w, g->hup_fd, timeout_ms, &m);
    if (rc == 0)
        return 0;
    if (rc == -1) {
        gw_gen_cancel(g, "client disconnected");
        return -1;
    }
    if (rc == -2) {
        gw_gen_cancel(g, "gateway shutting down");
        gw_fail(&g->err, GW_E_UNAVAILABLE, NULL, "the gateway is shutting down");
        fail_stream(g);
        return -2;
    }
    if (m->stage != GW_ENG) {
        gw_msg_free(m);
        return 1;
    }
    if (m->type == DS4W_T_ERROR) {
        err_from_msg(&g->err, m);
        if (m->synthetic)
            gw_fail(&g->err, GW_E_UNAVAILABLE, NULL, "engined went away during generation: %s",
                    gw_msg_err_text(m));
        ds4_log_req(DS4_LOG_WARN, g->rid, "generation failed: %s", g->err.msg);
        stat_add(g, DS4S_GW_upstream_errors, 1);
        gw_msg_free(m);
        g->submitted = 0;
        fail_stream(g);
        return 1;
    }
    if (m->seq != g->next_seq) {
        gw_fail(&g->err, GW_E_SERVER, NULL, "engined stream out of order (message %u, expected %u)",
                m->seq, g->next_seq);
        gw_msg_free(m);
        gw_gen_cancel(g, "stream out of order");
        fail_stream(g);
        return 1;
    }
    g->next_seq++;
    if (m->type == DS4W_T_GEN_EVENT) {
        gw_gen_feed_ids(g, m->ids, m->nids, json_object_get(m->json, "logprobs"));
    } else if (m->type == DS4W_T_GEN_DONE) {
        json_t *u = json_object_get(m->json, "usage");
        const char *fr = json_string_value(json_object_get(m->json, "finish_reason"));
        uint64_t pt = (uint64_t)json_integer_value(json_object_get(u, "prompt_tokens"));
        uint64_t ct = (uint64_t)json_integer_value(json_object_get(u, "cached_tokens"));
        uint64_t gt = (uint64_t)json_integer_value(json_object_get(u, "completion_tokens"));
        json_t *t = json_object_get(m->json, "timings");
        if (t)
            g->timings = json_incref(t);
        if (fr && strcmp(fr, "error") == 0) {
            err_from_msg(&g->err, m);
            g->failed = 1;
        }
        g->submitted = 0;
        gw_gen_complete(g, fr ? fr : "error", pt ? pt : g->nprompt, ct, gt ? gt : g->nout);
        ds4_log_req(DS4_LOG_INFO, g->rid, "done: %s, %llu prompt (%llu cached), %llu generated",
                    fr ? fr : "?", (unsigned long long)g->prompt_tokens,
                    (unsigned long long)g->cached_tokens, (unsigned long long)g->completion_tokens);
    }
    gw_msg_free(m);
    return 1;
}

int gw_count_tokens(gw_ctx *cx, gw_req *r, const uint8_t reqid[16], int hup_fd, uint64_t *count,
                    gw_err *e)
{
    gw_waiter *w = gw_waiter_new(cx->up, reqid);
    json_t *q = json_object();
    json_object_set(q, "messages", r->messages);
    if (r->tools && r->tool_choice != GW_TC_NONE)
        json_object_set(q, "tools", r->tools);
    json_object_set_new(q, "thinking", json_boolean(r->thinking));
    if (r->effort_max)
        json_object_set_new(q, "reasoning_effort", json_string("max"));
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_COUNT_TOKENS, NULL);
    ds4w_out_json(&o, q);
    json_decref(q);
    gw_waiter_send(w, GW_TOK, &o, 1);
    gw_msg *m = NULL;
    int rc = wait_reply(w, hup_fd, GW_TOK, DS4W_T_TOKEN_COUNT, cx->stage_timeout_ms, &m, e);
    if (rc == 0) {
        *count = (uint64_t)json_integer_value(json_object_get(m->json, "count"));
        gw_msg_free(m);
    } else if (rc == -2) {
        gw_fail(e, GW_E_INVALID, NULL, "client disconnected");
        rc = -1;
    }
    gw_waiter_free(w);
    return rc;
}
