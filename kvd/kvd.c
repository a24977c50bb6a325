/* kvd.c - the KV cache daemon: keeps engined's session checkpoints on disk
 * (kv_store.h), answers KV_LOOKUP with the longest stored prefix of a token
 * sequence through a shared-memory transfer segment (or inline), stores
 * KV_PUT checkpoints crash-safely within a space budget, and switches its
 * storage directory on KV_SET_DIR (handlers in kv_service.c).
 * One thread serves requests; the file I/O of KV_PUT runs on a writer
 * thread (kv_writer.h) so lookups are never held up by a big write. A
 * directory switch first waits for the writes in flight; draining after
 * SIGTERM answers what is queued and finishes the writes.
 *
 * Test mode (--test-mode) honours DS4_KVD_CRASH_AT=N (and optionally
 * DS4_KVD_CRASH_FILTER=prefix): kvd SIGKILLs itself at the N-th crash
 * point (kv_crashpoint) so tests can check every interrupted write, and
 * DS4_KVD_WRITE_GATE=<fifo>: the writer reads a byte from it before each
 * write, so a test can hold a write in flight. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "daemon_msg.h"
#include "kv_service.h"
#include "log.h"
#include "util.h"
#include "wire.h"

struct kvd_opts {
    const char *dir;
    uint64_t space_mb;
    double halflife_s;
    int verify;
    uint64_t xfer_ttl_ms;
    uint64_t xfer_max_mb;
    uint64_t xfer_pool_mb;
    int test_mode;
};

/* Receive and answer one message: 1 handled, 0 none waiting, -1 error. */
static int serve_one(ds4d *d, void *sock, kv_service *svc)
{
    ds4w_msg m;
    char err[1024] = "";
    int rc = ds4d_recv(d, sock, &m, err, sizeof err);
    if (rc <= 0)
        return rc;
    if (rc == 1) {
        ds4w_out out;
        const char *field = NULL;
        uint64_t t0 = ds4_now_ns();
        rc = kv_service_handle(svc, &m, &out, &field, err, sizeof err);
        if (rc == KV_SVC_DEFERRED) {
            ds4_debug("%s handed to the writer", ds4w_type_name(m.type));
        } else if (rc) {
            ds4d_send_error(d, sock, &m, rc, field, err);
        } else {
            ds4d_send_reply(d, sock, &m, &out, t0);
        }
    }
    ds4d_msg_done(&m);
    return 1;
}

/* Where deferred replies (writes finished by the writer thread) go. */
struct reply_ctx {
    ds4d *d;
    void *sock;
};

static void deferred_reply(void *arg, const ds4w_msg *m, int rc, ds4w_out *out,
                           const char *field, const char *err)
{
    struct reply_ctx *r = arg;
    char rid[DS4W_UUID_STR];
    ds4w_uuid_format(m->reqid, rid);
    ds4_log_set_reqid(rid);
    if (rc) {
        ds4d_send_error(r->d, r->sock, (ds4w_msg *)m, rc, field, err);
    } else {
        char e2[256] = "";
        if (ds4w_send(r->sock, &m->route, out, ZMQ_DONTWAIT, e2, sizeof e2))
            ds4_warn("reply KV_STORED not sent: %s", e2);
        else
            ds4_stats_add(&r->d->stats, DS4S_frames_out, 1);
    }
    ds4_log_set_reqid(NULL);
}

static int serve_pending(ds4d *d, void *sock, kv_service *svc)
{
    int rc;
    while ((rc = serve_one(d, sock, svc)) > 0)
        ;
    return rc;
}

static void run_loop(ds4d *d, void *sock, kv_service *svc, kv_writer *w)
{
    zmq_pollitem_t it[2] = {{sock, 0, ZMQ_POLLIN, 0}, {NULL, kv_writer_fd(w), ZMQ_POLLIN, 0}};
    uint64_t last_tick = ds4_now_ns();
    while (ds4d_running(d)) {
        if (ds4d_draining(d)) {
            serve_pending(d, sock, svc);
            kv_service_complete_writes(svc, 1);
            ds4_info("drained, stopping");
            ds4d_stop(d);
            break;
        }
        it[0].revents = it[1].revents = 0;
        int n = ds4d_poll(d, it, 2, 1000);
        if (n < 0)
            break;
        if (n > 0 && (it[1].revents & ZMQ_POLLIN))
            kv_service_complete_writes(svc, 0);
        if (n > 0 && (it[0].revents & ZMQ_POLLIN) && serve_pending(d, sock, svc) < 0)
            break;
        if (ds4_now_ns() - last_tick > 1000000000ull) {
            kv_service_tick(svc);
            last_tick = ds4_now_ns();
        }
    }
}

static void *open_socket(ds4d *d, void *ctx)
{
    char ep[DS4D_PATH_MAX + 16];
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    if (!sock) {
        ds4_err("zmq_socket: %s", zmq_strerror(errno));
        return NULL;
    }
    if (ds4w_socket_setup(sock, 1) || ds4d_endpoint(d, "kvd", ep, sizeof ep) ||
        ds4d_bind(d, sock, ep)) {
        ds4_err("cannot set up the kvd socket");
        zmq_close(sock);
        return NULL;
    }
    ds4_info("listening on %s", ep);
    return sock;
}

