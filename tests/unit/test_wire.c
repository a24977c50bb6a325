/* test_wire.c - wire protocol: message table sanity, golden frames (encode
 * and decode against tests/data/wire-golden), every decoder rejection,
 * seeded random mutations, builder checks, and a live ROUTER/DEALER test
 * over ipc:// (request/reply, a 1000-event stream, stray clients).
 * DS4W_WRITE_GOLDEN=1 rewrites the golden files instead of comparing. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <unistd.h>

#include "common/util.h"
#include "common/wire.h"
#include "test.h"

static const uint8_t FIXED_ID[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                                     0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb,
                                     0xcc, 0xdd, 0xee, 0xff};

/* xorshift64* for seeded random inputs. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* ---- table sanity ------------------------------------------------------- */

/* Ids and names unique, optional frames trailing, <= 1 JSON frame, field
 * rows grouped and attached to a type that has a JSON frame; every name
 * documented in docs/PROTOCOL.md. */
static void test_table(void)
{
    size_t n;
    const ds4w_msgdef *d = ds4w_msgdefs(&n);
    CHECK(n >= 29);
    char *doc = test_read_file("docs/PROTOCOL.md", NULL);
    CHECK(doc != NULL);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            CHECKF(d[i].id != d[j].id, "%s", d[i].name);
            CHECKF(strcmp(d[i].name, d[j].name) != 0, "%s", d[i].name);
        }
        CHECK(ds4w_msgdef_find(d[i].id) == &d[i]);
        CHECK(ds4w_msgdef_by_name(d[i].name) == &d[i]);
        int seen_opt = 0, njson = 0;
        for (int k = 0; k < d[i].nmax; k++) {
            int f = d[i].frames[k];
            CHECKF(f != DS4W_FK_NONE, "%s: hole in frame list", d[i].name);
            if (f & DS4W_FK_OPT)
                seen_opt = 1;
            else
                CHECKF(!seen_opt, "%s: required frame after optional",
                       d[i].name);
            njson += (f & ~DS4W_FK_OPT) == DS4W_FK_JSON;
        }
        CHECKF(njson <= 1, "%s", d[i].name);
        size_t nf;
        const ds4w_field *fl = ds4w_msg_fields(d[i].id, &nf);
        CHECKF(nf == 0 || njson == 1, "%s has fields but no JSON frame",
               d[i].name);
        for (size_t k = 0; fl && k < nf; k++)
            for (size_t q = 0; q < k; q++)
                CHECKF(strcmp(fl[k].name, fl[q].name) != 0, "%s.%s",
                       d[i].name, fl[k].name);
        char head[64];
        snprintf(head, sizeof head, "\n### %s\n", d[i].name);
        CHECKF(doc && strstr(doc, head), "docs/PROTOCOL.md lacks '### %s'",
               d[i].name);
    }
    /* a type's field rows form one run: count rows per type two ways */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nf;
        ds4w_msg_fields(d[i].id, &nf);
        total += nf;
    }
#define COUNT_ROW(msg, fname, jt, req) +1
    size_t rows = 0 DS4W_FIELDS(COUNT_ROW);
#undef COUNT_ROW
    CHECKF(total == rows, "field rows reachable: %zu of %zu (rows of one "
           "message must be adjacent in wire_msgs.h)", total, rows);
    for (int c = 0; c < DS4W_E_COUNT; c++) {
        CHECK(ds4w_err_from_name(ds4w_err_name(c)) == c);
        if (c && doc) {
            char code[64];
            snprintf(code, sizeof code, "`%s`", ds4w_err_name(c));
            CHECKF(strstr(doc, code) != NULL, "docs lack %s", code);
        }
    }
    CHECK(strcmp(ds4w_err_name(DS4W_E_COUNT), "unknown") == 0);
    CHECK(strcmp(ds4w_err_name(-1), "unknown") == 0);
    CHECK(ds4w_err_from_name("nope") == -1);
    CHECK(ds4w_err_http_status(DS4W_E_BUSY) == 429);
    CHECK(ds4w_err_http_status(DS4W_E_UNAVAILABLE) == 503);
    CHECK(ds4w_err_http_status(DS4W_E_CONTEXT_OVERFLOW) == 400);
    CHECK(ds4w_err_http_status(DS4W_E_BAD_FRAME) == 500);
    CHECK(strcmp(ds4w_type_name(0x7777), "?") == 0);
    CHECK(strcmp(ds4w_type_name(DS4W_T_GEN_SUBMIT), "GEN_SUBMIT") == 0);
    free(doc);
}

/* ---- UUIDs --------------------------------------------------------------- */

static void test_uuid(void)
{
    uint8_t a[16], b[16], c[16];
    char s[DS4W_UUID_STR];
    ds4w_uuid_new(a);
    ds4w_uuid_new(b);
    CHECK(memcmp(a, b, 16) != 0);
    ds4w_uuid_format(a, s);
    CHECK(strlen(s) == 36 && s[8] == '-' && s[13] == '-');
    memset(c, 0x5a, 16);
    CHECK(ds4w_uuid_parse(s, c) == 0 && memcmp(a, c, 16) == 0);
    ds4w_uuid_format(FIXED_ID, s);
    CHECK(strcmp(s, "00112233-4455-6677-8899-aabbccddeeff") == 0);
    CHECK(ds4w_uuid_parse("00112233-4455-6677-8899-aabbccddeef", c) == -1);
    CHECK(ds4w_uuid_parse("00112233-4455-6677-8899-aabbccddeeff0", c) == -1);
    CHECK(ds4w_uuid_parse("0011223x-4455-6677-8899-aabbccddeeff", c) == -1);
    CHECK(ds4w_uuid_parse("", c) == -1);
    CHECK(ds4w_uuid_parse(NULL, c) == -1);
}

/* ---- golden frames ------------------------------------------------------- */

#define NGOLDEN 12

static ds4w_shmref sample_ref(void)
{
    ds4w_shmref r;
    memset(&r, 0, sizeof r);
    strcpy(r.name, "/ds4-1000-main-kvx.7");
    r.offset = 4096;
    r.length = 0x123456789ULL;
    r.generation = 3;
    r.checksum = 0xfedcba9876543210ULL;
    return r;
}

