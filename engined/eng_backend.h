/* eng_backend.h - the one interface the engined daemon drives: a model on a
 * compute backend, and sessions (one token sequence each, with its complete
 * attention state) that grow by evaluating tokens.
 *
 * Two backends implement it:
 *   "cl"   the OpenCL engine (eng_backend_cl.c): weights and KV state on the
 *          device, chunked prefill, one-token decode steps, batched decode
 *          across sessions. The production path (PoCL in CI, NVIDIA on the
 *          GPU machine).
 *   "ref"  the plain-C reference (eng_backend_ref.c over eng_ref.c): exact
 *          float math, no device. Its session state is the token sequence
 *          itself and every eval recomputes the whole prefix, so it is slow
 *          (O(n^2)) but has no state of its own to get wrong: an oracle for
 *          the daemon's tests and for the "cl" backend, and usable for tiny
 *          test models without any OpenCL device.
 *
 * Contract (every backend):
 *   - A session starts empty. eval(s, ids, n) appends ids to it; the
 *     logits it returns are those the model gives after the session's whole
 *     sequence (the next-token distribution), bit-for-bit independent of how
 *     the sequence was split into eval calls up to floating-point reduction
 *     order (a backend documents its tolerance; tests compare).
 *   - A session never holds more than its max_ctx tokens: eval that would
 *     exceed it fails with ENG_E_CONTEXT and leaves the session unchanged.
 *   - snapshot() serialises everything needed to resume (the tokens, the
 *     state, the last logits) into a self-describing blob that restore()
 *     turns back into an equivalent session on the same model; restoring
 *     and evaluating more tokens gives the same logits as never having
 *     snapshotted. A blob from another model or backend, or a corrupted
 *     one, is refused with ENG_E_BADSTATE (never a crash).
 *   - fork() makes an independent copy (prefix reuse without losing the
 *     original).
 *   - Errors return -1 (or NULL) with a message in err naming the problem.
 *   - A backend object and its sessions are driven by one thread.
 */
#ifndef DS4_ENG_BACKEND_H
#define DS4_ENG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/dsv4_layout.h"

typedef struct eng_backend eng_backend;
typedef struct eng_session eng_session;

/* err codes (eng_backend_errcode after a failure) */
enum {
    ENG_E_NONE = 0,
    ENG_E_INVALID = 1,   /* bad argument: token id out of range, n == 0 */
    ENG_E_CONTEXT = 2,   /* would exceed the session's max_ctx */
    ENG_E_NOMEM = 3,     /* host or device memory exhausted */
    ENG_E_DEVICE = 4,    /* the device failed (OpenCL error) */
    ENG_E_BADSTATE = 5,  /* snapshot blob refused */
    ENG_E_MODEL = 6,     /* model file refused */
};

typedef void (*eng_backend_progress_fn)(void *ud, uint64_t done,
                                        uint64_t total, const char *what);

typedef struct eng_backend_opts {
    const char *model_path;   /* ds4-layout GGUF */
    int exact;                /* 1: QAT simulation and F16 KV rounding off
                                 (SPEC 3.1 exact switch); the "ref" backend
                                 is always exact */
    uint32_t max_ctx;         /* per-session token limit (0: 32768) */
    uint32_t prefill_chunk;   /* tokens per prefill chunk (0: backend
                                 default) */
    uint64_t state_budget;    /* bytes of device memory for session state
                                 (0: backend default); session_new fails
                                 with ENG_E_NOMEM past it */
    eng_backend_progress_fn progress; /* model upload progress, may be NULL */
    void *progress_ud;
} eng_backend_opts;

/* eval flags */
#define ENG_EVAL_ALL_LOGITS 1u  /* logits has n * n_vocab floats: row i is
                                   the distribution after ids[i] */

typedef struct eng_backend_ops {
    const char *name;         /* "cl", "ref" */
    int (*open)(const eng_backend_opts *o, eng_backend **out, char *err,
                size_t errlen);
    void (*close)(eng_backend *b);
    const dsv4_hparams *(*hparams)(const eng_backend *b);
    /* 64 hex chars: the exact-model fingerprint of the file (SPEC 5). */
    const char *(*fingerprint)(const eng_backend *b);
    /* Human-readable one-line description (device, memory) for logs. */
    const char *(*describe)(const eng_backend *b);
    /* Device bytes in use (weights + sessions + scratch). */
    uint64_t (*mem_used)(const eng_backend *b);

    int (*session_new)(eng_backend *b, eng_session **out, char *err,
                       size_t errlen);
    void (*session_free)(eng_session *s);
    uint32_t (*session_len)(const eng_session *s);
    /* The session's tokens (session_len of them), owned by the session. */
    const int32_t *(*session_tokens)(const eng_session *s);
    /* Device/host bytes the session's state holds. */
    uint64_t (*session_bytes)(const eng_session *s);

    /* Append ids[0..n) (n >= 1). logits (may be NULL): n_vocab floats, the
     * next-token logits after the last id, or n * n_vocab with
     * ENG_EVAL_ALL_LOGITS. 0 or -1. */
    int (*eval)(eng_session *s, const int32_t *ids, uint32_t n,
                uint32_t flags, float *logits, char *err, size_t errlen);
    /* One decode step for n_seq distinct sessions at once: session i
     * appends ids[i]; logits[i * n_vocab ...] receives its next-token
     * logits. Equivalent to n_seq eval calls (a backend may batch). On
     * failure no session has changed. 0 or -1. */
    int (*decode_batch)(eng_session **s, const int32_t *ids, uint32_t n_seq,
                        float *logits, char *err, size_t errlen);

    /* Last logits of the session (n_vocab floats), or NULL when empty. */
    const float *(*session_logits)(const eng_session *s);

    int (*fork)(const eng_session *src, eng_session **out, char *err,
                size_t errlen);
    /* Serialise: *blob malloc'd (caller frees), *len its size. */
    int (*snapshot)(const eng_session *s, void **blob, size_t *len,
                    char *err, size_t errlen);
    int (*restore)(eng_backend *b, const void *blob, size_t len,
                   eng_session **out, char *err, size_t errlen);
} eng_backend_ops;

/* Backend by name ("cl", "ref"); NULL if this build has none by that name. */
const eng_backend_ops *eng_backend_find(const char *name);

/* Code of the last failure of any backend call on this thread. */
int eng_backend_errcode(void);
void eng_backend_set_errcode(int code);

#endif
