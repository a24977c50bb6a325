/* kv_client.c - client of kvd for engined (see kv_client.h). */
#include "kv_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "daemon.h"
#include "hash.h"
#include "util.h"

struct kv_client {
    void *ctx, *sock;
    void *mon;          /* PAIR receiving the socket's disconnect events */
    unsigned mon_n;
    int own_ctx;
    char endpoint[512];
    char instance[65];
    int timeout_ms;
    int use_shm, verify;
    int code;
    ds4_shm seg;        /* put segment (fd -1 when none) */
    unsigned seg_n;
    struct kvc_map {
        ds4_shm shm;    /* a kvd transfer segment we keep mapped */
        int busy;       /* a kvc_found holds it */
        uint64_t used;  /* for LRU */
    } map[KVC_MAPS];
    uint64_t tick;
};

static int set_fail(kv_client *c, int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int set_fail(kv_client *c, int code, char *err, size_t errlen, const char *fmt, ...)
{
    c->code = code;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int kvc_errcode(const kv_client *c)
{
    return c->code;
}

static void drop_socket(kv_client *c)
{
    if (c->mon) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->mon);
        c->mon = NULL;
    }
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
}

/* Watch the socket's connection: a kvd that dies while we wait for its
 * answer fails the call at once instead of at the deadline. Best effort
 * (without a monitor only the deadline applies). */
static void start_monitor(kv_client *c)
{
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://kvc-mon-%p-%u", (void *)c, ++c->mon_n);
    if (zmq_socket_monitor(c->sock, ep, ZMQ_EVENT_DISCONNECTED))
        return;
    c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
    int zero = 0;
    if (!c->mon || zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_connect(c->mon, ep)) {
        if (c->mon)
            zmq_close(c->mon);
        c->mon = NULL;
        zmq_socket_monitor(c->sock, NULL, 0);
    }
}

/* Read one monitor event (both frames): 1 if it was a disconnect, 0 other,
 * -1 none waiting. */
static int read_event(kv_client *c)
{
    uint8_t ev[16];
    int n = zmq_recv(c->mon, ev, sizeof ev, ZMQ_DONTWAIT);
    if (n < 0)
        return -1;
    int more = 0;
    size_t ml = sizeof more;
    char junk[256];
    while (zmq_getsockopt(c->mon, ZMQ_RCVMORE, &more, &ml) == 0 && more)
        zmq_recv(c->mon, junk, sizeof junk, 0);
    uint16_t e = n >= 2 ? (uint16_t)(ev[0] | ev[1] << 8) : 0;
    return e == ZMQ_EVENT_DISCONNECTED;
}

static int ensure_socket(kv_client *c, char *err, size_t errlen)
{
    if (c->sock)
        return 0;
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        return set_fail(c, DS4W_E_INTERNAL, err, errlen, "zmq_socket: %s", zmq_strerror(errno));
    if (ds4w_socket_setup(c->sock, 0) || zmq_connect(c->sock, c->endpoint)) {
        int e = errno;
        drop_socket(c);
        return set_fail(c, DS4W_E_UNAVAILABLE, err, errlen, "cannot connect to %s: %s",
                        c->endpoint, zmq_strerror(e));
    }
    start_monitor(c);
    return 0;
}

int kvc_default_endpoint(const char *run_dir, char *out, size_t outlen)
{
    const char *env = getenv("DS4_KVD_ENDPOINT");
    if (env && *env)
        return snprintf(out, outlen, "%s", env) < (int)outlen ? 0 : -1;
    char dir[DS4D_PATH_MAX];
    if (ds4d_run_dir_resolve(run_dir, dir, sizeof dir))
        return -1;
    int n = snprintf(out, outlen, "ipc://%s/kvd.sock", dir);
    return n >= 0 && (size_t)n < outlen ? 0 : -1;
}