/* The default storage directory: $XDG_CACHE_HOME/ds4/kv, ~/.cache/ds4/kv. */
static const char *default_dir(char *buf, size_t len)
{
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (x && *x == '/')
        snprintf(buf, len, "%s/ds4/kv", x);
    else if (h && *h == '/')
        snprintf(buf, len, "%s/.cache/ds4/kv", h);
    else
        return NULL;
    return buf;
}

/* Fault injection, only in test mode. */
static void setup_crash(const struct kvd_opts *o)
{
    const char *at = getenv("DS4_KVD_CRASH_AT");
    if (!at || !*at)
        return;
    if (!o->test_mode) {
        ds4_warn("DS4_KVD_CRASH_AT is ignored without --test-mode");
        return;
    }
    char *end;
    unsigned long long n = strtoull(at, &end, 10);
    if (*end) {
        ds4_warn("DS4_KVD_CRASH_AT=%s is not a number; ignored", at);
        return;
    }
    kv_crash_setup(n, getenv("DS4_KVD_CRASH_FILTER"));
    ds4_warn("test mode: will SIGKILL at crash point %llu%s%s", n,
             getenv("DS4_KVD_CRASH_FILTER") ? " matching " : "",
             getenv("DS4_KVD_CRASH_FILTER") ? getenv("DS4_KVD_CRASH_FILTER") : "");
}

int main(int argc, char **argv)
{
    static struct kvd_opts o;
    const struct ds4_opt extra[] = {
        {"kv-disk-dir", 0, DS4_OPT_STRING, &o.dir, NULL,
         "checkpoint directory (created; default $XDG_CACHE_HOME/ds4/kv or ~/.cache/ds4/kv)"},
        {"kv-disk-space-mb", 0, DS4_OPT_U64, &o.space_mb, "8192",
         "space budget of the directory in MiB (0: no limit)"},
        {"kv-evict-halflife-s", 0, DS4_OPT_DOUBLE, &o.halflife_s, "21600",
         "recency half-life of the eviction value, seconds"},
        {"kv-verify-on-start", 0, DS4_OPT_FLAG, &o.verify, NULL,
         "read and check every checkpoint completely at start and on a directory switch"},
        {"kv-transfer-ttl-ms", 0, DS4_OPT_U64, &o.xfer_ttl_ms, "120000",
         "unlink a KV_FOUND transfer segment not released within this time (0: never)"},
        {"kv-transfer-max-mb", 0, DS4_OPT_U64, &o.xfer_max_mb, "16384",
         "cap on unreleased transfer segments in MiB (oldest go first; 0: none)"},
        {"kv-transfer-pool-mb", 0, DS4_OPT_U64, &o.xfer_pool_mb, "1024",
         "released transfer segments kept mapped for reuse, MiB (no page faults on restore)"},
        {"test-mode", 0, DS4_OPT_FLAG, &o.test_mode, NULL,
         "test mode: report it in PONG, honour DS4_KVD_CRASH_AT"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    ds4d d;
    int rc = ds4d_init(&d, "kvd", argc, argv, extra, NULL);
    if (rc == DS4D_INIT_HELP)
        return 0;
    if (rc != DS4D_INIT_OK)
        return 1;
    void *ctx = NULL, *sock = NULL;
    kv_service svc;
    kv_writer writer;
    struct reply_ctx rctx = {&d, NULL};
    int svc_ok = 0, writer_ok = 0, status = 1;
    char err[1024] = "", dbuf[4096];
    const char *dir = o.dir ? o.dir : default_dir(dbuf, sizeof dbuf);
    if (!dir) {
        ds4_err("no --kv-disk-dir and neither XDG_CACHE_HOME nor HOME is set");
        goto out;
    }
    if (o.halflife_s <= 0) {
        ds4_err("--kv-evict-halflife-s must be > 0");
        goto out;
    }
    setup_crash(&o);
    int removed = ds4_shm_cleanup_stale(getuid(), d.opt.instance);
    if (removed > 0)
        ds4_info("removed %d stale shared-memory segments", removed);
    kv_service_cfg cfg = {
        .instance = d.opt.instance,
        .store = {o.space_mb * 1024 * 1024, o.halflife_s, o.verify, &d.stats},
        .xfer_ttl_ms = o.xfer_ttl_ms,
        .xfer_max_bytes = o.xfer_max_mb * 1024 * 1024,
        .xfer_pool_bytes = o.xfer_pool_mb * 1024 * 1024,
        .test_mode = o.test_mode,
        .writer = &writer,
        .reply = deferred_reply,
        .reply_arg = &rctx,
    };
    const char *gate = o.test_mode ? getenv("DS4_KVD_WRITE_GATE") : NULL;
    if (kv_writer_start(&writer, gate && *gate ? gate : NULL, err, sizeof err)) {
        ds4_err("%s", err);
        goto out;
    }
    writer_ok = 1;
    if (kv_service_init(&svc, dir, 1, &cfg, err, sizeof err)) {
        ds4_err("cannot use the storage directory: %s", err);
        goto out;
    }
    svc_ok = 1;
    ctx = zmq_ctx_new();
    if (!ctx || !(sock = open_socket(&d, ctx)) || ds4d_ready(&d))
        goto out;
    rctx.sock = sock;
    run_loop(&d, sock, &svc, &writer);
    status = 0;
out:
    if (svc_ok)
        kv_service_fini(&svc); /* ends (and answers) writes still in flight */
    if (writer_ok)
        kv_writer_stop(&writer);
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    int fin = ds4d_fini(&d);
    return status ? status : fin;
}
