/* tok_service.c - tokenizerd request handlers (see tok_service.h). */
#include "tok_service.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tok_chat.h"
#include "tok_detok.h"
#include "util.h"

/* Record an error: message into err, field (may be NULL) into s->field. */
static int fail(tok_service *s, int code, const char *field, char *err, size_t errlen,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail(tok_service *s, int code, const char *field, char *err, size_t errlen,
                const char *fmt, ...)
{
    s->field[0] = 0;
    if (field)
        snprintf(s->field, sizeof s->field, "%s", field);
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Add to a tokenizerd counter (no-op without a stats segment). */
static void stat_add(tok_service *s, unsigned idx, uint64_t v)
{
    if (s->stats)
        ds4_stats_add(s->stats, idx, v);
}

int tok_service_init(tok_service *s, const tok_vocab *v, ds4_stats *stats,
                     const char *model, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->v = v;
    s->stats = stats;
    s->model = model;
    s->start_ns = ds4_now_ns();
    s->enc = tok_encoder_new(v, err, errlen);
    if (!s->enc)
        return -1;
    const char *bos = tok_chat_constant("bos_token");
    s->bos_id = bos ? tok_vocab_added(v, bos) : -1;
    if (stats)
        ds4_stats_set(stats, DS4S_TOK_vocab_size, v->n);
    return 0;
}

void tok_service_fini(tok_service *s)
{
    tok_encoder_free(s->enc);
    s->enc = NULL;
}

/* Copy ids into the reply as an I32 frame. */
static void out_ids(ds4w_out *out, const tok_ids *ids)
{
    DS4_ASSERT(sizeof(int32_t) == sizeof(uint32_t));
    ds4w_out_i32(out, (const int32_t *)ids->v, ids->n);
}

/* Reply with one JSON object (reference stolen). */
static int reply_json(ds4w_out *out, uint16_t type, const ds4w_msg *m, json_t *obj)
{
    ds4w_out_init(out, type, m->reqid);
    ds4w_out_json(out, obj);
    json_decref(obj);
    return DS4W_OK;
}

/* PING -> PONG: always answered, ready once the service exists. */
static int h_ping(tok_service *s, const ds4w_msg *m, ds4w_out *out)
{
    json_t *o = json_pack("{s:s,s:I,s:s,s:i,s:b,s:I,s:b}", "daemon", "tokenizerd", "pid",
                          (json_int_t)getpid(), "version", TOKENIZERD_VERSION, "proto",
                          DS4W_VERSION, "ready", 1, "uptime_ms",
                          (json_int_t)((ds4_now_ns() - s->start_ns) / 1000000u), "test_mode",
                          s->test_mode);
    if (s->model)
        json_object_set_new(o, "model", json_string(s->model));
    return reply_json(out, DS4W_T_PONG, m, o);
}

/* STATS_GET -> STATS: every counter of the tokenizerd table by name. */
static int h_stats(tok_service *s, const ds4w_msg *m, ds4w_out *out)
{
    size_t n;
    const struct ds4_stat_def *defs = ds4_stats_table("tokenizerd", &n);
    json_t *c = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(c, defs[i].name,
                            json_integer((json_int_t)ds4_stats_get(s->stats, (unsigned)i)));
    json_t *info = json_pack("{s:I}", "vocab_size", (json_int_t)s->v->n);
    if (s->model)
        json_object_set_new(info, "model", json_string(s->model));
    json_t *o = json_pack("{s:s,s:o,s:o}", "daemon", "tokenizerd", "counters", c, "info", info);
    return reply_json(out, DS4W_T_STATS, m, o);
}

/* Parse the optional "mode" field: plain (default) or raw. */
static int get_mode(tok_service *s, const json_t *j, enum tok_mode *mode, char *err, size_t errlen)
{
    const json_t *v = json_object_get(j, "mode");
    *mode = TOK_MODE_PLAIN;
    if (!v)
        return DS4W_OK;
    const char *t = json_string_value(v);
    if (t && strcmp(t, "plain") == 0)
        return DS4W_OK;
    if (t && strcmp(t, "raw") == 0) {
        *mode = TOK_MODE_RAW;
        return DS4W_OK;
    }
    return fail(s, DS4W_E_INVALID_REQUEST, "mode", err, errlen,
                "field 'mode': expected \"plain\" or \"raw\"");
}

/* Encode a JSON string value's bytes (jansson guarantees valid UTF-8). */
static int encode_text(tok_service *s, const json_t *str, enum tok_mode mode, tok_ids *ids,
                       char *err, size_t errlen)
{
    char e[160] = "";
    if (tok_encode(s->enc, json_string_value(str), json_string_length(str), mode, ids, e,
                   sizeof e))
        return fail(s, DS4W_E_TOO_LARGE, "text", err, errlen, "cannot tokenize text: %s", e);
    return DS4W_OK;
}

/* A reply's I32 frame must fit the receiver's token limit. */
static int ids_fit(tok_service *s, size_t n, const char *field, char *err, size_t errlen)
{
    size_t max = ds4w_limits_get().max_tokens;
    if (n <= max)
        return DS4W_OK;
    return fail(s, DS4W_E_TOO_LARGE, field, err, errlen,
                "%s: %zu tokens, more than a reply may carry (%zu)", field, n, max);
}

/* TOKENIZE -> TOKENS. */
static int h_tokenize(tok_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    enum tok_mode mode;
    int rc = get_mode(s, m->json, &mode, err, errlen);
    if (rc)
        return rc;
    tok_ids ids = {0};
    if (json_is_true(json_object_get(m->json, "add_bos"))) {
        if (s->bos_id < 0)
            return fail(s, DS4W_E_INVALID_REQUEST, "add_bos", err, errlen,
                        "field 'add_bos': the vocabulary has no BOS token");
        tok_ids_push(&ids, (uint32_t)s->bos_id);
    }
    rc = encode_text(s, json_object_get(m->json, "text"), mode, &ids, err, errlen);
    if (!rc)
        rc = ids_fit(s, ids.n, "text", err, errlen);
    if (rc) {
        tok_ids_free(&ids);
        return rc;
    }
    stat_add(s, DS4S_TOK_encode_requests, 1);
    stat_add(s, DS4S_TOK_tokens_encoded, ids.n);
    reply_json(out, DS4W_T_TOKENS, m, json_pack("{s:I}", "count", (json_int_t)ids.n));
    out_ids(out, &ids);
    tok_ids_free(&ids);
    return DS4W_OK;
}

/* Check every id of an I32 frame against the vocabulary (holes included);
 * on success *ids holds them (caller frees). */
static int get_ids(tok_service *s, const ds4w_msg *m, int frame, uint32_t **ids, size_t *n,
                   char *err, size_t errlen)
{
    *n = ds4w_msg_count(m, frame);
    *ids = ds4_xmalloc((*n ? *n : 1) * sizeof **ids);
    ds4w_msg_i32(m, frame, (int32_t *)*ids);
    for (size_t i = 0; i < *n; i++) {
        int32_t id = (int32_t)(*ids)[i];
        if (id < 0 || (uint32_t)id >= s->v->n || s->v->type[id] == TOK_T_NONE) {
            char f[48];
            snprintf(f, sizeof f, "ids[%zu]", i);
            free(*ids);
            *ids = NULL;
            return fail(s, DS4W_E_INVALID_REQUEST, f, err, errlen,
                        "ids[%zu]: token id %d is not in the vocabulary (0..%u)", i, id,
                        s->v->n - 1);
        }
    }
    return DS4W_OK;
}

/* DETOKENIZE -> TEXT: resume from the carried tail, emit whole characters. */
static int h_detokenize(tok_service *s, const ds4w_msg *m, ds4w_out *out, char *err,
                        size_t errlen)
{
    ds4w_buf carry = ds4w_msg_frame(m, 2);
    if (carry.len > 3 || (carry.len && tok_utf8_classify(carry.data, carry.len) != 0))
        return fail(s, DS4W_E_INVALID_REQUEST, "carry", err, errlen,
                    "carry: %zu bytes that are not the start of one UTF-8 character", carry.len);
    uint32_t *ids;
    size_t n;
    int rc = get_ids(s, m, 1, &ids, &n, err, errlen);
    if (rc)
        return rc;
    int skip = json_is_true(json_object_get(m->json, "skip_special"));
    tok_detok d;
    tok_detok_init(&d, s->v);
    memcpy(d.pend, carry.data ? carry.data : (const uint8_t *)"", carry.len);
    d.npend = (uint8_t)carry.len;
    tok_buf text = {0};
    tok_buf_reserve(&text, 16);
    for (size_t i = 0; i < n; i++) {
        if (skip && s->v->type[ids[i]] == TOK_T_CONTROL)
            continue;
        rc = tok_detok_feed(&d, ids[i], &text);
        DS4_ASSERT(rc == 0); /* ids were checked */
    }
    if (json_is_true(json_object_get(m->json, "final")))
        tok_detok_flush(&d, &text);
    stat_add(s, DS4S_TOK_decode_requests, 1);
    stat_add(s, DS4S_TOK_tokens_decoded, n);
    json_t *o = json_object();
    json_object_set_new(o, "text", json_stringn(text.data, text.len));
    DS4_ASSERT(json_object_get(o, "text") != NULL); /* detok emits valid UTF-8 */
    reply_json(out, DS4W_T_TEXT, m, o);
    if (d.npend)
        ds4w_out_bytes(out, d.pend, d.npend);
    tok_buf_free(&text);
    free(ids);
    return DS4W_OK;
}

/* Take the field path that a tok_chat error message starts with
 * ("messages[2].role: ...") as the ERROR's field. */
static void field_from_chat_err(tok_service *s, const char *e)
{
    size_t n = strcspn(e, ": ");
    s->field[0] = 0;
    if (e[n] != ':' || n == 0 || n >= sizeof s->field)
        return;
    memcpy(s->field, e, n);
    s->field[n] = 0;
    if (strcmp(s->field, "context_size") == 0)
        snprintf(s->field, sizeof s->field, "n_ctx");
}

/* The options object of RENDER_CHAT: known switches only. */
static int check_options(tok_service *s, const json_t *opt, json_t *root, char *err,
                         size_t errlen)
{
    static const char *const known[] = {"drop_thinking", "add_bos"};
    if (!json_is_object(opt))
        return fail(s, DS4W_E_INVALID_REQUEST, "options", err, errlen,
                    "field 'options': expected object");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)opt, k, v) {
        size_t i = 0;
        while (i < 2 && strcmp(k, known[i]) != 0)
            i++;
        char f[TOK_SVC_FIELD_MAX];
        snprintf(f, sizeof f, "options.%s", k);
        if (i == 2)
            return fail(s, DS4W_E_INVALID_REQUEST, f, err, errlen,
                        "options.%.60s: unknown option (known: drop_thinking, add_bos)", k);
        if (!json_is_boolean(v))
            return fail(s, DS4W_E_INVALID_REQUEST, f, err, errlen, "%s: expected boolean", f);
        json_object_set(root, k, (json_t *)v);
    }
    return DS4W_OK;
}

