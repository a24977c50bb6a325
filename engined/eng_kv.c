/* eng_kv.c - engined's kvd link: prefix lookups and the checkpoint writer
 * (see eng_kv.h). */
#include "eng_kv.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/gguf.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/model_fp.h"
#include "common/util.h"
#include "common/wire.h"
#include "kvd/kv_client.h"

#define RECENT 64
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000

typedef struct kv_item {
    int32_t *ids;
    uint32_t n;
    void *blob;
    size_t len;
    const char *reason;  /* static string */
    double prefill_ms;
    char fingerprint[65];
    struct kv_item *next;
} kv_item;

struct eng_kv {
    eng_kv_opts o;
    char *endpoint, *instance;
    char family[65];
    ds4_stats *stats;
    /* scheduler thread */
    kv_client *lc;
    uint64_t skip_until_ns;   /* lookups skipped until then (kvd failed) */
    int backoff_ms;
    uint64_t recent_h[RECENT];/* prefixes stored or restored lately */
    uint32_t recent_n[RECENT];
    uint32_t recent_i;
    double ns_per_token;      /* running prefill cost (eviction weight) */
    /* writer */
    kv_client *wc;
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kv_item *qh, *qt;
    uint32_t nq;
    int busy;                 /* the writer holds an item */
    int stop;
};

static void stat_add(eng_kv *k, unsigned i, uint64_t v)
{
    if (k->stats)
        ds4_stats_add(k->stats, i, v);
}

static uint64_t ids_hash(const int32_t *ids, uint32_t n)
{
    return ds4_hash64(ids, (size_t)n * sizeof *ids, 0x6b76645f6b657973ull);
}

static int recent_has(const eng_kv *k, uint64_t h, uint32_t n)
{
    for (uint32_t i = 0; i < RECENT; i++)
        if (k->recent_n[i] == n && k->recent_h[i] == h)
            return 1;
    return 0;
}

static void recent_add(eng_kv *k, uint64_t h, uint32_t n)
{
    if (recent_has(k, h, n))
        return;
    k->recent_h[k->recent_i] = h;
    k->recent_n[k->recent_i] = n;
    k->recent_i = (k->recent_i + 1) % RECENT;
}

static void item_free(kv_item *it)
{
    if (!it)
        return;
    free(it->ids);
    free(it->blob);
    free(it);
}

/* kvd is certainly not running: its ipc:// socket file does not exist (a
 * connect would only wait for the deadline). tcp:// endpoints: unknown. */
static int kvd_absent(const eng_kv *k)
{
    if (strncmp(k->endpoint, "ipc://", 6) != 0)
        return 0;
    struct stat st;
    return stat(k->endpoint + 6, &st) != 0 && errno == ENOENT;
}

/* ---- writer thread ------------------------------------------------------------ */

static void *writer_main(void *arg)
{
    eng_kv *k = arg;
    uint64_t down_until = 0;
    ds4_log_set_reqid(NULL);
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->qh && !k->stop)
            pthread_cond_wait(&k->cv, &k->mu);
        kv_item *it = k->qh;
        if (!it)
            break; /* stop and empty */
        k->qh = it->next;
        if (!k->qh)
            k->qt = NULL;
        k->nq--;
        k->busy = 1;
        pthread_mutex_unlock(&k->mu);
        uint64_t now = ds4_now_ns();
        if (now < down_until || kvd_absent(k)) {
            stat_add(k, DS4S_ENG_kv_save_drops, 1);
            ds4_debug("kvd is down: %s checkpoint of %u tokens dropped", it->reason, it->n);
        } else {
            kvc_meta m = {.fingerprint = it->fingerprint,
                          .family = k->family[0] ? k->family : NULL,
                          .reason = it->reason,
                          .prefill_ms = it->prefill_ms};
            kvc_stored st;
            char err[256] = "";
            if (kvc_put(k->wc, it->ids, it->n, it->blob, it->len, &m, &st, err, sizeof err)) {
                stat_add(k, DS4S_ENG_kv_save_errors, 1);
                int code = kvc_errcode(k->wc);
                ds4_warn("kvd did not store the %s checkpoint of %u tokens (%s): %s", it->reason,
                         it->n, ds4w_err_name(code), err);
                if (code == DS4W_E_UNAVAILABLE)
                    down_until = ds4_now_ns() + (uint64_t)BACKOFF_MIN_MS * 5 * 1000000ull;
            } else {
                down_until = 0;
                stat_add(k, DS4S_ENG_kv_checkpoints, 1);
                stat_add(k, DS4S_ENG_kv_bytes_saved, it->len);
                ds4_info("checkpoint (%s) of %u tokens stored by kvd: %s (%zu bytes, %.1f ms "
                         "of prefill)",
                         it->reason, it->n, st.key, it->len, it->prefill_ms);
            }
        }
        item_free(it);
        pthread_mutex_lock(&k->mu);
        k->busy = 0;
        pthread_cond_broadcast(&k->cv);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* ---- open / close --------------------------------------------------------------- */

