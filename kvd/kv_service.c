/* kv_service.c - kvd request handlers (see kv_service.h). */
#include "kv_service.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "util.h"

/* Record an error: message into err, field (may be NULL) into s->field. */
static int fail(kv_service *s, int code, const char *field, char *err, size_t errlen,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail(kv_service *s, int code, const char *field, char *err, size_t errlen,
                const char *fmt, ...)
{
    s->field[0] = 0;
    if (field)
        snprintf(s->field, sizeof s->field, "%s", field);
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void stat_add(kv_service *s, unsigned i, uint64_t v)
{
    if (s->cfg.store.stats)
        ds4_stats_add(s->cfg.store.stats, i, v);
}

int kv_service_init(kv_service *s, const char *dir, int create, const kv_service_cfg *cfg,
                    char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    if (!s->cfg.instance)
        s->cfg.instance = "default";
    s->start_ns = ds4_now_ns();
    if (kv_xfer_init(&s->xf, s->cfg.instance, s->cfg.xfer_ttl_ms, s->cfg.xfer_max_bytes,
                     s->cfg.xfer_pool_bytes, err, errlen))
        return -1;
    if (kv_store_open(&s->store, dir, create, &s->cfg.store, err, errlen))
        return -1;
    s->have_store = 1;
    return 0;
}

void kv_service_fini(kv_service *s)
{
    kv_service_complete_writes(s, 1);
    kv_xfer_fini(&s->xf);
    if (s->have_store)
        kv_store_close(&s->store);
    s->have_store = 0;
}

void kv_service_tick(kv_service *s)
{
    s->xf.ttl_ms = s->cfg.xfer_ttl_ms;
    s->xf.max_out = s->cfg.xfer_max_bytes;
    s->xf.pool_cap = s->cfg.xfer_pool_bytes;
    kv_xfer_tick(&s->xf, ds4_now_ns());
}

/* Reply with one JSON object (reference stolen). */
static int reply_json(ds4w_out *out, uint16_t type, const ds4w_msg *m, json_t *obj)
{
    ds4w_out_init(out, type, m->reqid);
    ds4w_out_json(out, obj);
    json_decref(obj);
    return DS4W_OK;
}

/* Append a malloc'd buffer as a BYTES frame, handing it over instead of
 * copying it (what ds4w_out_bytes does after its copy). */
static void out_take_bytes(ds4w_out *o, uint8_t *buf, size_t n)
{
    DS4_ASSERT(o->nframes < DS4W_MAX_PAYLOAD);
    o->kind[o->nframes] = DS4W_FK_BYTES;
    o->data[o->nframes] = buf;
    o->len[o->nframes] = n;
    o->nframes++;
}

static int h_ping(kv_service *s, const ds4w_msg *m, ds4w_out *out)
{
    json_t *o = json_pack("{s:s,s:I,s:s,s:i,s:b,s:I,s:b}", "daemon", "kvd", "pid",
                          (json_int_t)getpid(), "version", KVD_VERSION, "proto", DS4W_VERSION,
                          "ready", s->have_store, "uptime_ms",
                          (json_int_t)((ds4_now_ns() - s->start_ns) / 1000000u), "test_mode",
                          s->cfg.test_mode);
    return reply_json(out, DS4W_T_PONG, m, o);
}

static int h_stats(kv_service *s, const ds4w_msg *m, ds4w_out *out)
{
    size_t n;
    const struct ds4_stat_def *defs = ds4_stats_table("kvd", &n);
    json_t *c = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(
            c, defs[i].name,
            json_integer((json_int_t)ds4_stats_get(s->cfg.store.stats, (unsigned)i)));
    const kv_store *st = &s->store;
    json_t *info = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "dir", st->dir, "entries",
        (json_int_t)st->idx.n, "disk_bytes", (json_int_t)kv_store_used(st), "budget_bytes",
        (json_int_t)st->cfg.budget_bytes, "quarantine_bytes", (json_int_t)st->quarantine_bytes,
        "transfer_segments", (json_int_t)kv_xfer_out(&s->xf), "transfer_bytes",
        (json_int_t)s->xf.out_bytes, "pool_bytes", (json_int_t)s->xf.pool_bytes,
        "pool_reused", (json_int_t)s->xf.reused, "pool_created", (json_int_t)s->xf.created);
    if (s->cfg.test_mode)
        json_object_set_new(info, "crash_points", json_integer((json_int_t)kv_crash_count()));
    json_t *o = json_pack("{s:s,s:o,s:o}", "daemon", "kvd", "counters", c, "info", info);
    return reply_json(out, DS4W_T_STATS, m, o);
}

/* An optional fingerprint field: absent -> NULL; present -> 64 hex. */
static int get_fp(kv_service *s, const json_t *j, const char *name, int required,
                  const char **out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(j, name);
    *out = NULL;
    if (!v) {
        if (required)
            return fail(s, DS4W_E_INVALID_REQUEST, name, err, errlen,
                        "missing required field '%s'", name);
        return DS4W_OK;
    }
    const char *t = json_string_value(v);
    if (!kv_fp_ok(t))
        return fail(s, DS4W_E_INVALID_REQUEST, name, err, errlen,
                    "field '%s': expected 64 lower-case hex digits", name);
    *out = t;
    return DS4W_OK;
}

/* The I32 frame at index i as ids (malloc'd, *n of them), every id >= 0. */
static int get_ids(kv_service *s, const ds4w_msg *m, int i, int32_t **ids, size_t *n,
                   char *err, size_t errlen)
{
    *n = ds4w_msg_count(m, i);
    *ids = ds4_xmalloc((*n ? *n : 1) * sizeof **ids);
    ds4w_msg_i32(m, i, *ids);
    for (size_t k = 0; k < *n; k++)
        if ((*ids)[k] < 0) {
            char f[40];
            snprintf(f, sizeof f, "ids[%zu]", k);
            free(*ids);
            *ids = NULL;
            return fail(s, DS4W_E_INVALID_REQUEST, f, err, errlen,
                        "%s: negative token id", f);
        }
    return DS4W_OK;
}

/* --- lookup ---------------------------------------------------------------- */

/* A lookup's destination: a transfer segment or a malloc'd buffer. */
struct look_sink {
    kv_service *s;
    int inline_;
    int seg;          /* kv_xfer index, -1 none */
    uint8_t *buf;
};

static void *look_alloc(void *arg, uint64_t size, char *err, size_t errlen)
{
    struct look_sink *k = arg;
    if (k->inline_) {
        if (size > ds4w_limits_get().max_bulk_bytes) {
            ds4_seterr(err, errlen, "payload of %llu bytes is too large to send inline",
                       (unsigned long long)size);
            return NULL;
        }
        k->buf = malloc(size ? (size_t)size : 1);
        if (!k->buf)
            ds4_seterr(err, errlen, "no memory for %llu bytes", (unsigned long long)size);
        return k->buf;
    }
    uint8_t *dest;
    k->seg = kv_xfer_get(&k->s->xf, size, &dest, err, errlen);
    return k->seg >= 0 ? dest : NULL;
}

static void look_discard(void *arg, void *dest)
{
    struct look_sink *k = arg;
    (void)dest;
    if (k->inline_) {
        free(k->buf);
        k->buf = NULL;
    } else if (k->seg >= 0) {
        kv_xfer_abandon(&k->s->xf, k->seg);
        k->seg = -1;
    }
}

static int h_lookup(kv_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    const char *fp, *fam;
    int rc = get_fp(s, m->json, "fingerprint", 1, &fp, err, errlen);
    if (!rc)
        rc = get_fp(s, m->json, "family_fingerprint", 0, &fam, err, errlen);
    if (rc)
        return rc;
    int32_t *ids;
    size_t n;
    if ((rc = get_ids(s, m, 1, &ids, &n, err, errlen)))
        return rc;
    const json_t *mt = json_object_get(m->json, "min_tokens");
    kv_query q = {fp, fam, json_is_true(json_object_get(m->json, "allow_cross_quant")),
                  mt ? (uint32_t)(json_integer_value(mt) > UINT32_MAX
                                      ? UINT32_MAX
                                      : json_integer_value(mt))
                     : 0};
    struct look_sink k;
    memset(&k, 0, sizeof k);
    k.s = s;
    k.inline_ = (m->flags & DS4W_FLAG_INLINE) != 0;
    k.seg = -1;
    kv_sink sink = {look_alloc, look_discard, &k};
    kv_found f;
    const char *why = "none";
    stat_add(s, DS4S_KV_lookups, 1);
    rc = kv_store_lookup(&s->store, ids, n, &q, &sink, &f, &why, err, errlen);
    free(ids);
    if (rc < 0) {
        char e2[512];
        snprintf(e2, sizeof e2, "%s", err);
        return fail(s, DS4W_E_INTERNAL, NULL, err, errlen, "lookup failed: %s", e2);
    }
    if (rc == 0) {
        stat_add(s, DS4S_KV_misses, 1);
        ds4_debug("lookup of %zu ids: miss (%s)", n, why);
        return reply_json(out, DS4W_T_KV_MISS, m, json_pack("{s:s}", "reason", why));
    }
    stat_add(s, DS4S_KV_hits, 1);
    stat_add(s, DS4S_KV_hit_tokens, f.h.n_tokens);
    json_t *o = json_pack("{s:I,s:s,s:s,s:s}", "tokens", (json_int_t)f.h.n_tokens, "key", f.key,
                          "fingerprint", f.h.fingerprint, "quant", f.h.quant);
    reply_json(out, DS4W_T_KV_FOUND, m, o);
    if (k.inline_) {
        out->flags |= DS4W_FLAG_INLINE;
        out_take_bytes(out, k.buf, (size_t)f.h.payload_size);
    } else {
        ds4w_shmref ref;
        kv_xfer_publish(&s->xf, k.seg, f.h.payload_size, f.h.payload_checksum, &ref);
        ds4w_out_shmref(out, &ref);
    }
    ds4_debug("lookup of %zu ids: %u-token prefix %s (%llu bytes%s)", n, f.h.n_tokens, f.key,
              (unsigned long long)f.h.payload_size, k.inline_ ? ", inline" : "");
    return DS4W_OK;
}

/* --- put ------------------------------------------------------------------- */

/* The answer to a put that ended with rc (KV_*; e3 its message). */
static int put_reply(kv_service *s, const kv_wjob *j, int rc, const char *e3, const ds4w_msg *m,
                     ds4w_out *out, char *err, size_t errlen)
{
    if (rc == KV_ERR_TOO_LARGE)
        return fail(s, DS4W_E_TOO_LARGE, NULL, err, errlen, "KV_PUT: %s", e3);
    if (rc == KV_ERR_CHECKSUM)
        return fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen, "KV_PUT: %s", e3);
    if (rc != KV_OK) {
        ds4_warn("checkpoint of %zu tokens not stored: %s", j->req.n, e3);
        return fail(s, DS4W_E_INTERNAL, NULL, err, errlen,
                    "KV_PUT: the write failed cleanly, nothing stored: %s", e3);
    }
    const kv_put_res *res = &j->res;
    ds4_debug("stored %s: %zu tokens, %llu bytes, %u evicted%s", res->key, j->req.n,
              (unsigned long long)res->bytes, res->evicted, res->unchanged ? " (unchanged)" : "");
    return reply_json(out, DS4W_T_KV_STORED, m,
                      json_pack("{s:s,s:I,s:I}", "key", res->key, "bytes",
                                (json_int_t)res->bytes, "evicted", (json_int_t)res->evicted));
}

