/* eng_service.h - the engined service: generation jobs from the wire to
 * the backend and back.
 *
 * Two threads (docs/ENGINED.md):
 *   the socket thread (engined.c) owns the ROUTER socket. It decodes every
 *     message, answers PING, STATS_GET and every refusal (invalid_request,
 *     context_overflow, forbidden, busy, not_ready) at once, puts accepted
 *     GEN_SUBMIT and LOGITS_GET jobs in the queue (eng_service_handle),
 *     flags GEN_CANCEL, and sends what the scheduler produced
 *     (eng_service_flush). It never waits for the backend.
 *   the scheduler thread (eng_sched.c) owns the backend, the sessions and
 *     the running jobs. It loads the model, then loops: admit queued jobs
 *     fairly, run one step (a decode step batched over every decoding job,
 *     and one prefill chunk of one job), sample, and queue the messages
 *     for the socket thread in the outbox (an eventfd wakes the socket
 *     thread). A cancel flag or a vanished client is seen before the next
 *     step, so cancellation takes effect within one step.
 * The queue, the job table and the outbox are under one mutex; the socket
 * thread holds it only for list operations. */
#ifndef DS4_ENG_SERVICE_H
#define DS4_ENG_SERVICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/daemon.h"
#include "common/stats.h"
#include "common/wire.h"
#include "eng_backend.h"
#include "eng_dsml_guard.h"
#include "eng_sample.h"
#include "eng_sessions.h"

#ifndef ENGINED_VERSION
#define ENGINED_VERSION "0.1.0"
#endif

#define ENG_CLIENT_MAX 64
#define ENG_MAX_STOP_IDS 1024

enum eng_job_kind { ENG_JOB_GEN = 0, ENG_JOB_LOGITS = 1 };
enum eng_job_state { ENG_JS_QUEUED = 0, ENG_JS_PREFILL, ENG_JS_DECODE, ENG_JS_DONE };
/* cancel flag values */
enum { ENG_CANCEL_NONE = 0, ENG_CANCEL_CLIENT = 1, ENG_CANCEL_GONE = 2 };

typedef struct eng_job eng_job;
struct eng_job {
    /* identity (set by the socket thread, read-only afterwards) */
    uint8_t reqid[16];
    char rid[DS4W_UUID_STR];
    ds4w_route route;
    char client[ENG_CLIENT_MAX]; /* fairness key */
    int kind;                    /* enum eng_job_kind */
    /* request */
    int32_t *prompt;
    uint32_t n_prompt;
    int32_t *forced;             /* test-only forced output, or NULL */
    uint32_t n_forced;
    uint32_t max_tokens;
    eng_sample_params sp;        /* effective (thinking: the defaults) */
    uint64_t seed;
    int32_t *stop_ids;
    uint32_t n_stop;
    uint32_t logprobs;           /* top entries per generated token */
    int thinking;                /* -1 unset (inferred from the prompt) */
    int client_sampling;         /* the request set a sampling field */
    int dsml_greedy;
    int reuse;                   /* session reuse allowed (LOGITS_GET cache) */
    uint32_t top_k;              /* LOGITS_GET */
    int full;                    /* LOGITS_GET */
    int cancel;                  /* ENG_CANCEL_*, under the service mutex */
    uint64_t t_submit;
    /* scheduler state (scheduler thread only) */
    int state;
    eng_session *sess;
    uint32_t cached;             /* prompt tokens reused */
    uint32_t n_gen;              /* tokens chosen so far */
    int32_t pending;             /* chosen, not yet evaluated; -1 none */
    uint32_t seq;                /* next stream seq (0 was GEN_ACCEPTED) */
    eng_rng rng;
    eng_dsml_guard guard;
    uint64_t t_admit, t_first, t_end;
    uint64_t prefill_ns, decode_ns;
    /* queue links (under the mutex) */
    eng_job *next;
    eng_job *all_next;           /* table of live jobs */
};

/* One message for the socket thread to send. */
typedef struct eng_outmsg {
    ds4w_out out;
    ds4w_route route;
    uint8_t reqid[16];
    int is_stream;               /* part of a GEN stream (send failure cancels) */
    struct eng_outmsg *next;
} eng_outmsg;

