/* test_kvd_store.c - kvd's storage library without the daemon: the file
 * format (streaming checksum equal to ds4_hash64, header round trip, every
 * kind of damage refused), the index (longest-prefix lookup against a brute
 * force, fingerprint and cross-quant rules, a 100k-token query against
 * thousands of entries), the eviction value, and a store directory (put,
 * reopen, damaged/truncated/foreign files quarantined, temp leftovers
 * removed, budget and eviction, the directory lock). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hash.h"
#include "kvd/kv_format.h"
#include "kvd/kv_index.h"
#include "kvd/kv_store.h"
#include "log.h"
#include "test.h"
#include "util.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 33) % n;
}

static const char *FP_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *FP_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const char *FAM = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}
static void rm_rf(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Files in dir (or dir/sub) whose name starts with prefix ("" all). */
static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' || !strncmp(prefix, ".", 1))
            n += !strncmp(e->d_name, prefix, strlen(prefix)) && strcmp(e->d_name, ".") &&
                 strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* --- format ------------------------------------------------------------------- */

static void test_hash_stream(void)
{
    uint8_t *buf = ds4_xmalloc(5000);
    for (int i = 0; i < 5000; i++)
        buf[i] = (uint8_t)rnd(256);
    for (int t = 0; t < 300; t++) {
        size_t len = t < 40 ? (size_t)t : rnd(5000);
        uint64_t seed = t % 3 ? 0 : rnd(1000);
        kv_h64 s;
        kv_h64_init(&s, len, seed);
        size_t off = 0;
        while (off < len) {
            size_t n = 1 + rnd(t % 2 ? 13 : 700);
            if (n > len - off)
                n = len - off;
            kv_h64_update(&s, buf + off, n);
            off += n;
        }
        CHECKF(kv_h64_final(&s) == ds4_hash64(buf, len, seed), "len %zu", len);
    }
    free(buf);
    /* prefix hashes: the running state gives every prefix */
    int32_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = (int32_t)rnd(130000);
    uint64_t h = KV_IDS_SEED;
    for (int i = 0; i < 100; i++) {
        h = kv_ids_step(h, ids[i]);
        CHECK(kv_ids_final(h, (uint64_t)i + 1) == kv_ids_hash(ids, (size_t)i + 1));
    }
    CHECK(kv_ids_hash(ids, 99) != kv_ids_hash(ids, 100));
}

static kv_hdr meta(const char *fp, const char *fam, const char *quant, uint32_t n, uint64_t len)
{
    kv_hdr h;
    memset(&h, 0, sizeof h);
    h.n_tokens = n;
    h.payload_size = len;
    h.reason = KV_REASON_COLD;
    h.created_unix_ns = 1700000000000000000ull;
    h.prefill_us = 12345;
    snprintf(h.fingerprint, sizeof h.fingerprint, "%s", fp);
    snprintf(h.family, sizeof h.family, "%s", fam ? fam : "");
    snprintf(h.quant, sizeof h.quant, "%s", quant ? quant : "");
    return h;
}