static int h_put(kv_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    const char *fp, *fam;
    int rc = get_fp(s, m->json, "fingerprint", 1, &fp, err, errlen);
    if (!rc)
        rc = get_fp(s, m->json, "family_fingerprint", 0, &fam, err, errlen);
    if (rc)
        return rc;
    const char *quant = json_string_value(json_object_get(m->json, "quant"));
    if (quant && !kv_quant_ok(quant))
        return fail(s, DS4W_E_INVALID_REQUEST, "quant", err, errlen,
                    "field 'quant': expected 0 to %d of [A-Za-z0-9_.-]", KV_QUANT_MAX);
    int reason = KV_REASON_UNKNOWN;
    const char *rs = json_string_value(json_object_get(m->json, "reason"));
    if (rs && (reason = kv_reason_parse(rs)) < 0)
        return fail(s, DS4W_E_INVALID_REQUEST, "reason", err, errlen,
                    "field 'reason': expected cold, periodic, evict, shutdown or unknown");
    double ms = 0;
    const json_t *pm = json_object_get(m->json, "prefill_ms");
    if (pm) {
        ms = json_number_value(pm);
        if (!isfinite(ms) || ms < 0 || ms > 1e12)
            return fail(s, DS4W_E_INVALID_REQUEST, "prefill_ms", err, errlen,
                        "field 'prefill_ms': expected a number of milliseconds >= 0");
    }
    int32_t *ids;
    size_t n;
    if ((rc = get_ids(s, m, 1, &ids, &n, err, errlen)))
        return rc;
    if (n == 0) {
        free(ids);
        return fail(s, DS4W_E_INVALID_REQUEST, "ids", err, errlen,
                    "a checkpoint needs at least one token id");
    }
    kv_put_req r = {.ids = ids, .n = n, .src_fd = -1, .fingerprint = fp, .family = fam,
                    .quant = quant, .reason = (uint32_t)reason,
                    .prefill_us = (uint64_t)llround(ms * 1000.0)};
    ds4_shm seg;
    memset(&seg, 0, sizeof seg);
    seg.fd = -1;
    if (m->flags & DS4W_FLAG_INLINE) {
        ds4w_buf b = ds4w_msg_frame(m, 2);
        r.payload = b.data;
        r.len = b.len;
        r.expect_checksum = ds4_hash64(b.data, b.len, 0); /* lets a re-put be a no-op */
    } else {
        ds4w_shmref ref;
        char e2[256];
        if (ds4w_msg_shmref(m, 2, &ref)) {
            free(ids);
            return fail(s, DS4W_E_BAD_FRAME, NULL, err, errlen, "KV_PUT: bad SHMREF frame");
        }
        if (ds4_shm_attach(&seg, ref.name, DS4_SHM_RDONLY, e2, sizeof e2)) {
            free(ids);
            return fail(s, errno == ENOENT ? DS4W_E_NOT_FOUND : DS4W_E_INVALID_REQUEST, NULL,
                        err, errlen, "KV_PUT: %s", e2);
        }
        uint64_t gen = ds4_shm_generation(&seg);
        if (gen != ref.generation || ref.offset < DS4_SHM_HEADER_SIZE ||
            ref.offset > seg.map_size || ref.length > seg.map_size - ref.offset) {
            rc = fail(s, gen != ref.generation ? DS4W_E_NOT_FOUND : DS4W_E_INVALID_REQUEST,
                      NULL, err, errlen,
                      "KV_PUT: segment %s: %s", ref.name,
                      gen != ref.generation ? "stale reference (generation changed)"
                                            : "offset/length outside the segment");
            ds4_shm_detach(&seg);
            free(ids);
            return rc;
        }
        r.src_fd = seg.fd;
        r.src_off = ref.offset;
        r.len = ref.length;
        r.expect_checksum = ref.checksum;
    }
    /* the job owns what the write needs (it may outlive m) */
    kv_wjob *j = ds4_xcalloc(1, sizeof *j);
    j->ids = ids;
    j->seg = seg; /* moved */
    if (r.payload && r.len) {
        j->inline_copy = ds4_xmalloc((size_t)r.len);
        memcpy(j->inline_copy, r.payload, (size_t)r.len);
        r.payload = j->inline_copy;
    }
    j->req = r;
    j->route = m->route;
    memcpy(j->reqid, m->reqid, 16);
    char e3[512];
    rc = kv_store_put_begin(&s->store, &j->req, &j->job, &j->res, e3, sizeof e3);
    if (rc == KV_DONE) {
        rc = put_reply(s, j, KV_OK, "", m, out, err, errlen);
    } else if (rc != KV_OK) {
        rc = put_reply(s, j, rc, e3, m, out, err, errlen);
    } else if (s->cfg.writer) {
        kv_writer_submit(s->cfg.writer, j);
        return KV_SVC_DEFERRED;
    } else {
        kv_put_write(&j->job, &j->req);
        rc = kv_store_put_end(&s->store, &j->job, &j->res, e3, sizeof e3);
        rc = put_reply(s, j, rc, e3, m, out, err, errlen);
    }
    kv_wjob_free(j);
    return rc;
}

