/* test_kvd.c - kvd's protocol: every handler of kv_service.c driven through
 * the real wire decoder (good and malformed requests, SHMREF and inline
 * payloads, transfer segments and their release, expiry and cap, directory
 * switch), then the real daemon binary through kv_client (put and lookup
 * over shared memory and inline, stats, a garbage frame, SIGTERM), and the
 * client's deadlines (kvd absent, kvd stopped with SIGSTOP). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "kvd/kv_service.h"
#include "log.h"
#include "test.h"
#include "test_kvd_harness.h"
#include "util.h"
#include "wire.h"

static const char *FP_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *FP_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const char *FAM = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const uint8_t REQID[16] = {0xca, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
static uint64_t seed = 0x853c49e6748fea9bull;
static char inst[32];
static kv_service S;

/* --- direct handler calls ---------------------------------------------------- */

struct reply {
    int rc;
    char field[64];
    char err[512];
    ds4w_out out;
    ds4w_msg msg; /* the reply decoded as a client sees it */
    int have;
};

static void reply_free(struct reply *r)
{
    if (r->have)
        ds4w_msg_close(&r->msg);
    ds4w_out_free(&r->out);
    memset(r, 0, sizeof *r);
}

/* Run a request built in o (header, frames) through encode, decode,
 * handler, and decode the reply again. */
static void call(struct reply *r, ds4w_out *o)
{
    memset(r, 0, sizeof *r);
    memcpy(o->reqid, REQID, 16);
    ds4w_buf fr[DS4W_MAX_PAYLOAD + 1];
    size_t nf;
    char e[256];
    int erc = ds4w_out_encode(o, fr, &nf, e, sizeof e);
    ds4w_msg m;
    if (erc == DS4W_OK)
        r->rc = ds4w_decode_frames(fr, nf, NULL, &m, r->err, sizeof r->err);
    else {
        r->rc = erc;
        snprintf(r->err, sizeof r->err, "%s", e);
        memset(&m, 0, sizeof m);
    }
    if (erc == DS4W_OK && r->rc == DS4W_OK) {
        const char *field = NULL;
        r->rc = kv_service_handle(&S, &m, &r->out, &field, r->err, sizeof r->err);
        if (field)
            snprintf(r->field, sizeof r->field, "%s", field);
        if (r->rc == DS4W_OK) {
            ds4w_buf rf[DS4W_MAX_PAYLOAD + 1];
            size_t rn;
            int x = ds4w_out_encode(&r->out, rf, &rn, e, sizeof e);
            CHECKF(x == DS4W_OK, "reply does not encode: %s", e);
            if (x == DS4W_OK) {
                x = ds4w_decode_frames(rf, rn, NULL, &r->msg, e, sizeof e);
                CHECKF(x == DS4W_OK, "reply does not decode: %s", e);
                r->have = x == DS4W_OK;
                if (!r->have)
                    ds4w_msg_close(&r->msg);
            }
        }
    } else if (erc == DS4W_OK && m.bad_field) {
        snprintf(r->field, sizeof r->field, "%s", m.bad_field);
    }
    if (erc == DS4W_OK)
        ds4w_msg_close(&m);
    ds4w_out_free(o);
}

#define CHECK_ERR(r, code_, field_)                                                       \
    do {                                                                                  \
        CHECKF((r)->rc == (code_), "got %d (%s) want %d", (r)->rc, (r)->err, (code_));    \
        CHECKF(!(field_) || !strcmp((r)->field, (field_) ? (field_) : ""),                \
               "field '%s' want '%s' (%s)", (r)->field, (field_) ? (field_) : "",         \
               (r)->err);                                                                 \
    } while (0)

static void req(ds4w_out *o, uint16_t type, const char *json)
{
    ds4w_out_init(o, type, REQID);
    if (json)
        ds4w_out_json_text(o, json, strlen(json));
}

/* KV_PUT inline. */
static void put_inline(struct reply *r, const char *json, const int32_t *ids, size_t n,
                       const void *p, size_t len)
{
    ds4w_out o;
    req(&o, DS4W_T_KV_PUT, json);
    o.flags |= DS4W_FLAG_INLINE;
    ds4w_out_i32(&o, ids, n);
    ds4w_out_bytes(&o, p, len);
    call(r, &o);
}

static void lookup(struct reply *r, const char *json, const int32_t *ids, size_t n, int inl)
{
    ds4w_out o;
    req(&o, DS4W_T_KV_LOOKUP, json);
    if (inl)
        o.flags |= DS4W_FLAG_INLINE;
    ds4w_out_i32(&o, ids, n);
    call(r, &o);
}

static char *js(const char *fmt, const char *fp)
{
    static char b[4][512];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, 512, fmt, fp);
    return p;
}

/* A segment made by the test (as engined would), payload p. */
static int test_segment(ds4_shm *sg, const char *purpose, const void *p, size_t len)
{
    char name[DS4_SHM_NAME_MAX + 1], e[256];
    if (ds4_shm_name(name, sizeof name, inst, purpose, e, sizeof e) ||
        ds4_shm_create(sg, name, len + 64, 0, e, sizeof e)) {
        fprintf(stderr, "segment: %s\n", e);
        return -1;
    }
    memcpy(sg->payload + 64, p, len);
    ds4_shm_publish(sg);
    return 0;
}