static void test_format(void)
{
    enum { N = 1000 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)rnd(129280);
    uint8_t pay[3000];
    for (size_t i = 0; i < sizeof pay; i++)
        pay[i] = (uint8_t)rnd(256);
    kv_hdr m = meta(FP_A, FAM, "q2", N, sizeof pay);
    size_t len;
    uint8_t *f = kv_file_build(&m, ids, pay, &len);
    CHECK(len == kv_payload_offset(N) + sizeof pay && kv_payload_offset(N) % 4096 == 0);
    kv_hdr h;
    const uint8_t *p;
    char err[256];
    CHECKF(kv_file_parse(f, len, &h, &p, err, sizeof err) == 0, "%s", err);
    CHECK(p && memcmp(p, pay, sizeof pay) == 0);
    CHECK(h.n_tokens == N && h.payload_size == sizeof pay && !strcmp(h.fingerprint, FP_A) &&
          !strcmp(h.family, FAM) && !strcmp(h.quant, "q2") && h.prefill_us == 12345 &&
          h.reason == KV_REASON_COLD && h.ids_hash == kv_ids_hash(ids, N));
    /* every single-byte change of the header, ids, padding or payload is
     * refused (the payload checksum covers the payload, the header checksum
     * the header, the ids hash the ids; padding must be zero) */
    size_t probes[] = {0, 7, 8, 15, 16, 24, 28, 40, 48, 56, 64, 80, 90, 100, 170, 230, 247, 248,
                       255, 256, 300, 256 + 4 * N - 1, 256 + 4 * N, 4095,
                       kv_payload_offset(N), len - 1};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        size_t at = probes[k];
        f[at] ^= 0x10;
        CHECKF(kv_file_parse(f, len, &h, &p, err, sizeof err) != 0 && !p,
               "flip at %zu accepted", at);
        f[at] ^= 0x10;
    }
    /* every truncation and an extension are refused */
    for (size_t cut = 0; cut < len; cut += 1 + rnd(97))
        CHECK(kv_file_parse(f, cut, &h, &p, err, sizeof err) != 0);
    uint8_t *big = ds4_xmalloc(len + 1);
    memcpy(big, f, len);
    big[len] = 0;
    CHECK(kv_file_parse(big, len + 1, &h, &p, err, sizeof err) != 0 && strstr(err, "trailing"));
    free(big);
    /* fields that are wrong but re-sealed with a valid header checksum */
    struct {
        size_t off;
        uint8_t v;
        const char *why;
    } bad[] = {{8, 2, "version"},     {13, 0, "header size"}, {24, 0, "token count"},
               {28, 9, "reason"},     {41, 0, "offset"},      {88, 1, "flags"},
               {92, 1, "reserved"},   {96, 'G', "fingerprint"}, {160, 'x', "family"},
               {226, 1, "quant tail"}, {224, '/', "quant"},    {54, 1, "payload size"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        uint8_t hb[KV_HDR_SIZE];
        memcpy(hb, f, KV_HDR_SIZE);
        hb[bad[k].off] = bad[k].v;
        uint64_t c = ds4_hash64(hb, 248, 0);
        memcpy(hb + 248, &c, 8);
        CHECKF(kv_hdr_decode(hb, &h, err, sizeof err) != 0, "%s accepted", bad[k].why);
    }
    /* an empty family and quant are fine; a zero-length payload too */
    free(f);
    m = meta(FP_B, NULL, NULL, 1, 0);
    f = kv_file_build(&m, ids, pay, &len);
    CHECK(kv_file_parse(f, len, &h, &p, err, sizeof err) == 0 && !h.family[0] && !h.quant[0]);
    free(f);
    /* names and keys */
    char key[KV_KEY_LEN + 1], k2[KV_KEY_LEN + 1];
    kv_key(0x0123456789abcdefull, FP_A, key);
    CHECK(!strcmp(key, "0123456789abcdef-aaaaaaaaaaaaaaaa"));
    char name[64];
    snprintf(name, sizeof name, "%s.kv", key);
    CHECK(kv_name_is_entry(name, k2) && !strcmp(k2, key));
    CHECK(!kv_name_is_entry("0123456789abcdef-aaaaaaaaaaaaaaaa.kv.1", NULL));
    CHECK(!kv_name_is_entry("0123456789ABCDEF-aaaaaaaaaaaaaaaa.kv", NULL));
    CHECK(!kv_name_is_entry("../23456789abcdef-aaaaaaaaaaaaaaaa.kv", NULL));
    CHECK(kv_fp_ok(FP_A) && !kv_fp_ok("abc") && !kv_fp_ok(NULL));
    CHECK(kv_quant_ok("") && kv_quant_ok("IQ2_XXS-q4.k") && !kv_quant_ok("a b") &&
          !kv_quant_ok("123456789012345678901234"));
    CHECK(kv_reason_parse("periodic") == KV_REASON_PERIODIC && kv_reason_parse("x") < 0);
}

/* --- index --------------------------------------------------------------------- */