/* Finish the writes the writer handed back (all in flight when wait is
 * set), replying to each through the daemon's callback. */
void kv_service_complete_writes(kv_service *s, int wait)
{
    if (!s->cfg.writer)
        return;
    kv_wjob *j;
    while ((j = wait ? kv_writer_take_wait(s->cfg.writer) : kv_writer_take(s->cfg.writer))) {
        char e3[512], err[1024];
        int rc = kv_store_put_end(&s->store, &j->job, &j->res, e3, sizeof e3);
        ds4w_out out;
        memset(&out, 0, sizeof out);
        const char *field = NULL;
        ds4w_msg m;
        memset(&m, 0, sizeof m);
        m.hdr_ok = 1;
        m.type = DS4W_T_KV_PUT;
        memcpy(m.reqid, j->reqid, 16);
        m.route = j->route;
        m.json_frame = -1;
        rc = put_reply(s, j, rc, e3, &m, &out, err, sizeof err);
        if (rc)
            field = s->field[0] ? s->field : NULL;
        if (s->cfg.reply)
            s->cfg.reply(s->cfg.reply_arg, &m, rc, &out, field, err);
        else
            ds4w_out_free(&out);
        kv_wjob_free(j);
    }
}

/* --- release, set_dir ----------------------------------------------------------- */