typedef struct eng_service_opts {
    const char *model;
    const char *backend;         /* "cl", "ref" */
    uint32_t max_ctx;
    uint32_t prefill_chunk;      /* engined's own prefill chunk (tokens) */
    uint32_t backend_chunk;      /* eng_backend_opts.prefill_chunk */
    uint64_t state_budget;       /* bytes, 0: backend default */
    uint32_t max_batch;          /* jobs running (decoding) at once */
    uint32_t max_queue;          /* jobs waiting, beyond that: busy */
    uint32_t max_idle_sessions;  /* idle resident sessions kept */
    uint32_t retry_after_ms;     /* in busy errors */
    int exact;
    int test_mode;
    int trace;                   /* per-step timing lines */
    const char *instance;        /* shm names (weights manifest) */
    int no_weights_manifest;
    /* kvd checkpoints (eng_kv.h); kvd_endpoint NULL: none */
    const char *kvd_endpoint;
    int kv_cross_quant;
    uint32_t kv_min_tokens, kv_align, kv_trim, kv_periodic, kv_cold_max;
    int kv_lookup_timeout_ms, kv_put_timeout_ms;
    uint32_t kv_queue;
} eng_service_opts;

typedef struct eng_service {
    eng_service_opts o;
    ds4_stats *stats;            /* the daemon's segment (may be disabled) */
    uint64_t start_ns;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int efd;                     /* eventfd: outbox not empty / state change */
    pthread_t thread;
    int thread_started;
    /* under mu */
    int ready;                   /* model loaded, serving */
    int load_failed;
    int worker_done;
    int stop;                    /* 1: finish everything with an error, exit */
    int draining;                /* refuse new jobs */
    eng_job *qhead, *qtail;      /* waiting jobs, arrival order */
    uint32_t n_queued, n_running;
    eng_job *all;                /* every live job (queued or running) */
    eng_outmsg *ohead, *otail;
    char rr_last[ENG_CLIENT_MAX];/* fairness: client admitted last */
    /* facts published once loaded (read-only after ready) */
    uint32_t n_vocab;
    char fingerprint[65];
    char describe[256];
    uint64_t weights_bytes;
    double load_ms;
    int weights_reattached;      /* the manifest was re-attached */
    double weights_ms;           /* eng_weights_attach time */
    char weights_stale[96];      /* why it was not (cold start) */
    /* scheduler-thread state */
    const eng_backend_ops *ops;
    eng_backend *b;
    eng_pool pool;
    tok_vocab *vocab;
    eng_dsml_vocab dv;
    void *weights;               /* eng_weights handle */
    struct eng_kv *kv;           /* kvd link, NULL without one */
    eng_prefix_source kv_src;
} eng_service;

/* Prepare (no thread yet). 0, or -1 + err. */
int eng_service_init(eng_service *s, const eng_service_opts *o, ds4_stats *stats,
                     char *err, size_t errlen);
/* Start the scheduler thread (it loads the model first). 0 or -1 + err. */
int eng_service_start(eng_service *s, char *err, size_t errlen);
/* Ask the scheduler to end every job with an error and exit, then join. */
void eng_service_stop(eng_service *s);
void eng_service_fini(eng_service *s);

/* Socket thread: handle a decoded request. Replies that are due now are
 * appended to the outbox (then call eng_service_flush); errors are
 * returned as a code + message (+ *field) for the caller to send with
 * ds4w_reply_error, except busy (sent here, it carries retry_after_ms). */
int eng_service_handle(eng_service *s, const ds4w_msg *m, const char **field,
                       char *err, size_t errlen);

/* Socket thread: send every queued message on sock. */
void eng_service_flush(eng_service *s, void *sock);
/* Socket thread: reset the eventfd (before looking at the state and the
 * outbox, so that anything queued later wakes the loop again). */
void eng_service_clear_wake(eng_service *s);

/* Socket thread: state checks. */
int eng_service_ready(eng_service *s);
int eng_service_load_failed(eng_service *s);
/* Jobs queued or running. */
uint32_t eng_service_busy_jobs(eng_service *s);
void eng_service_set_draining(eng_service *s);

/* Internal, shared by eng_service.c and eng_sched.c. */
void eng_outbox_push(eng_service *s, eng_outmsg *om);
void eng_job_free(eng_job *j);
void *eng_sched_main(void *arg);

#endif
