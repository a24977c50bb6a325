/* eng_sched.c - engined's scheduler thread: loads the model, admits queued
 * jobs fairly (round-robin over the `client` key), runs prefill chunks and
 * batched decode steps through the backend, samples, and produces the
 * stream messages (see eng_service.h, docs/ENGINED.md).
 *
 * One iteration of the loop:
 *   1. under the mutex: end queued jobs that were cancelled, admit queued
 *      jobs while fewer than max_batch run, read the cancel flags;
 *   2. end running jobs that were cancelled or whose client vanished;
 *   3. one decode step: decode_batch over every job that has a token to
 *      evaluate (continuous batching: jobs join and leave between steps);
 *   4. one prefill chunk (at most prefill_chunk tokens) of one prefilling
 *      job, round-robin, so a long prompt delays decoding jobs by one
 *      chunk at most.
 * A job alone on the engine runs the same backend calls in the same order
 * whatever else happened before, so a seed reproduces its output; batched
 * with others, only floating-point reduction order in the backend may
 * differ (the "ref" backend has none). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/gguf.h"
#include "common/log.h"
#include "common/util.h"
#include "eng_kv.h"
#include "eng_service.h"
#include "eng_weights.h"

typedef struct sched {
    eng_service *s;
    eng_job **run;          /* running jobs */
    uint32_t n_run;
    uint32_t rr_prefill;    /* round-robin cursor over prefilling jobs */
    float *logits;          /* max_batch * n_vocab */
    eng_sample_scratch scr;
    int mem_wait;           /* a job waits for session memory: admit no more */
    /* decode-step scratch */
    eng_session **bs;
    int32_t *bids;
    eng_job **bj;
} sched;

static void stat_add(eng_service *s, unsigned i, uint64_t v)
{
    if (s->stats)
        ds4_stats_add(s->stats, i, v);
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

/* ---- messages --------------------------------------------------------------- */

/* Queue a stream message of job j (seq assigned here). */
static void emit(eng_service *s, eng_job *j, ds4w_out *o)
{
    eng_outmsg *m = ds4_xcalloc(1, sizeof *m);
    o->seq = j->kind == ENG_JOB_GEN ? j->seq++ : 0;
    m->out = *o;
    m->route = j->route;
    memcpy(m->reqid, j->reqid, 16);
    m->is_stream = j->kind == ENG_JOB_GEN;
    eng_outbox_push(s, m);
}

static json_t *top_json(const int32_t *ids, const float *lps, uint32_t n)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("[i,f]", (int)ids[i], (double)lps[i]));
    return a;
}

/* GEN_EVENT with one token (and its logprobs when asked). */
static void emit_token(sched *c, eng_job *j, int32_t t, const float *logits)
{
    eng_service *s = c->s;
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_EVENT, j->reqid);
    ds4w_out_i32(&o, &t, 1);
    if (j->logprobs) {
        int32_t ids[ENG_SAMPLE_MAX_LOGPROBS];
        float lps[ENG_SAMPLE_MAX_LOGPROBS], lp;
        uint32_t n = eng_logprobs(logits, s->n_vocab, t, j->logprobs, &lp, ids, lps);
        json_t *e = json_pack("{s:i,s:f,s:o}", "id", (int)t, "logprob",
                              isfinite(lp) ? (double)lp : -1e30, "top", top_json(ids, lps, n));
        json_t *o2 = json_pack("{s:[o]}", "logprobs", e);
        ds4w_out_json(&o, o2);
        json_decref(o2);
    }
    emit(s, j, &o);
}

/* Under the mutex: unlink j from the live-job table. */
static void unlink_job(eng_service *s, eng_job *j)
{
    for (eng_job **p = &s->all; *p; p = &(*p)->all_next)
        if (*p == j) {
            *p = j->all_next;
            return;
        }
}

/* Remove a running job from the run array. */
static void drop_running(sched *c, eng_job *j)
{
    for (uint32_t i = 0; i < c->n_run; i++)
        if (c->run[i] == j) {
            memmove(c->run + i, c->run + i + 1, (c->n_run - i - 1) * sizeof *c->run);
            c->n_run--;
            return;
        }
}

