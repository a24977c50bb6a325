/* tokenizerd.c - the tokenizer daemon: loads the DeepSeek V4 vocabulary
 * (from a GGUF's tokenizer.ggml.* metadata or a HF tokenizer.json), binds a
 * ROUTER socket and answers TOKENIZE, DETOKENIZE, RENDER_CHAT, COUNT_TOKENS,
 * PING and STATS_GET (handlers in tok_service.c). Single-threaded: every
 * request is answered before the next is read, so draining after SIGTERM
 * means answering what is already queued and stopping. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"
#include "daemon_msg.h"
#include "gguf.h"
#include "log.h"
#include "tok_service.h"
#include "tok_vocab.h"
#include "util.h"
#include "wire.h"

/* Command-line options of tokenizerd (the common block comes from ds4d). */
struct tokd_opts {
    const char *model;
    const char *tokenizer_json;
    int test_mode;
};

/* Load the vocabulary named by the options. 0, or -1 (logged). */
static int load_vocab(const struct tokd_opts *o, tok_vocab **v)
{
    char err[256] = "";
    if (!o->model == !o->tokenizer_json) {
        ds4_err("give exactly one of --model GGUF and --tokenizer-json PATH");
        return -1;
    }
    uint64_t t0 = ds4_now_ns();
    int rc;
    if (o->model) {
        gguf_file *f = NULL;
        rc = gguf_open(o->model, &f, err, sizeof err);
        if (rc == 0) {
            rc = tok_vocab_from_gguf(f, v, err, sizeof err);
            gguf_close(f);
        }
    } else {
        rc = tok_vocab_from_json_file(o->tokenizer_json, v, err, sizeof err);
    }
    if (rc) {
        ds4_err("cannot load the vocabulary from %s: %s", o->model ? o->model : o->tokenizer_json,
                err);
        return -1;
    }
    ds4_info("vocabulary: %u tokens, %u merges, %u added tokens (%.0f ms)", (*v)->n,
             (*v)->n_merges, (*v)->n_added, (double)(ds4_now_ns() - t0) / 1e6);
    return 0;
}

/* Receive and answer one message. 1 if one was handled, 0 if none was
 * waiting, -1 on a socket error (logged). */
static int serve_one(ds4d *d, void *sock, tok_service *svc)
{
    ds4w_msg m;
    char err[512] = "";
    int rc = ds4d_recv(d, sock, &m, err, sizeof err);
    if (rc <= 0)
        return rc;
    if (rc == 1) {
        ds4w_out out;
        const char *field = NULL;
        uint64_t t0 = ds4_now_ns();
        rc = tok_service_handle(svc, &m, &out, &field, err, sizeof err);
        if (rc) {
            ds4d_send_error(d, sock, &m, rc, field, err);
        } else {
            ds4d_send_reply(d, sock, &m, &out, t0);
        }
    }
    ds4d_msg_done(&m);
    return 1;
}

/* Answer everything queued on the socket without blocking. */
static int serve_pending(ds4d *d, void *sock, tok_service *svc)
{
    int rc;
    while ((rc = serve_one(d, sock, svc)) > 0)
        ;
    return rc;
}

/* The poll loop: serve until a signal asks us to stop; when draining,
 * answer what was already queued, then stop. */
static void run_loop(ds4d *d, void *sock, tok_service *svc)
{
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    while (ds4d_running(d)) {
        if (ds4d_draining(d)) {
            serve_pending(d, sock, svc);
            ds4_info("drained, stopping");
            ds4d_stop(d);
            break;
        }
        it.revents = 0;
        int n = ds4d_poll(d, &it, 1, -1);
        if (n < 0)
            break;
        if (n > 0 && (it.revents & ZMQ_POLLIN) && serve_pending(d, sock, svc) < 0)
            break;
    }
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
    if (ds4w_socket_setup(sock, 1) || ds4d_endpoint(d, "tokenizerd", ep, sizeof ep) ||
        ds4d_bind(d, sock, ep)) {
        ds4_err("cannot set up the tokenizerd socket");
        zmq_close(sock);
        return NULL;
    }
    ds4_info("listening on %s", ep);
    return sock;
}

int main(int argc, char **argv)
{
    static struct tokd_opts o;
    const struct ds4_opt extra[] = {
        {"model", 'm', DS4_OPT_STRING, &o.model, NULL,
         "GGUF file whose tokenizer.ggml.* metadata holds the vocabulary"},
        {"tokenizer-json", 0, DS4_OPT_STRING, &o.tokenizer_json, NULL,
         "load the vocabulary from a HF tokenizer.json instead of a GGUF"},
        {"test-mode", 0, DS4_OPT_FLAG, &o.test_mode, NULL, "report test_mode in PONG"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    ds4d d;
    int rc = ds4d_init(&d, "tokenizerd", argc, argv, extra, NULL);
    if (rc == DS4D_INIT_HELP)
        return 0;
    if (rc != DS4D_INIT_OK)
        return 1;
    tok_vocab *v = NULL;
    void *ctx = NULL, *sock = NULL;
    tok_service svc;
    int svc_ok = 0, status = 1;
    char err[256] = "";
    if (load_vocab(&o, &v))
        goto out;
    if (tok_service_init(&svc, v, &d.stats, o.model ? o.model : o.tokenizer_json, err,
                         sizeof err)) {
        ds4_err("cannot start the tokenizer: %s", err);
        goto out;
    }
    svc_ok = 1;
    svc.test_mode = o.test_mode;
    ctx = zmq_ctx_new();
    if (!ctx || !(sock = open_socket(&d, ctx)) || ds4d_ready(&d))
        goto out;
    run_loop(&d, sock, &svc);
    status = 0;
out:
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    if (svc_ok)
        tok_service_fini(&svc);
    tok_vocab_free(v);
    int fin = ds4d_fini(&d);
    return status ? status : fin;
}
