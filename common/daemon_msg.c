/* daemon_msg.c - shared request/reply steps of the daemons' socket loops
 * (see daemon_msg.h). */
#include "daemon_msg.h"

#include <errno.h>

#include "log.h"
#include "util.h"

void ds4d_send_error(ds4d *d, void *sock, ds4w_msg *m, int code, const char *field,
                     const char *err)
{
    if (field)
        m->bad_field = field;
    ds4_warn("%s %s: %s%s%s", ds4w_type_name(m->type), ds4w_err_name(code), err,
             m->bad_field ? " field=" : "", m->bad_field ? m->bad_field : "");
    if (ds4w_reply_error(sock, m, code, err))
        ds4_warn("cannot send ERROR: %s", zmq_strerror(errno));
    else
        ds4_stats_add(&d->stats, DS4S_frames_out, 1);
}

int ds4d_recv(ds4d *d, void *sock, ds4w_msg *m, char *err, size_t errlen)
{
    int rc = ds4w_recv(sock, m, 1, ZMQ_DONTWAIT, err, errlen);
    if (rc < 0) {
        int e = errno;
        ds4w_msg_close(m);
        if (e == EAGAIN || e == EINTR)
            return 0;
        ds4_err("receive: %s", zmq_strerror(e));
        return -1;
    }
    static const uint8_t nil[16];
    char rid[DS4W_UUID_STR];
    ds4w_uuid_format(m->hdr_ok ? m->reqid : nil, rid);
    ds4_log_set_reqid(rid);
    ds4_stats_add(&d->stats, DS4S_frames_in, 1);
    if (rc > 0) {
        ds4_stats_add(&d->stats, DS4S_frames_bad, 1);
        ds4d_send_error(d, sock, m, rc, NULL, err);
        return 2;
    }
    return 1;
}

void ds4d_msg_done(ds4w_msg *m)
{
    ds4_log_set_reqid(NULL);
    ds4w_msg_close(m);
}

void ds4d_send_reply(ds4d *d, void *sock, ds4w_msg *m, ds4w_out *out, uint64_t t0)
{
    char e2[256] = "";
    uint16_t type = out->type;
    if (ds4w_send(sock, &m->route, out, ZMQ_DONTWAIT, e2, sizeof e2)) {
        int e = errno;
        ds4_warn("reply %s not sent: %s", ds4w_type_name(type), e2);
        if (e == EINVAL) /* our reply broke its schema: still answer */
            ds4d_send_error(d, sock, m, DS4W_E_INTERNAL, NULL, e2);
    } else {
        ds4_stats_add(&d->stats, DS4S_frames_out, 1);
    }
    ds4_debug("%s -> %s in %.3f ms", ds4w_type_name(m->type), ds4w_type_name(type),
              (double)(ds4_now_ns() - t0) / 1e6);
}