enum { FIN_STOP, FIN_LENGTH, FIN_CANCELLED, FIN_ERROR };
static const char *const FIN_NAME[] = {"stop", "length", "cancelled", "error"};

/* End a job: GEN_DONE (or ERROR for LOGITS_GET failures), session back to
 * the pool, counters, free. running: it was admitted (in c->run). */
static void finish_with(sched *c, eng_job *j, int why, int32_t stop_id, int ecode,
                        const char *emsg, int running, ds4w_out *reply)
{
    eng_service *s = c->s;
    uint64_t now = ds4_now_ns();
    j->t_end = now;
    /* the books first, so a client that reads GEN_DONE and then STATS
     * sees them settled */
    stat_add(s, why == FIN_ERROR       ? DS4S_ENG_jobs_failed
                : why == FIN_CANCELLED ? DS4S_ENG_jobs_cancelled
                                       : DS4S_ENG_jobs_completed,
             1);
    if (j->sess)
        eng_pool_release(&s->pool, j->sess, why != FIN_ERROR && j->reuse);
    j->sess = NULL;
    if (running)
        drop_running(c, j);
    pthread_mutex_lock(&s->mu);
    unlink_job(s, j);
    if (running)
        s->n_running--;
    if (s->stats)
        ds4_stats_set(s->stats, DS4S_ENG_jobs_running, s->n_running);
    pthread_mutex_unlock(&s->mu);
    if (running)
        c->mem_wait = 0; /* memory may have been freed */
    if (reply) {
        emit(s, j, reply);
    } else if (j->kind == ENG_JOB_GEN) {
        json_t *usage = json_pack("{s:i,s:i,s:i}", "prompt_tokens", (int)j->n_prompt,
                                  "cached_tokens", (int)j->cached, "completion_tokens",
                                  (int)j->n_gen);
        uint64_t admit = j->t_admit ? j->t_admit : now;
        double pf_s = (double)j->prefill_ns / 1e9, dc_s = (double)j->decode_ns / 1e9;
        uint32_t computed = j->n_prompt - j->cached;
        json_t *tim = json_pack("{s:f,s:f,s:f,s:f,s:f}", "queue_ms", ms(admit - j->t_submit),
                                "prefill_ms", ms(j->prefill_ns), "decode_ms", ms(j->decode_ns),
                                "prefill_tps", pf_s > 0 ? computed / pf_s : 0.0, "decode_tps",
                                dc_s > 0 && j->n_gen > 1 ? (j->n_gen - 1) / dc_s : 0.0);
        json_t *o = json_pack("{s:s,s:o,s:o}", "finish_reason", FIN_NAME[why], "usage", usage,
                              "timings", tim);
        if (why == FIN_STOP && stop_id >= 0)
            json_object_set_new(o, "stop_id", json_integer(stop_id));
        if (why == FIN_ERROR)
            json_object_set_new(o, "error", ds4w_error_json(ecode, emsg ? emsg : "error"));
        ds4w_out out;
        ds4w_out_init(&out, DS4W_T_GEN_DONE, j->reqid);
        out.flags = DS4W_FLAG_END;
        ds4w_out_json(&out, o);
        json_decref(o);
        emit(s, j, &out);
        ds4_log_req(why == FIN_ERROR ? DS4_LOG_WARN : DS4_LOG_INFO, j->rid,
                    "done: %s%s%s, prompt %u (cached %u), completion %u, queue %.1f ms, "
                    "prefill %.1f ms, decode %.1f ms",
                    FIN_NAME[why], emsg ? ": " : "", emsg ? emsg : "", j->n_prompt, j->cached,
                    j->n_gen, ms(admit - j->t_submit), ms(j->prefill_ns), ms(j->decode_ns));
    } else if (why != FIN_STOP) { /* LOGITS_GET failed or was dropped: ERROR */
        ds4w_out out;
        ds4w_out_init(&out, DS4W_T_ERROR, j->reqid);
        out.flags = DS4W_FLAG_END;
        json_t *e = ds4w_error_json(why == FIN_CANCELLED ? DS4W_E_CANCELLED : ecode,
                                    emsg ? emsg : "cancelled");
        ds4w_out_json(&out, e);
        json_decref(e);
        emit(s, j, &out);
        ds4_log_req(DS4_LOG_WARN, j->rid, "LOGITS_GET failed: %s", emsg ? emsg : "cancelled");
    }
    eng_job_free(j);
}

