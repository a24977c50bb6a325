/* test_tokenizerd.c - tokenizerd: the request handlers of tok_service.c
 * driven through the real wire decoder (good and malformed requests of
 * every type), the official golden chat encodings reproduced in text and
 * token ids (ids from HF tokenizers, tests/data/chat-ids/, made by
 * tests/golden/chat/make_hf_chat_ids.py), and one live run of the real
 * daemon binary over ZeroMQ (READY, requests, a garbage frame, SIGTERM).
 *
 * The vocabulary is the npm package's tokenizer.json (DS4_TOKENIZER_JSON
 * overrides); the daemon binary is <build>/tokenizerd next to
 * <build>/tests/ (DS4_TOKENIZERD overrides). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "tokenizerd/tok_bpe.h"
#include "tokenizerd/tok_chat.h"
#include "tokenizerd/tok_detok.h"
#include "tokenizerd/tok_service.h"
#include "util.h"
#include "wire.h"

#define DEFAULT_TOKJSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"

static tok_vocab *V;
static tok_service S;
static tok_encoder *E;
static const uint8_t REQID[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

/* xorshift64*: seeded test inputs. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 33) % n;
}

/* The result of one request through decoder and handler. */
struct reply {
    int rc;                 /* DS4W_OK, or the error code the daemon sends */
    char field[TOK_SVC_FIELD_MAX];
    char err[512];
    ds4w_out out;           /* the reply as built (owns the bytes) */
    ds4w_msg msg;           /* the reply decoded again, as a client sees it */
    int have_msg;
};

static void reply_free(struct reply *r)
{
    if (r->have_msg)
        ds4w_msg_close(&r->msg);
    ds4w_out_free(&r->out);
    memset(r, 0, sizeof *r);
}

/* Build a 32-byte header. */
static void make_hdr(uint8_t h[DS4W_HDR_SIZE], uint16_t type, uint32_t flags)
{
    memcpy(h, "DS4W", 4);
    h[4] = 1;
    h[5] = 0;
    h[6] = (uint8_t)type;
    h[7] = (uint8_t)(type >> 8);
    memset(h + 8, 0, 8);
    h[8] = (uint8_t)flags;
    memcpy(h + 16, REQID, 16);
}

/* Send the frames (header first) through decoder and handler; the reply
 * is re-encoded and decoded to prove it matches its schema. */
static void call_frames(struct reply *r, const ds4w_buf *fr, size_t n, const ds4w_limits *lim)
{
    memset(r, 0, sizeof *r);
    ds4w_msg m;
    r->rc = ds4w_decode_frames(fr, n, lim, &m, r->err, sizeof r->err);
    if (r->rc == DS4W_OK) {
        const char *field = NULL;
        r->rc = tok_service_handle(&S, &m, &r->out, &field, r->err, sizeof r->err);
        if (field)
            snprintf(r->field, sizeof r->field, "%s", field);
        if (r->rc == DS4W_OK) {
            ds4w_buf rf[DS4W_MAX_PAYLOAD + 1];
            size_t rn;
            char e[256] = "";
            int erc = ds4w_out_encode(&r->out, rf, &rn, e, sizeof e);
            CHECKF(erc == DS4W_OK, "reply does not encode: %s", e);
            if (erc == DS4W_OK) {
                erc = ds4w_decode_frames(rf, rn, NULL, &r->msg, e, sizeof e);
                CHECKF(erc == DS4W_OK, "reply does not decode: %s", e);
                CHECK(memcmp(r->msg.reqid, REQID, 16) == 0);
                r->have_msg = 1;
                if (erc)
                    ds4w_msg_close(&r->msg), r->have_msg = 0;
            }
        }
    } else if (m.bad_field) {
        snprintf(r->field, sizeof r->field, "%s", m.bad_field);
    }
    ds4w_msg_close(&m);
}

/* A request of type with a JSON text (NULL: no frame), an I32 frame
 * (ids NULL and nids (size_t)-1: no frame) and a BYTES frame (carry NULL:
 * no frame). */
static void call(struct reply *r, uint16_t type, const char *json, const int32_t *ids,
                 size_t nids, const void *carry, size_t ncarry)
{
    uint8_t hdr[DS4W_HDR_SIZE];
    make_hdr(hdr, type, 0);
    ds4w_buf fr[4] = {{hdr, sizeof hdr}};
    size_t n = 1;
    uint8_t *i32 = NULL;
    if (json)
        fr[n++] = (ds4w_buf){(const uint8_t *)json, strlen(json)};
    if (nids != (size_t)-1) {
        i32 = ds4_xmalloc(nids * 4 + 1);
        for (size_t i = 0; i < nids; i++)
            for (int b = 0; b < 4; b++)
                i32[i * 4 + b] = (uint8_t)((uint32_t)ids[i] >> (8 * b));
        fr[n++] = (ds4w_buf){i32, nids * 4};
    }
    if (carry)
        fr[n++] = (ds4w_buf){carry, ncarry};
    call_frames(r, fr, n, NULL);
    free(i32);
}

/* Shorthand for a JSON-only request. */
static void call_json(struct reply *r, uint16_t type, const char *json)
{
    call(r, type, json, NULL, (size_t)-1, NULL, 0);
}

/* The I32 frame of a reply (frame 1) as a malloc'd array. */
static int32_t *reply_ids(const struct reply *r, size_t *n)
{
    *n = r->have_msg ? ds4w_msg_count(&r->msg, 1) : 0;
    int32_t *v = ds4_xmalloc((*n + 1) * sizeof *v);
    for (size_t i = 0; i <= *n; i++)
        v[i] = (int32_t)0xA5A5A5A5; /* poison */
    if (*n)
        ds4w_msg_i32(&r->msg, 1, v);
    return v;
}