/* Build golden message i into o; returns its file stem. */
static const char *golden_build(int i, ds4w_out *o)
{
    json_t *j = NULL;
    const char *name = NULL;
    switch (i) {
    case 0:
        ds4w_out_init(o, DS4W_T_PING, FIXED_ID);
        name = "ping";
        break;
    case 1:
        ds4w_out_init(o, DS4W_T_PONG, FIXED_ID);
        j = json_pack("{s:s,s:i,s:s,s:i,s:b}", "daemon", "tokenizerd", "pid",
                      4242, "version", "0.1.0", "proto", 1, "ready", 1);
        ds4w_out_json(o, j);
        name = "pong";
        break;
    case 2:
        ds4w_out_init(o, DS4W_T_ERROR, FIXED_ID);
        o->flags = DS4W_FLAG_END;
        j = ds4w_error_json(DS4W_E_BUSY, "queue full (64 jobs)");
        json_object_set_new(j, "retry_after_ms", json_integer(1000));
        ds4w_out_json(o, j);
        name = "error-busy";
        break;
    case 3:
        ds4w_out_init(o, DS4W_T_TOKENIZE, FIXED_ID);
        j = json_pack("{s:s,s:s}", "text", "Hello, \xe4\xb8\x96\xe7\x95\x8c",
                      "mode", "plain");
        ds4w_out_json(o, j);
        name = "tokenize";
        break;
    case 4: {
        static const int32_t ids[] = {19923, 14, 5, -1, 129279, 0x7fffffff};
        ds4w_out_init(o, DS4W_T_TOKENS, FIXED_ID);
        j = json_pack("{s:i}", "count", 6);
        ds4w_out_json(o, j);
        ds4w_out_i32(o, ids, 6);
        name = "tokens";
        break;
    }
    case 5: {
        static const int32_t prompt[] = {0, 128803, 19923, 128804};
        static const int32_t forced[] = {128821, 1, 2};
        ds4w_out_init(o, DS4W_T_GEN_SUBMIT, FIXED_ID);
        o->flags = DS4W_FLAG_TEST;
        j = json_pack("{s:i,s:f,s:f,s:i,s:[i,i]}", "max_tokens", 64,
                      "temperature", 0.5, "top_p", 0.75, "seed", 7,
                      "stop_ids", 1, 128804);
        ds4w_out_json(o, j);
        ds4w_out_i32(o, prompt, 4);
        ds4w_out_i32(o, forced, 3);
        name = "gen-submit";
        break;
    }
    case 6: {
        static const int32_t tok[] = {4242};
        ds4w_out_init(o, DS4W_T_GEN_EVENT, FIXED_ID);
        o->seq = 17;
        ds4w_out_i32(o, tok, 1);
        j = json_pack("{s:[{s:i,s:f,s:[[i,f]]}]}", "logprobs", "id", 4242,
                      "logprob", -0.25, "top", 4242, -0.25);
        ds4w_out_json(o, j);
        name = "gen-event";
        break;
    }
    case 7:
        ds4w_out_init(o, DS4W_T_GEN_DONE, FIXED_ID);
        o->seq = 18;
        o->flags = DS4W_FLAG_END;
        j = json_pack("{s:s,s:{s:i,s:i,s:i}}", "finish_reason", "length",
                      "usage", "prompt_tokens", 4, "cached_tokens", 0,
                      "completion_tokens", 16);
        ds4w_out_json(o, j);
        name = "gen-done";
        break;
    case 8: {
        ds4w_shmref r = sample_ref();
        ds4w_out_init(o, DS4W_T_KV_FOUND, FIXED_ID);
        j = json_pack("{s:i,s:s,s:s}", "tokens", 2048, "key", "ab12",
                      "fingerprint", "cd34");
        ds4w_out_json(o, j);
        ds4w_out_shmref(o, &r);
        name = "kv-found-shm";
        break;
    }
    case 9: {
        static const uint8_t blob[] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0x01};
        ds4w_out_init(o, DS4W_T_KV_FOUND, FIXED_ID);
        j = json_pack("{s:i,s:s,s:s}", "tokens", 2048, "key", "ab12",
                      "fingerprint", "cd34");
        ds4w_out_json(o, j);
        ds4w_out_bytes(o, blob, sizeof blob);
        name = "kv-found-inline";
        break;
    }
    case 10: {
        static const float lg[] = {1.0f, -2.5f, 0.0f, -1e30f};
        ds4w_out_init(o, DS4W_T_LOGITS, FIXED_ID);
        j = json_pack("{s:i}", "n_vocab", 4);
        ds4w_out_json(o, j);
        ds4w_out_f32(o, lg, 4);
        name = "logits";
        break;
    }
    case 11: {
        static const int32_t ids[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
        ds4w_out_init(o, DS4W_T_DETOKENIZE, FIXED_ID);
        j = json_pack("{s:b}", "final", 0);
        ds4w_out_json(o, j);
        ds4w_out_i32(o, ids, 10);
        ds4w_out_bytes(o, "\xe4\xb8", 2);
        name = "detokenize";
        break;
    }
    }
    json_decref(j);
    return name;
}

/* Frames as golden text: a comment line, then one hex line per frame. */
static char *frames_hex(const char *title, const ds4w_buf *fr, size_t n)
{
    char *s = NULL;
    size_t sl = 0;
    FILE *f = open_memstream(&s, &sl);
    fprintf(f, "# %s: golden frames, one per line, hex ('-' = empty)\n",
            title);
    for (size_t i = 0; i < n; i++) {
        if (!fr[i].len)
            fputc('-', f);
        for (size_t k = 0; k < fr[i].len; k++)
            fprintf(f, "%02x", fr[i].data[k]);
        fputc('\n', f);
    }
    fclose(f);
    return s;
}

/* Parse golden text back into frames (bytes in *store). Returns count. */
static size_t hex_frames(const char *text, uint8_t *store, ds4w_buf *fr,
                         size_t maxf)
{
    size_t n = 0;
    const char *p = text;
    while (*p && n < maxf) {
        const char *e = strchr(p, '\n');
        if (!e)
            e = p + strlen(p);
        if (*p != '#') {
            fr[n].data = store;
            fr[n].len = 0;
            for (const char *q = p; q + 1 < e && *q != '-'; q += 2) {
                unsigned v;
                sscanf(q, "%2x", &v);
                *store++ = (uint8_t)v;
                fr[n].len++;
            }
            n++;
        }
        p = *e ? e + 1 : e;
    }
    return n;
}

/* Encode each golden message, compare with (or write) its file, decode the
 * file and check the decoded fields. */
