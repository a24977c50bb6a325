/* engined.c - the engine daemon: owns the compute backend (the OpenCL
 * device, or the plain-C reference), the weights, the live sessions, the
 * scheduler and the sampler, and serves generation jobs on a ROUTER socket
 * (docs/PROTOCOL.md §5.3, docs/ENGINED.md).
 *
 * This file is the socket thread: options, the poll loop, decoding and
 * dispatch (eng_service.c), sending what the scheduler thread
 * (eng_sched.c) produced, readiness and draining. PING is answered at
 * once also while the model loads (ready: false); READY goes to
 * --notify-fd once the model is loaded. SIGTERM: new jobs are refused
 * (unavailable), running and queued ones finish; after --drain-ms the
 * rest end with GEN_DONE error "unavailable". */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/daemon.h"
#include "common/daemon_msg.h"
#include "common/log.h"
#include "common/util.h"
#include "common/wire.h"
#include "eng_backend.h"
#include "kvd/kv_client.h"
#include "eng_service.h"

/* Command-line options of engined (the common block comes from ds4d). */
struct engd_opts {
    const char *model;
    const char *backend;
    int ctx;
    int prefill_chunk;
    int backend_chunk;
    uint64_t state_budget_mb;
    int max_batch;
    int max_queue;
    int max_sessions;
    int retry_after_ms;
    int exact;
    int test_mode;
    int trace;
    int no_weights_manifest;
    const char *kvd_endpoint;
    int no_kvd;
    int kv_cross_quant;
    int kv_min_tokens, kv_align, kv_trim, kv_periodic, kv_cold_max;
    int kv_lookup_timeout_ms, kv_put_timeout_ms, kv_save_queue;
};

/* Receive and dispatch one message. 1 handled, 0 none waiting, -1 error. */
static int serve_one(ds4d *d, void *sock, eng_service *svc)
{
    ds4w_msg m;
    char err[512] = "";
    int rc = ds4d_recv(d, sock, &m, err, sizeof err);
    if (rc <= 0)
        return rc;
    if (rc == 1) {
        const char *field = NULL;
        rc = eng_service_handle(svc, &m, &field, err, sizeof err);
        if (rc)
            ds4d_send_error(d, sock, &m, rc, field, err);
    }
    ds4d_msg_done(&m);
    return 1;
}

/* Create, configure and bind the ROUTER socket. NULL on failure (logged). */
static void *open_socket(ds4d *d, void *ctx)
{
    char ep[DS4D_PATH_MAX + 16];
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    if (!sock) {
        ds4_err("zmq_socket: %s", zmq_strerror(errno));
        return NULL;
    }
    /* a stream may run ahead of its reader by this many messages before
     * the client counts as not reading (its job is then cancelled) */
    int hwm = 100000;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (ds4w_socket_setup(sock, 1) || ds4d_endpoint(d, "engined", ep, sizeof ep) ||
        ds4d_bind(d, sock, ep)) {
        ds4_err("cannot set up the engined socket");
        zmq_close(sock);
        return NULL;
    }
    ds4_info("listening on %s", ep);
    return sock;
}