static kv_entry mk_entry(const int32_t *ids, uint32_t n, const char *fp, const char *fam)
{
    kv_entry e;
    memset(&e, 0, sizeof e);
    e.h = meta(fp, fam, "", n, 100);
    e.h.ids_hash = kv_ids_hash(ids, n);
    kv_hdr_finish(&e.h);
    kv_key(e.h.ids_hash, fp, e.key);
    e.disk_bytes = kv_disk_bytes(e.h.file_size);
    return e;
}

static void test_index(void)
{
    /* Conversations: a few base sequences, entries at random prefix lengths
     * of each, then random queries compared with a brute force. */
    enum { NB = 6, LEN = 400 };
    static int32_t base[NB][LEN];
    for (int b = 0; b < NB; b++)
        for (int i = 0; i < LEN; i++)
            base[b][i] = b < 3 && i < 50 ? i : (int32_t)rnd(1000); /* shared starts */
    kv_index x;
    kv_index_init(&x);
    struct {
        int b;
        uint32_t len;
        const char *fp;
    } st[200];
    int ns = 0;
    for (int k = 0; k < 200; k++) {
        int b = (int)rnd(NB);
        uint32_t len = 1 + rnd(LEN);
        const char *fp = rnd(4) ? FP_A : FP_B;
        kv_entry e = mk_entry(base[b], len, fp, FAM);
        int dup = kv_index_find(&x, e.key) >= 0;
        kv_index_put(&x, &e);
        if (!dup)
            st[ns++] = (typeof(st[0])){b, len, fp};
    }
    CHECK(x.n == (size_t)ns);
    for (int q = 0; q < 300; q++) {
        int b = (int)rnd(NB);
        uint32_t n = rnd(LEN + 1);
        int32_t qi[LEN + 5];
        memcpy(qi, base[b], sizeof base[b]);
        if (q % 5 == 0 && n > 2)
            qi[rnd(n)] ^= 0x40000; /* diverge somewhere */
        int cross = q % 3 == 0;
        kv_query kq = {FP_A, FAM, cross, q % 7 == 0 ? 100 : 0};
        kv_cand c[8];
        int fpm;
        size_t nc = kv_index_lookup(&x, qi, n, &kq, c, 8, &fpm);
        /* brute force: longest stored prefix matching the rules */
        uint32_t best = 0;
        int best_exact = 0, any = 0;
        for (int k = 0; k < ns; k++) {
            uint32_t L = st[k].len;
            if (L > n || L < kq.min_tokens || memcmp(base[st[k].b], qi, L * 4))
                continue;
            int exact = st[k].fp == FP_A;
            if (!exact && !cross)
                continue;
            if (!any || L > best || (L == best && exact && !best_exact)) {
                best = L;
                best_exact = exact;
            }
            any = 1;
        }
        CHECKF(any == (nc > 0), "query %d: brute %d index %zu", q, any, nc);
        if (any && nc) {
            CHECKF(c[0].len == best && c[0].exact == best_exact, "query %d: %u/%d vs %u/%d", q,
                   c[0].len, c[0].exact, best, best_exact);
            for (size_t i = 1; i < nc; i++)
                CHECK(c[i].len <= c[i - 1].len);
        }
    }
    /* fingerprint rules */
    kv_index_free(&x);
    kv_index_init(&x);
    kv_entry e = mk_entry(base[0], 100, FP_B, FAM);
    kv_index_put(&x, &e);
    kv_cand c[4];
    int fpm;
    kv_query q1 = {FP_A, FAM, 0, 0};
    CHECK(kv_index_lookup(&x, base[0], LEN, &q1, c, 4, &fpm) == 0 && fpm == 1);
    kv_query q2 = {FP_A, FAM, 1, 0};
    CHECK(kv_index_lookup(&x, base[0], LEN, &q2, c, 4, &fpm) == 1 && !c[0].exact);
    kv_query q3 = {FP_A, FP_B, 1, 0}; /* another family */
    CHECK(kv_index_lookup(&x, base[0], LEN, &q3, c, 4, &fpm) == 0 && fpm == 1);
    kv_query q4 = {FP_A, NULL, 1, 0}; /* no family given: exact only */
    CHECK(kv_index_lookup(&x, base[0], LEN, &q4, c, 4, &fpm) == 0);
    kv_entry e2 = mk_entry(base[0], 100, FP_A, FAM); /* same ids, exact model */
    kv_index_put(&x, &e2);
    CHECK(kv_index_lookup(&x, base[0], LEN, &q2, c, 4, &fpm) == 2 && c[0].exact && !c[1].exact);
    /* remove: lengths and bytes follow */
    uint64_t bytes = x.bytes;
    kv_index_remove(&x, kv_index_find(&x, e2.key));
    CHECK(x.n == 1 && x.bytes == bytes - e2.disk_bytes && x.nlens == 1);
    kv_index_remove(&x, 0);
    CHECK(x.n == 0 && x.nlens == 0 && x.bytes == 0);
    kv_index_free(&x);
}