static void test_golden(void)
{
    int write = getenv("DS4W_WRITE_GOLDEN") != NULL;
    for (int i = 0; i < NGOLDEN; i++) {
        ds4w_out o;
        const char *stem = golden_build(i, &o);
        ds4w_buf fr[DS4W_MAX_PAYLOAD + 1];
        size_t n = 0;
        char err[256];
        int rc = ds4w_out_encode(&o, fr, &n, err, sizeof err);
        CHECKF(rc == 0, "%s: %s", stem, err);
        if (rc) {
            ds4w_out_free(&o);
            continue;
        }
        const ds4w_msgdef *d = ds4w_msgdef_find(o.type);
        char *hex = frames_hex(d->name, fr, n);
        char rel[128];
        snprintf(rel, sizeof rel, "wire-golden/%s.hex", stem);
        const char *path = test_data_path(rel);
        if (write) {
            FILE *f = fopen(path, "w");
            CHECKF(f != NULL, "%s", path);
            if (f) {
                fputs(hex, f);
                fclose(f);
            }
        }
        char *want = test_read_file(path, NULL);
        CHECKF(want && strcmp(want, hex) == 0, "%s differs:\n%s", path, hex);
        if (want) {
            uint8_t *store = malloc(strlen(want) / 2 + 1);
            ds4w_buf gf[8];
            size_t gn = hex_frames(want, store, gf, 8);
            ds4w_msg m;
            rc = ds4w_decode_frames(gf, gn, NULL, &m, err, sizeof err);
            CHECKF(rc == 0, "%s: %s", stem, err);
            CHECK(m.type == o.type && m.flags == o.flags && m.seq == o.seq);
            CHECK(memcmp(m.reqid, FIXED_ID, 16) == 0);
            CHECK(m.nframes == o.nframes);
            for (int k = 0; k < m.nframes && k < o.nframes; k++)
                CHECKF(m.frame[k].len == o.len[k] &&
                           memcmp(m.frame[k].data, o.data[k], o.len[k]) == 0,
                       "%s frame %d", stem, k);
            ds4w_msg_close(&m);
            free(store);
        }
        free(want);
        free(hex);
        ds4w_out_free(&o);
    }
}

/* The header layout checked byte by byte, independent of the golden files. */
static void test_header_bytes(void)
{
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_DONE, FIXED_ID);
    o.flags = DS4W_FLAG_END;
    o.seq = 0x01020304;
    json_t *j = json_pack("{s:s,s:{}}", "finish_reason", "stop", "usage");
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_buf fr[5];
    size_t n;
    CHECK(ds4w_out_encode(&o, fr, &n, NULL, 0) == 0);
    static const uint8_t want[32] = {
        'D', 'S', '4', 'W', 1, 0, 0x04, 0x02, 2, 0, 0, 0, 4, 3, 2, 1,
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
        0xbb, 0xcc, 0xdd, 0xee, 0xff};
    CHECK(n == 2 && fr[0].len == 32 && memcmp(fr[0].data, want, 32) == 0);
    CHECK(fr[1].len == strlen("{\"finish_reason\":\"stop\",\"usage\":{}}"));
    ds4w_out_free(&o);
}

/* ---- decoding: typed accessors ------------------------------------------- */

static void test_accessors(void)
{
    int32_t ids[300];
    float fl[37];
    for (int i = 0; i < 300; i++)
        ids[i] = (int32_t)rnd();
    for (int i = 0; i < 37; i++)
        fl[i] = (float)((int64_t)rnd() % 100000) / 7.0f;
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_KV_PUT, FIXED_ID);
    json_t *j = json_pack("{s:s}", "fingerprint", "abc");
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_out_i32(&o, ids, 300);
    ds4w_shmref r = sample_ref();
    ds4w_out_shmref(&o, &r);
    ds4w_buf fr[5];
    size_t n;
    char err[256];
    CHECKF(ds4w_out_encode(&o, fr, &n, err, sizeof err) == 0, "%s", err);
    ds4w_msg m;
    CHECKF(ds4w_decode_frames(fr, n, NULL, &m, err, sizeof err) == 0, "%s",
           err);
    CHECK(m.json && m.json_frame == 0);
    CHECK(ds4w_msg_count(&m, 1) == 300);
    CHECK(ds4w_msg_count(&m, 0) == 0 && ds4w_msg_count(&m, 7) == 0);
    int32_t back[300];
    memset(back, 0xa5, sizeof back);
    CHECK(ds4w_msg_i32(&m, 1, back) == 300);
    CHECK(memcmp(back, ids, sizeof ids) == 0);
    CHECK(ds4w_msg_i32(&m, 0, back) == 0);
    ds4w_shmref r2;
    memset(&r2, 0xa5, sizeof r2);
    CHECK(ds4w_msg_shmref(&m, 2, &r2) == 0);
    CHECK(strcmp(r2.name, r.name) == 0 && r2.offset == r.offset &&
          r2.length == r.length && r2.generation == r.generation &&
          r2.checksum == r.checksum);
    CHECK(ds4w_msg_shmref(&m, 1, &r2) == -1);
    CHECK(ds4w_msg_frame(&m, 3).data == NULL);
    CHECK(!(m.flags & DS4W_FLAG_INLINE));
    ds4w_msg_close(&m);
    ds4w_out_free(&o);

    ds4w_out_init(&o, DS4W_T_LOGITS, NULL);
    j = json_pack("{s:i}", "n_vocab", 37);
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_out_f32(&o, fl, 37);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == 0);
    CHECK(ds4w_decode_frames(fr, n, NULL, &m, err, sizeof err) == 0);
    float fb[37];
    memset(fb, 0xa5, sizeof fb);
    CHECK(ds4w_msg_f32(&m, 1, fb) == 37 && memcmp(fb, fl, sizeof fl) == 0);
    CHECK(ds4w_msg_f32(&m, 0, fb) == 0);
    ds4w_msg_close(&m);
    ds4w_out_free(&o);
}

/* ---- decoding: rejections --------------------------------------------------- */

/* Raw header bytes for a type/flags/version. */
static void mkhdr(uint8_t h[32], uint16_t ver, uint16_t type, uint32_t flags)
{
    memcpy(h, "DS4W", 4);
    h[4] = (uint8_t)ver, h[5] = (uint8_t)(ver >> 8);
    h[6] = (uint8_t)type, h[7] = (uint8_t)(type >> 8);
    for (int i = 0; i < 4; i++)
        h[8 + i] = (uint8_t)(flags >> (8 * i));
    memset(h + 12, 0, 4);
    memcpy(h + 16, FIXED_ID, 16);
}

/* Decode frames given as (ptr,len) pairs; expect code and a substring. */
static void expect(int want, const char *needle, const ds4w_limits *lim,
                   size_t n, ...)
{
    ds4w_buf fr[12];
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        fr[i].data = va_arg(ap, const uint8_t *);
        fr[i].len = va_arg(ap, size_t);
    }
    va_end(ap);
    ds4w_msg m;
    char err[300];
    memset(err, 0x5a, sizeof err);
    int rc = ds4w_decode_frames(fr, n, lim, &m, err, sizeof err);
    CHECKF(rc == want, "want %s got %s (%s)", ds4w_err_name(want),
           ds4w_err_name(rc), rc ? err : "");
    CHECKF(!needle || strstr(err, needle), "'%s' not in '%s'", needle, err);
    CHECK(strlen(err) < sizeof err);
    if (rc == 0)
        CHECK(m.def != NULL);
    ds4w_msg_close(&m);
}