/* Expect an error with a code (and a field when non-NULL). */
#define CHECK_ERR(r, code_, field_)                                                        \
    do {                                                                                   \
        CHECKF((r)->rc == (code_), "got %d (%s) want %d", (r)->rc, (r)->err, (code_));     \
        CHECKF(!(field_) || strcmp((r)->field, (field_) ? (field_) : "") == 0,             \
               "field '%s' want '%s' (%s)", (r)->field, (field_) ? (field_) : "", (r)->err); \
        CHECK((r)->err[0] != 0);                                                          \
    } while (0)

/* Our own plain/raw encoding (the handler must give the same). */
static tok_ids encode(const char *text, size_t len, enum tok_mode mode)
{
    tok_ids ids = {0};
    CHECK(tok_encode(E, text, len, mode, &ids, NULL, 0) == 0);
    return ids;
}

/* Random text from pieces that stress the tokenizer and UTF-8 splitting. */
static char *random_text(size_t npieces)
{
    static const char *const P[] = {"Hello", " world", ", ", "世界", "日本語のテキスト", "😀",
                                    "👨‍👩‍👧", "🇯🇵", "\n\n", "   ", "\t", "12345", "٣٤٥",
                                    "Ωμέγα", "ğ", "<｜User｜>", "<think>", "｜DSML｜", "𝔘𝔫𝔦",
                                    "\xc2\xa0", "{\"a\": [1, 2]}", "ﷺ", "䶵"};
    tok_buf b = {0};
    tok_buf_reserve(&b, 16);
    for (size_t i = 0; i < npieces; i++) {
        const char *p = P[rnd(sizeof P / sizeof P[0])];
        tok_buf_append(&b, p, strlen(p));
    }
    return b.data;
}

/* JSON text of {"text": t, ...extra} */
static char *text_req(const char *t, const char *mode, int add_bos)
{
    json_t *o = json_pack("{s:s}", "text", t);
    if (mode)
        json_object_set_new(o, "mode", json_string(mode));
    if (add_bos)
        json_object_set_new(o, "add_bos", json_true());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void test_ping_stats(void)
{
    struct reply r;
    call(&r, DS4W_T_PING, NULL, NULL, (size_t)-1, NULL, 0);
    CHECK(r.rc == DS4W_OK && r.msg.type == DS4W_T_PONG);
    CHECK(json_is_true(json_object_get(r.msg.json, "ready")));
    CHECK(strcmp(json_string_value(json_object_get(r.msg.json, "daemon")), "tokenizerd") == 0);
    reply_free(&r);
    call_json(&r, DS4W_T_PING, "{\"wait_ready\":true}");
    CHECK(r.rc == DS4W_OK && r.msg.type == DS4W_T_PONG);
    reply_free(&r);
    call_json(&r, DS4W_T_PING, "{\"wait_ready\":1}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "wait_ready");
    reply_free(&r);
    call_json(&r, DS4W_T_STATS_GET, NULL);
    CHECK(r.rc == DS4W_OK && r.msg.type == DS4W_T_STATS);
    json_t *c = json_object_get(r.msg.json, "counters");
    CHECK(json_is_integer(json_object_get(c, "encode_requests")));
    CHECK(json_integer_value(json_object_get(c, "vocab_size")) == 0); /* no segment here */
    CHECK(json_integer_value(json_object_get(json_object_get(r.msg.json, "info"), "vocab_size")) ==
          (json_int_t)V->n);
    reply_free(&r);
}

static void test_tokenize(void)
{
    struct reply r;
    const char *t = "Hello <｜User｜> 世界<think>";
    for (int mode = 0; mode < 2; mode++) {
        char *js = text_req(t, mode ? "plain" : "raw", 0);
        call_json(&r, DS4W_T_TOKENIZE, js);
        CHECKF(r.rc == DS4W_OK, "%s", r.err);
        size_t n;
        int32_t *got = reply_ids(&r, &n);
        tok_ids want = encode(t, strlen(t), mode ? TOK_MODE_PLAIN : TOK_MODE_RAW);
        CHECK(n == want.n && memcmp(got, want.v, n * 4) == 0);
        CHECK(json_integer_value(json_object_get(r.msg.json, "count")) == (json_int_t)n);
        int32_t user = tok_vocab_added(V, "<｜User｜>");
        int has_user = 0;
        for (size_t i = 0; i < n; i++)
            has_user |= got[i] == user;
        CHECK(user >= 0 && has_user == !mode);
        tok_ids_free(&want);
        free(got);
        free(js);
        reply_free(&r);
    }
    /* default mode is plain; add_bos prepends BOS */
    char *js = text_req(t, NULL, 1);
    call_json(&r, DS4W_T_TOKENIZE, js);
    size_t n;
    int32_t *got = reply_ids(&r, &n);
    tok_ids want = encode(t, strlen(t), TOK_MODE_PLAIN);
    CHECK(r.rc == DS4W_OK && n == want.n + 1 && got[0] == tok_vocab_added(V, "<｜begin▁of▁sentence｜>"));
    CHECK(n == want.n + 1 && memcmp(got + 1, want.v, want.n * 4) == 0);
    tok_ids_free(&want);
    free(got);
    free(js);
    reply_free(&r);
    /* seeded random texts: handler == library, both modes */
    for (int k = 0; k < 40; k++) {
        char *txt = random_text(1 + rnd(30));
        int raw = (int)rnd(2);
        js = text_req(txt, raw ? "raw" : "plain", 0);
        call_json(&r, DS4W_T_TOKENIZE, js);
        got = reply_ids(&r, &n);
        want = encode(txt, strlen(txt), raw ? TOK_MODE_RAW : TOK_MODE_PLAIN);
        CHECKF(r.rc == DS4W_OK && n == want.n && memcmp(got, want.v, n * 4) == 0, "text %d", k);
        tok_ids_free(&want);
        free(got);
        free(js);
        free(txt);
        reply_free(&r);
    }
    /* malformed */
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"a\",\"mode\":\"RAW\"}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "mode");
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"a\",\"mode\":3}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "mode");
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"mode\":\"raw\"}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "text");
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":[\"a\"]}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "text");
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":null}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "text");
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"a\",\"add_bos\":\"yes\"}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "add_bos");
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"a\\u0000b\"}");
    CHECK(r.rc != DS4W_OK);
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"bad \xff\xfe utf8\"}");
    CHECK(r.rc != DS4W_OK && r.err[0]);
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "[\"text\"]");
    CHECK(r.rc != DS4W_OK);
    reply_free(&r);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"a\"} trailing");
    CHECK(r.rc != DS4W_OK);
    reply_free(&r);
    /* a reply with more ids than a receiver accepts is refused up front */
    ds4w_limits saved = ds4w_limits_get(), small = saved;
    small.max_tokens = 8;
    ds4w_limits_set(&small);
    call_json(&r, DS4W_T_TOKENIZE, "{\"text\":\"one two three four five six seven eight nine\"}");
    CHECK_ERR(&r, DS4W_E_TOO_LARGE, "text");
    reply_free(&r);
    call_json(&r, DS4W_T_RENDER_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a b c d e f g\"}]}");
    CHECK_ERR(&r, DS4W_E_TOO_LARGE, "messages");
    reply_free(&r);
    ds4w_limits_set(&saved);
    call(&r, DS4W_T_TOKENIZE, NULL, NULL, (size_t)-1, NULL, 0); /* no JSON frame */
    CHECK_ERR(&r, DS4W_E_BAD_FRAME, NULL);
    reply_free(&r);
    int32_t one = 1;
    call(&r, DS4W_T_TOKENIZE, "{\"text\":\"a\"}", &one, 1, NULL, 0); /* extra frame */
    CHECK_ERR(&r, DS4W_E_BAD_FRAME, NULL);
    reply_free(&r);
}