/* Build the tok_chat input object from a RENDER_CHAT / COUNT_TOKENS request. */
static int chat_input(tok_service *s, const json_t *req, json_t **root, char *err,
                      size_t errlen)
{
    static const char *const copy[] = {"messages", "tools", "thinking", "reasoning_effort"};
    *root = json_object();
    for (size_t i = 0; i < sizeof copy / sizeof copy[0]; i++) {
        json_t *v = json_object_get(req, copy[i]);
        if (v)
            json_object_set(*root, copy[i], v);
    }
    json_t *v = json_object_get(req, "n_ctx");
    if (v)
        json_object_set(*root, "context_size", v);
    v = json_object_get(req, "add_generation_prompt");
    if (v && !json_is_true(v))
        return fail(s, DS4W_E_INVALID_REQUEST, "add_generation_prompt", err, errlen,
                    "add_generation_prompt: false is not supported (the official encoder "
                    "always ends a user turn with the assistant prefix)");
    v = json_object_get(req, "options");
    return v ? check_options(s, v, *root, err, errlen) : DS4W_OK;
}

/* Render a chat request and tokenize it; fills r and ids. */
static int render_ids(tok_service *s, const json_t *req, struct tok_chat_result *r,
                      tok_ids *ids, char *err, size_t errlen)
{
    json_t *root;
    int rc = chat_input(s, req, &root, err, errlen);
    if (rc) {
        json_decref(root);
        return rc;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    char e[256] = "";
    int bad = tok_chat_render(text, strlen(text), NULL, r, e, sizeof e);
    free(text);
    if (bad) {
        json_decref(root);
        field_from_chat_err(s, e);
        if (err && errlen)
            snprintf(err, errlen, "%s", e);
        return DS4W_E_INVALID_REQUEST;
    }
    rc = tok_service_chat_ids(s, r, json_object_get(root, "messages"), ids, NULL, err, errlen);
    json_decref(root);
    if (rc)
        tok_chat_result_free(r);
    return rc;
}

/* Name of how a rendered prompt ends, for RENDERED.meta. */
static const char *ends_name(int e)
{
    return e == TOK_CHAT_END_THINK_OPEN ? "think_open"
           : e == TOK_CHAT_END_THINK_CLOSE ? "think_close" : "other";
}

/* RENDER_CHAT -> RENDERED. */
static int h_render(tok_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    struct tok_chat_result r;
    tok_ids ids = {0};
    int rc = render_ids(s, m->json, &r, &ids, err, errlen);
    if (!rc && (rc = ids_fit(s, ids.n, "messages", err, errlen)) != DS4W_OK)
        tok_chat_result_free(&r);
    if (rc) {
        stat_add(s, DS4S_TOK_render_errors, 1);
        tok_ids_free(&ids);
        return rc;
    }
    stat_add(s, DS4S_TOK_render_requests, 1);
    json_t *meta = json_pack("{s:b,s:b,s:s,s:I,s:I}", "thinking", r.thinking, "think_max",
                             r.think_max, "ends_with", ends_name(r.ends_with), "prompt_tokens",
                             (json_int_t)ids.n, "last_id",
                             (json_int_t)(ids.n ? (int64_t)ids.v[ids.n - 1] : -1));
    json_t *o = json_object();
    json_object_set_new(o, "text", json_stringn(r.text, r.len));
    json_object_set_new(o, "count", json_integer((json_int_t)ids.n));
    json_object_set_new(o, "meta", meta);
    if (!json_object_get(o, "text")) { /* tok_chat writes valid UTF-8 */
        json_decref(o);
        tok_chat_result_free(&r);
        tok_ids_free(&ids);
        return fail(s, DS4W_E_INTERNAL, NULL, err, errlen, "rendered prompt is not valid UTF-8");
    }
    reply_json(out, DS4W_T_RENDERED, m, o);
    out_ids(out, &ids);
    tok_chat_result_free(&r);
    tok_ids_free(&ids);
    return DS4W_OK;
}

/* COUNT_TOKENS -> TOKEN_COUNT: messages (rendered) or text (plain). */
static int h_count(tok_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    const json_t *msgs = json_object_get(m->json, "messages");
    const json_t *text = json_object_get(m->json, "text");
    if (!msgs == !text)
        return fail(s, DS4W_E_INVALID_REQUEST, msgs ? "text" : "messages", err, errlen,
                    "exactly one of 'messages' and 'text' is required");
    tok_ids ids = {0};
    int rc;
    if (text) {
        rc = encode_text(s, text, TOK_MODE_PLAIN, &ids, err, errlen);
    } else {
        struct tok_chat_result r;
        rc = render_ids(s, m->json, &r, &ids, err, errlen);
        if (!rc)
            tok_chat_result_free(&r);
    }
    size_t n = ids.n;
    tok_ids_free(&ids);
    if (rc)
        return rc;
    stat_add(s, DS4S_TOK_count_requests, 1);
    return reply_json(out, DS4W_T_TOKEN_COUNT, m, json_pack("{s:I}", "count", (json_int_t)n));
}

int tok_service_handle(tok_service *s, const ds4w_msg *m, ds4w_out *out,
                       const char **field, char *err, size_t errlen)
{
    uint64_t t0 = ds4_now_ns();
    memset(out, 0, sizeof *out);
    s->field[0] = 0;
    if (err && errlen)
        err[0] = 0;
    int rc;
    if (!m->hdr_ok || !m->def || m->def->dir != DS4W_DIR_REQ) {
        rc = fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen, "%s is not a request",
                  ds4w_type_name(m->type));
    } else if (m->def->svc != DS4W_SVC_ANY && m->def->svc != DS4W_SVC_TOK) {
        rc = fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen,
                  "%s is not served by tokenizerd", ds4w_type_name(m->type));
    } else if (m->json_frame < 0 && m->def->frames[0] == DS4W_FK_JSON) {
        rc = fail(s, DS4W_E_BAD_FRAME, NULL, err, errlen, "%s without its JSON frame",
                  ds4w_type_name(m->type));
    } else {
        switch (m->type) {
        case DS4W_T_PING: rc = h_ping(s, m, out); break;
        case DS4W_T_STATS_GET: rc = h_stats(s, m, out); break;
        case DS4W_T_TOKENIZE: rc = h_tokenize(s, m, out, err, errlen); break;
        case DS4W_T_DETOKENIZE: rc = h_detokenize(s, m, out, err, errlen); break;
        case DS4W_T_RENDER_CHAT: rc = h_render(s, m, out, err, errlen); break;
        case DS4W_T_COUNT_TOKENS: rc = h_count(s, m, out, err, errlen); break;
        default:
            rc = fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen,
                      "%s is not served by tokenizerd", ds4w_type_name(m->type));
        }
    }
    if (rc)
        ds4w_out_free(out);
    if (field)
        *field = rc && s->field[0] ? s->field : NULL;
    stat_add(s, DS4S_TOK_request_ns, ds4_now_ns() - t0);
    return rc;
}