#define B(s) (const uint8_t *)(s), (size_t)(sizeof(s) - 1)

static void test_rejections(void)
{
    uint8_t h[40], hp[32];
    mkhdr(hp, 1, DS4W_T_PING, 0);
    /* header */
    expect(DS4W_E_BAD_FRAME, "empty message", NULL, 0);
    expect(DS4W_E_BAD_FRAME, "magic", NULL, 1, B("DS4X0123456789012345678901234567"));
    expect(DS4W_E_BAD_FRAME, "magic", NULL, 1, B("DS"));
    expect(DS4W_E_BAD_FRAME, "magic", NULL, 1, (const uint8_t *)"", (size_t)0);
    expect(DS4W_E_BAD_FRAME, "31 bytes", NULL, 1, hp, (size_t)31);
    memcpy(h, hp, 32);
    memset(h + 32, 0, 8);
    expect(DS4W_E_BAD_FRAME, "40 bytes", NULL, 1, h, (size_t)40);
    expect(DS4W_OK, NULL, NULL, 1, hp, (size_t)32);
    mkhdr(h, 2, DS4W_T_PING, 0);
    expect(DS4W_E_UNSUPPORTED_VERSION, "version 2", NULL, 1, h, (size_t)32);
    expect(DS4W_E_UNSUPPORTED_VERSION, "version 2", NULL, 1, h, (size_t)40);
    mkhdr(h, 0, DS4W_T_PING, 0);
    expect(DS4W_E_UNSUPPORTED_VERSION, "version 0", NULL, 1, h, (size_t)32);
    {   /* the request id of an unsupported version is still echoed */
        ds4w_msg m;
        ds4w_buf f = {h, 32};
        mkhdr(h, 9, DS4W_T_PING, 0);
        CHECK(ds4w_decode_frames(&f, 1, NULL, &m, NULL, 0) ==
              DS4W_E_UNSUPPORTED_VERSION);
        CHECK(m.hdr_ok && memcmp(m.reqid, FIXED_ID, 16) == 0);
        ds4w_msg_close(&m);
        mkhdr(h, 1, 0x0999, 0);
        CHECK(ds4w_decode_frames(&f, 1, NULL, &m, NULL, 0) ==
              DS4W_E_UNKNOWN_TYPE);
        CHECK(m.hdr_ok && m.type == 0x0999);
        ds4w_msg_close(&m);
    }
    mkhdr(h, 1, 0x0999, 0);
    expect(DS4W_E_UNKNOWN_TYPE, "0x0999", NULL, 1, h, (size_t)32);
    mkhdr(h, 1, 0, 0);
    expect(DS4W_E_UNKNOWN_TYPE, "0x0000", NULL, 1, h, (size_t)32);
    mkhdr(h, 1, DS4W_T_PING, 0x80);
    expect(DS4W_E_BAD_FRAME, "flag bits 0x80", NULL, 1, h, (size_t)32);

    /* frame counts */
    mkhdr(h, 1, DS4W_T_TOKENIZE, 0);
    expect(DS4W_E_BAD_FRAME, "0 payload frames, expected 1", NULL, 1, h, (size_t)32);
    expect(DS4W_E_BAD_FRAME, "2 payload frames", NULL, 3, h, (size_t)32,
           B("{\"text\":\"a\"}"), B("{}"));
    expect(DS4W_OK, NULL, NULL, 2, h, (size_t)32, B("{\"text\":\"a\"}"));
    mkhdr(h, 1, DS4W_T_GEN_SUBMIT, 0);
    expect(DS4W_E_BAD_FRAME, "expected 2 to 3", NULL, 2, h, (size_t)32, B("{}"));
    expect(DS4W_OK, NULL, NULL, 3, h, (size_t)32, B("{}"), B("\1\0\0\0"));
    expect(DS4W_OK, NULL, NULL, 4, h, (size_t)32, B("{}"), B("\1\0\0\0"), B(""));
    expect(DS4W_E_BAD_FRAME, "5 payload frames", NULL, 6, h, (size_t)32,
           B("{}"), B(""), B(""), B(""), B(""));
    ds4w_limits small = ds4w_limits_default();
    small.max_frames = 2;
    expect(DS4W_E_BAD_FRAME, "3 payload frames, expected 2", &small, 4, h, (size_t)32,
           B("{}"), B(""), B(""));

    /* I32 / F32 sizes and limits */
    expect(DS4W_E_BAD_FRAME, "not a multiple of 4", NULL, 3, h, (size_t)32,
           B("{}"), B("\1\0\0"));
    small = ds4w_limits_default();
    small.max_tokens = 3;
    expect(DS4W_E_TOO_LARGE, "4 tokens over the limit 3", &small, 3, h,
           (size_t)32, B("{}"), B("0123456789abcdef"));
    expect(DS4W_OK, NULL, &small, 3, h, (size_t)32, B("{}"), B("0123456789ab"));
    small = ds4w_limits_default();
    small.max_frame_bytes = 8;
    expect(DS4W_E_TOO_LARGE, "12 bytes over the limit 8", &small, 3, h,
           (size_t)32, B("{}"), B("0123456789ab"));
    expect(DS4W_E_TOO_LARGE, "(JSON)", &small, 3, h, (size_t)32,
           B("{\"seed\":1234}"), B("0123"));
    mkhdr(h, 1, DS4W_T_LOGITS, 0);
    expect(DS4W_E_BAD_FRAME, "(F32)", NULL, 3, h, (size_t)32,
           B("{\"n_vocab\":1}"), B("12345"));

    /* BYTES and BULK */
    mkhdr(h, 1, DS4W_T_KV_FOUND, DS4W_FLAG_INLINE);
    const char *kvj = "{\"tokens\":1,\"key\":\"k\",\"fingerprint\":\"f\"}";
    small = ds4w_limits_default();
    small.max_bulk_bytes = 4;
    expect(DS4W_E_TOO_LARGE, "(BYTES)", &small, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), B("12345"));
    expect(DS4W_OK, NULL, &small, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), B("1234"));
    /* without INLINE, BULK must be a SHMREF */
    mkhdr(h, 1, DS4W_T_KV_FOUND, 0);
    expect(DS4W_E_BAD_FRAME, "SHMREF frame is 4 bytes", NULL, 3, h,
           (size_t)32, (const uint8_t *)kvj, strlen(kvj), B("1234"));
    uint8_t ref[96];
    ds4w_shmref r = sample_ref();
    CHECK(ds4w_shmref_encode(&r, ref) == 0);
    expect(DS4W_OK, NULL, NULL, 3, h, (size_t)32, (const uint8_t *)kvj,
           strlen(kvj), ref, (size_t)96);
    uint8_t bad[96];
    memcpy(bad, ref, 96);
    bad[5] = '/';
    expect(DS4W_E_BAD_FRAME, "segment name", NULL, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), bad, (size_t)96);
    memcpy(bad, ref, 96);
    bad[0] = 'x';
    expect(DS4W_E_BAD_FRAME, "segment name", NULL, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), bad, (size_t)96);
    memcpy(bad, ref, 96);
    bad[40] = 'x'; /* garbage after the NUL terminator */
    expect(DS4W_E_BAD_FRAME, "segment name", NULL, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), bad, (size_t)96);
    memcpy(bad, ref, 96);
    memset(bad, 'a', 64); /* unterminated */
    bad[0] = '/';
    expect(DS4W_E_BAD_FRAME, "segment name", NULL, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), bad, (size_t)96);
    memcpy(bad, ref, 96);
    memset(bad + 64, 0xff, 16); /* offset + length overflow */
    expect(DS4W_E_BAD_FRAME, "overflows", NULL, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), bad, (size_t)96);
    expect(DS4W_E_BAD_FRAME, "97 bytes", NULL, 3, h, (size_t)32,
           (const uint8_t *)kvj, strlen(kvj), ref, (size_t)97);

    /* JSON */
    mkhdr(h, 1, DS4W_T_TOKENIZE, 0);
    expect(DS4W_E_BAD_FRAME, "(JSON): empty", NULL, 2, h, (size_t)32, B(""));
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32, B("{\"text\":"));
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32, B("{} {}"));
    expect(DS4W_E_BAD_FRAME, "got array", NULL, 2, h, (size_t)32, B("[1]"));
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32, B("\"x\""));
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32,
           B("{\"text\":\"\xff\xfe\"}"));
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32,
           B("{\"text\":\"\xed\xa0\x80\"}")); /* UTF-8 surrogate */
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32,
           B("{\"text\":\"a\",\"text\":\"b\"}")); /* duplicate key */
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32,
           B("{\"text\":\"a\\u0000b\"}")); /* NUL inside a string */
    expect(DS4W_E_BAD_FRAME, "(JSON)", NULL, 2, h, (size_t)32,
           B("{\"text\":\"a\0\"}"));
    /* JSON fields */
    expect(DS4W_E_INVALID_REQUEST, "missing required field 'text'", NULL, 2,
           h, (size_t)32, B("{\"mode\":\"raw\"}"));
    expect(DS4W_E_INVALID_REQUEST, "field 'text': expected string, got integer",
           NULL, 2, h, (size_t)32, B("{\"text\":5}"));
    expect(DS4W_E_INVALID_REQUEST, "field 'mode': expected string, got null",
           NULL, 2, h, (size_t)32, B("{\"text\":\"\",\"mode\":null}"));
    expect(DS4W_OK, NULL, NULL, 2, h, (size_t)32,
           B("{\"text\":\"\",\"unknown_field\":[1,{}]}"));
    mkhdr(h, 1, DS4W_T_GEN_SUBMIT, 0);
    expect(DS4W_E_INVALID_REQUEST, "'max_tokens': expected unsigned integer, got negative",
           NULL, 3, h, (size_t)32, B("{\"max_tokens\":-1}"), B(""));
    expect(DS4W_E_INVALID_REQUEST, "'max_tokens': expected unsigned integer, got real",
           NULL, 3, h, (size_t)32, B("{\"max_tokens\":1.5}"), B(""));
    expect(DS4W_E_INVALID_REQUEST, "'temperature': expected number, got string",
           NULL, 3, h, (size_t)32, B("{\"temperature\":\"hot\"}"), B(""));
    expect(DS4W_OK, NULL, NULL, 3, h, (size_t)32,
           B("{\"temperature\":1,\"top_p\":0.5,\"seed\":-3}"), B(""));
    expect(DS4W_E_INVALID_REQUEST, "'stop_ids': expected array, got object",
           NULL, 3, h, (size_t)32, B("{\"stop_ids\":{}}"), B(""));
    mkhdr(h, 1, DS4W_T_GEN_EVENT, 0);
    expect(DS4W_E_INVALID_REQUEST, "GEN_EVENT: field 'logprobs'", NULL, 3, h,
           (size_t)32, B("\1\0\0\0"), B("{\"logprobs\":true}"));
}