kv_client *kvc_open(const kvc_opts *o, char *err, size_t errlen)
{
    if (!o || !o->endpoint || !*o->endpoint) {
        ds4_seterr(err, errlen, "no kvd endpoint");
        return NULL;
    }
    int ipc = !strncmp(o->endpoint, "ipc://", 6);
    if (!ipc && strncmp(o->endpoint, "tcp://", 6)) {
        ds4_seterr(err, errlen, "kvd endpoint %s: expected ipc:// or tcp://", o->endpoint);
        return NULL;
    }
    kv_client *c = ds4_xcalloc(1, sizeof *c);
    snprintf(c->endpoint, sizeof c->endpoint, "%s", o->endpoint);
    snprintf(c->instance, sizeof c->instance, "%s", o->instance ? o->instance : "default");
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    c->use_shm = ipc && !o->force_inline;
    c->verify = o->verify;
    c->seg.fd = -1;
    for (int i = 0; i < KVC_MAPS; i++)
        c->map[i].shm.fd = -1;
    char probe[DS4_SHM_NAME_MAX + 1];
    if (c->use_shm &&
        ds4_shm_name(probe, sizeof probe, c->instance, "kvput.4194304.4294967295", err, errlen)) {
        free(c);
        return NULL;
    }
    c->ctx = o->zmq_ctx;
    if (!c->ctx) {
        c->ctx = zmq_ctx_new();
        c->own_ctx = 1;
    }
    if (!c->ctx || ensure_socket(c, err, errlen)) {
        kvc_close(c);
        return NULL;
    }
    return c;
}

void kvc_close(kv_client *c)
{
    if (!c)
        return;
    drop_socket(c);
    for (int i = 0; i < KVC_MAPS; i++)
        if (c->map[i].shm.hdr)
            ds4_shm_detach(&c->map[i].shm);
    if (c->seg.hdr) {
        char name[DS4_SHM_NAME_MAX + 1];
        snprintf(name, sizeof name, "%s", c->seg.name);
        ds4_shm_detach(&c->seg);
        ds4_shm_unlink(name);
    }
    if (c->own_ctx && c->ctx)
        zmq_ctx_term(c->ctx);
    free(c);
}

/* Send o and wait for the reply with its request id until the deadline.
 * 0 with *rep (an ERROR reply too), or -1 (socket reset on a timeout). */
static int call(kv_client *c, ds4w_out *o, ds4w_msg *rep, char *err, size_t errlen)
{
    uint8_t id[16];
    memcpy(id, o->reqid, 16);
    uint16_t type = o->type;
    if (ensure_socket(c, err, errlen)) {
        ds4w_out_free(o);
        return -1;
    }
    char e[256];
    while (c->mon && read_event(c) >= 0)
        ; /* events from before this request */
    if (ds4w_send(c->sock, NULL, o, ZMQ_DONTWAIT, e, sizeof e)) {
        int code = errno == EINVAL ? DS4W_E_INVALID_REQUEST : DS4W_E_UNAVAILABLE;
        drop_socket(c);
        return set_fail(c, code, err, errlen, "%s not sent: %s", ds4w_type_name(type), e);
    }
    uint64_t deadline = ds4_now_ns() + (uint64_t)c->timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = ds4_now_ns();
        long left = now >= deadline ? 0 : (long)((deadline - now) / 1000000ull) + 1;
        zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->mon, 0, ZMQ_POLLIN, 0}};
        int n = left ? zmq_poll(it, c->mon ? 2 : 1, left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && !(it[0].revents & ZMQ_POLLIN)) {
            int ev;
            while ((ev = read_event(c)) == 0)
                ;
            if (ev == 1) {
                drop_socket(c);
                return set_fail(c, DS4W_E_UNAVAILABLE, err, errlen,
                                "kvd went away while answering %s (%s)", ds4w_type_name(type),
                                c->endpoint);
            }
            continue;
        }
        if (n <= 0) {
            drop_socket(c);
            return set_fail(c, DS4W_E_UNAVAILABLE, err, errlen,
                            "kvd did not answer %s within %d ms (%s)", ds4w_type_name(type),
                            c->timeout_ms, c->endpoint);
        }
        int rc = ds4w_recv(c->sock, rep, 0, ZMQ_DONTWAIT, e, sizeof e);
        if (rc < 0 && (errno == EAGAIN || errno == EINTR)) {
            ds4w_msg_close(rep);
            continue;
        }
        if (rc != DS4W_OK || memcmp(rep->reqid, id, 16)) {
            /* garbage or a stale reply of an earlier request: skip it */
            ds4w_msg_close(rep);
            continue;
        }
        c->code = 0;
        return 0;
    }
}

/* An ERROR reply as a failure (rep closed). */
static int error_reply(kv_client *c, ds4w_msg *rep, const char *what, char *err, size_t errlen)
{
    json_int_t code = json_integer_value(json_object_get(rep->json, "code"));
    const char *msg = json_string_value(json_object_get(rep->json, "message"));
    set_fail(c, code > 0 && code < DS4W_E_COUNT ? (int)code : DS4W_E_INTERNAL, err, errlen,
             "%s: kvd: %s: %s", what, ds4w_err_name((int)code), msg ? msg : "?");
    ds4w_msg_close(rep);
    return -1;
}