/* The poll loop. Returns the exit status. */
static int run_loop(ds4d *d, void *sock, eng_service *svc)
{
    zmq_pollitem_t it[2] = {{sock, 0, ZMQ_POLLIN, 0}, {NULL, svc->efd, ZMQ_POLLIN, 0}};
    int announced = 0, drain_started = 0;
    while (ds4d_running(d)) {
        if (ds4d_draining(d)) {
            if (!drain_started) {
                drain_started = 1;
                eng_service_set_draining(svc);
                ds4_info("draining: %u jobs to finish", eng_service_busy_jobs(svc));
            }
            if (eng_service_busy_jobs(svc) == 0) {
                ds4_info("drained, stopping");
                ds4d_stop(d);
                break;
            }
        }
        it[0].revents = it[1].revents = 0;
        /* the scheduler writes the eventfd after every state change (model
         * loaded, a message queued, a job ended), so no timeout is needed;
         * ds4d_poll shortens it to the drain deadline */
        int n = ds4d_poll(d, it, 2, -1);
        if (n < 0)
            return 1;
        if (it[1].revents & ZMQ_POLLIN)
            eng_service_clear_wake(svc);
        if (!announced && eng_service_ready(svc)) {
            announced = 1;
            if (ds4d_ready(d))
                return 1;
        }
        if (eng_service_load_failed(svc)) {
            ds4_err("the model could not be loaded: stopping");
            return 1;
        }
        eng_service_flush(svc, sock);
        if ((it[0].revents & ZMQ_POLLIN)) {
            while (serve_one(d, sock, svc) > 0)
                ;
            eng_service_flush(svc, sock);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct engd_opts o;
    const char *def_backend = eng_backend_find("cl") ? "cl" : "ref";
    const struct ds4_opt extra[] = {
        {"model", 'm', DS4_OPT_STRING, &o.model, NULL, "ds4-layout GGUF model file (required)"},
        {"backend", 0, DS4_OPT_STRING, &o.backend, def_backend,
         "compute backend: cl (OpenCL) or ref (plain-C reference)"},
        {"ctx", 'c', DS4_OPT_INT, &o.ctx, "32768", "context size (tokens per session)"},
        {"prefill-chunk", 0, DS4_OPT_INT, &o.prefill_chunk, "512",
         "prompt tokens per prefill step (decode steps run between chunks)"},
        {"backend-chunk", 0, DS4_OPT_INT, &o.backend_chunk, "0",
         "the backend's own prefill chunk (0: its default)"},
        {"state-budget-mb", 0, DS4_OPT_U64, &o.state_budget_mb, "0",
         "device memory for session state, MiB (0: backend default)"},
        {"max-batch", 0, DS4_OPT_INT, &o.max_batch, "8", "jobs running at once (decode batch)"},
        {"max-queue", 0, DS4_OPT_INT, &o.max_queue, "64",
         "jobs waiting; beyond that new jobs get ERROR busy"},
        {"max-sessions", 0, DS4_OPT_INT, &o.max_sessions, "16",
         "idle sessions kept resident for prefix reuse"},
        {"retry-after-ms", 0, DS4_OPT_INT, &o.retry_after_ms, "1000",
         "retry_after_ms in busy errors"},
        {"exact", 0, DS4_OPT_FLAG, &o.exact, NULL,
         "no QAT simulation, F32 KV (compare with HF transformers)"},
        {"test-mode", 0, DS4_OPT_FLAG, &o.test_mode, NULL,
         "allow test-only features (forced decoding)"},
        {"trace", 0, DS4_OPT_FLAG, &o.trace, NULL, "log the timing of every step"},
        {"no-weights-manifest", 0, DS4_OPT_FLAG, &o.no_weights_manifest, NULL,
         "do not publish or re-attach the shared weights manifest"},
        {"kvd-endpoint", 0, DS4_OPT_STRING, &o.kvd_endpoint, NULL,
         "kvd's endpoint for KV checkpoints (default: $DS4_KVD_ENDPOINT, else kvd.sock in "
         "the run directory)"},
        {"no-kvd", 0, DS4_OPT_FLAG, &o.no_kvd, NULL, "no KV checkpoints (no kvd lookups or saves)"},
        {"kv-cross-quant", 0, DS4_OPT_FLAG, &o.kv_cross_quant, NULL,
         "reuse checkpoints of another quant of the same model (family fingerprint)"},
        {"kv-min-tokens", 0, DS4_OPT_INT, &o.kv_min_tokens, "512",
         "shortest prefix checkpointed or looked up"},
        {"kv-align", 0, DS4_OPT_INT, &o.kv_align, "2048",
         "cold checkpoints are aligned down to a multiple of this"},
        {"kv-trim", 0, DS4_OPT_INT, &o.kv_trim, "32",
         "tokens left off the end of a prompt before aligning its cold checkpoint"},
        {"kv-periodic", 0, DS4_OPT_INT, &o.kv_periodic, "10240",
         "checkpoint long prefills every this many tokens (0: never)"},
        {"kv-cold-max", 0, DS4_OPT_INT, &o.kv_cold_max, "30000",
         "no cold checkpoint for prompts longer than this (0: no limit)"},
        {"kv-lookup-timeout-ms", 0, DS4_OPT_INT, &o.kv_lookup_timeout_ms, "300",
         "deadline of a kvd lookup; past it the job is prefilled in full"},
        {"kv-put-timeout-ms", 0, DS4_OPT_INT, &o.kv_put_timeout_ms, "10000",
         "deadline of a checkpoint save (writer thread)"},
        {"kv-save-queue", 0, DS4_OPT_INT, &o.kv_save_queue, "4",
         "checkpoints waiting for kvd; more are dropped"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    ds4d d;
    int rc = ds4d_init(&d, "engined", argc, argv, extra, NULL);
    if (rc == DS4D_INIT_HELP)
        return 0;
    if (rc != DS4D_INIT_OK)
        return 1;
    int status = 1;
    void *ctx = NULL, *sock = NULL;
    eng_service svc;
    int svc_ok = 0;
    char err[256] = "";
    if (!o.model) {
        ds4_err("--model GGUF is required");
        goto out;
    }
    if (o.ctx < 1 || o.prefill_chunk < 1 || o.backend_chunk < 0 || o.max_batch < 1 ||
        o.max_batch > 64 || o.max_queue < 0 || o.max_sessions < 0 || o.retry_after_ms < 0) {
        ds4_err("bad option value (ctx, prefill-chunk >= 1; 1 <= max-batch <= 64; others >= 0)");
        goto out;
    }
    if (o.kv_min_tokens < 1 || o.kv_align < 1 || o.kv_trim < 0 || o.kv_periodic < 0 ||
        o.kv_cold_max < 0 || o.kv_lookup_timeout_ms < 1 || o.kv_put_timeout_ms < 1 ||
        o.kv_save_queue < 1) {
        ds4_err("bad kv option value (kv-min-tokens, kv-align, timeouts, kv-save-queue >= 1; "
                "others >= 0)");
        goto out;
    }
    static char kvd_ep[DS4D_PATH_MAX + 16];
    if (!o.no_kvd) {
        if (o.kvd_endpoint && o.kvd_endpoint[0])
            snprintf(kvd_ep, sizeof kvd_ep, "%s", o.kvd_endpoint);
        else if (kvc_default_endpoint(d.run_dir, kvd_ep, sizeof kvd_ep)) {
            ds4_err("kvd's default endpoint does not fit: use --kvd-endpoint or --no-kvd");
            goto out;
        }
    }
    if (!eng_backend_find(o.backend)) {
        ds4_err("no backend named \"%s\" in this build", o.backend);
        goto out;
    }
    eng_service_opts so = {
        .model = o.model,
        .backend = o.backend,
        .max_ctx = (uint32_t)o.ctx,
        .prefill_chunk = (uint32_t)o.prefill_chunk,
        .backend_chunk = (uint32_t)o.backend_chunk,
        .state_budget = o.state_budget_mb << 20,
        .max_batch = (uint32_t)o.max_batch,
        .max_queue = (uint32_t)o.max_queue,
        .max_idle_sessions = (uint32_t)o.max_sessions,
        .retry_after_ms = (uint32_t)o.retry_after_ms,
        .exact = o.exact,
        .test_mode = o.test_mode,
        .trace = o.trace,
        .instance = d.opt.instance,
        .no_weights_manifest = o.no_weights_manifest,
        .kvd_endpoint = o.no_kvd ? NULL : kvd_ep,
        .kv_cross_quant = o.kv_cross_quant,
        .kv_min_tokens = (uint32_t)o.kv_min_tokens,
        .kv_align = (uint32_t)o.kv_align,
        .kv_trim = (uint32_t)o.kv_trim,
        .kv_periodic = (uint32_t)o.kv_periodic,
        .kv_cold_max = (uint32_t)o.kv_cold_max,
        .kv_lookup_timeout_ms = o.kv_lookup_timeout_ms,
        .kv_put_timeout_ms = o.kv_put_timeout_ms,
        .kv_queue = (uint32_t)o.kv_save_queue,
    };
    if (eng_service_init(&svc, &so, &d.stats, err, sizeof err)) {
        ds4_err("cannot start: %s", err);
        goto out;
    }
    svc_ok = 1;
    ctx = zmq_ctx_new();
    if (!ctx || !(sock = open_socket(&d, ctx)))
        goto out;
    if (eng_service_start(&svc, err, sizeof err)) {
        ds4_err("cannot start the scheduler: %s", err);
        goto out;
    }
    ds4_info("loading %s with backend %s (context %d, batch %d, queue %d)%s", o.model, o.backend,
             o.ctx, o.max_batch, o.max_queue, o.test_mode ? ", TEST MODE" : "");
    status = run_loop(&d, sock, &svc);
out:
    if (svc_ok) {
        eng_service_stop(&svc); /* jobs still alive end with an error */
        if (sock) {
            eng_service_flush(&svc, sock);
            int linger = 1000; /* let the last GEN_DONE messages leave */
            zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        }
    }
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    if (svc_ok)
        eng_service_fini(&svc);
    int fin = ds4d_fini(&d);
    return status ? status : fin;
}
