/* gatewayd.c - the HTTP gateway daemon: OpenAI (chat, completions,
 * Responses) and Anthropic (messages, count_tokens) APIs over tokenizerd
 * and engined.
 *
 * Threads: the main thread runs the daemon skeleton's poll loop, which is
 * also the ZeroMQ broker (gw_upstream.h) and serves the control socket
 * (PING, STATS_GET on <run-dir>/gatewayd.sock); libmicrohttpd runs one
 * thread per HTTP connection (gw_http.h). Readiness: READY on --notify-fd
 * once the HTTP port is listening; the port is also written to
 * <run-dir>/gatewayd.port or --port-file (useful with --port 0). SIGTERM: stop accepting
 * connections, let in-flight requests finish (bounded by --drain-ms),
 * then cancel what is left. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "gguf.h"
#include "gw_http.h"
#include "log.h"
#include "tokenizerd/tok_vocab.h"
#include "util.h"
#include "wire.h"

#define GATEWAYD_VERSION "0.1.0"

struct gw_opts {
    const char *model, *tokenizer_json, *host, *api_key, *model_name, *port_file, *test_script;
    int port, cors, test_mode, keepalive_ms, stage_timeout_ms;
    uint64_t max_body_mb, ctx, max_conns, replay_entries, replay_mb;
};

/* The vocabulary from a GGUF, or from a tokenizer.json when the path ends
 * in ".json". 0, or -1 (logged). */
static int load_vocab(const char *path, tok_vocab **v)
{
    char err[256] = "";
    uint64_t t0 = ds4_now_ns();
    size_t n = strlen(path);
    int rc;
    if (n > 5 && !strcmp(path + n - 5, ".json")) {
        rc = tok_vocab_from_json_file(path, v, err, sizeof err);
    } else {
        gguf_file *f = NULL;
        rc = gguf_open(path, &f, err, sizeof err);
        if (rc == 0) {
            rc = tok_vocab_from_gguf(f, v, err, sizeof err);
            gguf_close(f);
        }
    }
    if (rc)
        ds4_err("cannot load the vocabulary from %s: %s", path, err);
    else
        ds4_info("vocabulary of %s: %u tokens (%.0f ms)", path, (*v)->n, (double)(ds4_now_ns() - t0) / 1e6);
    return rc;
}

/* Without --model: learn the model path from tokenizerd's PONG (field
 * "model") and load the same vocabulary; until then generation requests
 * get 503. One PING per second. */
struct vocab_probe {
    gw_waiter *w;
    uint64_t last_ns;
    tok_vocab *v;
    int failed;
};

static void probe_vocab(gw_ctx *cx, struct vocab_probe *p)
{
    if (!p->w || p->v || p->failed || !gw_up_connected(cx->up, GW_TOK))
        return;
    gw_msg *m = NULL;
    while (!p->v && gw_waiter_next(p->w, -1, 0, &m) == 1) {
        const char *path = json_string_value(json_object_get(m->json, "model"));
        if (m->type == DS4W_T_PONG && path) {
            if (load_vocab(path, &p->v) == 0) {
                gw_ctx_set_vocab(cx, p->v);
            } else {
                p->failed = 1;
                ds4_err("start gatewayd with --model (the vocabulary tokenizerd uses)");
            }
        }
        gw_msg_free(m);
    }
    uint64_t now = ds4_now_ns();
    if (!p->v && !p->failed && now - p->last_ns > 1000000000ull) {
        p->last_ns = now;
        ds4w_out o;
        ds4w_out_init(&o, DS4W_T_PING, NULL);
        gw_waiter_send(p->w, GW_TOK, &o, 1);
    }
}