/* The helper on its own, as daemons use it for nested objects. */
static void test_json_check(void)
{
    static const ds4w_field f[] = {
        {"prompt_tokens", DS4W_JT_UINT, DS4W_JF_REQ},
        {"name", DS4W_JT_STRING, DS4W_JF_OPT},
        {"flag", DS4W_JT_BOOL, DS4W_JF_OPT},
        {"any", DS4W_JT_ANY, DS4W_JF_REQ},
    };
    char err[128];
    const char *bad = "x";
    json_t *j = json_loads("{\"prompt_tokens\":3,\"any\":null}", 0, NULL);
    CHECK(ds4w_json_check(j, f, 4, &bad, err, sizeof err) == 0 && !bad);
    json_object_set_new(j, "flag", json_integer(1));
    CHECK(ds4w_json_check(j, f, 4, &bad, err, sizeof err) ==
          DS4W_E_INVALID_REQUEST);
    CHECK(bad && strcmp(bad, "flag") == 0);
    CHECK(strcmp(err, "field 'flag': expected boolean, got integer") == 0);
    json_object_del(j, "flag");
    json_object_del(j, "any");
    CHECK(ds4w_json_check(j, f, 4, &bad, err, sizeof err) ==
          DS4W_E_INVALID_REQUEST);
    CHECK(bad && strcmp(bad, "any") == 0);
    json_decref(j);
    j = json_array();
    CHECK(ds4w_json_check(j, f, 4, NULL, err, sizeof err) ==
          DS4W_E_INVALID_REQUEST);
    CHECK(strstr(err, "got array") != NULL);
    json_decref(j);
    CHECK(ds4w_json_check(NULL, f, 4, NULL, NULL, 0) ==
          DS4W_E_INVALID_REQUEST);
}

