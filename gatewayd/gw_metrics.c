/* gw_metrics.c - the gateway's own small endpoints: /metrics (Prometheus
 * text of every stage's stats segment, read through shared memory without
 * disturbing the stages), /health (PING to each stage) and /v1/models. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_http.h"
#include "util.h"

static void append(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char **buf, size_t *len, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    *buf = ds4_xrealloc(*buf, *len + (size_t)n + 1);
    memcpy(*buf + *len, tmp, (size_t)n + 1);
    *len += (size_t)n;
}

static void metric(char **buf, size_t *len, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    append(buf, len, "# HELP ds4_gatewayd_%s %s\n# TYPE ds4_gatewayd_%s %s\nds4_gatewayd_%s %llu\n", name,
           help, name, type, name, (unsigned long long)v);
}

char *gw_metrics_text(gw_ctx *cx, const char *instance, size_t *len)
{
    char *buf = NULL;
    *len = 0;
    char names[32][32];
    int n = ds4_stats_list(instance, names, 32);
    for (int i = 0; i < n; i++) {
        ds4_stats st;
        char err[256];
        if (ds4_stats_attach(&st, instance, names[i], err, sizeof err) == 0) {
            ds4_stats_prometheus(&st, instance, &buf, len);
            ds4_stats_close(&st, 0);
        }
    }
    if (cx->replay) {
        gw_replay_stats rs;
        gw_replay_get_stats(cx->replay, &rs);
        metric(&buf, len, "replay_entries", "gauge", "assistant turns remembered for exact replay",
               rs.entries);
        metric(&buf, len, "replay_bytes", "gauge", "bytes held by the replay memory", rs.bytes);
        metric(&buf, len, "replay_hits_total", "counter", "assistant turns rendered from the replay memory",
               rs.hits);
        metric(&buf, len, "replay_mismatches_total", "counter",
               "remembered turns not used because the client changed them", rs.mismatches);
        metric(&buf, len, "replay_evictions_total", "counter", "turns evicted from the replay memory",
               rs.evictions);
    }
    if (cx->up) {
        gw_up_stats us;
        gw_up_get_stats(cx->up, &us);
        metric(&buf, len, "upstream_sent_total", "counter", "messages sent to tokenizerd and engined", us.sent);
        metric(&buf, len, "upstream_send_failed_total", "counter", "messages not sent (stage down)",
               us.send_failed);
        metric(&buf, len, "upstream_received_total", "counter", "messages received from the stages",
               us.received);
        metric(&buf, len, "upstream_stage_downs_total", "counter", "stage disconnects seen", us.stage_downs);
        metric(&buf, len, "stage_up_tokenizerd", "gauge", "1 while connected to tokenizerd",
               (uint64_t)gw_up_connected(cx->up, GW_TOK));
        metric(&buf, len, "stage_up_engined", "gauge", "1 while connected to engined",
               (uint64_t)gw_up_connected(cx->up, GW_ENG));
    }
    if (!buf)
        buf = ds4_xstrdup("");
    return buf;
}

json_t *gw_health_json(gw_ctx *cx, const uint8_t reqid[16], int timeout_ms, int *ok)
{
    static const char *const names[GW_NSTAGE] = {"tokenizerd", "engined"};
    gw_waiter *w = gw_waiter_new(cx->up, reqid);
    for (int s = 0; s < GW_NSTAGE; s++) {
        ds4w_out o;
        ds4w_out_init(&o, DS4W_T_PING, NULL);
        gw_waiter_send(w, s, &o, 1);
    }
    json_t *st[GW_NSTAGE] = {NULL, NULL};
    int got = 0;
    uint64_t deadline = ds4_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (got < GW_NSTAGE) {
        uint64_t now = ds4_now_ns();
        if (now >= deadline)
            break;
        gw_msg *m = NULL;
        if (gw_waiter_next(w, -1, (int)((deadline - now) / 1000000ull) + 1, &m) != 1)
            break;
        if (st[m->stage]) {
            gw_msg_free(m);
            continue;
        }
        if (m->type == DS4W_T_PONG) {
            json_t *ready = json_object_get(m->json, "ready");
            st[m->stage] = json_pack("{s:b,s:b,s:O?,s:O?}", "up", 1, "ready", json_is_true(ready), "pid",
                                     json_object_get(m->json, "pid"), "model", json_object_get(m->json, "model"));
            json_t *nctx = json_object_get(m->json, "n_ctx");
            if (m->stage == GW_ENG && json_is_integer(nctx) && json_integer_value(nctx) > 0)
                __atomic_store_n(&cx->n_ctx, (uint32_t)json_integer_value(nctx), __ATOMIC_RELAXED);
        } else {
            st[m->stage] = json_pack("{s:b,s:b,s:s}", "up", 0, "ready", 0, "error", gw_msg_err_text(m));
        }
        got++;
        gw_msg_free(m);
    }
    gw_waiter_free(w);
    json_t *stages = json_object();
    *ok = 1;
    for (int s = 0; s < GW_NSTAGE; s++) {
        if (!st[s])
            st[s] = json_pack("{s:b,s:b,s:s}", "up", 0, "ready", 0, "error", "no answer");
        *ok &= json_is_true(json_object_get(st[s], "ready"));
        json_object_set_new(stages, names[s], st[s]);
    }
    return json_pack("{s:s,s:o,s:I}", "status", *ok ? "ok" : "unavailable", "stages", stages, "n_ctx",
                     (json_int_t)cx->n_ctx);
}

json_t *gw_model_json(gw_ctx *cx, const char *id)
{
    if (id && strcmp(id, cx->model_name) != 0)
        return NULL;
    /* OpenAI fields plus Anthropic's (type, display_name, created_at) */
    char iso[32];
    time_t t = (time_t)cx->start_time;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:I}", "id", cx->model_name, "object", "model", "created",
                     (json_int_t)cx->start_time, "owned_by", "ds4", "type", "model", "display_name",
                     "DeepSeek V4 Flash", "created_at", iso, "context_length", (json_int_t)cx->n_ctx);
}

json_t *gw_models_json(gw_ctx *cx)
{
    return json_pack("{s:s,s:[o],s:b,s:s,s:s}", "object", "list", "data", gw_model_json(cx, NULL), "has_more", 0,
                     "first_id", cx->model_name, "last_id", cx->model_name);
}