/* 100k-token query, 3000 entries at distinct lengths along it and on
 * unrelated sequences: the lookup must be cheap. */
static void test_index_scale(void)
{
    enum { QN = 100000, NE = 3000 };
    int32_t *q = ds4_xmalloc(QN * sizeof *q);
    int32_t *other = ds4_xmalloc(QN * sizeof *other);
    for (int i = 0; i < QN; i++) {
        q[i] = (int32_t)rnd(129280);
        other[i] = (int32_t)rnd(129280);
    }
    kv_index x;
    kv_index_init(&x);
    for (int k = 0; k < NE; k++) {
        uint32_t L = 1 + rnd(QN);
        kv_entry e = mk_entry(k % 2 ? q : other, L, FP_A, NULL);
        kv_index_put(&x, &e);
    }
    kv_entry top = mk_entry(q, QN - 7, FP_A, NULL);
    kv_index_put(&x, &top);
    kv_query kq = {FP_A, NULL, 0, 0};
    kv_cand c[4];
    uint64_t t0 = ds4_now_ns();
    size_t nc = 0;
    for (int r = 0; r < 20; r++)
        nc = kv_index_lookup(&x, q, QN, &kq, c, 4, NULL);
    double ms = (double)(ds4_now_ns() - t0) / 1e6 / 20;
    CHECK(nc >= 1 && c[0].len == QN - 7);
    printf("index: 100k-token lookup over %zu entries (%zu lengths): %.3f ms\n", x.n, x.nlens, ms);
    CHECKF(ms < 20.0, "lookup took %.3f ms", ms);
    kv_index_free(&x);
    free(q);
    free(other);
}

static void test_victim(void)
{
    kv_index x;
    kv_index_init(&x);
    int32_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    uint64_t now = 1000ull * 1000000000ull * 3600;
    /* a: cheap per byte; b: expensive per byte; c: cheap but many hits;
     * d: expensive per byte but untouched for days */
    kv_entry a = mk_entry(ids, 1, FP_A, NULL), b = mk_entry(ids, 2, FP_A, NULL),
             c = mk_entry(ids, 3, FP_A, NULL), d = mk_entry(ids, 4, FP_A, NULL);
    a.h.prefill_us = 1000, a.disk_bytes = 1 << 20, a.last_used_ns = now;
    b.h.prefill_us = 100000, b.disk_bytes = 1 << 20, b.last_used_ns = now;
    c.h.prefill_us = 1000, c.disk_bytes = 1 << 20, c.last_used_ns = now, c.hits = 500;
    d.h.prefill_us = 100000, d.disk_bytes = 1 << 20;
    d.last_used_ns = now - 72ull * 3600 * 1000000000ull;
    kv_index_put(&x, &a);
    kv_index_put(&x, &b);
    kv_index_put(&x, &c);
    kv_index_put(&x, &d);
    const double hl = 6 * 3600;
    /* 72 h at a 6 h half-life: d's value is 100x b's / 4096 < a's */
    int32_t v = kv_index_victim(&x, now, hl, NULL);
    CHECK(v >= 0 && !strcmp(x.e[v].key, d.key));
    CHECK(kv_index_victim(&x, now, hl, d.key) >= 0 &&
          !strcmp(x.e[kv_index_victim(&x, now, hl, d.key)].key, a.key));
    kv_index_remove(&x, v);
    v = kv_index_victim(&x, now, hl, NULL);
    CHECK(!strcmp(x.e[v].key, a.key));
    kv_index_remove(&x, v);
    v = kv_index_victim(&x, now, hl, NULL); /* c: 1 ms x 501 hits > b: 100 ms */
    CHECK(!strcmp(x.e[v].key, b.key));
    /* unknown cost: tokens x the mean ms/token of the others */
    kv_entry u = mk_entry(ids, 5, FP_A, NULL);
    u.h.prefill_us = 0;
    u.disk_bytes = 1 << 20;
    u.last_used_ns = now;
    kv_index_put(&x, &u);
    double mpt = kv_index_ms_per_token(&x);
    CHECK(mpt > 0);
    CHECK(kv_index_value(&x, &u, now, hl, mpt) > 0);
    kv_index_free(&x);
}

