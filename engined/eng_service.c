/* eng_service.c - engined's socket-thread side: request validation, the
 * fair queue's entry, cancellation flags, PING/STATS, and the outbox the
 * scheduler fills (see eng_service.h). */
#include "eng_service.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* Record an error message and the offending field. */
static int fail(const char **field, const char *f, char *err, size_t errlen, int code,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail(const char **field, const char *f, char *err, size_t errlen, int code,
                const char *fmt, ...)
{
    if (field)
        *field = f;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void wake(eng_service *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->efd, &one, sizeof one);
    (void)r;
}

int eng_service_init(eng_service *s, const eng_service_opts *o, ds4_stats *stats, char *err,
                     size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->o = *o;
    s->stats = stats;
    s->start_ns = ds4_now_ns();
    if (!s->o.max_batch)
        s->o.max_batch = 8;
    if (!s->o.max_ctx)
        s->o.max_ctx = 32768;
    if (!s->o.prefill_chunk)
        s->o.prefill_chunk = 512;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        ds4_seterr(err, errlen, "eventfd: %s", strerror(errno));
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return 0;
}

int eng_service_start(eng_service *s, char *err, size_t errlen)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* signals stay with the socket thread */
    int rc = pthread_create(&s->thread, NULL, eng_sched_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        ds4_seterr(err, errlen, "pthread_create: %s", strerror(rc));
        return -1;
    }
    s->thread_started = 1;
    return 0;
}

void eng_service_stop(eng_service *s)
{
    if (!s->thread_started)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->thread_started = 0;
}

void eng_job_free(eng_job *j)
{
    if (!j)
        return;
    free(j->prompt);
    free(j->forced);
    free(j->stop_ids);
    free(j);
}

void eng_service_fini(eng_service *s)
{
    eng_service_stop(s);
    for (eng_outmsg *m = s->ohead, *n; m; m = n) {
        n = m->next;
        ds4w_out_free(&m->out);
        free(m);
    }
    s->ohead = s->otail = NULL;
    /* jobs left in the queue (the scheduler never started) */
    for (eng_job *j = s->all, *n; j; j = n) {
        n = j->all_next;
        eng_job_free(j);
    }
    s->all = NULL;
    if (s->efd >= 0)
        close(s->efd);
    s->efd = -1;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

void eng_outbox_push(eng_service *s, eng_outmsg *om)
{
    om->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->otail)
        s->otail->next = om;
    else
        s->ohead = om;
    s->otail = om;
    pthread_mutex_unlock(&s->mu);
    wake(s);
}

/* Queue a reply (not part of a stream) for the sender of m. */
static void reply(eng_service *s, const ds4w_msg *m, ds4w_out *o)
{
    eng_outmsg *om = ds4_xcalloc(1, sizeof *om);
    om->out = *o;
    om->route = m->route;
    memcpy(om->reqid, m->reqid, 16);
    eng_outbox_push(s, om);
}

int eng_service_ready(eng_service *s)
{
    pthread_mutex_lock(&s->mu);
    int r = s->ready;
    pthread_mutex_unlock(&s->mu);
    return r;
}

int eng_service_load_failed(eng_service *s)
{
    pthread_mutex_lock(&s->mu);
    int r = s->load_failed;
    pthread_mutex_unlock(&s->mu);
    return r;
}