/* Builders refuse messages that do not match their schema. */
static void test_builder_checks(void)
{
    ds4w_out o;
    ds4w_buf fr[5];
    size_t n;
    char err[256];
    ds4w_out_init(&o, DS4W_T_TOKENS, NULL); /* missing frames */
    json_t *j = json_pack("{s:i}", "count", 0);
    ds4w_out_json(&o, j);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == DS4W_E_INTERNAL);
    CHECK(strstr(err, "built 1 payload frames") != NULL);
    ds4w_out_f32(&o, NULL, 0); /* wrong kind */
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == DS4W_E_INTERNAL);
    CHECK(strstr(err, "frame 1 is F32, schema wants I32") != NULL);
    ds4w_out_free(&o);
    json_decref(j);

    ds4w_out_init(&o, DS4W_T_PONG, NULL); /* field missing */
    j = json_pack("{s:s}", "daemon", "x");
    ds4w_out_json(&o, j);
    json_decref(j);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == DS4W_E_INTERNAL);
    CHECK(strstr(err, "missing required field 'pid'") != NULL);
    ds4w_out_free(&o);

    ds4w_out_init(&o, 0x4444, NULL);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == DS4W_E_UNKNOWN_TYPE);
    ds4w_out_init(&o, DS4W_T_PING, NULL);
    for (int i = 0; i < 5; i++)
        ds4w_out_bytes(&o, "x", 1);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == DS4W_E_INTERNAL);
    ds4w_out_free(&o);

    ds4w_shmref r = sample_ref();
    strcpy(r.name, "no-slash");
    ds4w_out_init(&o, DS4W_T_KV_RELEASE, NULL);
    ds4w_out_shmref(&o, &r);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == DS4W_E_INTERNAL);
    CHECK(strstr(err, "SHMREF") != NULL);
    ds4w_out_free(&o);

    /* BYTES in a BULK slot sets INLINE; a SHMREF clears it */
    ds4w_out_init(&o, DS4W_T_KV_PUT, NULL);
    j = json_pack("{s:s}", "fingerprint", "f");
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_out_i32(&o, NULL, 0);
    ds4w_out_bytes(&o, "abc", 3);
    CHECK(ds4w_out_encode(&o, fr, &n, err, sizeof err) == 0);
    CHECK(o.flags & DS4W_FLAG_INLINE);
    ds4w_msg m;
    CHECK(ds4w_decode_frames(fr, n, NULL, &m, err, sizeof err) == 0);
    CHECK(m.kind[2] == DS4W_FK_BYTES && m.frame[2].len == 3);
    ds4w_msg_close(&m);
    ds4w_out_free(&o);

    /* the ERROR text is made valid UTF-8 */
    j = ds4w_error_json(DS4W_E_BAD_FRAME, "bad \xff\xc3 byte \xe4\xb8\x96");
    CHECK(strcmp(json_string_value(json_object_get(j, "message")),
                 "bad ?? byte \xe4\xb8\x96") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "name")),
                 "bad_frame") == 0);
    json_decref(j);
}

/* Seeded random mutations of the golden messages never crash the decoder,
 * and every rejection comes with a message. */
static void test_mutations(void)
{
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 4000; iter++) {
        ds4w_out o;
        golden_build((int)(rnd() % NGOLDEN), &o);
        ds4w_buf fr[5];
        size_t n;
        if (ds4w_out_encode(&o, fr, &n, NULL, 0)) {
            CHECK(0);
            ds4w_out_free(&o);
            continue;
        }
        uint8_t *copy[6];
        ds4w_buf mf[6];
        size_t mn = n;
        for (size_t i = 0; i < n; i++) {
            copy[i] = malloc(fr[i].len + 8);
            memcpy(copy[i], fr[i].data, fr[i].len);
            mf[i].data = copy[i];
            mf[i].len = fr[i].len;
        }
        int what = (int)(rnd() % 4);
        size_t fi = rnd() % n;
        if (what == 0 && mf[fi].len) /* flip bytes */
            for (int k = 0; k < 3; k++)
                copy[fi][rnd() % mf[fi].len] ^= (uint8_t)(1 + rnd() % 255);
        else if (what == 1 && mf[fi].len) /* truncate */
            mf[fi].len = rnd() % mf[fi].len;
        else if (what == 2) /* grow */
            mf[fi].len += 1 + rnd() % 8;
        else if (mn > 1) /* drop a frame */
            mn--;
        ds4w_msg m;
        char err[256] = "";
        int rc = ds4w_decode_frames(mf, mn, NULL, &m, err, sizeof err);
        if (rc) {
            bad++;
            CHECK(err[0] != 0);
        } else {
            ok++;
        }
        ds4w_msg_close(&m);
        for (size_t i = 0; i < n; i++)
            free(copy[i]);
        ds4w_out_free(&o);
    }
    CHECK(bad > 1000);
    CHECK(ok > 10); /* some flips land in JSON string bytes and survive */
}

/* ---- live ROUTER/DEALER over ipc:// --------------------------------------- */

#define NEVENTS 1000

typedef struct server_ctx {
    void *zctx;
    const char *endpoint;
    int errors_sent;
    int handled;
} server_ctx;

/* Answer one decoded request as a toy daemon would. */
static void serve_one(void *sock, ds4w_msg *m, int *stop)
{
    char err[256];
    if (m->type == DS4W_T_PING) {
        json_t *j = json_pack("{s:s,s:i,s:s,s:i,s:b}", "daemon", "testd",
                              "pid", (int)getpid(), "version", "t", "proto",
                              DS4W_VERSION, "ready", 1);
        CHECK(ds4w_send_json(sock, &m->route, DS4W_T_PONG, m->reqid, 0, 0, j,
                             err, sizeof err) == 0);
        json_decref(j);
    } else if (m->type == DS4W_T_TOKENIZE) {
        const char *t = json_string_value(json_object_get(m->json, "text"));
        size_t n = strlen(t);
        int32_t *ids = malloc((n + 1) * sizeof *ids);
        for (size_t i = 0; i < n; i++)
            ids[i] = (unsigned char)t[i] * 1000 + (int32_t)i;
        ds4w_out o;
        ds4w_out_init(&o, DS4W_T_TOKENS, m->reqid);
        json_t *j = json_pack("{s:i}", "count", (int)n);
        ds4w_out_json(&o, j);
        json_decref(j);
        ds4w_out_i32(&o, ids, n);
        CHECK(ds4w_send(sock, &m->route, &o, 0, err, sizeof err) == 0);
        free(ids);
    } else if (m->type == DS4W_T_GEN_SUBMIT) {
        int32_t first = 0;
        if (ds4w_msg_count(m, 1) >= 1) {
            int32_t tmp[4];
            if (ds4w_msg_count(m, 1) <= 4) {
                ds4w_msg_i32(m, 1, tmp);
                first = tmp[0];
            }
        }
        json_t *j = json_pack("{s:i}", "queue_pos", 0);
        CHECK(ds4w_send_json(sock, &m->route, DS4W_T_GEN_ACCEPTED, m->reqid,
                             0, 0, j, err, sizeof err) == 0);
        json_decref(j);
        for (int i = 0; i < NEVENTS; i++) {
            int32_t tok = first + i;
            ds4w_out o;
            ds4w_out_init(&o, DS4W_T_GEN_EVENT, m->reqid);
            o.seq = (uint32_t)i + 1;
            ds4w_out_i32(&o, &tok, 1);
            CHECK(ds4w_send(sock, &m->route, &o, 0, err, sizeof err) == 0);
        }
        j = json_pack("{s:s,s:{s:i}}", "finish_reason", "length", "usage",
                      "completion_tokens", NEVENTS);
        CHECK(ds4w_send_json(sock, &m->route, DS4W_T_GEN_DONE, m->reqid,
                             DS4W_FLAG_END, NEVENTS + 1, j, err,
                             sizeof err) == 0);
        json_decref(j);
    } else if (m->type == DS4W_T_STATS_GET) {
        json_t *j = json_pack("{s:s,s:{s:i}}", "daemon", "testd", "counters",
                              "handled", 0);
        CHECK(ds4w_send_json(sock, &m->route, DS4W_T_STATS, m->reqid, 0, 0, j,
                             err, sizeof err) == 0);
        json_decref(j);
        *stop = json_is_true(json_object_get(m->json, "stop"));
    } else {
        CHECK(ds4w_reply_error(sock, m, DS4W_E_INVALID_REQUEST,
                               "not served here") == 0);
    }
}