/* --- store --------------------------------------------------------------------- */

struct msink {
    void *last;
    int allocs, discards;
};
static void *m_alloc(void *arg, uint64_t size, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    struct msink *m = arg;
    m->allocs++;
    m->last = ds4_xmalloc(size ? (size_t)size : 1);
    return m->last;
}
static void m_discard(void *arg, void *dest)
{
    struct msink *m = arg;
    m->discards++;
    free(dest);
}

static kv_store_cfg cfg_budget(uint64_t budget)
{
    kv_store_cfg c = {budget, 6 * 3600, 0, NULL};
    return c;
}

static int put(kv_store *s, const int32_t *ids, size_t n, const void *p, size_t len,
               const char *fp, uint64_t prefill_us, kv_put_res *res)
{
    kv_put_req r = {.ids = ids, .n = n, .payload = p, .src_fd = -1, .len = len,
                    .expect_checksum = ds4_hash64(p, len, 0), .fingerprint = fp, .family = FAM,
                    .quant = "q2", .reason = KV_REASON_COLD, .prefill_us = prefill_us};
    char err[256] = "";
    int rc = kv_store_put(s, &r, res, err, sizeof err);
    if (rc)
        fprintf(stderr, "put: %s\n", err);
    return rc;
}

/* Look up ids; returns the served prefix length (0 miss) and checks the
 * payload equals want (when want != NULL). */
static uint32_t look(kv_store *s, const int32_t *ids, size_t n, const char *fp, const void *want,
                     size_t wlen, const char **reason)
{
    struct msink m = {0};
    kv_sink sk = {m_alloc, m_discard, &m};
    kv_query q = {fp, FAM, 0, 0};
    kv_found f;
    const char *r;
    char err[256];
    int rc = kv_store_lookup(s, ids, n, &q, &sk, &f, &r, err, sizeof err);
    if (reason)
        *reason = r;
    if (rc <= 0)
        return 0;
    if (want)
        CHECK(f.h.payload_size == wlen && memcmp(f.dest, want, wlen) == 0);
    uint32_t L = f.h.n_tokens;
    free(f.dest);
    return L;
}

static void path_of(char *out, size_t len, const char *dir, const char *key)
{
    snprintf(out, len, "%s/%s.kv", dir, key);
}