static int h_release(kv_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    ds4w_shmref ref;
    if (ds4w_msg_shmref(m, 0, &ref))
        return fail(s, DS4W_E_BAD_FRAME, NULL, err, errlen, "KV_RELEASE: bad SHMREF frame");
    if (kv_xfer_release(&s->xf, &ref) == 0) {
        ds4w_out_init(out, DS4W_T_OK, m->reqid);
        return DS4W_OK;
    }
    return fail(s, DS4W_E_NOT_FOUND, NULL, err, errlen,
                "KV_RELEASE: no outstanding transfer segment %s (generation %llu)", ref.name,
                (unsigned long long)ref.generation);
}

static int h_set_dir(kv_service *s, const ds4w_msg *m, ds4w_out *out, char *err, size_t errlen)
{
    const char *dir = json_string_value(json_object_get(m->json, "dir"));
    int create = json_is_true(json_object_get(m->json, "create"));
    if (!dir || dir[0] != '/' || strlen(dir) >= PATH_MAX - 64)
        return fail(s, DS4W_E_INVALID_REQUEST, "dir", err, errlen,
                    "field 'dir': expected an absolute path");
    kv_service_complete_writes(s, 1); /* nothing in flight across a switch */
    char real[PATH_MAX];
    if (realpath(dir, real) && !strcmp(real, s->store.dir)) {
        ds4_info("storage directory is already %s", real);
    } else {
        kv_store ns;
        char e2[512];
        kv_crashpoint("swap.begin");
        if (kv_store_open(&ns, dir, create, &s->cfg.store, e2, sizeof e2))
            return fail(s, DS4W_E_INVALID_REQUEST, "dir", err, errlen,
                        "cannot use %s: %s (still using %s)", dir, e2, s->store.dir);
        kv_crashpoint("swap.opened");
        char old[PATH_MAX];
        snprintf(old, sizeof old, "%s", s->store.dir);
        kv_store_close(&s->store);
        s->store = ns;
        kv_store_gauges(&s->store);
        kv_crashpoint("swap.done");
        stat_add(s, DS4S_KV_path_swaps, 1);
        ds4_info("storage directory switched from %s to %s (%zu checkpoints)",
                      old, s->store.dir, s->store.idx.n);
    }
    return reply_json(out, DS4W_T_OK, m,
                      json_pack("{s:s,s:I}", "dir", s->store.dir, "entries",
                                (json_int_t)s->store.idx.n));
}