/* Detokenize ids[0..n) with a carry; returns text (malloc'd), new carry. */
static char *detok(const int32_t *ids, size_t n, const uint8_t *carry, size_t nc, int final,
                   uint8_t *out_carry, size_t *out_nc, int *rc)
{
    struct reply r;
    call(&r, DS4W_T_DETOKENIZE, final ? "{\"final\":true}" : "{}", ids, n,
         nc ? carry : NULL, nc);
    *rc = r.rc;
    char *t = NULL;
    *out_nc = 0;
    if (r.rc == DS4W_OK) {
        t = ds4_xstrdup(json_string_value(json_object_get(r.msg.json, "text")));
        ds4w_buf c = ds4w_msg_frame(&r.msg, 1);
        CHECK(c.len <= 3);
        if (c.len <= 3) {
            memcpy(out_carry, c.data ? c.data : (const uint8_t *)"", c.len);
            *out_nc = c.len;
        }
    }
    reply_free(&r);
    return t;
}

static void test_detokenize(void)
{
    int split_seen = 0;
    for (int k = 0; k < 12; k++) {
        char *txt = random_text(2 + rnd(12));
        tok_ids ids = encode(txt, strlen(txt), TOK_MODE_RAW);
        tok_buf want = {0};
        CHECK(tok_decode_text(V, ids.v, ids.n, &want, NULL) == 0);
        const int32_t *iv = (const int32_t *)ids.v;
        /* every split point: two calls with the carry in between */
        for (size_t s = 0; s <= ids.n; s++) {
            uint8_t c1[4], c2[4];
            size_t n1, n2;
            int rc1, rc2;
            char *a = detok(iv, s, NULL, 0, 0, c1, &n1, &rc1);
            char *b = detok(iv + s, ids.n - s, c1, n1, 1, c2, &n2, &rc2);
            CHECK(rc1 == 0 && rc2 == 0 && n2 == 0);
            split_seen |= n1 > 0;
            if (a && b) {
                size_t la = strlen(a), lb = strlen(b);
                CHECKF(la + lb == want.len && memcmp(a, want.data, la) == 0 &&
                           memcmp(b, want.data + la, lb) == 0,
                       "text %d split %zu", k, s);
            }
            free(a);
            free(b);
        }
        /* one id at a time, as a stream */
        uint8_t c[4] = {0};
        size_t nc = 0;
        tok_buf acc = {0};
        tok_buf_reserve(&acc, 16);
        for (size_t i = 0; i < ids.n; i++) {
            uint8_t nc2[4];
            size_t nn;
            int rc;
            char *t = detok(iv + i, 1, c, nc, 0, nc2, &nn, &rc);
            CHECK(rc == 0 && t && tok_utf8_valid_prefix(t, strlen(t)) == strlen(t));
            if (t)
                tok_buf_append(&acc, t, strlen(t));
            free(t);
            memcpy(c, nc2, nn);
            nc = nn;
        }
        CHECK(nc == 0 && acc.len == want.len && memcmp(acc.data, want.data, want.len) == 0);
        tok_buf_free(&acc);
        tok_buf_free(&want);
        tok_ids_free(&ids);
        free(txt);
    }
    CHECK(split_seen); /* the inputs did split characters across ids */
    /* a dangling carry becomes U+FFFD at final, stays carried otherwise */
    uint8_t c[4];
    size_t nc;
    int rc;
    char *t = detok(NULL, 0, (const uint8_t *)"\xe4\xb8", 2, 1, c, &nc, &rc);
    CHECK(rc == 0 && t && strcmp(t, "\xEF\xBF\xBD") == 0 && nc == 0);
    free(t);
    t = detok(NULL, 0, (const uint8_t *)"\xe4\xb8", 2, 0, c, &nc, &rc);
    CHECK(rc == 0 && t && strcmp(t, "") == 0 && nc == 2 && memcmp(c, "\xe4\xb8", 2) == 0);
    free(t);
    /* skip_special drops control tokens only */
    int32_t bos = tok_vocab_added(V, "<｜begin▁of▁sentence｜>");
    int32_t user = tok_vocab_added(V, "<｜User｜>");
    tok_ids h = encode("Hi", 2, TOK_MODE_RAW);
    int32_t seq[8] = {bos, user};
    memcpy(seq + 2, h.v, h.n * 4);
    struct reply r;
    call(&r, DS4W_T_DETOKENIZE, "{\"skip_special\":true}", seq, 2 + h.n, NULL, 0);
    CHECK(r.rc == 0 && strcmp(json_string_value(json_object_get(r.msg.json, "text")),
                              V->type[user] == TOK_T_CONTROL ? "Hi" : "<｜User｜>Hi") == 0);
    reply_free(&r);
    call(&r, DS4W_T_DETOKENIZE, "{}", seq, 2 + h.n, NULL, 0);
    CHECK(r.rc == 0 && strcmp(json_string_value(json_object_get(r.msg.json, "text")),
                              "<｜begin▁of▁sentence｜><｜User｜>Hi") == 0);
    reply_free(&r);
    tok_ids_free(&h);
    /* malformed: ids out of range, bad carry, missing frames, wrong types */
    int32_t bad[3] = {5, (int32_t)V->n, 7};
    call(&r, DS4W_T_DETOKENIZE, "{}", bad, 3, NULL, 0);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "ids[1]");
    reply_free(&r);
    bad[1] = -1;
    call(&r, DS4W_T_DETOKENIZE, "{}", bad, 3, NULL, 0);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "ids[1]");
    reply_free(&r);
    bad[1] = INT32_MAX;
    call(&r, DS4W_T_DETOKENIZE, "{}", bad, 3, NULL, 0);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "ids[1]");
    reply_free(&r);
    static const char *const badc[] = {"\xe4\xb8\xad", "\xff", "a", "\xe4\xb8\xad\xe4", "\xc0",
                                       "\xed\xa0"};
    for (size_t i = 0; i < sizeof badc / sizeof badc[0]; i++) {
        call(&r, DS4W_T_DETOKENIZE, "{}", bad, 1, badc[i], strlen(badc[i]));
        CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "carry");
        reply_free(&r);
    }
    call(&r, DS4W_T_DETOKENIZE, "{}", NULL, (size_t)-1, NULL, 0); /* no I32 frame */
    CHECK_ERR(&r, DS4W_E_BAD_FRAME, NULL);
    reply_free(&r);
    call(&r, DS4W_T_DETOKENIZE, "{\"final\":\"yes\"}", bad, 1, NULL, 0);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "final");
    reply_free(&r);
    /* an I32 frame whose length is not a multiple of 4 */
    uint8_t hdr[DS4W_HDR_SIZE];
    make_hdr(hdr, DS4W_T_DETOKENIZE, 0);
    ds4w_buf fr[3] = {{hdr, sizeof hdr}, {(const uint8_t *)"{}", 2}, {(const uint8_t *)"abcde", 5}};
    call_frames(&r, fr, 3, NULL);
    CHECK_ERR(&r, DS4W_E_BAD_FRAME, NULL);
    reply_free(&r);
    /* a huge id array: over the token limit */
    ds4w_limits lim = ds4w_limits_default();
    lim.max_tokens = 1000;
    uint8_t *big = ds4_xcalloc(1001, 4);
    fr[2] = (ds4w_buf){big, 1001 * 4};
    call_frames(&r, fr, 3, &lim);
    CHECK_ERR(&r, DS4W_E_TOO_LARGE, NULL);
    reply_free(&r);
    free(big);
}

