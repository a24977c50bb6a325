/* gw_upstream.c - broker between connection threads and the stages'
 * ZeroMQ sockets (see gw_upstream.h). */
#include "gw_upstream.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define NBUCKET 1024

struct gw_waiter {
    gw_up *u;
    uint8_t reqid[16];
    int efd;
    pthread_mutex_t mu;
    gw_msg *qhead, *qtail;
    int pending[GW_NSTAGE];  /* atomic: replies still expected */
    struct gw_waiter *hnext; /* registry chain */
};

struct cmd {
    struct cmd *next;
    int stage;
    int expect_reply;
    uint8_t reqid[16];
    ds4w_out out;
};

struct gw_up {
    void *sock[GW_NSTAGE];
    void *mon[GW_NSTAGE];
    char ep[GW_NSTAGE][256];
    int connected[GW_NSTAGE]; /* atomic */
    int cmd_efd;
    pthread_mutex_t cmd_mu;
    struct cmd *chead, *ctail;
    pthread_mutex_t reg_mu;
    gw_waiter *bucket[NBUCKET];
    int nwaiters;
    int shutdown; /* atomic */
    gw_up_stats st;
};

static const char *const stage_name[GW_NSTAGE] = {"tokenizerd", "engined"};

static void stat_add(uint64_t *p)
{
    __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
}

void gw_msg_free(gw_msg *m)
{
    if (!m)
        return;
    json_decref(m->json);
    free(m->ids);
    free(m);
}

int gw_msg_err_code(const gw_msg *m)
{
    json_t *j = m->json;
    if (m->type == DS4W_T_GEN_DONE)
        j = json_object_get(m->json, "error");
    json_t *c = json_object_get(j, "code");
    return json_is_integer(c) ? (int)json_integer_value(c) : DS4W_E_INTERNAL;
}

const char *gw_msg_err_text(const gw_msg *m)
{
    json_t *j = m->json;
    if (m->type == DS4W_T_GEN_DONE)
        j = json_object_get(m->json, "error");
    const char *s = json_string_value(json_object_get(j, "message"));
    return s ? s : "unknown error";
}

static unsigned bucket_of(const uint8_t id[16])
{
    return ((unsigned)id[14] << 8 | id[15]) & (NBUCKET - 1);
}

/* ---- creation ------------------------------------------------------------ */