eng_kv *eng_kv_open(const eng_kv_opts *o, char *err, size_t errlen)
{
    if (!o->endpoint || !o->endpoint[0]) {
        ds4_seterr(err, errlen, "no kvd endpoint");
        return NULL;
    }
    eng_kv *k = ds4_xcalloc(1, sizeof *k);
    k->o = *o;
    k->endpoint = ds4_xstrdup(o->endpoint);
    k->instance = ds4_xstrdup(o->instance ? o->instance : "default");
    k->o.endpoint = k->endpoint;
    k->o.instance = k->instance;
    k->o.model_path = NULL;
    if (!k->o.align)
        k->o.align = 1;
    if (k->o.lookup_timeout_ms <= 0)
        k->o.lookup_timeout_ms = 300;
    if (k->o.put_timeout_ms <= 0)
        k->o.put_timeout_ms = 10000;
    k->stats = o->stats;
    k->backoff_ms = BACKOFF_MIN_MS;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    if (o->model_path) {
        gguf_file *gf = NULL;
        char e2[256];
        if (gguf_open(o->model_path, &gf, e2, sizeof e2) == 0) {
            ds4_model_fp fp;
            ds4_model_fingerprint(gf, &fp);
            memcpy(k->family, fp.family, sizeof k->family);
            gguf_close(gf);
        } else {
            ds4_warn("no family fingerprint for checkpoints: %s", e2);
        }
    }
    kvc_opts co = {.endpoint = k->endpoint, .instance = k->instance,
                   .timeout_ms = k->o.lookup_timeout_ms};
    k->lc = kvc_open(&co, err, errlen);
    if (k->lc) {
        char inst[80]; /* [A-Za-z0-9_.], at most 64 */
        snprintf(inst, sizeof inst, "%.60s_kv", k->instance);
        co.instance = inst;
        co.timeout_ms = k->o.put_timeout_ms;
        k->wc = kvc_open(&co, err, errlen);
    }
    if (!k->lc || !k->wc || pthread_create(&k->th, NULL, writer_main, k) != 0) {
        if (k->lc && k->wc)
            ds4_seterr(err, errlen, "cannot start the checkpoint writer thread");
        eng_kv_close(k);
        return NULL;
    }
    k->th_started = 1;
    return k;
}

void eng_kv_close(eng_kv *k)
{
    if (!k)
        return;
    if (k->th_started) {
        pthread_mutex_lock(&k->mu);
        k->stop = 1;
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->th, NULL);
    }
    while (k->qh) {
        kv_item *it = k->qh;
        k->qh = it->next;
        item_free(it);
    }
    if (k->lc)
        kvc_close(k->lc);
    if (k->wc)
        kvc_close(k->wc);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k->endpoint);
    free(k->instance);
    free(k);
}

/* ---- lookups (scheduler thread) ----------------------------------------------------- */

static int src_lookup(void *ud, const char *fingerprint, const int32_t *ids, uint32_t n,
                      uint32_t have, void **blob, size_t *len, uint32_t *ntok)
{
    eng_kv *k = ud;
    /* with a resident prefix, a stored one is worth restoring only if it
     * saves at least min_tokens of prefill */
    uint32_t want = have ? have + k->o.min_tokens : k->o.min_tokens;
    if (n < want)
        return 1;
    uint64_t t0 = ds4_now_ns();
    if (t0 < k->skip_until_ns)
        return 1;
    kvc_query q = {.fingerprint = fingerprint,
                   .family = k->o.cross_quant && k->family[0] ? k->family : NULL,
                   .allow_cross_quant = k->o.cross_quant,
                   .min_tokens = want};
    kvc_found f;
    memset(&f, 0, sizeof f);
    char err[256] = "";
    stat_add(k, DS4S_ENG_kv_lookups, 1);
    int rc;
    if (kvd_absent(k)) {
        snprintf(err, sizeof err, "kvd is not running (no %s)", k->endpoint + 6);
        rc = -1;
    } else {
        rc = kvc_lookup(k->lc, ids, n, &q, &f, err, sizeof err);
    }
    uint64_t t1 = ds4_now_ns();
    stat_add(k, DS4S_ENG_kv_lookup_ns, t1 - t0);
    if (rc < 0) {
        stat_add(k, DS4S_ENG_kv_lookup_errors, 1);
        ds4_warn("kvd lookup failed after %.1f ms (%s): full prefill; lookups paused for %d ms",
                 (double)(t1 - t0) / 1e6, err, k->backoff_ms);
        k->skip_until_ns = t1 + (uint64_t)k->backoff_ms * 1000000ull;
        k->backoff_ms = k->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : k->backoff_ms * 2;
        kvc_found_free(&f);
        return -1;
    }
    k->backoff_ms = BACKOFF_MIN_MS;
    if (rc == 0 || f.tokens <= have || f.tokens > n || !f.data || !f.len) {
        stat_add(k, DS4S_ENG_kv_misses, 1);
        ds4_debug("kvd: no stored prefix of the %u-token prompt (%s)", n,
                  rc == 0 ? f.miss_reason : "unusable");
        kvc_found_free(&f);
        return 1;
    }
    void *b = malloc(f.len);
    if (!b) {
        kvc_found_free(&f);
        return -1;
    }
    memcpy(b, f.data, f.len);
    *blob = b;
    *len = f.len;
    *ntok = f.tokens;
    stat_add(k, DS4S_ENG_kv_hits, 1);
    recent_add(k, ids_hash(ids, f.tokens), f.tokens);
    ds4_info("kvd: stored prefix of %u of %u tokens found (%s%s, %zu bytes, %.1f ms)",
             f.tokens, n, f.key, strcmp(f.fingerprint, fingerprint) ? ", cross-quant" : "",
             f.len, (double)(t1 - t0) / 1e6);
    kvc_found_free(&f);
    return 0;
}

