/* daemon_msg.h - the request/reply steps every daemon's socket loop shares:
 * receive one message (request id into the log context, counters, malformed
 * frames answered with ERROR), answer with a service's reply or an ERROR. */
#ifndef DS4_DAEMON_MSG_H
#define DS4_DAEMON_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "wire.h"

/* Receive one message without blocking. Returns 0 when none is waiting,
 * -1 on a socket error (logged), 1 when m is ready to serve (its request id
 * set for the log, frames_in counted), 2 when it was malformed and has been
 * answered with ERROR (frames_bad counted; err holds the decoder's reason).
 * After 1 or 2 the caller ends with ds4d_msg_done(m). */
int ds4d_recv(ds4d *d, void *sock, ds4w_msg *m, char *err, size_t errlen);

/* Clear the log's request id and release m. */
void ds4d_msg_done(ds4w_msg *m);

/* Answer m with ERROR code and message err; field (may be NULL) names the
 * offending field. Logged as a warning; frames_out counted when sent. */
void ds4d_send_error(ds4d *d, void *sock, ds4w_msg *m, int code, const char *field,
                     const char *err);

/* Send a service's reply to m, logging its latency since t0 (ds4_now_ns);
 * a reply the encoder refuses (its own schema) is replaced by ERROR
 * internal so the client still gets an answer. */
void ds4d_send_reply(ds4d *d, void *sock, ds4w_msg *m, ds4w_out *out, uint64_t t0);

#endif