/* Scratch of one chat tokenization: the pending plain-text run. */
struct chat_tok {
    tok_service *s;
    tok_buf run;
    tok_ids *ids;
};

/* BPE the pending run of non-template text as one plain-mode chunk. */
static int flush_run(struct chat_tok *c, char *err, size_t errlen)
{
    if (!c->run.len)
        return DS4W_OK;
    char e[160] = "";
    int rc = tok_encode(c->s->enc, c->run.data, c->run.len, TOK_MODE_PLAIN, c->ids, e, sizeof e);
    c->run.len = 0;
    if (rc)
        return fail(c->s, DS4W_E_TOO_LARGE, "messages", err, errlen, "cannot tokenize: %s", e);
    return DS4W_OK;
}

/* Template text: added tokens become their ids, the rest joins the run. */
static int template_piece(struct chat_tok *c, const char *t, size_t n, char *err, size_t errlen)
{
    const tok_vocab *v = c->s->v;
    size_t i = 0, plain = 0;
    while (i < n) {
        uint32_t id;
        size_t k = tok_vocab_match_added(v, 0, t + i, n - i, &id);
        if (!k)
            k = tok_vocab_match_added(v, 1, t + i, n - i, &id);
        if (!k) {
            i++;
            continue;
        }
        tok_buf_append(&c->run, t + plain, i - plain);
        int rc = flush_run(c, err, errlen);
        if (rc)
            return rc;
        tok_ids_push(c->ids, id);
        i += k;
        plain = i;
    }
    tok_buf_append(&c->run, t + plain, n - plain);
    return DS4W_OK;
}