/* RENDER_CHAT request JSON for a test case file in tok_chat's input form;
 * thinking >= 0 sets the mode (the official goldens do not say theirs). */
static char *render_req(const char *path, int thinking)
{
    size_t n;
    char *in = test_read_file(path, &n);
    if (!in)
        return NULL;
    json_error_t je;
    json_t *root = json_loadb(in, n, 0, &je);
    free(in);
    CHECKF(root != NULL, "%s: %s", path, je.text);
    if (!root)
        return NULL;
    json_t *req = json_object();
    if (json_is_array(root)) {
        json_object_set(req, "messages", root);
    } else {
        const char *k;
        json_t *v;
        json_t *opts = json_object();
        json_object_foreach(root, k, v) {
            if (strcmp(k, "thinking_mode") == 0)
                json_object_set_new(req, "thinking", json_boolean(strcmp(json_string_value(v), "thinking") == 0));
            else if (strcmp(k, "context_size") == 0)
                json_object_set(req, "n_ctx", v);
            else if (strcmp(k, "drop_thinking") == 0 || strcmp(k, "add_bos") == 0)
                json_object_set(opts, k, v);
            else
                json_object_set(req, k, v);
        }
        if (json_object_size(opts))
            json_object_set(req, "options", opts);
        json_decref(opts);
    }
    if (thinking >= 0)
        json_object_set_new(req, "thinking", json_boolean(thinking));
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_decref(root);
    return s;
}