static void finish(sched *c, eng_job *j, int why, int32_t stop_id, int ecode, const char *emsg,
                   int running)
{
    finish_with(c, j, why, stop_id, ecode, emsg, running, NULL);
}

/* ---- model loading ----------------------------------------------------------- */

static int load(sched *c)
{
    eng_service *s = c->s;
    uint64_t t0 = ds4_now_ns();
    char err[512] = "";
    s->ops = eng_backend_find(s->o.backend);
    if (!s->ops) {
        ds4_err("no backend named \"%s\" in this build", s->o.backend);
        return -1;
    }
    /* weights: the shared manifest (fingerprint, file identity) */
    eng_weights *w = NULL;
    if (eng_weights_attach(s->o.model, s->o.instance, !s->o.no_weights_manifest, &w, err,
                           sizeof err)) {
        ds4_err("cannot use the model %s: %s", s->o.model, err);
        return -1;
    }
    s->weights = w;
    s->weights_reattached = eng_weights_reattached(w);
    s->weights_ms = eng_weights_ms(w);
    snprintf(s->weights_stale, sizeof s->weights_stale, "%s", eng_weights_stale_reason(w));
    /* token texts for the DSML guard */
    gguf_file *gf = NULL;
    if (gguf_open(s->o.model, &gf, err, sizeof err) == 0 &&
        tok_vocab_from_gguf(gf, &s->vocab, err, sizeof err) == 0 &&
        eng_dsml_vocab_init(&s->dv, s->vocab) == 0) {
        ds4_info("vocabulary: %u token texts for the DSML guard", s->vocab->n);
    } else {
        ds4_warn("no DSML guard: the model's vocabulary is unusable (%s)",
                 err[0] ? err : "special tokens missing");
        s->dv.v = NULL;
    }
    if (gf)
        gguf_close(gf);
    eng_backend_opts bo = {
        .model_path = s->o.model,
        .exact = s->o.exact,
        .max_ctx = s->o.max_ctx,
        .prefill_chunk = s->o.backend_chunk,
        .state_budget = s->o.state_budget,
    };
    if (s->ops->open(&bo, &s->b, err, sizeof err)) {
        ds4_err("backend %s cannot open %s: %s", s->o.backend, s->o.model, err);
        return -1;
    }
    const dsv4_hparams *hp = s->ops->hparams(s->b);
    s->n_vocab = hp->n_vocab;
    snprintf(s->fingerprint, sizeof s->fingerprint, "%s", s->ops->fingerprint(s->b));
    snprintf(s->describe, sizeof s->describe, "%s", s->ops->describe(s->b));
    if (strcmp(s->fingerprint, eng_weights_fingerprint(w)) != 0) {
        ds4_err("the backend's fingerprint %s differs from the file's %s", s->fingerprint,
                eng_weights_fingerprint(w));
        return -1;
    }
    eng_pool_init(&s->pool, s->ops, s->b, s->o.max_idle_sessions, s->stats);
    if (s->o.kvd_endpoint) {
        eng_kv_opts ko = {
            .endpoint = s->o.kvd_endpoint,
            .instance = s->o.instance,
            .model_path = s->o.model,
            .cross_quant = s->o.kv_cross_quant,
            .min_tokens = s->o.kv_min_tokens,
            .align = s->o.kv_align,
            .trim = s->o.kv_trim,
            .periodic = s->o.kv_periodic,
            .cold_max = s->o.kv_cold_max,
            .lookup_timeout_ms = s->o.kv_lookup_timeout_ms,
            .put_timeout_ms = s->o.kv_put_timeout_ms,
            .queue_max = s->o.kv_queue,
            .stats = s->stats,
        };
        s->kv = eng_kv_open(&ko, err, sizeof err);
        if (s->kv) {
            s->kv_src = eng_kv_source(s->kv);
            s->pool.src = &s->kv_src;
            ds4_info("KV checkpoints through kvd at %s (min %u, align %u, trim %u, periodic %u%s)",
                     s->o.kvd_endpoint, ko.min_tokens, ko.align, ko.trim, ko.periodic,
                     ko.cross_quant ? ", cross-quant" : "");
        } else {
            ds4_warn("no KV checkpoints: %s", err);
        }
    }
    s->weights_bytes = s->ops->mem_used(s->b);
    s->load_ms = ms(ds4_now_ns() - t0);
    if (s->stats) {
        ds4_stats_set(s->stats, DS4S_ENG_weights_bytes, s->weights_bytes);
        ds4_stats_set(s->stats, DS4S_ENG_device_mem_bytes, s->weights_bytes);
        ds4_stats_set(s->stats, DS4S_ENG_device_mem_budget_bytes, s->o.state_budget);
    }
    c->logits = ds4_xmalloc((size_t)s->o.max_batch * s->n_vocab * sizeof(float));
    c->run = ds4_xcalloc(s->o.max_batch, sizeof *c->run);
    c->bs = ds4_xcalloc(s->o.max_batch, sizeof *c->bs);
    c->bids = ds4_xcalloc(s->o.max_batch, sizeof *c->bids);
    c->bj = ds4_xcalloc(s->o.max_batch, sizeof *c->bj);
    ds4_info("model %s loaded by backend %s in %.1f ms (%s); fingerprint %.16s; context %u, "
             "vocab %u; weights manifest %s",
             s->o.model, s->o.backend, s->load_ms, s->describe, s->fingerprint, s->o.max_ctx,
             s->n_vocab, s->weights_reattached ? "re-attached" : "published");
    return 0;
}