uint32_t eng_service_busy_jobs(eng_service *s)
{
    pthread_mutex_lock(&s->mu);
    uint32_t n = s->n_queued + s->n_running;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void eng_service_set_draining(eng_service *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    pthread_mutex_unlock(&s->mu);
}

/* ---- PING, STATS ---------------------------------------------------------- */

static int h_ping(eng_service *s, const ds4w_msg *m)
{
    int ready = eng_service_ready(s);
    json_t *o = json_pack("{s:s,s:I,s:s,s:i,s:b,s:I,s:b}", "daemon", "engined", "pid",
                          (json_int_t)getpid(), "version", ENGINED_VERSION, "proto",
                          DS4W_VERSION, "ready", ready, "uptime_ms",
                          (json_int_t)((ds4_now_ns() - s->start_ns) / 1000000u), "test_mode",
                          s->o.test_mode);
    if (s->o.model)
        json_object_set_new(o, "model", json_string(s->o.model));
    ds4w_out out;
    ds4w_out_init(&out, DS4W_T_PONG, m->reqid);
    ds4w_out_json(&out, o);
    json_decref(o);
    reply(s, m, &out);
    return DS4W_OK;
}

static int h_stats(eng_service *s, const ds4w_msg *m)
{
    size_t n;
    const struct ds4_stat_def *defs = ds4_stats_table("engined", &n);
    json_t *c = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(c, defs[i].name,
                            json_integer((json_int_t)ds4_stats_get(s->stats, (unsigned)i)));
    json_t *info = json_object();
    json_object_set_new(info, "backend", json_string(s->o.backend));
    if (s->o.model)
        json_object_set_new(info, "model", json_string(s->o.model));
    json_object_set_new(info, "max_ctx", json_integer(s->o.max_ctx));
    json_object_set_new(info, "max_batch", json_integer(s->o.max_batch));
    json_object_set_new(info, "max_queue", json_integer(s->o.max_queue));
    json_object_set_new(info, "prefill_chunk", json_integer(s->o.prefill_chunk));
    json_object_set_new(info, "test_mode", json_boolean(s->o.test_mode));
    pthread_mutex_lock(&s->mu);
    int ready = s->ready;
    json_object_set_new(info, "queued", json_integer(s->n_queued));
    json_object_set_new(info, "running", json_integer(s->n_running));
    pthread_mutex_unlock(&s->mu);
    json_object_set_new(info, "ready", json_boolean(ready));
    if (ready) { /* published before ready was set, read-only since */
        json_object_set_new(info, "n_vocab", json_integer(s->n_vocab));
        json_object_set_new(info, "fingerprint", json_string(s->fingerprint));
        json_object_set_new(info, "device", json_string(s->describe));
        json_object_set_new(info, "load_ms", json_real(s->load_ms));
        json_object_set_new(info, "weights_reattached", json_boolean(s->weights_reattached));
        json_object_set_new(info, "weights_ms", json_real(s->weights_ms));
        if (!s->weights_reattached && s->weights_stale[0])
            json_object_set_new(info, "weights_stale", json_string(s->weights_stale));
    }
    json_t *o = json_pack("{s:s,s:o,s:o}", "daemon", "engined", "counters", c, "info", info);
    ds4w_out out;
    ds4w_out_init(&out, DS4W_T_STATS, m->reqid);
    ds4w_out_json(&out, o);
    json_decref(o);
    reply(s, m, &out);
    return DS4W_OK;
}

/* ---- request parsing -------------------------------------------------------- */

/* The ids of I32 frame `frame`, each checked against the vocabulary. */
static int get_ids(eng_service *s, const ds4w_msg *m, int frame, const char *what,
                   int32_t **out, uint32_t *n, const char **field, char *err, size_t errlen)
{
    static __thread char fbuf[48];
    size_t cnt = ds4w_msg_count(m, frame);
    *out = NULL;
    *n = 0;
    if (cnt == 0)
        return fail(field, what, err, errlen, DS4W_E_INVALID_REQUEST, "%s: no token ids", what);
    if (cnt > UINT32_MAX / 2)
        return fail(field, what, err, errlen, DS4W_E_TOO_LARGE, "%s: %zu ids", what, cnt);
    int32_t *v = ds4_xmalloc(cnt * sizeof *v);
    ds4w_msg_i32(m, frame, v);
    for (size_t i = 0; i < cnt; i++)
        if (v[i] < 0 || (uint32_t)v[i] >= s->n_vocab) {
            snprintf(fbuf, sizeof fbuf, "%s[%zu]", what, i);
            int32_t bad = v[i];
            free(v);
            return fail(field, fbuf, err, errlen, DS4W_E_INVALID_REQUEST,
                        "%s[%zu]: token id %d is outside the vocabulary (0..%u)", what, i, bad,
                        s->n_vocab - 1);
        }
    *out = v;
    *n = (uint32_t)cnt;
    return DS4W_OK;
}

/* A number field in [lo, hi] into *out (absent: unchanged). */
static int get_num(const json_t *j, const char *name, double lo, double hi, float *out,
                   int *seen, const char **field, char *err, size_t errlen)
{
    const json_t *v = json_object_get(j, name);
    if (!v)
        return DS4W_OK;
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return fail(field, name, err, errlen, DS4W_E_INVALID_REQUEST,
                    "field '%s': %g is outside [%g, %g]", name, x, lo, hi);
    *out = (float)x;
    if (seen)
        *seen = 1;
    return DS4W_OK;
}

/* The fields GEN_SUBMIT and LOGITS_GET share, and the prompt. */
static eng_job *job_new(const ds4w_msg *m, int kind)
{
    eng_job *j = ds4_xcalloc(1, sizeof *j);
    memcpy(j->reqid, m->reqid, 16);
    ds4w_uuid_format(m->reqid, j->rid);
    j->route = m->route;
    j->kind = kind;
    j->thinking = -1;
    j->dsml_greedy = 1;
    j->reuse = 1;
    j->pending = -1;
    j->t_submit = ds4_now_ns();
    eng_sample_defaults(&j->sp);
    /* fairness key: the client field, else the connection */
    const char *c = json_string_value(json_object_get(m->json, "client"));
    if (c && *c)
        snprintf(j->client, sizeof j->client, "c:%s", c);
    else {
        size_t k = 0;
        j->client[k++] = 'r';
        j->client[k++] = ':';
        for (size_t i = 0; i < m->route.len && k + 2 < sizeof j->client; i++)
            k += (size_t)snprintf(j->client + k, sizeof j->client - k, "%02x", m->route.id[i]);
    }
    return j;
}

static int parse_gen(eng_service *s, const ds4w_msg *m, eng_job *j, const char **field,
                     char *err, size_t errlen)
{
    const json_t *js = m->json;
    int rc = get_ids(s, m, 1, "prompt", &j->prompt, &j->n_prompt, field, err, errlen);
    if (rc)
        return rc;
    if (m->nframes > 2) {
        if (!s->o.test_mode)
            return fail(field, NULL, err, errlen, DS4W_E_FORBIDDEN,
                        "forced decoding is refused: engined does not run with --test-mode");
        rc = get_ids(s, m, 2, "forced", &j->forced, &j->n_forced, field, err, errlen);
        if (rc)
            return rc;
    }
    int sampling = 0;
    if ((rc = get_num(js, "temperature", 0, 100, &j->sp.temperature, &sampling, field, err,
                      errlen)) ||
        (rc = get_num(js, "top_p", 0, 1, &j->sp.top_p, &sampling, field, err, errlen)) ||
        (rc = get_num(js, "min_p", 0, 1, &j->sp.min_p, &sampling, field, err, errlen)))
        return rc;
    const json_t *v;
    if ((v = json_object_get(js, "top_k"))) {
        json_int_t k = json_integer_value(v);
        j->sp.top_k = k > (json_int_t)s->n_vocab ? s->n_vocab : (uint32_t)k;
        sampling = 1;
    }
    j->client_sampling = sampling;
    if ((v = json_object_get(js, "seed")))
        j->seed = (uint64_t)json_integer_value(v);
    else
        j->seed = eng_rng_os_seed();
    if ((v = json_object_get(js, "logprobs"))) {
        json_int_t k = json_integer_value(v);
        if (k > ENG_SAMPLE_MAX_LOGPROBS)
            return fail(field, "logprobs", err, errlen, DS4W_E_INVALID_REQUEST,
                        "field 'logprobs': at most %u", ENG_SAMPLE_MAX_LOGPROBS);
        j->logprobs = (uint32_t)k;
    }
    if ((v = json_object_get(js, "thinking")))
        j->thinking = json_is_true(v);
    if ((v = json_object_get(js, "dsml_greedy")))
        j->dsml_greedy = json_is_true(v);
    if ((v = json_object_get(js, "stop_ids"))) {
        size_t n = json_array_size(v);
        if (n > ENG_MAX_STOP_IDS)
            return fail(field, "stop_ids", err, errlen, DS4W_E_INVALID_REQUEST,
                        "field 'stop_ids': %zu ids, at most %u", n, ENG_MAX_STOP_IDS);
        j->stop_ids = ds4_xmalloc((n ? n : 1) * sizeof *j->stop_ids);
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(v, i);
            json_int_t id = json_is_integer(e) ? json_integer_value(e) : -1;
            if (id < 0 || id >= (json_int_t)s->n_vocab) {
                static __thread char fb[40];
                snprintf(fb, sizeof fb, "stop_ids[%zu]", i);
                return fail(field, fb, err, errlen, DS4W_E_INVALID_REQUEST,
                            "stop_ids[%zu]: expected a token id in 0..%u", i, s->n_vocab - 1);
            }
            j->stop_ids[j->n_stop++] = (int32_t)id;
        }
    }
    /* the context: never truncated */
    uint32_t ctx = s->o.max_ctx;
    if ((v = json_object_get(js, "max_tokens"))) {
        json_int_t mt = json_integer_value(v);
        if ((uint64_t)j->n_prompt + (uint64_t)mt > ctx) {
            if (s->stats)
                ds4_stats_add(s->stats, DS4S_ENG_context_overflows, 1);
            return fail(field, "max_tokens", err, errlen, DS4W_E_CONTEXT_OVERFLOW,
                        "prompt of %u tokens + max_tokens %lld exceed the context of %u tokens",
                        j->n_prompt, (long long)mt, ctx);
        }
        j->max_tokens = (uint32_t)mt;
    } else {
        if (j->n_prompt >= ctx) {
            if (s->stats)
                ds4_stats_add(s->stats, DS4S_ENG_context_overflows, 1);
            return fail(field, "prompt", err, errlen, DS4W_E_CONTEXT_OVERFLOW,
                        "prompt of %u tokens leaves no room in the context of %u tokens",
                        j->n_prompt, ctx);
        }
        j->max_tokens = ctx - j->n_prompt;
    }
    return DS4W_OK;
}