/* PING and STATS_GET on the control socket. */
static void serve_control(ds4d *d, void *sock, gw_http *http, uint64_t start_ns, int test_mode)
{
    for (;;) {
        ds4w_msg m;
        char err[256] = "";
        int rc = ds4w_recv(sock, &m, 1, ZMQ_DONTWAIT, err, sizeof err);
        if (rc < 0) {
            ds4w_msg_close(&m);
            return;
        }
        ds4_stats_add(&d->stats, DS4S_frames_in, 1);
        if (rc > 0) {
            ds4_stats_add(&d->stats, DS4S_frames_bad, 1);
            ds4w_reply_error(sock, &m, rc, err);
        } else if (m.type == DS4W_T_PING) {
            json_t *o = json_pack("{s:s,s:I,s:s,s:i,s:b,s:I,s:b,s:i}", "daemon", "gatewayd", "pid",
                                  (json_int_t)getpid(), "version", GATEWAYD_VERSION, "proto", DS4W_VERSION,
                                  "ready", 1, "uptime_ms", (json_int_t)((ds4_now_ns() - start_ns) / 1000000u),
                                  "test_mode", test_mode, "http_port", gw_http_port(http));
            ds4w_send_json(sock, &m.route, DS4W_T_PONG, m.reqid, 0, 0, o, err, sizeof err);
            json_decref(o);
        } else if (m.type == DS4W_T_STATS_GET) {
            size_t n;
            const struct ds4_stat_def *defs = ds4_stats_table("gatewayd", &n);
            json_t *c = json_object();
            for (size_t i = 0; i < n; i++)
                json_object_set_new(c, defs[i].name, json_integer((json_int_t)ds4_stats_get(&d->stats, (unsigned)i)));
            json_t *o = json_pack("{s:s,s:o,s:{s:i}}", "daemon", "gatewayd", "counters", c, "info", "http_port",
                                  gw_http_port(http));
            ds4w_send_json(sock, &m.route, DS4W_T_STATS, m.reqid, 0, 0, o, err, sizeof err);
            json_decref(o);
        } else {
            ds4w_reply_error(sock, &m, DS4W_E_INVALID_REQUEST, "gatewayd serves PING and STATS_GET only");
        }
        ds4_stats_add(&d->stats, DS4S_frames_out, 1);
        ds4w_msg_close(&m);
    }
}

/* Learn the engine's context size (STATS info.max_ctx) when the command
 * line did not fix it: one STATS_GET per second until answered. */
struct ctx_probe {
    gw_waiter *w;
    uint64_t last_ns;
    int done;
};

static void probe_ctx(gw_ctx *cx, struct ctx_probe *p)
{
    if (!p->w || p->done || !gw_up_connected(cx->up, GW_ENG))
        return;
    gw_msg *m = NULL;
    while (!p->done && gw_waiter_next(p->w, -1, 0, &m) == 1) {
        json_t *n = json_object_get(json_object_get(m->json, "info"), "max_ctx");
        if (m->type == DS4W_T_STATS && json_is_integer(n) && json_integer_value(n) > 0) {
            __atomic_store_n(&cx->n_ctx, (uint32_t)json_integer_value(n), __ATOMIC_RELAXED);
            ds4_info("engine context: %u tokens", cx->n_ctx);
            p->done = 1;
        } else if (m->type == DS4W_T_STATS) {
            p->done = 1; /* an engine that does not tell: keep the default */
        }
        gw_msg_free(m);
    }
    uint64_t now = ds4_now_ns();
    if (!p->done && now - p->last_ns > 1000000000ull) {
        p->last_ns = now;
        ds4w_out o;
        ds4w_out_init(&o, DS4W_T_STATS_GET, NULL);
        gw_waiter_send(p->w, GW_ENG, &o, 1);
    }
}

