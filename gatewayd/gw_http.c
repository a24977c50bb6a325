/* gw_http.c - libmicrohttpd server, routing and the request lifecycle (see
 * gw_http.h). One thread per connection: a handler may block on the
 * pipeline (its waiter also watches the client socket), so nothing here
 * needs suspend/resume. */
#include "gw_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw_api.h"
#include "gw_sse.h"
#include "log.h"
#include "util.h"

#define SSE_BLOCK (32 * 1024)

enum route {
    R_NONE = 0,
    R_CHAT,
    R_CMPL,
    R_RESP,
    R_MSG,
    R_COUNT,
    R_MODELS,
    R_MODEL,
    R_HEALTH,
    R_METRICS,
};

struct gw_http {
    struct MHD_Daemon *d;
    gw_ctx *cx;
    gw_http_opts o;
    char *keybuf;
    char *keys[16];
    size_t nkeys;
    int port;
    int inflight; /* atomic */
    int quiesced;
    gw_map_opts mo;
};

struct hreq {
    gw_http *h;
    int route, api;
    int post;          /* the route takes a body */
    char rid[DS4W_UUID_STR];
    uint8_t reqid[16];
    char method[16];
    char path[160];
    gw_buf body;
    int too_large;
    int refused;       /* refusal is answered once the body is read */
    gw_err refusal;
    int queued;        /* a response is queued */
    int status;
    int streaming;
    int client_gone;
    uint64_t t0;
    gw_gen *gen;
    gw_req req;
    int have_req;
};

static void stat_add(gw_http *h, unsigned i, uint64_t v)
{
    if (h->cx->stats)
        ds4_stats_add(h->cx->stats, i, v);
}

/* ---- routing ------------------------------------------------------------- */

static int api_of(int route)
{
    switch (route) {
    case R_CHAT: return GW_API_CHAT;
    case R_CMPL: return GW_API_COMPLETIONS;
    case R_RESP: return GW_API_RESPONSES;
    case R_MSG: return GW_API_MESSAGES;
    case R_COUNT: return GW_API_COUNT;
    default: return GW_API_CHAT; /* error shape of the other routes */
    }
}

/* Route of a path; *want_post says which method it takes. */
static int route_of(const char *url, int *want_post)
{
    static const struct {
        const char *path;
        int route, post;
    } tab[] = {
        {"/v1/chat/completions", R_CHAT, 1}, {"/chat/completions", R_CHAT, 1},
        {"/v1/completions", R_CMPL, 1},      {"/completions", R_CMPL, 1},
        {"/v1/responses", R_RESP, 1},        {"/responses", R_RESP, 1},
        {"/v1/messages", R_MSG, 1},          {"/v1/messages/count_tokens", R_COUNT, 1},
        {"/v1/models", R_MODELS, 0},         {"/models", R_MODELS, 0},
        {"/health", R_HEALTH, 0},            {"/v1/health", R_HEALTH, 0},
        {"/metrics", R_METRICS, 0},
    };
    size_t n = strlen(url);
    while (n > 1 && url[n - 1] == '/')
        n--; /* tolerate a trailing slash */
    for (size_t i = 0; i < DS4_ARRAY_LEN(tab); i++)
        if (strlen(tab[i].path) == n && !strncmp(url, tab[i].path, n)) {
            *want_post = tab[i].post;
            return tab[i].route;
        }
    if (!strncmp(url, "/v1/models/", 11) && url[11]) {
        *want_post = 0;
        return R_MODEL;
    }
    return R_NONE;
}

/* ---- responses ------------------------------------------------------------ */

static void common_headers(struct hreq *hr, struct MHD_Connection *c, struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Request-Id", hr->rid);
    if (hr->h->o.cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    }
}