static void src_offer(void *ud, const char *fingerprint, const eng_backend_ops *ops,
                      const eng_session *s, const char *reason)
{
    eng_kv *k = ud;
    double pm = k->ns_per_token * ops->session_len(s) / 1e6;
    eng_kv_save(k, fingerprint, ops, s, reason, pm);
}

eng_prefix_source eng_kv_source(eng_kv *k)
{
    return (eng_prefix_source){.lookup = src_lookup, .offer = src_offer, .ud = k};
}

void eng_kv_note_prefill(eng_kv *k, uint32_t tokens, uint64_t ns)
{
    if (!k || !tokens)
        return;
    double v = (double)ns / tokens;
    k->ns_per_token = k->ns_per_token > 0 ? 0.8 * k->ns_per_token + 0.2 * v : v;
}

/* ---- saves (scheduler thread) --------------------------------------------------------- */

uint32_t eng_kv_next_boundary(const eng_kv *k, uint32_t n_prompt, uint32_t cached,
                              uint32_t have, const char **reason)
{
    uint32_t best = 0;
    *reason = NULL;
    if (!k || n_prompt < k->o.min_tokens)
        return 0;
    if ((!k->o.cold_max || n_prompt <= k->o.cold_max) && n_prompt > k->o.trim) {
        uint32_t c = (n_prompt - k->o.trim) / k->o.align * k->o.align;
        if (c >= k->o.min_tokens && c > cached && c > have) {
            best = c;
            *reason = "cold";
        }
    }
    if (k->o.periodic) {
        uint64_t p = ((uint64_t)have / k->o.periodic + 1) * k->o.periodic;
        if (p <= n_prompt && p > cached && p >= k->o.min_tokens && (!best || p < best)) {
            best = (uint32_t)p;
            *reason = "periodic";
        }
    }
    return best;
}

int eng_kv_save(eng_kv *k, const char *fingerprint, const eng_backend_ops *ops,
                const eng_session *s, const char *reason, double prefill_ms)
{
    if (!k)
        return 1;
    uint32_t n = ops->session_len(s);
    if (n < k->o.min_tokens || n == 0)
        return 1;
    const int32_t *ids = ops->session_tokens(s);
    uint64_t h = ids_hash(ids, n);
    if (recent_has(k, h, n))
        return 1;
    int shutdown = !strcmp(reason, "shutdown");
    pthread_mutex_lock(&k->mu);
    /* at shutdown the writer drains with bounded puts: wait for room */
    while (shutdown && k->nq >= k->o.queue_max && !k->stop)
        pthread_cond_wait(&k->cv, &k->mu);
    int full = k->nq >= k->o.queue_max;
    pthread_mutex_unlock(&k->mu);
    if (full) {
        stat_add(k, DS4S_ENG_kv_save_drops, 1);
        ds4_info("checkpoint queue full: %s checkpoint of %u tokens dropped", reason, n);
        return -1;
    }
    kv_item *it = ds4_xcalloc(1, sizeof *it);
    char err[256] = "";
    uint64_t t0 = ds4_now_ns();
    if (ops->snapshot(s, &it->blob, &it->len, err, sizeof err)) {
        stat_add(k, DS4S_ENG_kv_save_errors, 1);
        ds4_warn("snapshot of a %u-token session failed: %s", n, err);
        item_free(it);
        return -1;
    }
    stat_add(k, DS4S_ENG_kv_snapshot_ns, ds4_now_ns() - t0);
    it->ids = ds4_xmalloc((size_t)n * sizeof *ids);
    memcpy(it->ids, ids, (size_t)n * sizeof *ids);
    it->n = n;
    it->reason = shutdown ? "shutdown" : !strcmp(reason, "evict") ? "evict"
                                      : !strcmp(reason, "cold")  ? "cold"
                                                                 : "periodic";
    it->prefill_ms = prefill_ms;
    snprintf(it->fingerprint, sizeof it->fingerprint, "%s", fingerprint);
    size_t blen = it->len;
    pthread_mutex_lock(&k->mu);
    if (k->qt)
        k->qt->next = it;
    else
        k->qh = it;
    k->qt = it;
    k->nq++;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    recent_add(k, h, n);
    ds4_debug("%s checkpoint of %u tokens queued (%zu bytes)", reason, n, blen);
    return 0;
}