static void new_req(ds4w_out *o, uint16_t type)
{
    uint8_t id[16];
    ds4w_uuid_new(id);
    ds4w_out_init(o, type, id);
}

/* Make the put segment hold at least len bytes. */
static int seg_reserve(kv_client *c, size_t len, char *err, size_t errlen)
{
    if (c->seg.hdr && c->seg.payload_size >= len)
        return 0;
    if (c->seg.hdr) {
        char old[DS4_SHM_NAME_MAX + 1];
        snprintf(old, sizeof old, "%s", c->seg.name);
        ds4_shm_detach(&c->seg);
        ds4_shm_unlink(old);
    }
    uint64_t size = (len + (1u << 20) - 1) / (1u << 20) * (1u << 20);
    struct statvfs vs;
    if (statvfs("/dev/shm", &vs) == 0 &&
        (uint64_t)vs.f_bavail * vs.f_frsize < size + (1u << 20))
        return set_fail(c, DS4W_E_INTERNAL, err, errlen,
                        "not enough shared memory for a put segment of %llu bytes",
                        (unsigned long long)size);
    char purpose[64], name[DS4_SHM_NAME_MAX + 1], e[256];
    /* unique within the process: several clients (threads) may put */
    static unsigned seq;
    c->seg_n = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
    snprintf(purpose, sizeof purpose, "kvput.%ld.%u", (long)getpid(), c->seg_n);
    if (ds4_shm_name(name, sizeof name, c->instance, purpose, e, sizeof e) ||
        ds4_shm_create(&c->seg, name, size ? size : 4096, 0, e, sizeof e)) {
        c->seg.fd = -1;
        return set_fail(c, DS4W_E_INTERNAL, err, errlen, "put segment: %s", e);
    }
    /* reserve every page now: a full /dev/shm is an error here, not a
     * SIGBUS in the copy */
    if (fallocate(c->seg.fd, 0, 0, (off_t)c->seg.map_size) && errno != EOPNOTSUPP) {
        int en = errno;
        ds4_shm_detach(&c->seg);
        ds4_shm_unlink(name);
        return set_fail(c, DS4W_E_INTERNAL, err, errlen, "put segment of %llu bytes: %s",
                        (unsigned long long)size, strerror(en));
    }
    return 0;
}

int kvc_put(kv_client *c, const int32_t *ids, size_t n, const void *blob, size_t len,
            const kvc_meta *m, kvc_stored *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!m || !m->fingerprint)
        return set_fail(c, DS4W_E_INVALID_REQUEST, err, errlen, "no fingerprint");
    json_t *j = json_pack("{s:s}", "fingerprint", m->fingerprint);
    if (m->family)
        json_object_set_new(j, "family_fingerprint", json_string(m->family));
    if (m->quant)
        json_object_set_new(j, "quant", json_string(m->quant));
    if (m->reason)
        json_object_set_new(j, "reason", json_string(m->reason));
    if (m->prefill_ms > 0)
        json_object_set_new(j, "prefill_ms", json_real(m->prefill_ms));
    ds4w_out o;
    new_req(&o, DS4W_T_KV_PUT);
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_out_i32(&o, ids, n);
    if (c->use_shm) {
        if (seg_reserve(c, len, err, errlen)) {
            ds4w_out_free(&o);
            return -1;
        }
        if (ds4_shm_generation(&c->seg))
            ds4_shm_begin_update(&c->seg);
        if (len)
            memcpy(c->seg.payload, blob, len);
        ds4_shm_publish(&c->seg);
        ds4w_shmref ref;
        memset(&ref, 0, sizeof ref);
        memcpy(ref.name, c->seg.name, strnlen(c->seg.name, sizeof ref.name - 1)); /* fits: checked at open */
        ref.offset = DS4_SHM_HEADER_SIZE;
        ref.length = len;
        ref.generation = ds4_shm_generation(&c->seg);
        ref.checksum = ds4_hash64(blob, len, 0);
        ds4w_out_shmref(&o, &ref);
    } else {
        o.flags |= DS4W_FLAG_INLINE;
        ds4w_out_bytes(&o, blob, len);
    }
    ds4w_msg rep;
    if (call(c, &o, &rep, err, errlen))
        return -1;
    if (rep.type != DS4W_T_KV_STORED)
        return error_reply(c, &rep, "KV_PUT", err, errlen);
    snprintf(out->key, sizeof out->key, "%s",
             json_string_value(json_object_get(rep.json, "key")));
    out->bytes = (uint64_t)json_integer_value(json_object_get(rep.json, "bytes"));
    out->evicted = (unsigned)json_integer_value(json_object_get(rep.json, "evicted"));
    ds4w_msg_close(&rep);
    return 0;
}