static enum MHD_Result queue(struct hreq *hr, struct MHD_Connection *c, int status,
                             struct MHD_Response *r)
{
    common_headers(hr, c, r);
    hr->status = status;
    hr->queued = 1;
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result respond_text(struct hreq *hr, struct MHD_Connection *c, int status,
                                    char *text, size_t len, const char *ctype, const gw_err *e)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (e && e->status == 429) {
        char ra[32];
        snprintf(ra, sizeof ra, "%u", e->retry_after_s ? e->retry_after_s : 1);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    if (e && e->status == 405)
        MHD_add_response_header(r, "Allow", hr->post ? "POST" : "GET");
    stat_add(hr->h, DS4S_GW_bytes_out, len);
    return queue(hr, c, status, r);
}

static enum MHD_Result respond_json(struct hreq *hr, struct MHD_Connection *c, int status, json_t *body,
                                    const gw_err *e)
{
    char *s = gw_json_dump(body);
    json_decref(body);
    return respond_text(hr, c, status, s, strlen(s), "application/json", e);
}

static enum MHD_Result respond_error(struct hreq *hr, struct MHD_Connection *c, const gw_err *e)
{
    ds4_log_req(e->status >= 500 ? DS4_LOG_WARN : DS4_LOG_INFO, hr->rid, "%s %s -> %d: %s%s%s",
                hr->method, hr->path, e->status, e->msg, e->param[0] ? " field=" : "", e->param);
    return respond_json(hr, c, e->status, gw_error_json(hr->api, e), e);
}

static enum MHD_Result fail(struct hreq *hr, struct MHD_Connection *c, int kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result fail(struct hreq *hr, struct MHD_Connection *c, int kind, const char *fmt, ...)
{
    gw_err e;
    char msg[sizeof e.msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gw_fail(&e, kind, NULL, "%s", msg);
    return respond_error(hr, c, &e);
}

/* ---- auth ---------------------------------------------------------------- */

static int key_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static int authorized(gw_http *h, struct MHD_Connection *c)
{
    if (!h->nkeys)
        return 1;
    const char *got = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!got && auth && !strncasecmp(auth, "Bearer ", 7)) {
        got = auth + 7;
        while (*got == ' ')
            got++;
    }
    if (!got)
        return 0;
    int ok = 0;
    for (size_t i = 0; i < h->nkeys; i++)
        ok |= key_eq(got, h->keys[i]);
    return ok;
}

/* ---- streaming ------------------------------------------------------------ */

static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct hreq *hr = cls;
    gw_gen *g = hr->gen;
    gw_http *h = hr->h;
    for (;;) {
        if (g->sse.len) {
            size_t n = g->sse.len < max ? g->sse.len : max;
            memcpy(buf, g->sse.p, n);
            gw_buf_consume(&g->sse, n);
            stat_add(h, DS4S_GW_bytes_out, n);
            return (ssize_t)n;
        }
        if (g->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int rc = gw_gen_step(g, h->cx->keepalive_ms);
        if (rc == 0) {
            gw_sse_comment(&g->sse, g->first_token_ns ? "keepalive" : "prefill");
            stat_add(h, DS4S_GW_keepalives, 1);
        } else if (rc == -1) {
            hr->client_gone = 1;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        /* rc == -2: fail_stream wrote the final events; flush them */
    }
}

/* ---- endpoints ----------------------------------------------------------- */

static int client_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static enum MHD_Result do_count(struct hreq *hr, struct MHD_Connection *c)
{
    uint64_t n = 0;
    gw_err e;
    if (gw_count_tokens(hr->h->cx, &hr->req, hr->reqid, client_fd(c), &n, &e))
        return respond_error(hr, c, &e);
    return respond_json(hr, c, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n), NULL);
}

static enum MHD_Result do_generate(struct hreq *hr, struct MHD_Connection *c)
{
    gw_http *h = hr->h;
    const gw_api_ops *ops = gw_api_ops_for(hr->api);
    gw_gen *g = ds4_xcalloc(1, sizeof *g);
    hr->gen = g;
    gw_gen_init(g, h->cx, &hr->req, ops, hr->reqid, client_fd(c));
    if (gw_gen_prepare(g))
        return respond_error(hr, c, &g->err);
    int rc = gw_gen_submit(g);
    if (rc == -2) {
        hr->client_gone = 1;
        return MHD_NO;
    }
    if (rc) {
        stat_add(h, DS4S_GW_upstream_errors, 1);
        if (g->err.kind == GW_E_UNAVAILABLE && strstr(g->err.msg, "did not answer"))
            stat_add(h, DS4S_GW_upstream_timeouts, 1);
        return respond_error(hr, c, &g->err);
    }
    if (hr->req.stream) {
        hr->streaming = 1;
        stat_add(h, DS4S_GW_streams, 1);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, stream_cb, hr, NULL);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        return queue(hr, c, 200, r);
    }
    while (!g->done) {
        rc = gw_gen_step(g, -1);
        if (rc == -1) {
            hr->client_gone = 1;
            return MHD_NO;
        }
    }
    if (g->failed)
        return respond_error(hr, c, &g->err);
    return respond_json(hr, c, 200, ops->body(g), NULL);
}

static enum MHD_Result do_post(struct hreq *hr, struct MHD_Connection *c)
{
    gw_http *h = hr->h;
    gw_err e;
    stat_add(h, DS4S_GW_bytes_in, hr->body.len);
    if (!gw_utf8_valid(hr->body.p ? hr->body.p : "", hr->body.len) && hr->body.len) {
        gw_fail(&e, GW_E_INVALID, NULL, "the request body is not valid UTF-8");
        return respond_error(hr, c, &e);
    }
    json_t *body = gw_parse_body(hr->body.p, hr->body.len, &e);
    if (!body)
        return respond_error(hr, c, &e);
    gw_req_init(&hr->req, hr->api);
    hr->have_req = 1;
    int rc = gw_map(body, &h->mo, &hr->req, &e);
    json_decref(body);
    gw_buf_free(&hr->body);
    if (rc)
        return respond_error(hr, c, &e);
    if (hr->req.n_replayed || hr->req.billing_stripped)
        ds4_log_req(DS4_LOG_DEBUG, hr->rid, "mapped: %d replayed turns, billing line %s",
                    hr->req.n_replayed, hr->req.billing_stripped ? "stripped" : "absent");
    if (hr->route == R_COUNT)
        return do_count(hr, c);
    if (!gw_ctx_vocab(h->cx))
        return fail(hr, c, GW_E_UNAVAILABLE,
                    "the gateway is starting: it has not loaded the vocabulary yet (tokenizerd not reached)");
    return do_generate(hr, c);
}

static enum MHD_Result do_get(struct hreq *hr, struct MHD_Connection *c, const char *url)
{
    gw_ctx *cx = hr->h->cx;
    switch (hr->route) {
    case R_HEALTH: {
        int ok = 0;
        json_t *j = gw_health_json(cx, hr->reqid, 1000, &ok);
        json_object_set_new(j, "inflight", json_integer(__atomic_load_n(&hr->h->inflight, __ATOMIC_RELAXED) - 1));
        return respond_json(hr, c, ok ? 200 : 503, j, NULL);
    }
    case R_METRICS: {
        size_t n = 0;
        char *t = gw_metrics_text(cx, hr->h->o.instance, &n);
        return respond_text(hr, c, 200, t, n, "text/plain; version=0.0.4; charset=utf-8", NULL);
    }
    case R_MODELS:
        return respond_json(hr, c, 200, gw_models_json(cx), NULL);
    case R_MODEL: {
        json_t *m = gw_model_json(cx, url + 11);
        if (m)
            return respond_json(hr, c, 200, m, NULL);
        gw_err e;
        gw_fail(&e, GW_E_NOT_FOUND, "model", "model '%.80s' is not served here (try '%s')", url + 11,
                cx->model_name);
        return respond_error(hr, c, &e);
    }
    default:
        return fail(hr, c, GW_E_NOT_FOUND, "not found");
    }
}

static enum MHD_Result do_options(struct hreq *hr, struct MHD_Connection *c)
{
    if (!hr->h->o.cors)
        return fail(hr, c, GW_E_METHOD, "OPTIONS is only answered with --cors");
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    const char *rh = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            rh && *rh ? rh : "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta");
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    return queue(hr, c, 204, r);
}

