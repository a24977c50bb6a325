/* gw_http.h - the HTTP server of gatewayd (libmicrohttpd, one thread per
 * connection): routing, API keys, body limit, CORS, error shapes, and the
 * bridge from an HTTP request to a gw_gen (non-streaming: the handler
 * runs the job to its end; streaming: a content-reader callback steps the
 * job and hands out SSE bytes as they are produced, with keepalive
 * comments while the engine is silent).
 *
 * Routes (query strings such as "?beta=true" are ignored; the same paths
 * without the /v1 prefix are accepted for the OpenAI ones):
 *   POST /v1/chat/completions   /v1/completions   /v1/responses
 *   POST /v1/messages           /v1/messages/count_tokens
 *   GET  /v1/models  /v1/models/{id}   /health   /metrics
 *   OPTIONS *  (204 with CORS headers when --cors; 405 otherwise)
 * /health needs no API key; everything else does when one is set
 * (Authorization: Bearer KEY, or x-api-key: KEY). */
#ifndef DS4_GW_HTTP_H
#define DS4_GW_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "gw_gen.h"

typedef struct gw_http_opts {
    const char *host;        /* bind address, default 127.0.0.1 */
    int port;                /* 0: pick a free port */
    size_t max_body;         /* bytes; larger bodies get 413 */
    const char *api_keys;    /* comma-separated, NULL or "": no auth */
    int cors;                /* add CORS headers, answer preflights */
    unsigned max_conns;      /* simultaneous connections */
    unsigned idle_timeout_s; /* keep-alive connections idle this long close */
    const char *instance;    /* stats instance, for /metrics */
    const char *version;
} gw_http_opts;

typedef struct gw_http gw_http;

/* Start serving. NULL with a message (bad address, port in use). */
gw_http *gw_http_start(gw_ctx *cx, const gw_http_opts *o, char *err, size_t errlen);
/* The bound TCP port. */
int gw_http_port(const gw_http *h);
/* Stop accepting new connections (draining). */
void gw_http_quiesce(gw_http *h);
/* Requests being served. */
int gw_http_inflight(const gw_http *h);
/* Stop: in-flight requests are failed (their engine jobs cancelled). */
void gw_http_stop(gw_http *h);

/* /metrics body: every stats segment of the instance in Prometheus text
 * plus the gateway's replay and upstream counters (malloc'd). */
char *gw_metrics_text(gw_ctx *cx, const char *instance, size_t *len);
/* /health: ping both stages (at most timeout_ms); JSON body, *ok set when
 * every stage answered ready. */
json_t *gw_health_json(gw_ctx *cx, const uint8_t reqid[16], int timeout_ms, int *ok);
/* /v1/models body, and one model (NULL if id is not served). */
json_t *gw_models_json(gw_ctx *cx);
json_t *gw_model_json(gw_ctx *cx, const char *id);

#endif