/* ---- admission ---------------------------------------------------------------- */

/* Under mu: unlink a queued job from the queue. */
static void dequeue(eng_service *s, eng_job *j)
{
    eng_job *prev = NULL;
    for (eng_job *q = s->qhead; q; prev = q, q = q->next)
        if (q == j) {
            if (prev)
                prev->next = q->next;
            else
                s->qhead = q->next;
            if (s->qtail == q)
                s->qtail = prev;
            s->n_queued--;
            return;
        }
}

/* Under mu: the next job to admit, round-robin over clients: the oldest
 * job of the first client (in queue order) that comes after the client
 * admitted last, cyclically by first appearance in the queue. */
static eng_job *pick_fair(eng_service *s)
{
    if (!s->qhead)
        return NULL;
    /* distinct clients in order of their oldest queued job */
    eng_job *first[64];
    uint32_t n = 0;
    for (eng_job *q = s->qhead; q && n < 64; q = q->next) {
        uint32_t k;
        for (k = 0; k < n; k++)
            if (strcmp(first[k]->client, q->client) == 0)
                break;
        if (k == n)
            first[n++] = q;
    }
    /* the next client after rr_last in lexical order (stable cycle) */
    eng_job *best = NULL, *lowest = NULL;
    for (uint32_t k = 0; k < n; k++) {
        if (!lowest || strcmp(first[k]->client, lowest->client) < 0)
            lowest = first[k];
        if (strcmp(first[k]->client, s->rr_last) > 0 &&
            (!best || strcmp(first[k]->client, best->client) < 0))
            best = first[k];
    }
    if (!best)
        best = lowest;
    snprintf(s->rr_last, sizeof s->rr_last, "%s", best->client);
    return best;
}

/* Give an admitted job its session and sampling state; -1 when it must
 * wait for memory (put back in the queue by the caller). */