static void test_store(void)
{
    char dir[] = "/tmp/ds4-kvstore-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[256];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    kv_store s;
    char err[256] = "";
    kv_store_cfg cfg = cfg_budget(0);
    CHECKF(kv_store_open(&s, sub, 1, &cfg, err, sizeof err) == 0, "%s", err);
    enum { N = 3000 };
    static int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)rnd(129280);
    static uint8_t pay[3][20000];
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < sizeof pay[k]; i++)
            pay[k][i] = (uint8_t)rnd(256);
    kv_put_res r1, r2, r3;
    CHECK(put(&s, ids, 1000, pay[0], sizeof pay[0], FP_A, 5000, &r1) == KV_OK);
    CHECK(put(&s, ids, 2000, pay[1], sizeof pay[1], FP_A, 9000, &r2) == KV_OK);
    CHECK(put(&s, ids, 2000, pay[2], 777, FP_B, 9000, &r3) == KV_OK);
    CHECK(s.idx.n == 3 && r1.bytes == kv_payload_offset(1000) + sizeof pay[0]);
    /* second lock on the same directory fails */
    kv_store s2;
    CHECK(kv_store_open(&s2, sub, 0, &cfg, err, sizeof err) != 0 && strstr(err, "in use"));
    /* lookups: the longest prefix of the right model */
    const char *why;
    CHECK(look(&s, ids, N, FP_A, pay[1], sizeof pay[1], NULL) == 2000);
    CHECK(look(&s, ids, 1999, FP_A, pay[0], sizeof pay[0], NULL) == 1000);
    CHECK(look(&s, ids, 999, FP_A, NULL, 0, &why) == 0 && !strcmp(why, "none"));
    CHECK(look(&s, ids, N, FP_B, pay[2], 777, NULL) == 2000);
    CHECK(look(&s, ids + 1, N - 1, FP_A, NULL, 0, &why) == 0);
    /* the same checkpoint again is a no-op, a different one replaces it */
    kv_put_res rr;
    CHECK(put(&s, ids, 1000, pay[0], sizeof pay[0], FP_A, 5000, &rr) == KV_OK && rr.unchanged);
    CHECK(put(&s, ids, 1000, pay[2], 500, FP_A, 5000, &rr) == KV_OK && !rr.unchanged &&
          !strcmp(rr.key, r1.key));
    CHECK(look(&s, ids, 1500, FP_A, pay[2], 500, NULL) == 1000 && s.idx.n == 3);
    /* a wrong declared checksum is refused and leaves nothing behind */
    kv_put_req bad = {.ids = ids, .n = 10, .payload = pay[0], .src_fd = -1, .len = 100,
                      .expect_checksum = 12345, .fingerprint = FP_A};
    CHECK(kv_store_put(&s, &bad, &rr, err, sizeof err) == KV_ERR_CHECKSUM);
    CHECK(count_files(s.dir, ".tmp-") == 0 && s.idx.n == 3);
    uint64_t hits_before = s.idx.e[kv_index_find(&s.idx, r2.key)].hits;
    CHECK(hits_before >= 1);
    kv_store_close(&s);

    /* reopen: same entries, hits remembered; then damage files on disk */
    CHECK(kv_store_open(&s, sub, 0, &cfg, err, sizeof err) == 0 && s.idx.n == 3);
    /* (hits live in a user xattr: only where the filesystem has them) */
    int xattrs = setxattr(s.dir, "user.ds4kv.probe", "1", 1, 0) == 0 || errno != ENOTSUP;
    CHECK(s.idx.e[kv_index_find(&s.idx, r2.key)].hits == (xattrs ? hits_before : 0));
    char p[PATH_MAX + 64];
    path_of(p, sizeof p, s.dir, r2.key);
    int fd = open(p, O_RDWR);
    CHECK(fd >= 0);
    uint8_t byte;
    uint64_t at = kv_payload_offset(2000) + 1234;
    CHECK(pread(fd, &byte, 1, (off_t)at) == 1);
    byte ^= 1;
    CHECK(pwrite(fd, &byte, 1, (off_t)at) == 1);
    close(fd);
    /* payload damage is found on read: quarantined, the shorter one served */
    CHECK(look(&s, ids, N, FP_A, pay[2], 500, NULL) == 1000);
    CHECK(s.idx.n == 2 && access(p, F_OK) != 0);
    char q[PATH_MAX + 64];
    snprintf(q, sizeof q, "%s/quarantine", s.dir);
    CHECK(count_files(q, "") == 1);
    kv_store_close(&s);

    /* truncated, foreign, misnamed, temp leftovers, symlink: all handled at
     * open */
    path_of(p, sizeof p, sub, r3.key);
    CHECK(truncate(p, 5000) == 0);
    char f2[PATH_MAX + 64];
    snprintf(f2, sizeof f2, "%s/notes.txt", sub);
    FILE *fp = fopen(f2, "w");
    fputs("hello", fp);
    fclose(fp);
    snprintf(f2, sizeof f2, "%s/%s.kv", sub, "0000000000000000-aaaaaaaaaaaaaaaa");
    path_of(p, sizeof p, sub, r1.key);
    CHECK(link(p, f2) == 0); /* good file under the wrong name */
    snprintf(f2, sizeof f2, "%s/.tmp-xyz-1-1", sub);
    fp = fopen(f2, "w");
    fputs("partial", fp);
    fclose(fp);
    snprintf(f2, sizeof f2, "%s/1111111111111111-aaaaaaaaaaaaaaaa.kv", sub);
    CHECK(symlink(p, f2) == 0);
    CHECK(kv_store_open(&s, sub, 0, &cfg, err, sizeof err) == 0);
    CHECKF(s.idx.n == 1 && s.opened_quarantined == 4 && s.opened_tmp_removed == 1,
           "n %zu q %u t %u", s.idx.n, s.opened_quarantined, s.opened_tmp_removed);
    CHECK(count_files(q, "") == 5 && count_files(s.dir, ".tmp-") == 0);
    CHECK(look(&s, ids, N, FP_A, pay[2], 500, NULL) == 1000);
    CHECK(look(&s, ids, N, FP_B, NULL, 0, &why) == 0);
    CHECK(s.quarantine_bytes > 0);
    kv_store_close(&s);

    /* budget: 3 entries' worth; quarantined files go first, then the least
     * valuable entries; never above the budget */
    uint64_t one = kv_disk_bytes(kv_payload_offset(100) + 8000);
    cfg = cfg_budget(3 * one);
    CHECK(kv_store_open(&s, sub, 0, &cfg, err, sizeof err) == 0);
    CHECK(kv_store_used(&s) <= 3 * one);
    for (int k = 0; k < 12; k++) {
        kv_put_res r;
        uint8_t b[8000];
        memset(b, k, sizeof b);
        CHECK(put(&s, ids + k * 100, 100, b, sizeof b, FP_A, k == 2 ? 900000 : 1000, &r) == KV_OK);
        CHECKF(kv_store_used(&s) <= 3 * one, "used %llu", (unsigned long long)kv_store_used(&s));
    }
    CHECK(count_files(q, "") == 0 && s.quarantine_bytes == 0);
    /* the expensive one (k == 2) survived the churn */
    CHECK(look(&s, ids + 200, 100, FP_A, NULL, 0, NULL) == 100);
    CHECK(look(&s, ids + 1100, 100, FP_A, NULL, 0, NULL) == 100); /* newest */
    CHECK(look(&s, ids + 300, 100, FP_A, NULL, 0, NULL) == 0);
    /* larger than the whole budget */
    uint8_t *huge = ds4_xcalloc(1, 4 * one);
    kv_put_req hr = {.ids = ids, .n = 10, .payload = huge, .src_fd = -1, .len = 4 * one,
                     .fingerprint = FP_A};
    CHECK(kv_store_put(&s, &hr, &rr, err, sizeof err) == KV_ERR_TOO_LARGE);
    free(huge);
    kv_store_close(&s);
    /* reopening with a smaller budget evicts down to it */
    cfg = cfg_budget(one);
    CHECK(kv_store_open(&s, sub, 0, &cfg, err, sizeof err) == 0 && s.idx.n == 1 &&
          s.opened_evicted == 2 && kv_store_used(&s) <= one);
    kv_store_close(&s);
    /* a missing directory without create */
    snprintf(f2, sizeof f2, "%s/none", dir);
    CHECK(kv_store_open(&s, f2, 0, &cfg, err, sizeof err) != 0);
    rm_rf(dir);
}

int main(void)
{
    ds4_log_set_level(getenv("DS4_TEST_VERBOSE") ? DS4_LOG_DEBUG : DS4_LOG_ERROR);
    test_hash_stream();
    test_format();
    test_index();
    test_index_scale();
    test_victim();
    test_store();
    return test_main_end("test_kvd_store");
}