/* Tell kvd we are done with a segment (it may reuse it). */
static void release(kv_client *c, const ds4w_shmref *ref)
{
    ds4w_out o;
    new_req(&o, DS4W_T_KV_RELEASE);
    ds4w_out_shmref(&o, ref);
    ds4w_msg rep;
    int code = c->code;
    if (call(c, &o, &rep, NULL, 0) == 0)
        ds4w_msg_close(&rep);
    c->code = code;
}

void kvc_found_free(kvc_found *f)
{
    if (f->c) {
        if (f->slot >= 0 && f->slot < KVC_MAPS)
            f->c->map[f->slot].busy = 0;
        release(f->c, &f->ref);
    }
    if (f->shm.hdr)
        ds4_shm_detach(&f->shm);
    free(f->buf);
    f->buf = NULL;
    f->c = NULL;
    f->slot = -1;
    f->data = NULL;
    f->len = 0;
}

/* Same object as the name refers to now (a name is never given to another
 * segment by the same kvd, but a restarted kvd may reuse one). */
static int same_object(const ds4_shm *m, const char *name)
{
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct stat a, b;
    int same = fstat(fd, &a) == 0 && fstat(m->fd, &b) == 0 && a.st_dev == b.st_dev &&
               a.st_ino == b.st_ino && a.st_size == b.st_size;
    close(fd);
    return same;
}

/* Map the segment of ref: a kept mapping when we have it, else a new one
 * (kept in a free slot, or owned by f). 0, or -1 + err. */
static int map_ref(kv_client *c, const ds4w_shmref *ref, kvc_found *f, char *err, size_t errlen)
{
    char e[256];
    int slot = -1, lru = -1;
    for (int i = 0; i < KVC_MAPS; i++) {
        struct kvc_map *m = &c->map[i];
        if (m->busy)
            continue;
        if (m->shm.hdr && !strcmp(m->shm.name, ref->name)) {
            if (same_object(&m->shm, ref->name)) {
                slot = i;
                break;
            }
            ds4_shm_detach(&m->shm);
        }
        if (lru < 0 || !c->map[i].shm.hdr ||
            (c->map[lru].shm.hdr && c->map[i].used < c->map[lru].used))
            lru = i;
    }
    ds4_shm *shm;
    if (slot < 0) {
        shm = lru >= 0 ? &c->map[lru].shm : &f->shm;
        if (shm->hdr)
            ds4_shm_detach(shm);
        if (ds4_shm_attach(shm, ref->name, DS4_SHM_RDONLY, e, sizeof e)) {
            shm->fd = -1;
            return set_fail(c, DS4W_E_NOT_FOUND, err, errlen, "KV_FOUND: %s", e);
        }
        slot = lru;
    } else {
        shm = &c->map[slot].shm;
    }
    f->slot = slot;
    if (slot >= 0) {
        c->map[slot].busy = 1;
        c->map[slot].used = ++c->tick;
    }
    if (ds4_shm_generation(shm) != ref->generation || !ds4_shm_complete(shm) ||
        ref->offset < DS4_SHM_HEADER_SIZE || ref->offset > shm->map_size ||
        ref->length > shm->map_size - ref->offset)
        return set_fail(c, DS4W_E_INTERNAL, err, errlen,
                        "KV_FOUND: segment %s does not match its reference", ref->name);
    f->data = (const uint8_t *)shm->hdr + ref->offset;
    f->len = (size_t)ref->length;
    return 0;
}

static void copy_str(char *dst, size_t n, const json_t *v)
{
    const char *s = json_string_value(v);
    snprintf(dst, n, "%s", s ? s : "");
}