/* ---- MHD callbacks ----------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    gw_http *h = cls;
    struct hreq *hr = *con_cls;
    if (!hr) {
        hr = ds4_xcalloc(1, sizeof *hr);
        hr->h = h;
        hr->t0 = ds4_now_ns();
        ds4w_uuid_new(hr->reqid);
        ds4w_uuid_format(hr->reqid, hr->rid);
        snprintf(hr->method, sizeof hr->method, "%s", method);
        snprintf(hr->path, sizeof hr->path, "%s", url);
        *con_cls = hr;
        __atomic_fetch_add(&h->inflight, 1, __ATOMIC_RELAXED);
        stat_add(h, DS4S_GW_http_requests, 1);
        stat_add(h, DS4S_GW_http_inflight, 1);
        int want_post = 0;
        hr->route = route_of(url, &want_post);
        hr->api = api_of(hr->route);
        hr->post = want_post;
        int is_post = !strcmp(method, "POST");
        if (!strcmp(method, "OPTIONS"))
            return do_options(hr, c);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
        unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
        /* a body up to this size is read and dropped before a refusal, so
         * that a client still sending it gets to read the answer; past it
         * the refusal is sent at once and the connection closed */
        int drainable = n <= 4 * (unsigned long long)h->o.max_body + (16u << 20);
        int has_body = n > 0 || te;
        gw_err e;
        int refuse = 1;
        if (hr->route == R_NONE) {
            gw_fail(&e, GW_E_NOT_FOUND, NULL, "no route for %.16s %.100s", method, url);
        } else if (want_post != is_post && !(!want_post && !strcmp(method, "HEAD"))) {
            gw_fail(&e, GW_E_METHOD, NULL, "%.16s is not allowed on %.100s (use %s)", method, url,
                    want_post ? "POST" : "GET");
        } else if (hr->route != R_HEALTH && !authorized(h, c)) {
            stat_add(h, DS4S_GW_http_401, 1);
            gw_fail(&e, GW_E_AUTH, NULL, "invalid or missing API key (send Authorization: Bearer KEY or x-api-key: KEY)");
        } else if (n > h->o.max_body) {
            stat_add(h, DS4S_GW_http_413, 1);
            gw_fail(&e, GW_E_TOO_LARGE, NULL, "request body of %llu bytes is over the limit of %zu bytes", n,
                    h->o.max_body);
        } else {
            refuse = 0;
        }
        if (refuse) {
            if (has_body && drainable) {
                hr->refused = 1;
                hr->refusal = e;
                return MHD_YES;
            }
            return respond_error(hr, c, &e);
        }
        return MHD_YES;
    }
    if (hr->queued)
        return MHD_YES;
    if (*upload_size) {
        if (!hr->too_large && !hr->refused) {
            if (hr->body.len + *upload_size > h->o.max_body) {
                hr->too_large = 1;
                gw_buf_free(&hr->body);
            } else {
                gw_buf_put(&hr->body, upload, *upload_size);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (hr->refused)
        return respond_error(hr, c, &hr->refusal);
    if (hr->too_large) {
        stat_add(h, DS4S_GW_http_413, 1);
        return fail(hr, c, GW_E_TOO_LARGE, "request body is over the limit of %zu bytes", h->o.max_body);
    }
    if (hr->post)
        return do_post(hr, c);
    return do_get(hr, c, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    gw_http *h = cls;
    struct hreq *hr = *con_cls;
    if (!hr)
        return;
    *con_cls = NULL;
    int gone = hr->client_gone || toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ||
               (hr->gen && !hr->gen->done && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    if (hr->gen) {
        if (!hr->gen->done)
            gw_gen_cancel(hr->gen, "client disconnected");
        gw_gen_free(hr->gen);
        free(hr->gen);
    }
    if (gone)
        stat_add(h, DS4S_GW_client_disconnects, 1);
    int st = hr->status;
    if (st >= 200 && st < 300)
        stat_add(h, DS4S_GW_http_2xx, 1);
    else if (st >= 400 && st < 500)
        stat_add(h, DS4S_GW_http_4xx, 1);
    else if (st >= 500)
        stat_add(h, DS4S_GW_http_5xx, 1);
    if (st == 429)
        stat_add(h, DS4S_GW_http_429, 1);
    uint64_t dt = ds4_now_ns() - hr->t0;
    stat_add(h, DS4S_GW_request_ns, dt);
    if (hr->route != R_HEALTH && hr->route != R_METRICS)
        ds4_log_req(DS4_LOG_INFO, hr->rid, "%s %s -> %d%s%s in %.1f ms", hr->method, hr->path, st,
                    hr->streaming ? " (stream)" : "", gone ? " client gone" : "", (double)dt / 1e6);
    if (hr->have_req)
        gw_req_free(&hr->req);
    gw_buf_free(&hr->body);
    free(hr);
    if (h->cx->stats)
        ds4_stats_sub(h->cx->stats, DS4S_GW_http_inflight, 1);
    __atomic_fetch_sub(&h->inflight, 1, __ATOMIC_RELAXED);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = 0;
    ds4_log(DS4_LOG_DEBUG, "libmicrohttpd: %s", buf);
}

/* ---- start/stop ---------------------------------------------------------- */

gw_http *gw_http_start(gw_ctx *cx, const gw_http_opts *o, char *err, size_t errlen)
{
    gw_http *h = ds4_xcalloc(1, sizeof *h);
    h->cx = cx;
    h->o = *o;
    h->mo.replay = cx->replay;
    h->mo.test_mode = cx->test_mode;
    h->mo.model_name = cx->model_name;
    if (o->api_keys && *o->api_keys) {
        h->keybuf = ds4_xstrdup(o->api_keys);
        for (char *save = NULL, *k = strtok_r(h->keybuf, ",", &save); k && h->nkeys < DS4_ARRAY_LEN(h->keys);
             k = strtok_r(NULL, ",", &save))
            if (*k)
                h->keys[h->nkeys++] = k;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int gai = getaddrinfo(o->host && *o->host ? o->host : "127.0.0.1", port, &hints, &ai);
    if (gai) {
        ds4_seterr(err, errlen, "cannot resolve --host %s: %s", o->host, gai_strerror(gai));
        free(h->keybuf);
        free(h);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_CONNECTION_LIMIT, o->max_conns ? o->max_conns : 256u,
                            MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s ? o->idle_timeout_s : 600u,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        ds4_seterr(err, errlen, "cannot listen on %s:%d (address in use or not available)",
                   o->host ? o->host : "127.0.0.1", o->port);
        free(h->keybuf);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    return h;
}

int gw_http_port(const gw_http *h)
{
    return h->port;
}

void gw_http_quiesce(gw_http *h)
{
    if (h && h->d && !h->quiesced) {
        h->quiesced = 1;
        MHD_socket s = MHD_quiesce_daemon(h->d);
        if (s != MHD_INVALID_SOCKET)
            close(s); /* ours once quiesced */
    }
}

int gw_http_inflight(const gw_http *h)
{
    return __atomic_load_n(&h->inflight, __ATOMIC_RELAXED);
}

void gw_http_stop(gw_http *h)
{
    if (!h)
        return;
    if (h->d)
        MHD_stop_daemon(h->d);
    free(h->keybuf);
    free(h);
}