static int parse_logits(eng_service *s, const ds4w_msg *m, eng_job *j, const char **field,
                        char *err, size_t errlen)
{
    int rc = get_ids(s, m, 1, "prompt", &j->prompt, &j->n_prompt, field, err, errlen);
    if (rc)
        return rc;
    if (j->n_prompt > s->o.max_ctx) {
        if (s->stats)
            ds4_stats_add(s->stats, DS4S_ENG_context_overflows, 1);
        return fail(field, "prompt", err, errlen, DS4W_E_CONTEXT_OVERFLOW,
                    "prompt of %u tokens exceeds the context of %u tokens", j->n_prompt,
                    s->o.max_ctx);
    }
    const json_t *v;
    j->top_k = 20;
    if ((v = json_object_get(m->json, "top_k"))) {
        json_int_t k = json_integer_value(v);
        if (k > 1024)
            return fail(field, "top_k", err, errlen, DS4W_E_INVALID_REQUEST,
                        "field 'top_k': at most 1024");
        j->top_k = (uint32_t)k;
    }
    j->full = json_is_true(json_object_get(m->json, "full"));
    if ((v = json_object_get(m->json, "cache")))
        j->reuse = json_is_true(v);
    return DS4W_OK;
}

/* Under mu: the live job of (route, reqid), or NULL. */
static eng_job *find_job(eng_service *s, const ds4w_route *r, const uint8_t reqid[16])
{
    for (eng_job *j = s->all; j; j = j->all_next)
        if (memcmp(j->reqid, reqid, 16) == 0 && j->route.len == r->len &&
            memcmp(j->route.id, r->id, r->len) == 0)
            return j;
    return NULL;
}