int kvc_lookup(kv_client *c, const int32_t *ids, size_t n, const kvc_query *q, kvc_found *f,
               char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->shm.fd = -1;
    f->slot = -1;
    if (!q || !q->fingerprint)
        return set_fail(c, DS4W_E_INVALID_REQUEST, err, errlen, "no fingerprint");
    json_t *j = json_pack("{s:s}", "fingerprint", q->fingerprint);
    if (q->family)
        json_object_set_new(j, "family_fingerprint", json_string(q->family));
    if (q->allow_cross_quant)
        json_object_set_new(j, "allow_cross_quant", json_true());
    if (q->min_tokens)
        json_object_set_new(j, "min_tokens", json_integer(q->min_tokens));
    ds4w_out o;
    new_req(&o, DS4W_T_KV_LOOKUP);
    if (!c->use_shm)
        o.flags |= DS4W_FLAG_INLINE;
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_out_i32(&o, ids, n);
    ds4w_msg rep;
    if (call(c, &o, &rep, err, errlen))
        return -1;
    if (rep.type == DS4W_T_KV_MISS) {
        copy_str(f->miss_reason, sizeof f->miss_reason,
                 rep.json ? json_object_get(rep.json, "reason") : NULL);
        ds4w_msg_close(&rep);
        return 0;
    }
    if (rep.type != DS4W_T_KV_FOUND)
        return error_reply(c, &rep, "KV_LOOKUP", err, errlen);
    json_int_t tokens = json_integer_value(json_object_get(rep.json, "tokens"));
    copy_str(f->key, sizeof f->key, json_object_get(rep.json, "key"));
    copy_str(f->fingerprint, sizeof f->fingerprint, json_object_get(rep.json, "fingerprint"));
    copy_str(f->quant, sizeof f->quant, json_object_get(rep.json, "quant"));
    if (tokens < 1 || (size_t)tokens > n) {
        ds4w_msg_close(&rep);
        return set_fail(c, DS4W_E_INTERNAL, err, errlen,
                        "KV_FOUND: prefix of %lld tokens for a query of %zu", (long long)tokens,
                        n);
    }
    f->tokens = (uint32_t)tokens;
    uint64_t want = 0;
    if (rep.flags & DS4W_FLAG_INLINE) {
        /* (a copy: the frame's bytes belong to the message) */
        ds4w_buf b = ds4w_msg_frame(&rep, 1);
        f->buf = ds4_xmalloc(b.len ? b.len : 1);
        if (b.len)
            memcpy(f->buf, b.data, b.len);
        ds4w_msg_close(&rep);
        f->data = f->buf;
        f->len = b.len;
    } else {
        if (ds4w_msg_shmref(&rep, 1, &f->ref)) {
            ds4w_msg_close(&rep);
            return set_fail(c, DS4W_E_BAD_FRAME, err, errlen, "KV_FOUND: bad SHMREF");
        }
        ds4w_msg_close(&rep);
        f->c = c; /* from here on kvc_found_free releases the segment */
        f->slot = -1;
        if (map_ref(c, &f->ref, f, err, errlen)) {
            int code = c->code;
            kvc_found_free(f);
            c->code = code;
            return -1;
        }
        want = f->ref.checksum;
    }
    if (c->verify && want && ds4_hash64(f->data, f->len, 0) != want) {
        kvc_found_free(f);
        return set_fail(c, DS4W_E_INTERNAL, err, errlen, "KV_FOUND: payload checksum mismatch");
    }
    return 1;
}

int kvc_ping(kv_client *c, char *err, size_t errlen)
{
    ds4w_out o;
    new_req(&o, DS4W_T_PING);
    ds4w_msg rep;
    if (call(c, &o, &rep, err, errlen))
        return -1;
    if (rep.type != DS4W_T_PONG)
        return error_reply(c, &rep, "PING", err, errlen);
    int ready = json_is_true(json_object_get(rep.json, "ready"));
    ds4w_msg_close(&rep);
    return ready ? 0 : set_fail(c, DS4W_E_NOT_READY, err, errlen, "kvd is not ready");
}

int kvc_set_dir(kv_client *c, const char *dir, int create, char *err, size_t errlen)
{
    if (!dir)
        return set_fail(c, DS4W_E_INVALID_REQUEST, err, errlen, "no directory");
    ds4w_out o;
    new_req(&o, DS4W_T_KV_SET_DIR);
    json_t *j = json_pack("{s:s,s:b}", "dir", dir, "create", create);
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_msg rep;
    if (call(c, &o, &rep, err, errlen))
        return -1;
    if (rep.type != DS4W_T_OK)
        return error_reply(c, &rep, "KV_SET_DIR", err, errlen);
    ds4w_msg_close(&rep);
    return 0;
}

json_t *kvc_stats(kv_client *c, char *err, size_t errlen)
{
    ds4w_out o;
    new_req(&o, DS4W_T_KV_STATS);
    ds4w_msg rep;
    if (call(c, &o, &rep, err, errlen))
        return NULL;
    if (rep.type != DS4W_T_STATS) {
        error_reply(c, &rep, "KV_STATS", err, errlen);
        return NULL;
    }
    json_t *j = json_incref(rep.json);
    ds4w_msg_close(&rep);
    return j;
}