static int start_job(sched *c, eng_job *j)
{
    eng_service *s = c->s;
    char err[256] = "";
    j->t_admit = ds4_now_ns();
    if (eng_pool_acquire(&s->pool, j, j->prompt, j->n_prompt, j->reuse, &j->sess, &j->cached,
                         err, sizeof err) != 0) {
        int code = eng_backend_errcode();
        if (code == ENG_E_NOMEM && c->n_run > 1) {
            ds4_log_req(DS4_LOG_INFO, j->rid, "no session memory now (%s): waiting", err);
            return -1;
        }
        finish(c, j, FIN_ERROR, -1, code == ENG_E_NOMEM ? DS4W_E_BUSY : DS4W_E_INTERNAL, err,
               1);
        return 0;
    }
    stat_add(s, DS4S_ENG_tokens_prompt, j->n_prompt);
    stat_add(s, DS4S_ENG_tokens_cached, j->cached);
    stat_add(s, j->cached ? DS4S_ENG_session_hits : DS4S_ENG_session_misses, 1);
    eng_dsml_guard_start(&j->guard, s->dv.v ? &s->dv : NULL, j->prompt, j->n_prompt);
    if (j->thinking < 0)
        j->thinking = j->guard.thinking;
    if (j->thinking && j->kind == ENG_JOB_GEN) {
        if (j->client_sampling)
            ds4_log_req(DS4_LOG_DEBUG, j->rid,
                        "thinking mode: the client's sampling settings are ignored");
        eng_sample_defaults(&j->sp);
    }
    eng_rng_seed(&j->rng, j->seed);
    j->state = ENG_JS_PREFILL;
    ds4_log_req(DS4_LOG_DEBUG, j->rid, "started: %u of %u prompt tokens resident%s", j->cached,
                j->n_prompt, j->thinking ? ", thinking" : "");
    return 0;
}

/* ---- sampling and the job's progress -------------------------------------------- */

static int is_stop(const eng_job *j, int32_t t)
{
    for (uint32_t i = 0; i < j->n_stop; i++)
        if (j->stop_ids[i] == t)
            return 1;
    return 0;
}

/* LOGITS reply of a finished LOGITS_GET prefill. */
static void reply_logits(sched *c, eng_job *j, const float *L)
{
    eng_service *s = c->s;
    uint32_t k = j->top_k < s->n_vocab ? j->top_k : s->n_vocab;
    int32_t *ids = ds4_xmalloc((k ? k : 1) * sizeof *ids);
    float *lps = ds4_xmalloc((k ? k : 1) * sizeof *lps), lp;
    uint32_t n = eng_logprobs(L, s->n_vocab, -1, k, &lp, ids, lps);
    json_t *o = json_pack("{s:i,s:o,s:i,s:i}", "n_vocab", (int)s->n_vocab, "top",
                          top_json(ids, lps, n), "prompt_tokens", (int)j->n_prompt,
                          "cached_tokens", (int)j->cached);
    ds4w_out out;
    ds4w_out_init(&out, DS4W_T_LOGITS, j->reqid);
    ds4w_out_json(&out, o);
    json_decref(o);
    if (j->full)
        ds4w_out_f32(&out, L, s->n_vocab);
    free(ids);
    free(lps);
    ds4_log_req(DS4_LOG_INFO, j->rid, "LOGITS: %u prompt tokens (%u cached), prefill %.1f ms",
                j->n_prompt, j->cached, ms(j->prefill_ns));
    finish_with(c, j, FIN_STOP, -1, 0, NULL, 1, &out);
}

/* The distribution after the job's sequence is L: choose the next token,
 * report it, and decide whether the job goes on. */