/* ERROR busy with retry_after_ms (ds4w_reply_error has no room for it). */
static void reply_busy(eng_service *s, const ds4w_msg *m, uint32_t queued)
{
    char msg[96];
    snprintf(msg, sizeof msg, "queue full (%u jobs waiting)", queued);
    json_t *e = ds4w_error_json(DS4W_E_BUSY, msg);
    json_object_set_new(e, "retry_after_ms", json_integer(s->o.retry_after_ms));
    ds4w_out out;
    ds4w_out_init(&out, DS4W_T_ERROR, m->reqid);
    out.flags = DS4W_FLAG_END;
    ds4w_out_json(&out, e);
    json_decref(e);
    reply(s, m, &out);
    ds4_warn("%s refused: busy (%u queued)", ds4w_type_name(m->type), queued);
    if (s->stats)
        ds4_stats_add(s->stats, DS4S_ENG_jobs_rejected_busy, 1);
}

/* Enqueue an accepted job (GEN_ACCEPTED first for a stream). */
static int submit(eng_service *s, const ds4w_msg *m, eng_job *j, const char **field, char *err,
                  size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    if (s->draining || s->stop) {
        pthread_mutex_unlock(&s->mu);
        return fail(field, NULL, err, errlen, DS4W_E_UNAVAILABLE,
                    "engined is shutting down; retry on the next instance");
    }
    if (find_job(s, &j->route, j->reqid)) {
        pthread_mutex_unlock(&s->mu);
        return fail(field, NULL, err, errlen, DS4W_E_INVALID_REQUEST,
                    "request id %s is already in use by a live job", j->rid);
    }
    /* waiting room: --max-queue beyond the free running slots (jobs wait
     * in the queue for a moment even when a slot is free) */
    uint32_t free_slots = s->n_running < s->o.max_batch ? s->o.max_batch - s->n_running : 0;
    if (s->n_queued >= s->o.max_queue + free_slots) {
        uint32_t q = s->n_queued;
        pthread_mutex_unlock(&s->mu);
        reply_busy(s, m, q);
        return -1; /* answered */
    }
    uint32_t pos = s->n_queued == 0 && s->n_running < s->o.max_batch ? 0 : s->n_queued + 1;
    if (j->kind == ENG_JOB_GEN) {
        /* GEN_ACCEPTED goes into the outbox before the scheduler can see the
         * job, so it precedes every event of the stream */
        json_t *o = json_pack("{s:i}", "queue_pos", (int)pos);
        eng_outmsg *om = ds4_xcalloc(1, sizeof *om);
        ds4w_out_init(&om->out, DS4W_T_GEN_ACCEPTED, j->reqid);
        ds4w_out_json(&om->out, o);
        json_decref(o);
        om->route = j->route;
        memcpy(om->reqid, j->reqid, 16);
        om->is_stream = 1;
        if (s->otail)
            s->otail->next = om;
        else
            s->ohead = om;
        s->otail = om;
        j->seq = 1;
    }
    j->next = NULL;
    if (s->qtail)
        s->qtail->next = j;
    else
        s->qhead = j;
    s->qtail = j;
    j->all_next = s->all;
    s->all = j;
    s->n_queued++;
    if (s->stats) {
        ds4_stats_set(s->stats, DS4S_ENG_jobs_queued, s->n_queued);
        ds4_stats_add(s->stats, DS4S_ENG_jobs_submitted, 1);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    wake(s);
    ds4_info("%s accepted: %u prompt tokens, max_tokens %u, queue_pos %u, client %s",
             j->kind == ENG_JOB_GEN ? "GEN_SUBMIT" : "LOGITS_GET", j->n_prompt, j->max_tokens,
             pos, j->client);
    return DS4W_OK;
}

static int h_cancel(eng_service *s, const ds4w_msg *m)
{
    const char *why = m->json ? json_string_value(json_object_get(m->json, "reason")) : NULL;
    pthread_mutex_lock(&s->mu);
    eng_job *j = find_job(s, &m->route, m->reqid);
    if (j && !j->cancel)
        j->cancel = ENG_CANCEL_CLIENT;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    ds4_info("GEN_CANCEL%s%s%s", why ? " (" : "", why ? why : "", why ? ")" : "");
    if (!j)
        ds4_debug("GEN_CANCEL of no live job: ignored");
    return DS4W_OK;
}

int eng_service_handle(eng_service *s, const ds4w_msg *m, const char **field, char *err,
                       size_t errlen)
{
    *field = NULL;
    if (!m->hdr_ok || !m->def || m->def->dir != DS4W_DIR_REQ)
        return fail(field, NULL, err, errlen, DS4W_E_INVALID_REQUEST, "%s is not a request",
                    ds4w_type_name(m->type));
    if (m->def->svc != DS4W_SVC_ANY && m->def->svc != DS4W_SVC_ENG)
        return fail(field, NULL, err, errlen, DS4W_E_INVALID_REQUEST,
                    "%s is not served by engined", ds4w_type_name(m->type));
    switch (m->type) {
    case DS4W_T_PING: return h_ping(s, m);
    case DS4W_T_STATS_GET: return h_stats(s, m);
    case DS4W_T_GEN_CANCEL: return h_cancel(s, m);
    case DS4W_T_GEN_SUBMIT:
    case DS4W_T_LOGITS_GET: break;
    default:
        return fail(field, NULL, err, errlen, DS4W_E_INVALID_REQUEST,
                    "%s is not served by engined", ds4w_type_name(m->type));
    }
    if (!eng_service_ready(s))
        return fail(field, NULL, err, errlen, DS4W_E_NOT_READY,
                    "engined is still loading the model");
    int gen = m->type == DS4W_T_GEN_SUBMIT;
    eng_job *j = job_new(m, gen ? ENG_JOB_GEN : ENG_JOB_LOGITS);
    int rc = gen ? parse_gen(s, m, j, field, err, errlen)
                 : parse_logits(s, m, j, field, err, errlen);
    if (rc == DS4W_OK)
        rc = submit(s, m, j, field, err, errlen);
    if (rc != DS4W_OK) {
        eng_job_free(j);
        return rc < 0 ? DS4W_OK : rc;
    }
    return DS4W_OK;
}

/* Under mu: a stream's client is gone (or stalled): cancel its job. */
static void mark_gone(eng_service *s, const ds4w_route *r, const uint8_t reqid[16])
{
    eng_job *j = find_job(s, r, reqid);
    if (j && j->cancel != ENG_CANCEL_GONE) {
        j->cancel = ENG_CANCEL_GONE;
        pthread_cond_broadcast(&s->cv);
    }
}

void eng_service_clear_wake(eng_service *s)
{
    uint64_t cnt;
    ssize_t r = read(s->efd, &cnt, sizeof cnt);
    (void)r;
}

void eng_service_flush(eng_service *s, void *sock)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        eng_outmsg *m = s->ohead;
        if (m) {
            s->ohead = m->next;
            if (!s->ohead)
                s->otail = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        if (!m)
            break;
        char e[256] = "", rid[DS4W_UUID_STR];
        uint16_t type = m->out.type;
        if (ds4w_send(sock, m->route.len ? &m->route : NULL, &m->out, ZMQ_DONTWAIT, e,
                      sizeof e) != 0) {
            int en = errno;
            ds4w_uuid_format(m->reqid, rid);
            ds4_log_req(DS4_LOG_WARN, rid, "%s not sent: %s%s", ds4w_type_name(type), e,
                        en == EHOSTUNREACH ? " (client gone)"
                        : en == EAGAIN     ? " (client not reading)"
                                           : "");
            if (m->is_stream) {
                pthread_mutex_lock(&s->mu);
                mark_gone(s, &m->route, m->reqid);
                pthread_mutex_unlock(&s->mu);
            }
        } else if (s->stats) {
            ds4_stats_add(s->stats, DS4S_frames_out, 1);
        }
        free(m);
    }
}