static int open_stage(gw_up *u, void *zctx, int s, const char *ep, char *err, size_t errlen)
{
    snprintf(u->ep[s], sizeof u->ep[s], "%s", ep);
    u->sock[s] = zmq_socket(zctx, ZMQ_DEALER);
    if (!u->sock[s]) {
        ds4_seterr(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        return -1;
    }
    int one = 1, ivl = 100, ivl_max = 1000, hwm = 100000;
    if (ds4w_socket_setup(u->sock[s], 0) ||
        zmq_setsockopt(u->sock[s], ZMQ_IMMEDIATE, &one, sizeof one) ||
        zmq_setsockopt(u->sock[s], ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
        zmq_setsockopt(u->sock[s], ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) ||
        zmq_setsockopt(u->sock[s], ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(u->sock[s], ZMQ_RCVHWM, &hwm, sizeof hwm)) {
        ds4_seterr(err, errlen, "socket options: %s", zmq_strerror(errno));
        return -1;
    }
    char mep[64];
    snprintf(mep, sizeof mep, "inproc://gw-mon-%p-%d", (void *)u, s);
    if (zmq_socket_monitor(u->sock[s], mep,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_CLOSED)) {
        ds4_seterr(err, errlen, "zmq_socket_monitor: %s", zmq_strerror(errno));
        return -1;
    }
    u->mon[s] = zmq_socket(zctx, ZMQ_PAIR);
    if (!u->mon[s] || zmq_connect(u->mon[s], mep)) {
        ds4_seterr(err, errlen, "monitor socket: %s", zmq_strerror(errno));
        return -1;
    }
    if (zmq_connect(u->sock[s], ep)) {
        ds4_seterr(err, errlen, "cannot connect to %s at %s: %s", stage_name[s], ep,
                   zmq_strerror(errno));
        return -1;
    }
    return 0;
}

gw_up *gw_up_new(void *zctx, const char *tok_ep, const char *eng_ep, char *err, size_t errlen)
{
    gw_up *u = ds4_xcalloc(1, sizeof *u);
    pthread_mutex_init(&u->cmd_mu, NULL);
    pthread_mutex_init(&u->reg_mu, NULL);
    u->cmd_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (u->cmd_efd < 0) {
        ds4_seterr(err, errlen, "eventfd: %s", strerror(errno));
        gw_up_free(u);
        return NULL;
    }
    if (open_stage(u, zctx, GW_TOK, tok_ep, err, errlen) ||
        open_stage(u, zctx, GW_ENG, eng_ep, err, errlen)) {
        gw_up_free(u);
        return NULL;
    }
    return u;
}

void gw_up_free(gw_up *u)
{
    if (!u)
        return;
    for (int s = 0; s < GW_NSTAGE; s++) {
        if (u->sock[s]) {
            zmq_socket_monitor(u->sock[s], NULL, 0);
            zmq_close(u->sock[s]);
        }
        if (u->mon[s])
            zmq_close(u->mon[s]);
    }
    for (struct cmd *c = u->chead, *n; c; c = n) {
        n = c->next;
        ds4w_out_free(&c->out);
        free(c);
    }
    if (u->cmd_efd >= 0)
        close(u->cmd_efd);
    pthread_mutex_destroy(&u->cmd_mu);
    pthread_mutex_destroy(&u->reg_mu);
    free(u);
}

/* ---- waiters ------------------------------------------------------------- */

gw_waiter *gw_waiter_new(gw_up *u, const uint8_t reqid[16])
{
    gw_waiter *w = ds4_xcalloc(1, sizeof *w);
    w->u = u;
    memcpy(w->reqid, reqid, 16);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    DS4_ASSERT(w->efd >= 0);
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_lock(&u->reg_mu);
    unsigned b = bucket_of(reqid);
    w->hnext = u->bucket[b];
    u->bucket[b] = w;
    u->nwaiters++;
    pthread_mutex_unlock(&u->reg_mu);
    return w;
}

void gw_waiter_free(gw_waiter *w)
{
    if (!w)
        return;
    gw_up *u = w->u;
    pthread_mutex_lock(&u->reg_mu);
    for (gw_waiter **p = &u->bucket[bucket_of(w->reqid)]; *p; p = &(*p)->hnext)
        if (*p == w) {
            *p = w->hnext;
            u->nwaiters--;
            break;
        }
    pthread_mutex_unlock(&u->reg_mu);
    for (gw_msg *m = w->qhead, *n; m; m = n) {
        n = m->next;
        gw_msg_free(m);
    }
    close(w->efd);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

const uint8_t *gw_waiter_reqid(const gw_waiter *w)
{
    return w->reqid;
}

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t k = write(fd, &one, sizeof one);
    (void)k; /* EAGAIN only when the counter is saturated: already awake */
}

/* Append m to w's queue (caller holds reg_mu so w stays alive). */
static void waiter_push(gw_waiter *w, gw_msg *m)
{
    pthread_mutex_lock(&w->mu);
    m->next = NULL;
    if (w->qtail)
        w->qtail->next = m;
    else
        w->qhead = m;
    w->qtail = m;
    pthread_mutex_unlock(&w->mu);
    wake(w->efd);
}

void gw_waiter_send(gw_waiter *w, int stage, ds4w_out *o, int expect_reply)
{
    gw_up *u = w->u;
    struct cmd *c = ds4_xcalloc(1, sizeof *c);
    c->stage = stage;
    c->expect_reply = expect_reply;
    memcpy(c->reqid, w->reqid, 16);
    memcpy(o->reqid, w->reqid, 16);
    c->out = *o;
    memset(o, 0, sizeof *o);
    if (expect_reply)
        __atomic_store_n(&w->pending[stage], 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&u->cmd_mu);
    if (u->ctail)
        u->ctail->next = c;
    else
        u->chead = c;
    u->ctail = c;
    pthread_mutex_unlock(&u->cmd_mu);
    wake(u->cmd_efd);
}

int gw_waiter_next(gw_waiter *w, int hup_fd, int timeout_ms, gw_msg **out)
{
    uint64_t deadline = timeout_ms >= 0 ? ds4_now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        gw_msg *m = w->qhead;
        if (m) {
            w->qhead = m->next;
            if (!w->qhead)
                w->qtail = NULL;
        }
        pthread_mutex_unlock(&w->mu);
        if (m) {
            /* a reply, or the end of a stream: nothing more is expected */
            if ((m->flags & DS4W_FLAG_END) ||
                (m->type != DS4W_T_GEN_ACCEPTED && m->type != DS4W_T_GEN_EVENT))
                __atomic_store_n(&w->pending[m->stage], 0, __ATOMIC_RELAXED);
            *out = m;
            return 1;
        }
        if (__atomic_load_n(&w->u->shutdown, __ATOMIC_RELAXED))
            return -2;
        int wait_ms = -1;
        if (timeout_ms >= 0) {
            uint64_t now = ds4_now_ns();
            if (now >= deadline)
                return 0;
            wait_ms = (int)((deadline - now + 999999) / 1000000);
        }
        struct pollfd p[2] = {{w->efd, POLLIN, 0}, {hup_fd, POLLRDHUP, 0}};
        int rc = poll(p, hup_fd >= 0 ? 2 : 1, wait_ms);
        if (rc < 0 && errno != EINTR)
            return -2;
        if (rc > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t k = read(w->efd, &v, sizeof v);
            (void)k;
        }
        if (hup_fd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return -1;
    }
}

/* ---- broker -------------------------------------------------------------- */

/* A synthetic ERROR "unavailable" for a waiter whose stage is gone. */
static gw_msg *unavailable_msg(int stage, const char *why)
{
    gw_msg *m = ds4_xcalloc(1, sizeof *m);
    m->stage = stage;
    m->type = DS4W_T_ERROR;
    m->flags = DS4W_FLAG_END;
    m->synthetic = 1;
    char text[320];
    snprintf(text, sizeof text, "%s is not available (%s)", stage_name[stage], why);
    m->json = json_pack("{s:i,s:s,s:s}", "code", DS4W_E_UNAVAILABLE, "name", "unavailable",
                        "message", text);
    return m;
}

/* Deliver m to the waiter of reqid, or drop it. */
static void route(gw_up *u, const uint8_t reqid[16], gw_msg *m)
{
    pthread_mutex_lock(&u->reg_mu);
    gw_waiter *w = u->bucket[bucket_of(reqid)];
    while (w && memcmp(w->reqid, reqid, 16) != 0)
        w = w->hnext;
    if (w)
        waiter_push(w, m);
    pthread_mutex_unlock(&u->reg_mu);
    if (!w) {
        stat_add(&u->st.unroutable);
        gw_msg_free(m);
    }
}

/* Fail every waiter that still expects a reply from stage. */
static void fail_stage(gw_up *u, int stage, const char *why)
{
    pthread_mutex_lock(&u->reg_mu);
    for (int b = 0; b < NBUCKET; b++)
        for (gw_waiter *w = u->bucket[b]; w; w = w->hnext)
            if (__atomic_exchange_n(&w->pending[stage], 0, __ATOMIC_RELAXED))
                waiter_push(w, unavailable_msg(stage, why));
    pthread_mutex_unlock(&u->reg_mu);
}

static void send_queued(gw_up *u)
{
    uint64_t v;
    ssize_t k = read(u->cmd_efd, &v, sizeof v);
    (void)k;
    pthread_mutex_lock(&u->cmd_mu);
    struct cmd *c = u->chead;
    u->chead = u->ctail = NULL;
    pthread_mutex_unlock(&u->cmd_mu);
    while (c) {
        struct cmd *n = c->next;
        char err[256] = "";
        uint16_t type = c->out.type;
        if (ds4w_send(u->sock[c->stage], NULL, &c->out, ZMQ_DONTWAIT, err, sizeof err)) {
            int e = errno;
            stat_add(&u->st.send_failed);
            char rid[DS4W_UUID_STR];
            ds4w_uuid_format(c->reqid, rid);
            ds4_log_req(DS4_LOG_WARN, rid, "%s to %s not sent: %s", ds4w_type_name(type),
                        stage_name[c->stage], e == EAGAIN ? "no connection" : err);
            if (c->expect_reply)
                route(u, c->reqid,
                      unavailable_msg(c->stage, e == EAGAIN ? "not running" : "send failed"));
        } else {
            stat_add(&u->st.sent);
        }
        free(c);
        c = n;
    }
}

/* Detach a received wire message into a gw_msg. */
static gw_msg *detach(int stage, const ds4w_msg *wm)
{
    gw_msg *m = ds4_xcalloc(1, sizeof *m);
    m->stage = stage;
    m->type = wm->type;
    m->flags = wm->flags;
    m->seq = wm->seq;
    if (wm->json)
        m->json = json_incref(wm->json);
    for (int i = 0; i < wm->nframes; i++)
        if ((wm->kind[i] & 0x0f) == DS4W_FK_I32) {
            m->nids = ds4w_msg_count(wm, i);
            m->ids = ds4_xmalloc((m->nids + 1) * sizeof *m->ids);
            ds4w_msg_i32(wm, i, m->ids);
            break;
        }
    return m;
}

static void recv_all(gw_up *u, int stage)
{
    for (;;) {
        ds4w_msg wm;
        char err[256] = "";
        int rc = ds4w_recv(u->sock[stage], &wm, 0, ZMQ_DONTWAIT, err, sizeof err);
        if (rc < 0) {
            ds4w_msg_close(&wm);
            return; /* EAGAIN */
        }
        if (rc > 0) {
            stat_add(&u->st.bad);
            ds4_warn("bad message from %s: %s", stage_name[stage], err);
            if (wm.hdr_ok) {
                gw_msg *m = ds4_xcalloc(1, sizeof *m);
                m->stage = stage;
                m->type = DS4W_T_ERROR;
                m->flags = DS4W_FLAG_END;
                m->synthetic = 1;
                char text[320];
                snprintf(text, sizeof text, "malformed reply from %s: %s", stage_name[stage], err);
                m->json = json_pack("{s:i,s:s,s:s}", "code", DS4W_E_INTERNAL, "name", "internal",
                                    "message", text);
                route(u, wm.reqid, m);
            }
            ds4w_msg_close(&wm);
            continue;
        }
        stat_add(&u->st.received);
        gw_msg *m = detach(stage, &wm);
        route(u, wm.reqid, m);
        ds4w_msg_close(&wm);
    }
}

static void monitor_event(gw_up *u, int stage)
{
    for (;;) {
        zmq_msg_t a, b;
        zmq_msg_init(&a);
        if (zmq_msg_recv(&a, u->mon[stage], ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&a);
            return;
        }
        uint16_t ev = 0;
        if (zmq_msg_size(&a) >= 2)
            memcpy(&ev, zmq_msg_data(&a), 2);
        int more = zmq_msg_more(&a);
        zmq_msg_close(&a);
        if (more) {
            zmq_msg_init(&b);
            zmq_msg_recv(&b, u->mon[stage], 0);
            zmq_msg_close(&b);
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) { /* ZMQ_IMMEDIATE: usable from here */
            if (!__atomic_exchange_n(&u->connected[stage], 1, __ATOMIC_RELAXED))
                ds4_info("connected to %s (%s)", stage_name[stage], u->ep[stage]);
        } else if (ev == ZMQ_EVENT_DISCONNECTED || ev == ZMQ_EVENT_CLOSED) {
            if (__atomic_exchange_n(&u->connected[stage], 0, __ATOMIC_RELAXED))
                ds4_warn("lost the connection to %s", stage_name[stage]);
            stat_add(&u->st.stage_downs);
            fail_stage(u, stage, "connection lost");
        }
    }
}

void gw_up_items(gw_up *u, zmq_pollitem_t *it)
{
    memset(it, 0, GW_UP_NITEMS * sizeof *it);
    it[0].socket = u->sock[GW_TOK];
    it[1].socket = u->sock[GW_ENG];
    it[2].socket = u->mon[GW_TOK];
    it[3].socket = u->mon[GW_ENG];
    it[4].fd = u->cmd_efd;
    for (int i = 0; i < GW_UP_NITEMS; i++)
        it[i].events = ZMQ_POLLIN;
}

void gw_up_dispatch(gw_up *u, const zmq_pollitem_t *it)
{
    if (it[2].revents & ZMQ_POLLIN)
        monitor_event(u, GW_TOK);
    if (it[3].revents & ZMQ_POLLIN)
        monitor_event(u, GW_ENG);
    if (it[4].revents & ZMQ_POLLIN)
        send_queued(u);
    if (it[0].revents & ZMQ_POLLIN)
        recv_all(u, GW_TOK);
    if (it[1].revents & ZMQ_POLLIN)
        recv_all(u, GW_ENG);
}

void gw_up_shutdown(gw_up *u)
{
    __atomic_store_n(&u->shutdown, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&u->reg_mu);
    for (int b = 0; b < NBUCKET; b++)
        for (gw_waiter *w = u->bucket[b]; w; w = w->hnext)
            wake(w->efd);
    pthread_mutex_unlock(&u->reg_mu);
}

int gw_up_connected(gw_up *u, int stage)
{
    return __atomic_load_n(&u->connected[stage], __ATOMIC_RELAXED);
}

int gw_up_waiters(gw_up *u)
{
    pthread_mutex_lock(&u->reg_mu);
    int n = u->nwaiters;
    pthread_mutex_unlock(&u->reg_mu);
    return n;
}

void gw_up_get_stats(gw_up *u, gw_up_stats *s)
{
    s->sent = __atomic_load_n(&u->st.sent, __ATOMIC_RELAXED);
    s->send_failed = __atomic_load_n(&u->st.send_failed, __ATOMIC_RELAXED);
    s->received = __atomic_load_n(&u->st.received, __ATOMIC_RELAXED);
    s->unroutable = __atomic_load_n(&u->st.unroutable, __ATOMIC_RELAXED);
    s->bad = __atomic_load_n(&u->st.bad, __ATOMIC_RELAXED);
    s->stage_downs = __atomic_load_n(&u->st.stage_downs, __ATOMIC_RELAXED);
}