/* Expected HF ids of a rendered transcript; NULL if the file is absent. */
static int32_t *hf_ids(const char *name, size_t *n)
{
    char rel[256];
    snprintf(rel, sizeof rel, "chat-ids/%s.ids.json", name);
    json_error_t je;
    json_t *o = json_load_file(test_data_path(rel), 0, &je);
    CHECKF(o != NULL, "%s: %s", rel, je.text);
    if (!o)
        return NULL;
    json_t *a = json_object_get(o, "ids");
    *n = json_array_size(a);
    CHECK(json_integer_value(json_object_get(o, "count")) == (json_int_t)*n && *n > 0);
    int32_t *v = ds4_xmalloc((*n + 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    json_decref(o);
    return v;
}

/* Render one case and compare its text and ids with the expectations. */
static void check_case(const char *in_rel, const char *txt_rel, const char *name, int cmp_ids,
                       int thinking)
{
    char *req = render_req(test_data_path(in_rel), thinking);
    size_t tn;
    char *want = test_read_file(test_data_path(txt_rel), &tn);
    if (!req || !want) {
        CHECK(0);
        free(req);
        free(want);
        return;
    }
    struct reply r;
    call_json(&r, DS4W_T_RENDER_CHAT, req);
    CHECKF(r.rc == DS4W_OK, "%s: %s", name, r.err);
    const char *text = json_string_value(json_object_get(r.msg.json, "text"));
    CHECKF(text && strlen(text) == tn && memcmp(text, want, tn) == 0, "%s: text differs", name);
    size_t n, hn = 0;
    int32_t *got = reply_ids(&r, &n);
    CHECK(json_integer_value(json_object_get(r.msg.json, "count")) == (json_int_t)n);
    json_t *meta = json_object_get(r.msg.json, "meta");
    CHECK(json_integer_value(json_object_get(meta, "prompt_tokens")) == (json_int_t)n);
    CHECK(n && json_integer_value(json_object_get(meta, "last_id")) == got[n - 1]);
    if (cmp_ids) {
        int32_t *hf = hf_ids(name, &hn);
        size_t d = 0;
        while (hf && d < n && d < hn && got[d] == hf[d])
            d++;
        CHECKF(hf && n == hn && d == n, "%s: ids differ at %zu (%zu vs HF %zu)", name, d, n, hn);
        free(hf);
    }
    /* the ids decode back to the rendered text */
    tok_buf back = {0};
    CHECK(tok_decode_bytes(V, (const uint32_t *)got, n, &back, NULL) == 0);
    CHECK(back.len == tn && memcmp(back.data, want, tn) == 0);
    /* COUNT_TOKENS agrees */
    struct reply c;
    call_json(&c, DS4W_T_COUNT_TOKENS, req);
    CHECK(c.rc == DS4W_OK &&
          json_integer_value(json_object_get(c.msg.json, "count")) == (json_int_t)n);
    reply_free(&c);
    tok_buf_free(&back);
    free(got);
    reply_free(&r);
    free(req);
    free(want);
}

static void test_render_goldens(void)
{
    for (int i = 1; i <= 4; i++) {
        char in[64], out[64], name[32];
        snprintf(in, sizeof in, "dsv4-encoding/test_input_%d.json", i);
        snprintf(out, sizeof out, "dsv4-encoding/test_output_%d.txt", i);
        snprintf(name, sizeof name, "test_output_%d", i);
        check_case(in, out, name, 1, i == 4 ? 0 : 1);
    }
    /* Extra cases. user_plain_text has control-token strings inside message
     * content: HF's encode of the flat text splits them, the chat encoding
     * must not, so only its text is compared. */
    static const char *const extra[] = {"bad_arguments", "drop_developer", "keep_thinking",
                                        "parallel_tools", "reminder_task",
                                        "response_format_wo_eos", "think_max", "think_max_chat",
                                        "think_max_gated", "tool_array_content",
                                        "user_plain_text"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        char in[96], out[96];
        snprintf(in, sizeof in, "chat/%s.json", extra[i]);
        snprintf(out, sizeof out, "chat/%s.txt", extra[i]);
        check_case(in, out, extra[i], strcmp(extra[i], "user_plain_text") != 0, -1);
    }
}

/* top_tools_no_system has integers beyond int64 in its tool schema, which
 * jansson (and so the wire decoder) refuses: its ids are checked through
 * tok_chat_render + tok_service_chat_ids directly. */
static void test_render_direct(void)
{
    size_t n, tn, hn = 0;
    char *in = test_read_file(test_data_path("chat/top_tools_no_system.json"), &n);
    char *want = test_read_file(test_data_path("chat/top_tools_no_system.txt"), &tn);
    int32_t *hf = hf_ids("top_tools_no_system", &hn);
    struct tok_chat_result r;
    char err[256] = "";
    int rc = in ? tok_chat_render(in, n, NULL, &r, err, sizeof err) : -1;
    CHECKF(rc == 0 && want && hf, "%s", err);
    if (rc == 0) {
        CHECK(r.len == tn && memcmp(r.text, want, tn) == 0);
        tok_ids ids = {0};
        const char *field = NULL;
        CHECK(tok_service_chat_ids(&S, &r, NULL, &ids, &field, err, sizeof err) == DS4W_OK);
        CHECKF(hf && ids.n == hn && memcmp(ids.v, hf, hn * 4) == 0, "ids %zu vs HF %zu", ids.n,
               hn);
        tok_ids_free(&ids);
        tok_chat_result_free(&r);
    }
    free(hf);
    free(in);
    free(want);
}

/* Render a request text; returns the reply ids (malloc'd) or NULL. */
static int32_t *render_ids(const char *req, size_t *n, struct reply *r)
{
    call_json(r, DS4W_T_RENDER_CHAT, req);
    return r->rc == DS4W_OK ? reply_ids(r, n) : NULL;
}

static void test_render_plain_content(void)
{
    /* control-token strings typed by a user stay plain text */
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"say <｜User｜> and <think>\"}],"
                      "\"thinking\":false}";
    struct reply r;
    size_t n;
    int32_t *ids = render_ids(req, &n, &r);
    CHECKF(ids != NULL, "%s", r.err);
    int32_t user = tok_vocab_added(V, "<｜User｜>"), think = tok_vocab_added(V, "<think>");
    int nu = 0, nt = 0;
    for (size_t i = 0; ids && i < n; i++)
        nu += ids[i] == user, nt += ids[i] == think;
    CHECK(nu == 1 && nt == 0); /* only the template's <｜User｜> */
    json_t *meta = json_object_get(r.msg.json, "meta");
    CHECK(json_is_false(json_object_get(meta, "thinking")));
    CHECK(strcmp(json_string_value(json_object_get(meta, "ends_with")), "think_close") == 0);
    free(ids);
    reply_free(&r);
}

/* Exact replay: _ds4_raw without ids gives the canonical ids; with ids
 * they are used verbatim and checked against the text. */
static void test_render_raw_replay(void)
{
    size_t n;
    char *in = test_read_file(test_data_path("dsv4-encoding/test_input_1.json"), &n);
    char *gold = test_read_file(test_data_path("dsv4-encoding/test_output_1.txt"), NULL);
    if (!in || !gold) {
        CHECK(0);
        free(in);
        free(gold);
        return;
    }
    json_t *root = json_loadb(in, n, 0, NULL);
    json_t *msg = json_array_get(json_object_get(root, "messages"), 2);
    const char *a = strstr(strstr(gold, "<｜Assistant｜><think>"), "</think>") + 8;
    const char *e = strstr(a, "<｜end▁of▁sentence｜>");
    json_t *rawo = json_pack("{s:s,s:s%}", "reasoning",
                             json_string_value(json_object_get(msg, "reasoning_content")), "body",
                             a, (size_t)(e - a));
    json_object_set_new(msg, "_ds4_raw", rawo);
    char *req = json_dumps(root, JSON_COMPACT);
    struct reply r;
    size_t cn, hn;
    int32_t *ids = render_ids(req, &cn, &r);
    int32_t *hf = hf_ids("test_output_1", &hn);
    CHECKF(ids && hf && cn == hn && memcmp(ids, hf, cn * 4) == 0, "raw replay without ids: %s",
           r.err);
    reply_free(&r);
    free(req);
    /* stored ids: a deliberately non-canonical split of the body (one
     * token per byte-level piece of a plain encoding) is used verbatim */
    tok_ids body = encode(a, (size_t)(e - a), TOK_MODE_PLAIN);
    json_t *arr = json_array();
    for (size_t i = 0; i < body.n; i++)
        json_array_append_new(arr, json_integer(body.v[i]));
    json_object_set_new(rawo, "body_ids", arr);
    req = json_dumps(root, JSON_COMPACT);
    size_t sn;
    int32_t *sids = render_ids(req, &sn, &r);
    CHECKF(sids != NULL, "%s", r.err);
    /* the stored ids appear as a contiguous run right after the "</think>"
     * that precedes the body */
    int found = 0;
    for (size_t i = 0; sids && i + body.n <= sn; i++)
        if (memcmp(sids + i, body.v, body.n * 4) == 0)
            found = 1;
    CHECK(found);
    const char *text = sids ? json_string_value(json_object_get(r.msg.json, "text")) : NULL;
    CHECK(text && strcmp(text, gold) == 0);
    reply_free(&r);
    free(sids);
    free(req);
    /* ids that do not spell the body, out of range ids, wrong types */
    json_array_append_new(arr, json_integer(body.v[0]));
    req = json_dumps(root, JSON_COMPACT);
    call_json(&r, DS4W_T_RENDER_CHAT, req);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "messages[2]._ds4_raw.body_ids");
    reply_free(&r);
    free(req);
    json_array_set_new(arr, 0, json_integer((json_int_t)V->n + 5));
    req = json_dumps(root, JSON_COMPACT);
    call_json(&r, DS4W_T_RENDER_CHAT, req);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "messages[2]._ds4_raw.body_ids");
    reply_free(&r);
    free(req);
    json_object_set_new(rawo, "body_ids", json_string("1 2 3"));
    req = json_dumps(root, JSON_COMPACT);
    call_json(&r, DS4W_T_RENDER_CHAT, req);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "messages[2]._ds4_raw.body_ids");
    reply_free(&r);
    free(req);
    tok_ids_free(&body);
    free(ids);
    free(hf);
    json_decref(root);
    free(in);
    free(gold);
}