static void put_ref(struct reply *r, const char *json, const int32_t *ids, size_t n,
                    const ds4w_shmref *ref)
{
    ds4w_out o;
    req(&o, DS4W_T_KV_PUT, json);
    ds4w_out_i32(&o, ids, n);
    ds4w_out_shmref(&o, ref);
    call(r, &o);
}

static void test_service(const char *root)
{
    char dir[256], dir2[256];
    snprintf(dir, sizeof dir, "%s/svc", root);
    snprintf(dir2, sizeof dir2, "%s/svc2", root);
    kv_service_cfg cfg = {.instance = inst, .store = {0, 3600, 0, NULL}, .xfer_ttl_ms = 0,
                          .xfer_max_bytes = 0, .xfer_pool_bytes = 64 << 20, .test_mode = 1};
    char err[512];
    CHECKF(kv_service_init(&S, dir, 1, &cfg, err, sizeof err) == 0, "%s", err);
    struct reply r;
    ds4w_out o;
    /* PING, STATS */
    req(&o, DS4W_T_PING, NULL);
    call(&r, &o);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_PONG &&
          !strcmp(json_string_value(json_object_get(r.msg.json, "daemon")), "kvd") &&
          json_is_true(json_object_get(r.msg.json, "ready")));
    reply_free(&r);
    req(&o, DS4W_T_KV_STATS, NULL);
    call(&r, &o);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_STATS &&
          json_is_integer(json_object_get(json_object_get(r.msg.json, "counters"), "hits")) &&
          json_integer_value(json_object_get(json_object_get(r.msg.json, "info"), "entries")) ==
              0);
    reply_free(&r);
    req(&o, DS4W_T_STATS_GET, "{}");
    call(&r, &o);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_STATS);
    reply_free(&r);
    /* requests of other daemons are refused */
    req(&o, DS4W_T_TOKENIZE, "{\"text\":\"x\"}");
    call(&r, &o);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, NULL);
    reply_free(&r);

    enum { N = 500 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)kvd_rnd(&seed, 129280);
    uint8_t pay[5000];
    for (size_t i = 0; i < sizeof pay; i++)
        pay[i] = (uint8_t)kvd_rnd(&seed, 256);
    /* PUT inline, then look up inline and through a segment */
    put_inline(&r,
               js("{\"fingerprint\":\"%s\",\"quant\":\"q2\",\"reason\":\"cold\","
                  "\"prefill_ms\":12.5,\"family_fingerprint\":\"0123456789abcdef0123456789"
                  "abcdef0123456789abcdef0123456789abcdef\"}",
                  FP_A),
               ids, 200, pay, 3000);
    CHECKF(r.rc == 0 && r.msg.type == DS4W_T_KV_STORED, "%s", r.err);
    char key[64] = "";
    if (r.have)
        snprintf(key, sizeof key, "%s", json_string_value(json_object_get(r.msg.json, "key")));
    CHECK(strlen(key) == KV_KEY_LEN &&
          json_integer_value(json_object_get(r.msg.json, "bytes")) == 4096 + 3000);
    reply_free(&r);
    lookup(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, N, 1);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_FOUND && (r.msg.flags & DS4W_FLAG_INLINE));
    if (r.have && r.msg.type == DS4W_T_KV_FOUND) {
        ds4w_buf b = ds4w_msg_frame(&r.msg, 1);
        CHECK(b.len == 3000 && !memcmp(b.data, pay, 3000));
        CHECK(json_integer_value(json_object_get(r.msg.json, "tokens")) == 200 &&
              !strcmp(json_string_value(json_object_get(r.msg.json, "key")), key) &&
              !strcmp(json_string_value(json_object_get(r.msg.json, "quant")), "q2"));
    }
    reply_free(&r);
    lookup(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, N, 0);
    ds4w_shmref ref;
    int ok = r.rc == 0 && r.msg.type == DS4W_T_KV_FOUND && ds4w_msg_shmref(&r.msg, 1, &ref) == 0;
    CHECK(ok);
    reply_free(&r);
    if (ok) {
        ds4_shm sg;
        char e[256];
        CHECKF(ds4_shm_attach(&sg, ref.name, DS4_SHM_RDONLY, e, sizeof e) == 0, "%s", e);
        CHECK(ref.offset == KV_XFER_DATA_OFF && ref.length == 3000 && ref.offset % 4096 == 0 &&
              ref.generation == ds4_shm_generation(&sg) &&
              ref.offset + ref.length <= sg.map_size &&
              ref.checksum == ds4_hash64(pay, 3000, 0) &&
              !memcmp((uint8_t *)sg.hdr + ref.offset, pay, 3000));
        CHECK(kv_xfer_out(&S.xf) == 1);
        ds4w_out_init(&o, DS4W_T_KV_RELEASE, REQID);
        ds4w_out_shmref(&o, &ref);
        call(&r, &o);
        CHECK(r.rc == 0 && r.msg.type == DS4W_T_OK && kv_xfer_out(&S.xf) == 0);
        reply_free(&r);
        /* released: pooled, and the next lookup reuses it (a new generation,
         * so the old reference no longer matches) */
        CHECK(S.xf.n == 1 && S.xf.pool_bytes == sg.map_size);
        ds4w_shmref ref2;
        lookup(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, N, 0);
        CHECK(r.rc == 0 && ds4w_msg_shmref(&r.msg, 1, &ref2) == 0);
        reply_free(&r);
        CHECK(!strcmp(ref2.name, ref.name) && ref2.generation == ref.generation + 1 &&
              S.xf.reused == 1 && S.xf.created == 1);
        CHECK(ds4_shm_generation(&sg) == ref2.generation &&
              !memcmp((uint8_t *)sg.hdr + ref2.offset, pay, 3000));
        ds4_shm_detach(&sg);
        ds4w_out_init(&o, DS4W_T_KV_RELEASE, REQID);
        ds4w_out_shmref(&o, &ref);
        call(&r, &o);
        CHECK_ERR(&r, DS4W_E_NOT_FOUND, NULL);
        reply_free(&r);
        ds4w_out_init(&o, DS4W_T_KV_RELEASE, REQID);
        ds4w_out_shmref(&o, &ref2);
        call(&r, &o);
        CHECK(r.rc == 0);
        reply_free(&r);
        ds4w_out_init(&o, DS4W_T_KV_RELEASE, REQID);
        ds4w_out_shmref(&o, &ref2);
        call(&r, &o);
        CHECK_ERR(&r, DS4W_E_NOT_FOUND, NULL);
        reply_free(&r);
    }
    /* misses: too short, another model, min_tokens; cross-quant by family */
    lookup(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, 199, 0);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_MISS &&
          !strcmp(json_string_value(json_object_get(r.msg.json, "reason")), "none"));
    reply_free(&r);
    lookup(&r, js("{\"fingerprint\":\"%s\"}", FP_B), ids, N, 0);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_MISS &&
          !strcmp(json_string_value(json_object_get(r.msg.json, "reason")), "fingerprint"));
    reply_free(&r);
    lookup(&r, js("{\"fingerprint\":\"%s\",\"min_tokens\":201}", FP_A), ids, N, 0);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_MISS);
    reply_free(&r);
    char q[1024];
    snprintf(q, sizeof q,
             "{\"fingerprint\":\"%s\",\"family_fingerprint\":\"%s\",\"allow_cross_quant\":true}",
             FP_B, FAM);
    lookup(&r, q, ids, N, 1);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_FOUND &&
          !strcmp(json_string_value(json_object_get(r.msg.json, "fingerprint")), FP_A));
    reply_free(&r);
    snprintf(q, sizeof q, "{\"fingerprint\":\"%s\",\"family_fingerprint\":\"%s\"}", FP_B, FAM);
    lookup(&r, q, ids, N, 1); /* the family alone is not permission */
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_MISS);
    reply_free(&r);

    /* PUT from a segment (as engined does); checksum, staleness, bounds */
    ds4_shm sg;
    CHECK(test_segment(&sg, "tput.1", pay, sizeof pay) == 0);
    memset(&ref, 0, sizeof ref);
    memcpy(ref.name, sg.name, strnlen(sg.name, sizeof ref.name - 1));
    ref.offset = DS4_SHM_HEADER_SIZE + 64;
    ref.length = sizeof pay;
    ref.generation = ds4_shm_generation(&sg);
    ref.checksum = ds4_hash64(pay, sizeof pay, 0);
    put_ref(&r, js("{\"fingerprint\":\"%s\",\"reason\":\"periodic\"}", FP_A), ids, 400, &ref);
    CHECKF(r.rc == 0 && r.msg.type == DS4W_T_KV_STORED, "%s", r.err);
    reply_free(&r);
    lookup(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, N, 1);
    CHECK(r.rc == 0 && json_integer_value(json_object_get(r.msg.json, "tokens")) == 400 &&
          ds4w_msg_frame(&r.msg, 1).len == sizeof pay &&
          !memcmp(ds4w_msg_frame(&r.msg, 1).data, pay, sizeof pay));
    reply_free(&r);
    ds4w_shmref bad = ref;
    bad.checksum ^= 1;
    put_ref(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, 300, &bad);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, NULL);
    CHECK(strstr(r.err, "checksum") != NULL);
    reply_free(&r);
    bad = ref;
    bad.generation++;
    put_ref(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, 300, &bad);
    CHECK_ERR(&r, DS4W_E_NOT_FOUND, NULL);
    reply_free(&r);
    bad = ref;
    bad.length = sg.map_size;
    put_ref(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, 300, &bad);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, NULL);
    reply_free(&r);
    bad = ref;
    bad.offset = 8; /* inside the segment header */
    put_ref(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, 300, &bad);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, NULL);
    reply_free(&r);
    bad = ref;
    snprintf(bad.name, sizeof bad.name, "/ds4-%u-%s-nonexistent", (unsigned)getuid(), inst);
    put_ref(&r, js("{\"fingerprint\":\"%s\"}", FP_A), ids, 300, &bad);
    CHECK_ERR(&r, DS4W_E_NOT_FOUND, NULL);
    reply_free(&r);
    char sgname[DS4_SHM_NAME_MAX + 1];
    snprintf(sgname, sizeof sgname, "%s", sg.name);
    ds4_shm_detach(&sg);
    ds4_shm_unlink(sgname);
    CHECK(S.store.idx.n == 2 && kvd_count(S.store.dir, ".tmp") == 0);

    /* invalid fields: each named */
    struct {
        const char *json;
        const char *field;
        size_t n;
    } badreq[] = {
        {"{\"fingerprint\":\"abc\"}", "fingerprint", 10},
        {"{\"fingerprint\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
         "fingerprint", 10},
        {"{}", "fingerprint", 10},
        {"{\"fingerprint\":7}", "fingerprint", 10},
        {NULL, "family_fingerprint", 10},
        {NULL, "quant", 10},
        {NULL, "reason", 10},
        {NULL, "prefill_ms", 10},
        {NULL, "ids", 0},
    };
    char fam_bad[256], quant_bad[256], reason_bad[256], ms_bad[256], ok_js[256];
    snprintf(fam_bad, sizeof fam_bad, "{\"fingerprint\":\"%s\",\"family_fingerprint\":\"x\"}", FP_A);
    snprintf(quant_bad, sizeof quant_bad, "{\"fingerprint\":\"%s\",\"quant\":\"a/b\"}", FP_A);
    snprintf(reason_bad, sizeof reason_bad, "{\"fingerprint\":\"%s\",\"reason\":\"later\"}", FP_A);
    snprintf(ms_bad, sizeof ms_bad, "{\"fingerprint\":\"%s\",\"prefill_ms\":-1}", FP_A);
    snprintf(ok_js, sizeof ok_js, "{\"fingerprint\":\"%s\"}", FP_A);
    badreq[4].json = fam_bad;
    badreq[5].json = quant_bad;
    badreq[6].json = reason_bad;
    badreq[7].json = ms_bad;
    badreq[8].json = ok_js;
    for (size_t k = 0; k < sizeof badreq / sizeof badreq[0]; k++) {
        put_inline(&r, badreq[k].json, ids, badreq[k].n, pay, 10);
        CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, badreq[k].field);
        reply_free(&r);
    }
    int32_t neg[3] = {1, -2, 3};
    put_inline(&r, ok_js, neg, 3, pay, 10);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "ids[1]");
    reply_free(&r);
    lookup(&r, ok_js, neg, 3, 0);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "ids[1]");
    reply_free(&r);
    lookup(&r, "{\"fingerprint\":\"x\"}", ids, 3, 0);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "fingerprint");
    reply_free(&r);
    lookup(&r, ok_js, ids, 0, 0); /* an empty query is a miss */
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_MISS);
    reply_free(&r);
    CHECK(S.store.idx.n == 2);

    /* transfer segments: a cap on unreleased ones unlinks the oldest; the
     * TTL expires unreleased ones (never pooled: a reader may be on them);
     * a zero pool unlinks at release */
    uint64_t seg1 = DS4_SHM_HEADER_SIZE + kv_xfer_class(KV_XFER_DATA_OFF - 128 + sizeof pay);
    S.cfg.xfer_max_bytes = 2 * seg1;
    kv_service_tick(&S);
    ds4w_shmref refs[4];
    for (int k = 0; k < 4; k++) {
        lookup(&r, ok_js, ids, N, 0);
        CHECK(r.rc == 0 && ds4w_msg_shmref(&r.msg, 1, &refs[k]) == 0);
        reply_free(&r);
    }
    /* the first reused the pooled one, then new ones, the oldest unlinked */
    CHECK(kv_xfer_out(&S.xf) == 2 && kvd_count_shm(inst, "kvx.") == 2 && S.xf.n == 2);
    ds4_shm tmp;
    char e[256];
    CHECK(ds4_shm_attach(&tmp, refs[0].name, DS4_SHM_RDONLY, e, sizeof e) != 0);
    CHECK(ds4_shm_attach(&tmp, refs[3].name, DS4_SHM_RDONLY, e, sizeof e) == 0);
    ds4_shm_detach(&tmp);
    S.cfg.xfer_ttl_ms = 1;
    long long end = kvd_now_ms() + 5000;
    while (kv_xfer_out(&S.xf) && kvd_now_ms() < end)
        kv_service_tick(&S);
    CHECK(kv_xfer_out(&S.xf) == 0 && S.xf.n == 0 && kvd_count_shm(inst, "kvx.") == 0);
    S.cfg.xfer_ttl_ms = 0;
    S.cfg.xfer_pool_bytes = 0;
    kv_service_tick(&S);
    lookup(&r, ok_js, ids, N, 0);
    CHECK(r.rc == 0 && ds4w_msg_shmref(&r.msg, 1, &refs[0]) == 0);
    reply_free(&r);
    ds4w_out_init(&o, DS4W_T_KV_RELEASE, REQID);
    ds4w_out_shmref(&o, &refs[0]);
    call(&r, &o);
    CHECK(r.rc == 0 && S.xf.n == 0 && kvd_count_shm(inst, "kvx.") == 0);
    reply_free(&r);
    /* size classes: within 1/8 of the size, at least 1 MiB */
    CHECK(kv_xfer_class(1) == 1u << 20 && kv_xfer_class((1u << 20) + 1) == (1u << 20) + (1u << 17));
    for (uint64_t sz = 1000; sz < (1ull << 34); sz = sz * 3 + 7) {
        uint64_t c = kv_xfer_class(sz);
        CHECK(c >= sz && (c <= (1u << 20) || c - sz <= sz / 8 + 1));
    }

    /* KV_SET_DIR: refused paths keep the old directory; a new one works; the
     * old one is intact when switched back */
    req(&o, DS4W_T_KV_SET_DIR, "{\"dir\":\"relative/path\"}");
    call(&r, &o);
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "dir");
    reply_free(&r);
    snprintf(q, sizeof q, "{\"dir\":\"%s\"}", dir2);
    req(&o, DS4W_T_KV_SET_DIR, q);
    call(&r, &o); /* does not exist, no create */
    CHECK_ERR(&r, DS4W_E_INVALID_REQUEST, "dir");
    reply_free(&r);
    CHECK(S.store.idx.n == 2);
    snprintf(q, sizeof q, "{\"dir\":\"%s\",\"create\":true}", dir2);
    req(&o, DS4W_T_KV_SET_DIR, q);
    call(&r, &o);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_OK &&
          json_integer_value(json_object_get(r.msg.json, "entries")) == 0);
    reply_free(&r);
    lookup(&r, ok_js, ids, N, 1);
    CHECK(r.rc == 0 && r.msg.type == DS4W_T_KV_MISS);
    reply_free(&r);
    put_inline(&r, ok_js, ids, 50, pay, 100);
    CHECK(r.rc == 0);
    reply_free(&r);
    snprintf(q, sizeof q, "{\"dir\":\"%s\"}", dir);
    req(&o, DS4W_T_KV_SET_DIR, q);
    call(&r, &o);
    CHECK(r.rc == 0 && json_integer_value(json_object_get(r.msg.json, "entries")) == 2);
    reply_free(&r);
    req(&o, DS4W_T_KV_SET_DIR, q); /* the same directory again: a no-op */
    call(&r, &o);
    CHECK(r.rc == 0 && json_integer_value(json_object_get(r.msg.json, "entries")) == 2);
    reply_free(&r);
    lookup(&r, ok_js, ids, N, 1);
    CHECK(r.rc == 0 && json_integer_value(json_object_get(r.msg.json, "tokens")) == 400);
    reply_free(&r);
    kv_service_fini(&S);
}