static void on_logits(sched *c, eng_job *j, const float *L)
{
    eng_service *s = c->s;
    if (!j->t_first)
        j->t_first = ds4_now_ns();
    if (j->kind == ENG_JOB_LOGITS) {
        reply_logits(c, j, L);
        return;
    }
    if (j->n_gen >= j->max_tokens) {
        finish(c, j, FIN_LENGTH, -1, 0, NULL, 1);
        return;
    }
    int32_t t;
    if (j->forced)
        t = j->forced[j->n_gen];
    else if (j->dsml_greedy && eng_dsml_guard_greedy(&j->guard))
        t = eng_argmax(L, s->n_vocab);
    else
        t = eng_sample(L, s->n_vocab, &j->sp, &j->rng, &c->scr);
    if (t < 0) {
        finish(c, j, FIN_ERROR, -1, DS4W_E_INTERNAL, "the model produced no finite logit", 1);
        return;
    }
    j->n_gen++;
    stat_add(s, DS4S_ENG_tokens_generated, 1);
    if (is_stop(j, t)) {
        finish(c, j, FIN_STOP, t, 0, NULL, 1);
        return;
    }
    emit_token(c, j, t, L);
    eng_dsml_guard_token(&j->guard, t);
    if (j->n_gen >= j->max_tokens || (j->forced && j->n_gen >= j->n_forced)) {
        finish(c, j, FIN_LENGTH, -1, 0, NULL, 1);
        return;
    }
    j->pending = t;
    j->state = ENG_JS_DECODE;
}

/* Map a backend failure to a wire error code. */
static int backend_code(void)
{
    switch (eng_backend_errcode()) {
    case ENG_E_CONTEXT: return DS4W_E_CONTEXT_OVERFLOW;
    case ENG_E_INVALID: return DS4W_E_INVALID_REQUEST;
    case ENG_E_NOMEM: return DS4W_E_BUSY;
    default: return DS4W_E_INTERNAL;
    }
}

/* One prefill chunk of the next prefilling job (round-robin). 1 if one ran. */
static int prefill_step(sched *c)
{
    eng_service *s = c->s;
    eng_job *j = NULL;
    for (uint32_t k = 0; k < c->n_run; k++) {
        eng_job *q = c->run[(c->rr_prefill + k) % c->n_run];
        if (q->state == ENG_JS_PREFILL) {
            j = q;
            c->rr_prefill = (c->rr_prefill + k + 1) % (c->n_run ? c->n_run : 1);
            break;
        }
    }
    if (!j)
        return 0;
    uint32_t have = s->ops->session_len(j->sess);
    if (have >= j->n_prompt) { /* the whole prompt was resident */
        const float *L = s->ops->session_logits(j->sess);
        if (!L) {
            finish(c, j, FIN_ERROR, -1, DS4W_E_INTERNAL, "resident session has no logits", 1);
            return 1;
        }
        memcpy(c->logits, L, sizeof(float) * s->n_vocab);
        on_logits(c, j, c->logits);
        return 1;
    }
    uint32_t n = j->n_prompt - have;
    if (n > s->o.prefill_chunk)
        n = s->o.prefill_chunk;
    /* stop at a checkpoint boundary (cold / periodic save) */
    const char *why = NULL;
    uint32_t ckpt = s->kv && j->reuse
                        ? eng_kv_next_boundary(s->kv, j->n_prompt, j->cached, have, &why)
                        : 0;
    if (ckpt && have + n > ckpt)
        n = ckpt - have;
    char err[256] = "";
    uint64_t t0 = ds4_now_ns();
    int rc = s->ops->eval(j->sess, j->prompt + have, n, 0, c->logits, err, sizeof err);
    uint64_t dt = ds4_now_ns() - t0;
    j->prefill_ns += dt;
    stat_add(s, DS4S_ENG_prefill_ns, dt);
    if (rc) {
        finish(c, j, FIN_ERROR, -1, backend_code(), err, 1);
        return 1;
    }
    stat_add(s, DS4S_ENG_tokens_prefilled, n);
    if (s->kv) {
        eng_kv_note_prefill(s->kv, n, dt);
        if (ckpt && have + n == ckpt) {
            /* what the prefix cost: this job's prefill, scaled up for the
             * part it found cached */
            double pm = ms(j->prefill_ns) * ckpt / (double)(ckpt - j->cached);
            eng_kv_save(s->kv, s->fingerprint, s->ops, j->sess, why, pm);
        }
    }
    if (s->o.trace)
        ds4_log_req(DS4_LOG_INFO, j->rid, "trace: prefill chunk %u..%u of %u: %.3f ms (%.0f tok/s)",
                    have, have + n, j->n_prompt, ms(dt), n / ((double)dt / 1e9));
    if (have + n == j->n_prompt)
        on_logits(c, j, c->logits);
    return 1;
}