static void test_render_errors(void)
{
    static const struct {
        const char *json;
        int code;
        const char *field;
    } cases[] = {
        {"{}", DS4W_E_INVALID_REQUEST, "messages"},
        {"{\"messages\":{}}", DS4W_E_INVALID_REQUEST, "messages"},
        {"{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}", DS4W_E_INVALID_REQUEST,
         "messages[0].role"},
        {"{\"messages\":[7]}", DS4W_E_INVALID_REQUEST, NULL},
        {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", DS4W_E_INVALID_REQUEST, NULL},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":{\"foo\":true}}",
         DS4W_E_INVALID_REQUEST, "options.foo"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":{\"add_bos\":1}}",
         DS4W_E_INVALID_REQUEST, "options.add_bos"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":[]}",
         DS4W_E_INVALID_REQUEST, "options"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":false}",
         DS4W_E_INVALID_REQUEST, "add_generation_prompt"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n_ctx\":\"big\"}",
         DS4W_E_INVALID_REQUEST, "n_ctx"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n_ctx\":-1}",
         DS4W_E_INVALID_REQUEST, "n_ctx"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"huge\"}",
         DS4W_E_INVALID_REQUEST, "reasoning_effort"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"thinking\":\"on\"}",
         DS4W_E_INVALID_REQUEST, "thinking"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}",
         DS4W_E_INVALID_REQUEST, "tools"},
        {"{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":7}]}",
         DS4W_E_INVALID_REQUEST, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct reply r;
        call_json(&r, DS4W_T_RENDER_CHAT, cases[i].json);
        CHECKF(r.rc == cases[i].code, "case %zu: rc %d (%s)", i, r.rc, r.err);
        CHECKF(!cases[i].field || strcmp(r.field, cases[i].field) == 0,
               "case %zu: field '%s' want '%s' (%s)", i, r.field, cases[i].field, r.err);
        reply_free(&r);
    }
    /* a large random conversation renders, and ids decode to the text */
    json_t *msgs = json_array();
    for (int i = 0; i < 200; i++) {
        char *t = random_text(1 + rnd(20));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", i % 2 ? "assistant" : "user",
                                              "content", t));
        free(t);
    }
    json_t *o = json_pack("{s:o}", "messages", msgs);
    char *req = json_dumps(o, JSON_COMPACT);
    struct reply r;
    size_t n;
    int32_t *ids = render_ids(req, &n, &r);
    CHECKF(ids != NULL, "%s", r.err);
    tok_buf back = {0};
    const char *text = ids ? json_string_value(json_object_get(r.msg.json, "text")) : "";
    CHECK(ids && tok_decode_bytes(V, (const uint32_t *)ids, n, &back, NULL) == 0 &&
          back.len == strlen(text) && memcmp(back.data, text, back.len) == 0);
    tok_buf_free(&back);
    free(ids);
    reply_free(&r);
    free(req);
    json_decref(o);
}