/* --- the live daemon ----------------------------------------------------------- */

static void test_live(const char *root)
{
    char run[512], dir[512];
    snprintf(run, sizeof run, "%s/run", root);
    snprintf(dir, sizeof dir, "%s/live", root);
    mkdir(run, 0700);
    kvd_proc p;
    const char *args[] = {"--test-mode", NULL};
    int ok = kvd_start(&p, run, inst, dir, args) == 0;
    CHECKF(ok, "kvd did not start (status 0x%x)", p.status);
    if (!ok)
        return;
    kv_client *c = kvd_client(&p, 10000, 0);
    kv_client *ci = kvd_client(&p, 10000, 1);
    char err[512];
    CHECK(c && ci && kvc_ping(c, err, sizeof err) == 0);
    enum { N = 3000 };
    int32_t *ids = ds4_xmalloc(N * 4);
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)kvd_rnd(&seed, 129280);
    size_t big = 3u << 20;
    uint8_t *blob = ds4_xmalloc(big);
    for (size_t i = 0; i < big; i++)
        blob[i] = (uint8_t)(i * 2654435761u >> 13);
    kvc_meta m = {FP_A, FAM, "q4", "cold", 321.0};
    kvc_stored st;
    CHECKF(kvc_put(c, ids, 1000, blob, big, &m, &st, err, sizeof err) == 0, "%s", err);
    CHECK(st.bytes == kv_payload_offset(1000) + big && strlen(st.key) == KV_KEY_LEN);
    CHECKF(kvc_put(ci, ids, 2000, blob, 1000, &m, &st, err, sizeof err) == 0, "%s", err);
    /* the put segment is reused for a smaller blob, replaced for a bigger */
    CHECK(kvd_count_shm(inst, "kvput.") == 1);
    kvc_query q = {FP_A, NULL, 0, 0};
    kvc_found f;
    CHECK(kvc_lookup(c, ids, N, &q, &f, err, sizeof err) == 1 && f.tokens == 2000 &&
          f.len == 1000 && !memcmp(f.data, blob, 1000));
    kvc_found_free(&f);
    CHECK(kvc_lookup(ci, ids, 1999, &q, &f, err, sizeof err) == 1 && f.tokens == 1000 &&
          f.len == big && !memcmp(f.data, blob, big) && !strcmp(f.quant, "q4"));
    kvc_found_free(&f);
    int rc = kvc_lookup(c, ids, 1999, &q, &f, err, sizeof err);
    CHECK(rc == 1 && f.len == big && !memcmp(f.data, blob, big));
    /* held until freed; then pooled by kvd and reused by the next lookup
     * (both sides keep their mappings) */
    json_t *s0 = kvc_stats(ci, err, sizeof err);
    CHECK(json_integer_value(json_object_get(json_object_get(s0, "info"),
                                             "transfer_segments")) == 1);
    json_decref(s0);
    kvc_found_free(&f);
    rc = kvc_lookup(c, ids, 1999, &q, &f, err, sizeof err);
    CHECK(rc == 1 && f.len == big && !memcmp(f.data, blob, big));
    kvc_found_free(&f);
    s0 = kvc_stats(ci, err, sizeof err);
    json_t *i0 = json_object_get(s0, "info");
    CHECK(json_integer_value(json_object_get(i0, "transfer_segments")) == 0 &&
          json_integer_value(json_object_get(i0, "pool_reused")) == 1 &&
          json_integer_value(json_object_get(i0, "pool_bytes")) > 0);
    json_decref(s0);
    CHECK(kvc_lookup(c, ids, 999, &q, &f, err, sizeof err) == 0 &&
          !strcmp(f.miss_reason, "none"));
    /* an error reply comes back as an error with its code */
    kvc_meta bad = {"nothex", NULL, NULL, NULL, 0};
    CHECK(kvc_put(c, ids, 10, blob, 10, &bad, &st, err, sizeof err) == -1 &&
          kvc_errcode(c) == DS4W_E_INVALID_REQUEST && strstr(err, "fingerprint"));
    /* a garbage frame: ERROR, and the daemon carries on */
    void *ctx = zmq_ctx_new();
    void *raw = zmq_socket(ctx, ZMQ_DEALER);
    CHECK(ds4w_socket_setup(raw, 0) == 0 && zmq_connect(raw, p.ep) == 0);
    CHECK(zmq_send(raw, "garbage!", 8, 0) == 8);
    zmq_pollitem_t it = {raw, 0, ZMQ_POLLIN, 0};
    ds4w_msg gm;
    CHECK(zmq_poll(&it, 1, 10000) == 1);
    CHECK(ds4w_recv(raw, &gm, 0, 0, err, sizeof err) == DS4W_OK && gm.type == DS4W_T_ERROR &&
          json_integer_value(json_object_get(gm.json, "code")) == DS4W_E_BAD_FRAME);
    ds4w_msg_close(&gm);
    zmq_close(raw);
    zmq_ctx_term(ctx);
    json_t *s = kvc_stats(c, err, sizeof err);
    json_t *cn = json_object_get(s, "counters");
    CHECK(s && json_integer_value(json_object_get(cn, "saves")) == 2 &&
          json_integer_value(json_object_get(cn, "hits")) == 4 &&
          json_integer_value(json_object_get(cn, "misses")) == 1 &&
          json_integer_value(json_object_get(cn, "lookups")) == 5 &&
          json_integer_value(json_object_get(cn, "entries")) == 2 &&
          json_integer_value(json_object_get(cn, "frames_bad")) == 1 &&
          json_integer_value(json_object_get(cn, "disk_budget_bytes")) == 8192ll << 20);
    json_decref(s);
    /* the same through the stats segment */
    ds4_stats ss;
    if (ds4_stats_attach(&ss, inst, "kvd", err, sizeof err) == 0) {
        CHECK(ds4_stats_get(&ss, (unsigned)ds4_stats_find(&ss, "hit_tokens")) == 5000);
        ds4_stats_close(&ss, 0);
    } else {
        CHECKF(0, "stats segment: %s", err);
    }
    /* restore speed (printed; the restore is checked byte for byte): the
     * first restore fills fresh shared memory, later ones reuse the pooled
     * segment and the client's mapping */
    {
        size_t len = 48u << 20;
        uint8_t *p48 = ds4_xmalloc(len);
        for (size_t i = 0; i < len; i += 8) {
            uint64_t v = i * 0x9e3779b97f4a7c15ull;
            memcpy(p48 + i, &v, 8);
        }
        kvc_meta m48 = {FP_B, NULL, NULL, "cold", 1000};
        CHECK(kvc_put(c, ids, 3000, p48, len, &m48, &st, err, sizeof err) == 0);
        kvc_query q48 = {FP_B, NULL, 0, 0};
        double ms[3];
        for (int r = 0; r < 3; r++) {
            uint64_t t0 = ds4_now_ns();
            int got = kvc_lookup(c, ids, N, &q48, &f, err, sizeof err);
            ms[r] = (double)(ds4_now_ns() - t0) / 1e6;
            CHECK(got == 1 && f.len == len && !memcmp(f.data, p48, len));
            kvc_found_free(&f);
        }
        printf("restore of 48 MiB through kvd (verified by the client too): first %.1f ms, "
               "pooled %.1f ms, %.1f ms\n",
               ms[0], ms[1], ms[2]);
        free(p48);
    }
    /* damage on disk while kvd runs: found at the next read, set aside,
     * the shorter checkpoint served instead, the damaged one never */
    {
        char path[1024];
        kvc_query qa = {FP_A, NULL, 0, 0};
        CHECK(kvc_lookup(c, ids, N, &qa, &f, err, sizeof err) == 1 && f.tokens == 2000);
        snprintf(path, sizeof path, "%s/%s.kv", dir, f.key);
        kvc_found_free(&f);
        int fd = open(path, O_RDWR);
        uint8_t x = 0;
        CHECK(fd >= 0 && pread(fd, &x, 1, (off_t)kv_payload_offset(2000) + 10) == 1);
        x ^= 0x80;
        CHECK(pwrite(fd, &x, 1, (off_t)kv_payload_offset(2000) + 10) == 1);
        close(fd);
        CHECK(kvc_lookup(c, ids, N, &qa, &f, err, sizeof err) == 1 && f.tokens == 1000 &&
              f.len == big && !memcmp(f.data, blob, big));
        kvc_found_free(&f);
        char qd[1100];
        snprintf(qd, sizeof qd, "%s/%s", dir, KV_QUARANTINE);
        CHECK(access(path, F_OK) != 0 && kvd_count(qd, "") == 1);
        CHECK(kvc_lookup(c, ids + 1000, 5, &qa, &f, err, sizeof err) == 0);
        /* an empty payload is a payload */
        CHECK(kvc_put(c, ids + 1000, 5, "", 0, &m, &st, err, sizeof err) == 0);
        CHECK(kvc_lookup(c, ids + 1000, 5, &qa, &f, err, sizeof err) == 1 && f.len == 0 &&
              f.tokens == 5);
        kvc_found_free(&f);
        CHECK(kvc_put(ci, ids + 1000, 6, "", 0, &m, &st, err, sizeof err) == 0);
        CHECK(kvc_lookup(ci, ids + 1000, 6, &qa, &f, err, sizeof err) == 1 && f.len == 0 &&
              f.tokens == 6);
        kvc_found_free(&f);
        /* the default endpoint follows the daemons' convention */
        char ep[600];
        CHECK(kvc_default_endpoint(run, ep, sizeof ep) == 0 && !strcmp(ep, p.ep));
    }
    /* restart: what was acknowledged is there */
    CHECK(kvd_stop(&p) == 0);
    char sock[600];
    snprintf(sock, sizeof sock, "%s/kvd.sock", run);
    CHECK(access(sock, F_OK) != 0);
    CHECK(kvd_start(&p, run, inst, dir, args) == 0);
    CHECK(kvc_lookup(c, ids, N, &q, &f, err, sizeof err) == 1 && f.tokens == 1000);
    kvc_found_free(&f);
    CHECK(kvd_stop(&p) == 0);
    CHECK(kvd_count_shm(inst, "kvx.") == 0 && kvd_count_shm(inst, "stats-kvd") == 0);
    kvc_close(c);
    kvc_close(ci);
    CHECK(kvd_count_shm(inst, "kvput.") == 0);
    free(ids);
    free(blob);
}