/* Server thread: ROUTER loop until a STATS_GET {"stop":true}. */
static void *server_main(void *arg)
{
    server_ctx *sc = arg;
    void *sock = zmq_socket(sc->zctx, ZMQ_ROUTER);
    CHECK(ds4w_socket_setup(sock, 1) == 0);
    CHECK(zmq_bind(sock, sc->endpoint) == 0);
    int stop = 0;
    while (!stop) {
        ds4w_msg m;
        char err[256];
        int rc = ds4w_recv(sock, &m, 1, 0, err, sizeof err);
        if (rc < 0) {
            CHECKF(0, "server recv: %s", zmq_strerror(errno));
            ds4w_msg_close(&m);
            break;
        }
        if (rc > 0) {
            CHECK(ds4w_reply_error(sock, &m, rc, err) == 0);
            sc->errors_sent++;
        } else {
            serve_one(sock, &m, &stop);
            sc->handled++;
        }
        ds4w_msg_close(&m);
    }
    /* sending to a client that never existed fails instead of vanishing */
    ds4w_route ghost = {.len = 5};
    memcpy(ghost.id, "ghost", 5);
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_OK, NULL);
    errno = 0;
    CHECK(ds4w_send(sock, &ghost, &o, ZMQ_DONTWAIT, NULL, 0) == -1 &&
          errno == EHOSTUNREACH);
    zmq_close(sock);
    return NULL;
}

/* Client side: receive one message on a DEALER, expecting success. */
static int crecv(void *s, ds4w_msg *m)
{
    char err[256];
    int rc = ds4w_recv(s, m, 0, 0, err, sizeof err);
    CHECKF(rc == 0, "client recv: %d %s", rc, err);
    return rc;
}

/* Expect an ERROR reply with a code on a DEALER. */
static void expect_error(void *s, int code, const uint8_t *reqid)
{
    ds4w_msg m;
    if (crecv(s, &m) == 0) {
        CHECK(m.type == DS4W_T_ERROR && (m.flags & DS4W_FLAG_END));
        json_int_t c = json_integer_value(json_object_get(m.json, "code"));
        CHECKF(c == code, "got error %lld (%s)", (long long)c,
               json_string_value(json_object_get(m.json, "message")));
        if (reqid)
            CHECK(memcmp(m.reqid, reqid, 16) == 0);
    }
    ds4w_msg_close(&m);
}