/* One decode step over every job with a pending token. 1 if one ran. */
static int decode_step(sched *c)
{
    eng_service *s = c->s;
    uint32_t n = 0;
    for (uint32_t k = 0; k < c->n_run; k++)
        if (c->run[k]->state == ENG_JS_DECODE) {
            c->bj[n] = c->run[k];
            c->bs[n] = c->run[k]->sess;
            c->bids[n] = c->run[k]->pending;
            n++;
        }
    if (!n)
        return 0;
    char err[256] = "";
    uint64_t t0 = ds4_now_ns();
    int rc = s->ops->decode_batch(c->bs, c->bids, n, c->logits, err, sizeof err);
    uint64_t dt = ds4_now_ns() - t0;
    stat_add(s, DS4S_ENG_decode_ns, dt);
    stat_add(s, DS4S_ENG_decode_steps, 1);
    if (s->o.trace) {
        char ids[8 * 10 + 1] = "";
        for (uint32_t i = 0; i < n && i < 8; i++)
            snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%.8s", i ? "," : "",
                     c->bj[i]->rid);
        ds4_log_req(DS4_LOG_INFO, n == 1 ? c->bj[0]->rid : NULL,
                    "trace: decode step of %u job%s [%s%s]: %.3f ms", n, n == 1 ? "" : "s", ids,
                    n > 8 ? ",..." : "", ms(dt));
    }
    if (rc) {
        /* isolate the failing job(s): evaluate one by one */
        ds4_warn("decode step of %u jobs failed (%s): retrying one by one", n, err);
        for (uint32_t i = 0; i < n; i++) {
            eng_job *j = c->bj[i];
            uint64_t t1 = ds4_now_ns();
            if (s->ops->eval(j->sess, &j->pending, 1, 0, c->logits + (size_t)i * s->n_vocab, err,
                             sizeof err)) {
                c->bj[i] = NULL;
                finish(c, j, FIN_ERROR, -1, backend_code(), err, 1);
            } else
                j->decode_ns += ds4_now_ns() - t1;
        }
    } else {
        for (uint32_t i = 0; i < n; i++)
            c->bj[i]->decode_ns += dt;
    }
    for (uint32_t i = 0; i < n; i++)
        if (c->bj[i]) {
            c->bj[i]->pending = -1;
            on_logits(c, c->bj[i], c->logits + (size_t)i * s->n_vocab);
        }
    return 1;
}

/* ---- the loop ------------------------------------------------------------------- */