int kv_service_handle(kv_service *s, const ds4w_msg *m, ds4w_out *out, const char **field,
                      char *err, size_t errlen)
{
    s->field[0] = 0;
    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = 0;
    int rc;
    if (!m->hdr_ok || !m->def || m->def->dir != DS4W_DIR_REQ) {
        rc = fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen, "%s is not a request",
                  ds4w_type_name(m->type));
    } else if (m->def->svc != DS4W_SVC_ANY && m->def->svc != DS4W_SVC_KV) {
        rc = fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen, "%s is not served by kvd",
                  ds4w_type_name(m->type));
    } else if (m->json_frame < 0 && m->def->frames[0] == DS4W_FK_JSON) {
        rc = fail(s, DS4W_E_BAD_FRAME, NULL, err, errlen, "%s without its JSON frame",
                  ds4w_type_name(m->type));
    } else {
        switch (m->type) {
        case DS4W_T_PING: rc = h_ping(s, m, out); break;
        case DS4W_T_STATS_GET:
        case DS4W_T_KV_STATS: rc = h_stats(s, m, out); break;
        case DS4W_T_KV_LOOKUP: rc = h_lookup(s, m, out, err, errlen); break;
        case DS4W_T_KV_PUT: rc = h_put(s, m, out, err, errlen); break;
        case DS4W_T_KV_RELEASE: rc = h_release(s, m, out, err, errlen); break;
        case DS4W_T_KV_SET_DIR: rc = h_set_dir(s, m, out, err, errlen); break;
        default:
            rc = fail(s, DS4W_E_INVALID_REQUEST, NULL, err, errlen, "%s is not served by kvd",
                      ds4w_type_name(m->type));
        }
    }
    if (rc)
        ds4w_out_free(out);
    if (field)
        *field = rc > 0 && s->field[0] ? s->field : NULL;
    return rc;
}