static void test_live(void)
{
    char dir[] = "/tmp/ds4w-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/testd.sock", dir);
    void *zctx = zmq_ctx_new();
    server_ctx sc = {.zctx = zctx, .endpoint = ep};
    ds4w_counters c0, c1;
    ds4w_counters_get(&c0);
    pthread_t th;
    pthread_create(&th, NULL, server_main, &sc);

    void *a = zmq_socket(zctx, ZMQ_DEALER), *b = zmq_socket(zctx, ZMQ_DEALER);
    ds4w_socket_setup(a, 0);
    ds4w_socket_setup(b, 0);
    /* a broken server must fail the test, not hang it */
    int tmo = 20000;
    zmq_setsockopt(a, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(b, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    CHECK(zmq_connect(a, ep) == 0 && zmq_connect(b, ep) == 0);
    char err[256];
    uint8_t ida[16], idb[16];
    ds4w_uuid_new(ida);
    ds4w_uuid_new(idb);

    /* B starts a 1000-event stream; A does request/reply meanwhile */
    int32_t prompt[3] = {7000, 1, 2};
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_SUBMIT, idb);
    json_t *j = json_pack("{s:i}", "max_tokens", NEVENTS);
    ds4w_out_json(&o, j);
    json_decref(j);
    ds4w_out_i32(&o, prompt, 3);
    CHECK(ds4w_send(b, NULL, &o, 0, err, sizeof err) == 0);

    j = json_pack("{s:s}", "text", "hello");
    CHECK(ds4w_send_json(a, NULL, DS4W_T_TOKENIZE, ida, 0, 0, j, err,
                         sizeof err) == 0);
    json_decref(j);
    ds4w_msg m;
    if (crecv(a, &m) == 0) {
        CHECK(m.type == DS4W_T_TOKENS && memcmp(m.reqid, ida, 16) == 0);
        int32_t ids[5];
        CHECK(ds4w_msg_count(&m, 1) == 5 && ds4w_msg_i32(&m, 1, ids) == 5);
        CHECK(ids[0] == 'h' * 1000 && ids[4] == 'o' * 1000 + 4);
    }
    ds4w_msg_close(&m);

    if (crecv(b, &m) == 0)
        CHECK(m.type == DS4W_T_GEN_ACCEPTED && m.seq == 0);
    ds4w_msg_close(&m);
    int in_order = 1;
    for (int i = 0; i < NEVENTS; i++) {
        if (crecv(b, &m)) {
            in_order = 0;
            break;
        }
        int32_t tok = -1;
        if (m.type != DS4W_T_GEN_EVENT || m.seq != (uint32_t)i + 1 ||
            ds4w_msg_count(&m, 0) != 1 || memcmp(m.reqid, idb, 16) != 0)
            in_order = 0;
        else
            ds4w_msg_i32(&m, 0, &tok);
        if (tok != 7000 + i)
            in_order = 0;
        ds4w_msg_close(&m);
    }
    CHECK(in_order);
    if (crecv(b, &m) == 0) {
        CHECK(m.type == DS4W_T_GEN_DONE && (m.flags & DS4W_FLAG_END));
        CHECK(m.seq == NEVENTS + 1);
        CHECK(strcmp(json_string_value(json_object_get(m.json,
                                                       "finish_reason")),
                     "length") == 0);
    }
    ds4w_msg_close(&m);

    /* stray clients: garbage from a DEALER and from a REQ socket */
    void *g = zmq_socket(zctx, ZMQ_DEALER);
    ds4w_socket_setup(g, 0);
    zmq_setsockopt(g, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    CHECK(zmq_connect(g, ep) == 0);
    zmq_send(g, "hello", 5, ZMQ_SNDMORE);
    zmq_send(g, "world", 5, 0);
    expect_error(g, DS4W_E_BAD_FRAME, NULL);
    for (int i = 0; i < 9; i++) /* too many frames */
        zmq_send(g, "DS4W", 4, i < 8 ? ZMQ_SNDMORE : 0);
    expect_error(g, DS4W_E_BAD_FRAME, NULL);
    uint8_t h[32];
    mkhdr(h, 7, DS4W_T_PING, 0); /* future version: id echoed */
    zmq_send(g, h, 32, 0);
    expect_error(g, DS4W_E_UNSUPPORTED_VERSION, FIXED_ID);
    mkhdr(h, 1, 0x0fff, 0);
    zmq_send(g, h, 32, 0);
    expect_error(g, DS4W_E_UNKNOWN_TYPE, FIXED_ID);
    mkhdr(h, 1, DS4W_T_PONG, 0); /* a reply sent as a request */
    zmq_send(g, h, 32, ZMQ_SNDMORE);
    zmq_send(g, "{}", 2, 0);
    expect_error(g, DS4W_E_INVALID_REQUEST, FIXED_ID);
    mkhdr(h, 1, DS4W_T_TOKENIZE, 0);
    zmq_send(g, h, 32, ZMQ_SNDMORE);
    zmq_send(g, "{\"text\":1}", 10, 0);
    if (crecv(g, &m) == 0) {
        CHECK(m.type == DS4W_T_ERROR && memcmp(m.reqid, FIXED_ID, 16) == 0);
        CHECK(json_integer_value(json_object_get(m.json, "code")) ==
              DS4W_E_INVALID_REQUEST);
        const char *fld = json_string_value(json_object_get(m.json, "field"));
        CHECK(fld && strcmp(fld, "text") == 0);
    }
    ds4w_msg_close(&m);
    mkhdr(h, 1, DS4W_T_KV_SET_DIR, 0); /* valid but not served here */
    zmq_send(g, h, 32, ZMQ_SNDMORE);
    zmq_send(g, "{\"dir\":\"/x\"}", 12, 0);
    expect_error(g, DS4W_E_INVALID_REQUEST, FIXED_ID);

    void *rq = zmq_socket(zctx, ZMQ_REQ);
    int zero = 0;
    zmq_setsockopt(rq, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(rq, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    CHECK(zmq_connect(rq, ep) == 0);
    zmq_send(rq, "garbage", 7, 0);
    char buf[512];
    int n = zmq_recv(rq, buf, sizeof buf, 0); /* header of the ERROR */
    CHECK(n == 32 && memcmp(buf, "DS4W", 4) == 0 && buf[6] == 3);
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(rq, ZMQ_RCVMORE, &more, &ml);
    CHECK(more);
    n = zmq_recv(rq, buf, sizeof buf - 1, 0);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = 0;
    CHECK(strstr(buf, "\"name\":\"bad_frame\"") != NULL);

    /* the server still serves A after all that */
    CHECK(ds4w_send_json(a, NULL, DS4W_T_PING, ida, 0, 0, NULL, err,
                         sizeof err) == 0);
    if (crecv(a, &m) == 0) {
        CHECK(m.type == DS4W_T_PONG);
        CHECK(json_is_true(json_object_get(m.json, "ready")));
    }
    ds4w_msg_close(&m);
    /* a DEALER (client side) rejects a request arriving as a reply */
    void *d1 = zmq_socket(zctx, ZMQ_DEALER), *d2 = zmq_socket(zctx, ZMQ_DEALER);
    ds4w_socket_setup(d1, 0);
    ds4w_socket_setup(d2, 0);
    CHECK(zmq_bind(d1, "inproc://ds4w-dd") == 0);
    CHECK(zmq_connect(d2, "inproc://ds4w-dd") == 0);
    CHECK(ds4w_send_json(d2, NULL, DS4W_T_PING, ida, 0, 0, NULL, err,
                         sizeof err) == 0);
    CHECK(ds4w_recv(d1, &m, 0, 0, err, sizeof err) == DS4W_E_INVALID_REQUEST);
    CHECK(strstr(err, "PING is a request") != NULL);
    CHECK(m.route.len == 0 && m.hdr_ok);
    ds4w_msg_close(&m);
    CHECK(ds4w_recv(d1, &m, 0, ZMQ_DONTWAIT, err, sizeof err) == -1 &&
          errno == EAGAIN);
    ds4w_msg_close(&m);
    zmq_close(d1);
    zmq_close(d2);

    j = json_pack("{s:b}", "stop", 1);
    CHECK(ds4w_send_json(a, NULL, DS4W_T_STATS_GET, ida, 0, 0, j, err,
                         sizeof err) == 0);
    json_decref(j);
    if (crecv(a, &m) == 0)
        CHECK(m.type == DS4W_T_STATS);
    ds4w_msg_close(&m);
    pthread_join(th, NULL);
    CHECK(sc.errors_sent == 7);
    CHECK(sc.handled == 5);
    ds4w_counters_get(&c1);
    CHECK(c1.rx_bad - c0.rx_bad == 8); /* 7 at the server, 1 at d1 */
    CHECK(c1.rx_err[DS4W_E_BAD_FRAME] - c0.rx_err[DS4W_E_BAD_FRAME] == 3);
    CHECK(c1.tx_errors - c0.tx_errors == 8);
    CHECK(c1.tx_msgs - c0.tx_msgs == NEVENTS + 18);

    zmq_close(a);
    zmq_close(b);
    zmq_close(g);
    zmq_close(rq);
    zmq_ctx_term(zctx);
    char sockpath[160];
    snprintf(sockpath, sizeof sockpath, "%s/testd.sock", dir);
    unlink(sockpath);
    CHECK(rmdir(dir) == 0);
}

int main(void)
{
    test_table();
    test_uuid();
    test_header_bytes();
    test_golden();
    test_accessors();
    test_rejections();
    test_json_check();
    test_builder_checks();
    test_mutations();
    test_live();
    return test_main_end("wire");
}