static void sched_loop(sched *c)
{
    eng_service *s = c->s;
    eng_job *cancelled[64], *admitted[64];
    int gone[64];
    for (;;) {
        uint32_t nc = 0, na = 0, ng = 0;
        pthread_mutex_lock(&s->mu);
        for (;;) {
            if (s->stop)
                break;
            /* queued jobs cancelled before they ran */
            for (eng_job *q = s->qhead, *nx; q && nc < 64; q = nx) {
                nx = q->next;
                if (q->cancel) {
                    dequeue(s, q);
                    cancelled[nc++] = q;
                }
            }
            while (!c->mem_wait && c->n_run + na < s->o.max_batch && na < 64) {
                eng_job *q = pick_fair(s);
                if (!q)
                    break;
                dequeue(s, q);
                admitted[na++] = q;
                s->n_running++;
            }
            if (c->n_run || na || nc)
                break;
            pthread_cond_wait(&s->cv, &s->mu);
        }
        int stop = s->stop;
        for (uint32_t k = 0; k < c->n_run && k < 64; k++)
            gone[k] = c->run[k]->cancel;
        ng = c->n_run < 64 ? c->n_run : 64;
        if (s->stats) {
            ds4_stats_set(s->stats, DS4S_ENG_jobs_queued, s->n_queued);
            ds4_stats_set(s->stats, DS4S_ENG_jobs_running, s->n_running);
        }
        pthread_mutex_unlock(&s->mu);
        for (uint32_t k = 0; k < nc; k++) {
            ds4_log_req(DS4_LOG_INFO, cancelled[k]->rid, "cancelled while queued");
            finish(c, cancelled[k], FIN_CANCELLED, -1, 0, NULL, 0);
        }
        /* cancelled or vanished running jobs (flags read above) */
        for (uint32_t k = ng; k-- > 0;)
            if (gone[k]) {
                eng_job *j = c->run[k];
                ds4_log_req(DS4_LOG_INFO, j->rid, "cancelled (%s) after %u tokens",
                            gone[k] == ENG_CANCEL_GONE ? "client gone" : "by the client",
                            j->n_gen);
                finish(c, j, FIN_CANCELLED, -1, 0, NULL, 1);
            }
        for (uint32_t k = 0; k < na; k++) {
            eng_job *j = admitted[k];
            c->run[c->n_run++] = j;
            if (start_job(c, j) < 0) {
                /* back to the queue head; admit nothing until a job ends */
                drop_running(c, j);
                pthread_mutex_lock(&s->mu);
                s->n_running--;
                j->next = s->qhead;
                s->qhead = j;
                if (!s->qtail)
                    s->qtail = j;
                s->n_queued++;
                pthread_mutex_unlock(&s->mu);
                c->mem_wait = 1;
            }
        }
        if (stop)
            break;
        decode_step(c);
        prefill_step(c);
        if (s->stats)
            ds4_stats_set(s->stats, DS4S_ENG_device_mem_bytes, s->ops->mem_used(s->b));
    }
}

/* End everything still alive with an error: the daemon is stopping. */
static void fail_all(sched *c)
{
    eng_service *s = c->s;
    while (c->n_run)
        finish(c, c->run[0], FIN_ERROR, -1, DS4W_E_UNAVAILABLE, "engined is stopping", 1);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        eng_job *j = s->qhead;
        if (j)
            dequeue(s, j);
        pthread_mutex_unlock(&s->mu);
        if (!j)
            break;
        finish(c, j, FIN_ERROR, -1, DS4W_E_UNAVAILABLE, "engined is stopping", 0);
    }
}

void *eng_sched_main(void *arg)
{
    sched c = {.s = arg};
    eng_service *s = c.s;
    ds4_log_set_reqid(NULL);
    int ok = load(&c) == 0;
    pthread_mutex_lock(&s->mu);
    if (ok)
        s->ready = 1;
    else
        s->load_failed = 1;
    pthread_mutex_unlock(&s->mu);
    uint64_t one = 1;
    ssize_t wr = write(s->efd, &one, sizeof one);
    (void)wr;
    if (ok)
        sched_loop(&c);
    fail_all(&c);
    if (s->b) {
        eng_pool_fini(&s->pool); /* offers idle sessions to kvd ("shutdown") */
        eng_kv_close(s->kv);     /* sends what is queued */
        s->kv = NULL;
        s->ops->close(s->b);
        s->b = NULL;
    }
    tok_vocab_free(s->vocab);
    s->vocab = NULL;
    eng_weights_close(s->weights);
    s->weights = NULL;
    free(c.logits);
    free(c.run);
    free(c.bs);
    free(c.bids);
    free(c.bj);
    eng_sample_scratch_free(&c.scr);
    pthread_mutex_lock(&s->mu);
    s->worker_done = 1;
    pthread_mutex_unlock(&s->mu);
    wr = write(s->efd, &one, sizeof one);
    (void)wr;
    return NULL;
}