static void test_count_and_types(void)
{
    struct reply r;
    const char *t = "Count these <｜User｜> tokens, 世界!";
    char *js = text_req(t, NULL, 0);
    call_json(&r, DS4W_T_COUNT_TOKENS, js);
    tok_ids want = encode(t, strlen(t), TOK_MODE_PLAIN);
    CHECK(r.rc == DS4W_OK && r.msg.type == DS4W_T_TOKEN_COUNT &&
          json_integer_value(json_object_get(r.msg.json, "count")) == (json_int_t)want.n);
    tok_ids_free(&want);
    free(js);
    reply_free(&r);
    call_json(&r, DS4W_T_COUNT_TOKENS, "{}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "messages");
    reply_free(&r);
    call_json(&r, DS4W_T_COUNT_TOKENS,
              "{\"text\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "text");
    reply_free(&r);
    call_json(&r, DS4W_T_COUNT_TOKENS, "{\"messages\":[{\"role\":\"nobody\"}]}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "messages[0].role");
    reply_free(&r);
    /* replies, other daemons' requests and unknown types are refused */
    call_json(&r, DS4W_T_TOKENS, "{\"count\":0}");
    CHECK(r.rc != DS4W_OK);
    reply_free(&r);
    call_json(&r, DS4W_T_KV_SET_DIR, "{\"dir\":\"/tmp\"}");
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, NULL);
    reply_free(&r);
    call_json(&r, 0x7777, "{}");
    CHECK_ERR(&r, DS4W_E_UNKNOWN_TYPE, NULL);
    reply_free(&r);
    uint8_t hdr[DS4W_HDR_SIZE];
    make_hdr(hdr, DS4W_T_PING, 0x80);
    ds4w_buf fr[1] = {{hdr, sizeof hdr}};
    call_frames(&r, fr, 1, NULL); /* unknown flag bit */
    CHECK_ERR(&r, DS4W_E_BAD_FRAME, NULL);
    reply_free(&r);
    fr[0].len = 20; /* short header */
    call_frames(&r, fr, 1, NULL);
    CHECK_ERR(&r, DS4W_E_BAD_FRAME, NULL);
    reply_free(&r);
}

/* --- live daemon ------------------------------------------------------------ */

/* Path of the tokenizerd binary: <build>/tests/test_x -> <build>/tokenizerd. */
static int daemon_path(char *out, size_t len)
{
    const char *env = getenv("DS4_TOKENIZERD");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    char self[2048];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(self, '/');
        if (!s)
            return -1;
        *s = 0;
    }
    snprintf(out, len, "%s/tokenizerd", self);
    struct stat st;
    return stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0 ? 0 : -1;
}

/* Read "READY <pid>\n" from fd within a bound (a wait, not a sleep). */
static int wait_ready(int fd, pid_t pid)
{
    char buf[64];
    size_t n = 0;
    while (n < sizeof buf - 1) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 60000) <= 0)
            return -1;
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = 0;
        if (strchr(buf, '\n'))
            break;
    }
    char want[32];
    snprintf(want, sizeof want, "READY %d\n", (int)pid);
    return strcmp(buf, want) == 0 ? 0 : -1;
}

/* Send o, receive the reply with the same request id (10 s bound). */
static int live_call(void *sock, ds4w_out *o, ds4w_msg *m)
{
    uint8_t id[16];
    memcpy(id, o->reqid, 16);
    char err[256];
    if (ds4w_send(sock, NULL, o, 0, err, sizeof err)) {
        fprintf(stderr, "send: %s\n", err);
        return -1;
    }
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 10000) != 1) {
        fprintf(stderr, "no reply within 10 s\n");
        return -1;
    }
    int rc = ds4w_recv(sock, m, 0, 0, err, sizeof err);
    if (rc != DS4W_OK) {
        fprintf(stderr, "recv: %d %s\n", rc, err);
        ds4w_msg_close(m);
        return -1;
    }
    return memcmp(m->reqid, id, 16) == 0 ? 0 : -1;
}

/* A request with one JSON frame (text) and a fresh request id. */
static void live_req(ds4w_out *o, uint16_t type, const char *json)
{
    uint8_t id[16];
    ds4w_uuid_new(id);
    ds4w_out_init(o, type, id);
    if (json)
        ds4w_out_json_text(o, json, strlen(json));
}