/* A write held in flight (test-mode write gate): lookups and stats are
 * answered meanwhile, the checkpoint is not served before it is durable,
 * and the put is acknowledged once the write goes through. */
struct bg_put {
    const kvd_proc *p;
    const int32_t *ids;
    const uint8_t *blob;
    size_t len;
    int rc, done;
};

static void *bg_put_main(void *arg)
{
    struct bg_put *b = arg;
    kv_client *c = kvd_client(b->p, 30000, 0);
    kvc_meta m = {FP_A, NULL, NULL, "periodic", 100};
    kvc_stored st;
    char err[256];
    b->rc = c ? kvc_put(c, b->ids, 100, b->blob, b->len, &m, &st, err, sizeof err) : -1;
    kvc_close(c);
    __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_writer_gate(const char *root)
{
    char run[512], dir[512], fifo[512], env[600];
    snprintf(run, sizeof run, "%s/run3", root);
    snprintf(dir, sizeof dir, "%s/gate", root);
    snprintf(fifo, sizeof fifo, "%s/gate.fifo", root);
    mkdir(run, 0700);
    CHECK(mkfifo(fifo, 0600) == 0);
    int gfd = open(fifo, O_RDWR | O_CLOEXEC); /* never blocks on Linux */
    CHECK(gfd >= 0);
    snprintf(env, sizeof env, "DS4_KVD_WRITE_GATE=%s", fifo);
    const char *envv[] = {env, NULL};
    const char *args[] = {"--test-mode", NULL};
    kvd_proc p;
    if (kvd_start_ex(&p, run, inst, dir, args, envv, NULL, NULL)) {
        CHECKF(0, "kvd does not start");
        close(gfd);
        return;
    }
    int32_t ids[200];
    for (int i = 0; i < 200; i++)
        ids[i] = 5000 + i;
    uint8_t small[100] = {1, 2, 3};
    kv_client *c = kvd_client(&p, 10000, 0);
    char err[256];
    kvc_meta m = {FP_A, NULL, NULL, NULL, 1};
    kvc_stored st;
    CHECK(write(gfd, "g", 1) == 1); /* let the first put through */
    CHECK(kvc_put(c, ids, 50, small, sizeof small, &m, &st, err, sizeof err) == 0);
    size_t len = 5u << 20;
    uint8_t *blob = ds4_xmalloc(len);
    memset(blob, 0x5a, len);
    struct bg_put b = {&p, ids, blob, len, -1, 0};
    pthread_t th;
    pthread_create(&th, NULL, bg_put_main, &b);
    /* the put is held at the gate: the daemon answers everything else */
    kvc_query q = {FP_A, NULL, 0, 0};
    kvc_found f;
    int answered = 0;
    for (int i = 0; i < 20; i++) {
        int rc = kvc_lookup(c, ids, 200, &q, &f, err, sizeof err);
        /* the 50-token checkpoint; never the 100-token one still in flight */
        answered += rc == 1 && f.tokens == 50 && f.len == sizeof small;
        kvc_found_free(&f);
        json_t *js = kvc_stats(c, err, sizeof err);
        answered += js != NULL;
        json_decref(js);
    }
    CHECK(answered == 40);
    CHECK(!__atomic_load_n(&b.done, __ATOMIC_ACQUIRE));
    CHECK(write(gfd, "g", 1) == 1); /* now let it write */
    pthread_join(th, NULL);
    CHECK(b.rc == 0);
    CHECK(kvc_lookup(c, ids, 200, &q, &f, err, sizeof err) == 1 && f.tokens == 100 &&
          f.len == len && !memcmp(f.data, blob, len));
    kvc_found_free(&f);
    /* a put left in flight at SIGTERM is finished and answered, not lost */
    json_t *js;
    struct bg_put b2 = {&p, ids, blob, 1000, -1, 0};
    int32_t ids2[200];
    for (int i = 0; i < 200; i++)
        ids2[i] = 9000 + i;
    b2.ids = ids2;
    js = kvc_stats(c, err, sizeof err);
    long long base = (long long)json_integer_value(
        json_object_get(json_object_get(js, "info"), "disk_bytes"));
    json_decref(js);
    pthread_create(&th, NULL, bg_put_main, &b2);
    long long end = kvd_now_ms() + 10000;
    /* wait until kvd has the put (its pending bytes show in disk_bytes) */
    for (;;) {
        js = kvc_stats(c, err, sizeof err);
        long long used = (long long)json_integer_value(
            json_object_get(json_object_get(js, "info"), "disk_bytes"));
        json_decref(js);
        if (used > base || kvd_now_ms() > end)
            break;
    }
    kill(p.pid, SIGTERM);
    CHECK(write(gfd, "g", 1) == 1);
    pthread_join(th, NULL);
    CHECK(b2.rc == 0);
    CHECK(kvd_wait_exit(&p, 10000) == 0 && WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
    kvc_close(c);
    close(gfd);
    CHECK(kvd_start(&p, run, inst, dir, NULL) == 0);
    c = kvd_client(&p, 10000, 0);
    CHECK(kvc_lookup(c, ids2, 200, &q, &f, err, sizeof err) == 1 && f.tokens == 100 &&
          f.len == 1000);
    kvc_found_free(&f);
    kvc_close(c);
    CHECK(kvd_stop(&p) == 0);
    free(blob);
}

/* Deadlines: nobody listening, then a kvd that stops answering (SIGSTOP),
 * then the same kvd again (the stale reply is not taken for a new one). */
static void test_deadlines(const char *root)
{
    char run[512], dir[512], ep[600], err[512];
    snprintf(run, sizeof run, "%s/run2", root);
    snprintf(dir, sizeof dir, "%s/dl", root);
    mkdir(run, 0700);
    snprintf(ep, sizeof ep, "ipc://%s/kvd.sock", run);
    kvc_opts o = {.endpoint = ep, .instance = inst, .timeout_ms = 300};
    kv_client *c = kvc_open(&o, err, sizeof err);
    CHECK(c != NULL);
    int32_t ids[4] = {1, 2, 3, 4};
    kvc_meta m = {FP_A, NULL, NULL, NULL, 0};
    kvc_stored st;
    long long t0 = kvd_now_ms();
    CHECK(kvc_put(c, ids, 4, "abcd", 4, &m, &st, err, sizeof err) == -1 &&
          kvc_errcode(c) == DS4W_E_UNAVAILABLE);
    long long dt = kvd_now_ms() - t0;
    CHECKF(dt >= 250 && dt < 5000, "gave up after %lld ms", dt);
    kvd_proc p;
    CHECK(kvd_start(&p, run, inst, dir, NULL) == 0);
    CHECK(kvc_put(c, ids, 4, "abcd", 4, &m, &st, err, sizeof err) == 0);
    kill(p.pid, SIGSTOP);
    kvc_query q = {FP_A, NULL, 0, 0};
    kvc_found f;
    CHECK(kvc_lookup(c, ids, 4, &q, &f, err, sizeof err) == -1 &&
          kvc_errcode(c) == DS4W_E_UNAVAILABLE);
    kill(p.pid, SIGCONT);
    CHECK(kvc_lookup(c, ids, 3, &q, &f, err, sizeof err) == 0);
    CHECK(kvc_lookup(c, ids, 4, &q, &f, err, sizeof err) == 1 && f.len == 4 &&
          !memcmp(f.data, "abcd", 4));
    kvc_found_free(&f);
    CHECK(kvd_stop(&p) == 0);
    kvc_close(c);
    /* kvc_open refuses a bad endpoint */
    kvc_opts bo = {.endpoint = "udp://x"};
    CHECK(kvc_open(&bo, err, sizeof err) == NULL);
}

int main(void)
{
    ds4_log_set_level(getenv("DS4_TEST_VERBOSE") ? DS4_LOG_DEBUG : DS4_LOG_ERROR);
    snprintf(inst, sizeof inst, "kvdt%d", (int)getpid());
    char root[] = "/tmp/ds4-kvd-test-XXXXXX";
    if (!mkdtemp(root)) {
        CHECK(0);
        return test_main_end("test_kvd");
    }
    test_service(root);
    test_live(root);
    test_writer_gate(root);
    test_deadlines(root);
    kvd_rm_rf(root);
    CHECK(kvd_count_shm(inst, "") == 0);
    return test_main_end("test_kvd");
}