static void write_port_file(const ds4d *d, const char *opt, int port, char *path, size_t cap)
{
    if (opt && *opt)
        snprintf(path, cap, "%s", opt);
    else
        snprintf(path, cap, "%s/gatewayd.port", d->run_dir);
    char tmp[DS4D_PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        ds4_warn("cannot write %s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
    static struct gw_opts o;
    const struct ds4_opt extra[] = {
        {"model", 'm', DS4_OPT_STRING, &o.model, NULL,
         "GGUF whose vocabulary detokenizes the output (default: the one tokenizerd reports)"},
        {"tokenizer-json", 0, DS4_OPT_STRING, &o.tokenizer_json, NULL, "vocabulary from a HF tokenizer.json instead"},
        {"host", 0, DS4_OPT_STRING, &o.host, "127.0.0.1", "HTTP bind address"},
        {"port", 0, DS4_OPT_INT, &o.port, "8000", "HTTP port (0: any free port, see --port-file)"},
        {"port-file", 0, DS4_OPT_STRING, &o.port_file, NULL,
         "write the bound HTTP port here (default <run-dir>/gatewayd.port)"},
        {"api-key", 0, DS4_OPT_STRING, &o.api_key, NULL, "require this key (comma-separated list allowed)"},
        {"cors", 0, DS4_OPT_FLAG, &o.cors, NULL, "send CORS headers and answer preflight requests"},
        {"max-body-mb", 0, DS4_OPT_U64, &o.max_body_mb, "32", "largest request body (413 above)"},
        {"max-conns", 0, DS4_OPT_U64, &o.max_conns, "256", "simultaneous HTTP connections"},
        {"ctx", 'c', DS4_OPT_U64, &o.ctx, "0", "context size (0: ask engined, else 32768)"},
        {"model-name", 0, DS4_OPT_STRING, &o.model_name, "deepseek-v4-flash", "model id in /v1/models"},
        {"keepalive-ms", 0, DS4_OPT_INT, &o.keepalive_ms, "5000", "SSE keepalive comment interval"},
        {"stage-timeout-ms", 0, DS4_OPT_INT, &o.stage_timeout_ms, "10000",
         "wait this long for tokenizerd replies and engine acceptance"},
        {"replay-max-entries", 0, DS4_OPT_U64, &o.replay_entries, "100000", "turns kept for exact replay"},
        {"replay-max-mb", 0, DS4_OPT_U64, &o.replay_mb, "256", "memory for exact replay"},
        {"test-mode", 0, DS4_OPT_FLAG, &o.test_mode, NULL, "accept ds4_test_output (forced decoding, tests only)"},
        {"test-script", 0, DS4_OPT_STRING, &o.test_script, NULL,
         "test mode: JSON array of assistant texts forced in turn on every request (agent tests)"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    ds4d d;
    int rc = ds4d_init(&d, "gatewayd", argc, argv, extra, NULL);
    if (rc == DS4D_INIT_HELP)
        return 0;
    if (rc != DS4D_INIT_OK)
        return 1;
    uint64_t start_ns = ds4_now_ns();
    tok_vocab *v = NULL;
    void *zctx = NULL, *ctl = NULL;
    gw_up *up = NULL;
    gw_http *http = NULL;
    gw_replay *replay = NULL;
    struct ctx_probe probe = {0};
    struct vocab_probe vprobe = {0};
    char port_path[DS4D_PATH_MAX + 32] = "";
    int status = 1;
    char err[512] = "";
    if (o.keepalive_ms < 10 || o.stage_timeout_ms < 10) {
        ds4_err("--keepalive-ms and --stage-timeout-ms must be at least 10");
        goto out;
    }
    if (o.model && o.tokenizer_json) {
        ds4_err("give at most one of --model and --tokenizer-json");
        goto out;
    }
    if ((o.model || o.tokenizer_json) && load_vocab(o.model ? o.model : o.tokenizer_json, &v))
        goto out;
    zctx = zmq_ctx_new();
    char tok_ep[DS4D_PATH_MAX + 16], eng_ep[DS4D_PATH_MAX + 16], ctl_ep[DS4D_PATH_MAX + 16];
    if (!zctx || ds4d_endpoint(&d, "tokenizerd", tok_ep, sizeof tok_ep) ||
        ds4d_endpoint(&d, "engined", eng_ep, sizeof eng_ep) || ds4d_endpoint(&d, "gatewayd", ctl_ep, sizeof ctl_ep))
        goto out;
    ctl = zmq_socket(zctx, ZMQ_ROUTER);
    if (!ctl || ds4w_socket_setup(ctl, 1) || ds4d_bind(&d, ctl, ctl_ep))
        goto out;
    up = gw_up_new(zctx, tok_ep, eng_ep, err, sizeof err);
    if (!up) {
        ds4_err("%s", err);
        goto out;
    }
    replay = gw_replay_new(o.replay_entries, o.replay_mb << 20);
    static gw_ctx cx;
    cx.up = up;
    cx.replay = replay;
    cx.stats = &d.stats;
    cx.test_mode = o.test_mode;
    cx.n_ctx = o.ctx ? (uint32_t)o.ctx : 32768;
    cx.keepalive_ms = o.keepalive_ms;
    cx.stage_timeout_ms = o.stage_timeout_ms;
    cx.model_name = o.model_name;
    cx.instance = d.opt.instance;
    cx.start_time = (int64_t)time(NULL);
    if (v)
        gw_ctx_set_vocab(&cx, v);
    if (o.test_script) {
        json_error_t je;
        char serr[160] = "";
        cx.test_script = json_load_file(o.test_script, JSON_REJECT_DUPLICATES, &je);
        pthread_mutex_init(&cx.script_mu, NULL);
        if (!o.test_mode || !cx.test_script || gw_script_check(cx.test_script, serr, sizeof serr)) {
            ds4_err("--test-script %s: %s", o.test_script,
                    !o.test_mode ? "needs --test-mode" : cx.test_script ? serr : je.text);
            goto out;
        }
        ds4_info("test script: %zu scripted answers", json_array_size(cx.test_script));
    }
    gw_http_opts ho = {
        .host = o.host, .port = o.port, .max_body = (size_t)o.max_body_mb << 20, .api_keys = o.api_key,
        .cors = o.cors, .max_conns = (unsigned)o.max_conns, .idle_timeout_s = 600,
        .instance = d.opt.instance, .version = GATEWAYD_VERSION,
    };
    http = gw_http_start(&cx, &ho, err, sizeof err);
    if (!http) {
        ds4_err("%s", err);
        goto out;
    }
    write_port_file(&d, o.port_file, gw_http_port(http), port_path, sizeof port_path);
    ds4_info("listening on http://%s:%d (tokenizerd %s, engined %s%s%s)", o.host, gw_http_port(http), tok_ep,
             eng_ep, o.api_key ? ", API key required" : "", o.test_mode ? ", TEST MODE" : "");
    if (!o.ctx) {
        uint8_t pid[16];
        ds4w_uuid_new(pid);
        probe.w = gw_waiter_new(up, pid);
    } else {
        probe.done = 1;
    }
    if (!v) {
        uint8_t vid[16];
        ds4w_uuid_new(vid);
        vprobe.w = gw_waiter_new(up, vid);
    }
    if (ds4d_ready(&d))
        goto out;
    int quiesced = 0;
    while (ds4d_running(&d)) {
        zmq_pollitem_t items[1 + GW_UP_NITEMS];
        items[0] = (zmq_pollitem_t){ctl, 0, ZMQ_POLLIN, 0};
        gw_up_items(up, items + 1);
        int n = ds4d_poll(&d, items, 1 + GW_UP_NITEMS, 250);
        if (n < 0)
            break;
        if (items[0].revents & ZMQ_POLLIN)
            serve_control(&d, ctl, http, start_ns, o.test_mode);
        gw_up_dispatch(up, items + 1);
        probe_ctx(&cx, &probe);
        probe_vocab(&cx, &vprobe);
        if (ds4d_draining(&d)) {
            if (!quiesced) {
                gw_http_quiesce(http);
                quiesced = 1;
                ds4_info("draining: %d requests in flight", gw_http_inflight(http));
            }
            if (gw_http_inflight(http) == 0) {
                ds4_info("drained, stopping");
                ds4d_stop(&d);
            }
        }
    }
    status = 0;
out:
    if (up)
        gw_up_shutdown(up); /* wakes every connection thread still waiting */
    if (http) {
        /* keep brokering while libmicrohttpd joins its threads: their
         * cancels must still reach engined */
        gw_http_quiesce(http);
        gw_http_stop(http);
        zmq_pollitem_t items[GW_UP_NITEMS];
        gw_up_items(up, items);
        if (zmq_poll(items, GW_UP_NITEMS, 0) > 0)
            gw_up_dispatch(up, items);
    }
    if (probe.w)
        gw_waiter_free(probe.w);
    if (vprobe.w)
        gw_waiter_free(vprobe.w);
    tok_vocab_free(vprobe.v);
    if (port_path[0])
        unlink(port_path);
    gw_up_free(up);
    if (ctl)
        zmq_close(ctl);
    if (zctx)
        zmq_ctx_term(zctx);
    gw_replay_free(replay);
    json_decref(cx.test_script);
    free(cx.script_used);
    tok_vocab_free(v);
    int fin = ds4d_fini(&d);
    return status ? status : fin;
}