/* Requests against the running daemon. */
static void live_session(void *sock)
{
    ds4w_out o;
    ds4w_msg m;
    live_req(&o, DS4W_T_PING, NULL);
    CHECK(live_call(sock, &o, &m) == 0 && m.type == DS4W_T_PONG &&
          json_is_true(json_object_get(m.json, "ready")));
    ds4w_msg_close(&m);
    /* TOKENIZE */
    const char *t = "Hello, 世界 <｜User｜>";
    tok_ids want = encode(t, strlen(t), TOK_MODE_RAW);
    char *js = text_req(t, "raw", 0);
    live_req(&o, DS4W_T_TOKENIZE, js);
    free(js);
    int ok = live_call(sock, &o, &m) == 0 && m.type == DS4W_T_TOKENS;
    CHECK(ok);
    int32_t ids[64];
    CHECK(ok && ds4w_msg_count(&m, 1) == want.n && want.n < 64 &&
          ds4w_msg_i32(&m, 1, ids) == want.n && memcmp(ids, want.v, want.n * 4) == 0);
    ds4w_msg_close(&m);
    /* RENDER_CHAT of golden 1 */
    char *req = render_req(test_data_path("dsv4-encoding/test_input_1.json"), 1);
    char *gold = test_read_file(test_data_path("dsv4-encoding/test_output_1.txt"), NULL);
    size_t hn = 0;
    int32_t *hf = hf_ids("test_output_1", &hn);
    live_req(&o, DS4W_T_RENDER_CHAT, req ? req : "{}");
    ok = live_call(sock, &o, &m) == 0 && m.type == DS4W_T_RENDERED;
    CHECK(ok);
    if (ok && hf && gold) {
        size_t n = ds4w_msg_count(&m, 1);
        int32_t *got = ds4_xmalloc((n + 1) * 4);
        ds4w_msg_i32(&m, 1, got);
        CHECK(n == hn && memcmp(got, hf, n * 4) == 0);
        CHECK(strcmp(json_string_value(json_object_get(m.json, "text")), gold) == 0);
        free(got);
    }
    ds4w_msg_close(&m);
    /* DETOKENIZE: the first 2 bytes of 世 are carried, the rest completes it */
    live_req(&o, DS4W_T_DETOKENIZE, "{\"final\":true}");
    ds4w_out_i32(&o, (const int32_t *)want.v, want.n);
    ds4w_out_bytes(&o, "\xe4\xb8", 2);
    ok = live_call(sock, &o, &m) == 0 && m.type == DS4W_T_TEXT;
    CHECK(ok && strcmp(json_string_value(json_object_get(m.json, "text")),
                       "\xEF\xBF\xBDHello, 世界 <｜User｜>") == 0);
    ds4w_msg_close(&m);
    /* garbage frames: ERROR, and the daemon keeps serving */
    CHECK(zmq_send(sock, "garbage!", 8, 0) == 8);
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    char err[256];
    CHECK(zmq_poll(&it, 1, 10000) == 1);
    CHECK(ds4w_recv(sock, &m, 0, 0, err, sizeof err) == DS4W_OK && m.type == DS4W_T_ERROR &&
          json_integer_value(json_object_get(m.json, "code")) == DS4W_E_BAD_FRAME);
    ds4w_msg_close(&m);
    live_req(&o, DS4W_T_TOKENIZE, "{\"text\":\"x\",\"mode\":\"weird\"}");
    CHECK(live_call(sock, &o, &m) == 0 && m.type == DS4W_T_ERROR &&
          strcmp(json_string_value(json_object_get(m.json, "field")), "mode") == 0);
    ds4w_msg_close(&m);
    live_req(&o, DS4W_T_STATS_GET, NULL);
    ok = live_call(sock, &o, &m) == 0 && m.type == DS4W_T_STATS;
    json_t *c = ok ? json_object_get(m.json, "counters") : NULL;
    CHECK(ok && json_integer_value(json_object_get(c, "encode_requests")) == 1 &&
          json_integer_value(json_object_get(c, "render_requests")) == 1 &&
          json_integer_value(json_object_get(c, "frames_bad")) == 1);
    ds4w_msg_close(&m);
    tok_ids_free(&want);
    free(req);
    free(gold);
    free(hf);
}

/* Spawn the real daemon, talk to it, stop it with SIGTERM. */
static void test_live(const char *tokjson)
{
    char bin[4096];
    if (daemon_path(bin, sizeof bin)) {
        fprintf(stderr, "tokenizerd binary not found (%s); build it first\n", bin);
        CHECK(0);
        return;
    }
    char dir[] = "/tmp/ds4-tokd-test-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char inst[64], fdarg[16];
    snprintf(inst, sizeof inst, "tokdtest%d", (int)getpid());
    int nfd[2];
    CHECK(pipe(nfd) == 0);
    snprintf(fdarg, sizeof fdarg, "%d", nfd[1]);
    pid_t pid = fork();
    if (pid == 0) {
        close(nfd[0]);
        execl(bin, bin, "--foreground", "--run-dir", dir, "--instance", inst, "--notify-fd",
              fdarg, "--tokenizer-json", tokjson, "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    close(nfd[1]);
    CHECK(pid > 0);
    int ready = pid > 0 && wait_ready(nfd[0], pid) == 0;
    CHECKF(ready, "tokenizerd did not signal READY");
    close(nfd[0]);
    if (ready) {
        void *ctx = zmq_ctx_new();
        void *sock = zmq_socket(ctx, ZMQ_DEALER);
        char ep[4200];
        snprintf(ep, sizeof ep, "ipc://%s/tokenizerd.sock", dir);
        CHECK(ds4w_socket_setup(sock, 0) == 0 && zmq_connect(sock, ep) == 0);
        live_session(sock);
        zmq_close(sock);
        zmq_ctx_term(ctx);
    }
    int st = -1;
    if (pid > 0) {
        kill(pid, SIGTERM);
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tokenizerd exit status 0x%x", st);
    }
    char sockp[4200];
    snprintf(sockp, sizeof sockp, "%s/tokenizerd.sock", dir);
    CHECK(access(sockp, F_OK) != 0); /* removed by ds4d_fini */
    rmdir(dir);
}

int main(void)
{
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (!path || !*path)
        path = DEFAULT_TOKJSON;
    char err[256] = "";
    if (tok_vocab_from_json_file(path, &V, err, sizeof err)) {
        fprintf(stderr, "cannot load %s: %s\n", path, err);
        CHECK(0);
        return test_main_end("test_tokenizerd");
    }
    CHECKF(tok_service_init(&S, V, NULL, path, err, sizeof err) == 0, "%s", err);
    E = tok_encoder_new(V, err, sizeof err);
    test_ping_stats();
    test_tokenize();
    test_detokenize();
    test_render_goldens();
    test_render_direct();
    test_render_plain_content();
    test_render_raw_replay();
    test_render_errors();
    test_count_and_types();
    test_live(path);
    tok_encoder_free(E);
    tok_service_fini(&S);
    tok_vocab_free(V);
    return test_main_end("test_tokenizerd");
}
