/* gw_upstream.h - the gateway's ZeroMQ side: one DEALER socket to each
 * stage (tokenizerd, engined), owned by the broker (the daemon's main
 * thread), and a "waiter" per HTTP request through which connection
 * threads send requests and receive their replies and streams.
 *
 * ZeroMQ sockets are not thread-safe, so connection threads never touch
 * them: gw_waiter_send queues a message for the broker (mutex + eventfd);
 * the broker sends it, receives everything that comes back, and routes
 * each message by its request id to the waiter's queue (mutex + eventfd).
 * A connection thread blocks in gw_waiter_next on its eventfd and, at the
 * same time, on its client socket (POLLRDHUP), so a client that hangs up
 * is noticed at once, even during a long prefill.
 *
 * A stage that is down fails fast, never hangs (SPEC §6: 503 within a
 * second): the DEALERs use ZMQ_IMMEDIATE, so a send with no live
 * connection fails at once, and a socket monitor reports disconnects,
 * upon which every waiter still expecting a reply from that stage gets a
 * synthetic ERROR "unavailable". Reconnection is libzmq's (every 100 ms),
 * so a restarted stage serves new requests without restarting the
 * gateway (SPEC §2). */
#ifndef DS4_GW_UPSTREAM_H
#define DS4_GW_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <zmq.h>

#include "wire.h"

enum gw_stage { GW_TOK = 0, GW_ENG = 1, GW_NSTAGE = 2 };

/* A received message, detached from libzmq (owned). */
typedef struct gw_msg {
    struct gw_msg *next;
    int stage;            /* enum gw_stage */
    uint16_t type;        /* DS4W_T_* */
    uint32_t flags, seq;
    json_t *json;         /* the JSON frame, or NULL */
    int32_t *ids;         /* the first I32 frame, or NULL */
    size_t nids;
    int synthetic;        /* made by the broker (stage down), not received */
} gw_msg;

void gw_msg_free(gw_msg *m);
/* ERROR fields of a message of type ERROR (or a GEN_DONE error object). */
int gw_msg_err_code(const gw_msg *m);
const char *gw_msg_err_text(const gw_msg *m);

typedef struct gw_up gw_up;

/* Counters (relaxed atomics), exported by the daemon. */
typedef struct gw_up_stats {
    uint64_t sent, send_failed, received, unroutable, bad, stage_downs;
} gw_up_stats;

/* Create the DEALERs and their monitors on zctx, connected to the given
 * endpoints. NULL with a message on failure. */
gw_up *gw_up_new(void *zctx, const char *tok_ep, const char *eng_ep, char *err, size_t errlen);
void gw_up_free(gw_up *u);

/* Broker side (one thread): fill the poll items (GW_UP_NITEMS of them)
 * and, after zmq_poll, handle whatever is ready. */
#define GW_UP_NITEMS 5
void gw_up_items(gw_up *u, zmq_pollitem_t *items);
void gw_up_dispatch(gw_up *u, const zmq_pollitem_t *items);
/* Stop: every waiter's gw_waiter_next returns -2 from now on. */
void gw_up_shutdown(gw_up *u);
/* 1 while the stage has a live connection. */
int gw_up_connected(gw_up *u, int stage);
/* Number of registered waiters (requests in flight). */
int gw_up_waiters(gw_up *u);
void gw_up_get_stats(gw_up *u, gw_up_stats *s);

/* Connection-thread side. */
typedef struct gw_waiter gw_waiter;

gw_waiter *gw_waiter_new(gw_up *u, const uint8_t reqid[16]);
/* Unregister (late replies are dropped) and free queued messages. */
void gw_waiter_free(gw_waiter *w);
const uint8_t *gw_waiter_reqid(const gw_waiter *w);
/* Queue o (its request id is overwritten with the waiter's) for a stage;
 * takes o. expect_reply: the waiter wants the reply/stream (a stage
 * disconnect then yields a synthetic ERROR); 0 for GEN_CANCEL. */
void gw_waiter_send(gw_waiter *w, int stage, ds4w_out *o, int expect_reply);
/* Next message for this request. Returns 1 with *m (free it), 0 when
 * timeout_ms passed (-1: wait forever), -1 when hup_fd (>= 0) reports the
 * client gone, -2 when the gateway is shutting down. */
int gw_waiter_next(gw_waiter *w, int hup_fd, int timeout_ms, gw_msg **m);

#endif