/* The stored ids of a RAW piece (messages[i]._ds4_raw.<field>_ids), or NULL. */
static const json_t *raw_stored_ids(const json_t *msgs, const struct tok_chat_piece *p,
                                    const char **name)
{
    *name = p->raw_field == TOK_RAW_REASONING ? "reasoning_ids" : "body_ids";
    if (!msgs || p->msg_index < 0)
        return NULL;
    const json_t *raw = json_object_get(json_array_get(msgs, (size_t)p->msg_index), "_ds4_raw");
    return json_object_get(raw, *name);
}

/* Check stored ids against the replayed text and append them. */
static int stored_piece(struct chat_tok *c, const json_t *arr, const char *name,
                        const struct tok_chat_piece *p, const char *t, char *err, size_t errlen)
{
    char f[TOK_SVC_FIELD_MAX];
    snprintf(f, sizeof f, "messages[%d]._ds4_raw.%s", p->msg_index, name);
    if (!json_is_array(arr))
        return fail(c->s, DS4W_E_INVALID_REQUEST, f, err, errlen, "%s: expected array", f);
    size_t n = json_array_size(arr);
    if (n > ds4w_limits_get().max_tokens)
        return fail(c->s, DS4W_E_TOO_LARGE, f, err, errlen, "%s: %zu ids, over the limit", f, n);
    uint32_t *ids = ds4_xmalloc((n ? n : 1) * sizeof *ids);
    int rc = DS4W_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const json_t *e = json_array_get(arr, i);
        json_int_t id = json_is_integer(e) ? json_integer_value(e) : -1;
        if (id < 0 || id >= (json_int_t)c->s->v->n || c->s->v->type[id] == TOK_T_NONE)
            rc = fail(c->s, DS4W_E_INVALID_REQUEST, f, err, errlen,
                      "%s[%zu]: not a token id of the vocabulary", f, i);
        else
            ids[i] = (uint32_t)id;
    }
    tok_buf bytes = {0};
    size_t bad;
    if (!rc && (tok_decode_bytes(c->s->v, ids, n, &bytes, &bad) ||
                bytes.len != p->len || (p->len && memcmp(bytes.data, t, p->len) != 0)))
        rc = fail(c->s, DS4W_E_INVALID_REQUEST, f, err, errlen,
                  "%s: the ids do not decode to the replayed text", f);
    if (!rc)
        rc = flush_run(c, err, errlen);
    if (!rc)
        tok_ids_append(c->ids, ids, n);
    tok_buf_free(&bytes);
    free(ids);
    return rc;
}

int tok_service_chat_ids(tok_service *s, const struct tok_chat_result *r,
                         const void *messages_json, tok_ids *ids,
                         const char **field, char *err, size_t errlen)
{
    struct chat_tok c = {s, {0}, ids};
    int rc = DS4W_OK;
    for (size_t i = 0; i < r->n_pieces && !rc; i++) {
        const struct tok_chat_piece *p = &r->pieces[i];
        const char *t = r->text + p->off;
        const char *name;
        const json_t *stored;
        if (p->kind == TOK_PIECE_CONTENT)
            tok_buf_append(&c.run, t, p->len);
        else if (p->kind == TOK_PIECE_RAW &&
                 (stored = raw_stored_ids(messages_json, p, &name)) != NULL)
            rc = stored_piece(&c, stored, name, p, t, err, errlen);
        else
            rc = template_piece(&c, t, p->len, err, errlen);
    }
    if (!rc)
        rc = flush_run(&c, err, errlen);
    tok_buf_free(&c.run);
    if (field)
        *field = rc && s->field[0] ? s->field : NULL;
    return rc;
}
