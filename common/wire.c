/* wire.c - ds4 wire protocol: message table, strict decoder, builders,
 * and the libzmq send/receive glue. See wire.h and docs/PROTOCOL.md. */
#include "wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "util.h"

/* ---- tables built from wire_msgs.h ------------------------------------ */

/* Count of the frames of a row that are not NONE. */
#define FK_PRESENT(f) ((f) != DS4W_FK_NONE)
#define FK_REQUIRED(f) (FK_PRESENT(f) && !((f) & DS4W_FK_OPT))

#define X_ROW(id_, name_, dir_, svc_, f0, f1, f2, f3)                        \
    {.id = id_, .name = #name_, .dir = DS4W_DIR_##dir_,                     \
     .svc = DS4W_SVC_##svc_,                                                \
     .frames = {DS4W_FK_##f0, DS4W_FK_##f1, DS4W_FK_##f2, DS4W_FK_##f3},    \
     .nreq = FK_REQUIRED(DS4W_FK_##f0) + FK_REQUIRED(DS4W_FK_##f1) +        \
             FK_REQUIRED(DS4W_FK_##f2) + FK_REQUIRED(DS4W_FK_##f3),         \
     .nmax = FK_PRESENT(DS4W_FK_##f0) + FK_PRESENT(DS4W_FK_##f1) +          \
             FK_PRESENT(DS4W_FK_##f2) + FK_PRESENT(DS4W_FK_##f3)},
static const ds4w_msgdef msgdefs[] = {DS4W_MESSAGES(X_ROW)};
#undef X_ROW

#define F_MSG(msg, fname, jt, req) DS4W_T_##msg,
static const uint16_t field_msg[] = {DS4W_FIELDS(F_MSG)};
#undef F_MSG
#define F_ROW(msg, fname, jt, req) {#fname, DS4W_JT_##jt, DS4W_JF_##req},
static const ds4w_field field_rows[] = {DS4W_FIELDS(F_ROW)};
#undef F_ROW

static const char *const err_names[DS4W_E_COUNT] = {
    [DS4W_OK] = "ok",
    [DS4W_E_BAD_FRAME] = "bad_frame",
    [DS4W_E_UNKNOWN_TYPE] = "unknown_type",
    [DS4W_E_UNSUPPORTED_VERSION] = "unsupported_version",
    [DS4W_E_BUSY] = "busy",
    [DS4W_E_TOO_LARGE] = "too_large",
    [DS4W_E_NOT_READY] = "not_ready",
    [DS4W_E_INTERNAL] = "internal",
    [DS4W_E_CANCELLED] = "cancelled",
    [DS4W_E_CONTEXT_OVERFLOW] = "context_overflow",
    [DS4W_E_INVALID_REQUEST] = "invalid_request",
    [DS4W_E_NOT_FOUND] = "not_found",
    [DS4W_E_FORBIDDEN] = "forbidden",
    [DS4W_E_UNAVAILABLE] = "unavailable",
};

static ds4w_limits g_limits = {
    .max_frames = DS4W_MAX_PAYLOAD,
    .max_frame_bytes = (size_t)64 << 20,
    .max_bulk_bytes = (size_t)2 << 30,
    .max_tokens = (size_t)4 << 20,
};

static ds4w_counters g_counters;

/* Relaxed atomic increment of a counter. */
static void count(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* Format an error message into err (if any) and return code. */
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- little-endian helpers -------------------------------------------- */

/* Store a u16/u32/u64 little-endian, whatever the host order. */
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Load a little-endian u16/u32/u64. */
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

/* ---- table lookups and names ------------------------------------------ */

const ds4w_msgdef *ds4w_msgdef_find(uint16_t type)
{
    for (size_t i = 0; i < DS4_ARRAY_LEN(msgdefs); i++)
        if (msgdefs[i].id == type)
            return &msgdefs[i];
    return NULL;
}

const ds4w_msgdef *ds4w_msgdef_by_name(const char *name)
{
    for (size_t i = 0; name && i < DS4_ARRAY_LEN(msgdefs); i++)
        if (strcmp(msgdefs[i].name, name) == 0)
            return &msgdefs[i];
    return NULL;
}

const ds4w_msgdef *ds4w_msgdefs(size_t *n)
{
    *n = DS4_ARRAY_LEN(msgdefs);
    return msgdefs;
}

const char *ds4w_type_name(uint16_t type)
{
    const ds4w_msgdef *d = ds4w_msgdef_find(type);
    return d ? d->name : "?";
}

/* Fields are grouped by message in wire_msgs.h: return the run of a type. */
const ds4w_field *ds4w_msg_fields(uint16_t type, size_t *n)
{
    size_t i = 0, total = DS4_ARRAY_LEN(field_rows);
    while (i < total && field_msg[i] != type)
        i++;
    size_t j = i;
    while (j < total && field_msg[j] == type)
        j++;
    *n = j - i;
    return i < total ? &field_rows[i] : NULL;
}

const char *ds4w_err_name(int code)
{
    if (code < 0 || code >= DS4W_E_COUNT)
        return "unknown";
    return err_names[code];
}

int ds4w_err_from_name(const char *name)
{
    for (int i = 0; name && i < DS4W_E_COUNT; i++)
        if (strcmp(err_names[i], name) == 0)
            return i;
    return -1;
}

/* Stages only see gateway-built messages, so framing errors from a stage
 * are the server's fault (500), while request-level codes map to 4xx. */
int ds4w_err_http_status(int code)
{
    switch (code) {
    case DS4W_OK: return 200;
    case DS4W_E_BUSY: return 429;
    case DS4W_E_TOO_LARGE: return 413;
    case DS4W_E_CONTEXT_OVERFLOW:
    case DS4W_E_INVALID_REQUEST: return 400;
    case DS4W_E_NOT_FOUND: return 404;
    case DS4W_E_FORBIDDEN: return 403;
    case DS4W_E_NOT_READY:
    case DS4W_E_UNAVAILABLE: return 503;
    default: return 500;
    }
}

const char *ds4w_fk_name(int kind)
{
    switch (kind & ~DS4W_FK_OPT) {
    case DS4W_FK_JSON: return "JSON";
    case DS4W_FK_I32: return "I32";
    case DS4W_FK_F32: return "F32";
    case DS4W_FK_BYTES: return "BYTES";
    case DS4W_FK_SHMREF: return "SHMREF";
    case DS4W_FK_BULK: return "BULK";
    default: return "NONE";
    }
}

const char *ds4w_jt_name(int type)
{
    switch (type) {
    case DS4W_JT_STRING: return "string";
    case DS4W_JT_INT: return "integer";
    case DS4W_JT_UINT: return "unsigned integer";
    case DS4W_JT_NUM: return "number";
    case DS4W_JT_BOOL: return "boolean";
    case DS4W_JT_OBJECT: return "object";
    case DS4W_JT_ARRAY: return "array";
    default: return "any";
    }
}

/* ---- limits, counters, UUIDs ------------------------------------------- */

ds4w_limits ds4w_limits_default(void)
{
    ds4w_limits l = {
        .max_frames = DS4W_MAX_PAYLOAD,
        .max_frame_bytes = (size_t)64 << 20,
        .max_bulk_bytes = (size_t)2 << 30,
        .max_tokens = (size_t)4 << 20,
    };
    return l;
}

void ds4w_limits_set(const ds4w_limits *lim)
{
    g_limits = *lim;
    if (g_limits.max_frames > DS4W_MAX_PAYLOAD)
        g_limits.max_frames = DS4W_MAX_PAYLOAD;
}

ds4w_limits ds4w_limits_get(void)
{
    return g_limits;
}

void ds4w_counters_get(ds4w_counters *out)
{
    uint64_t *dst = (uint64_t *)out, *src = (uint64_t *)&g_counters;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void ds4w_uuid_new(uint8_t id[16])
{
    uuid_generate(id);
}

void ds4w_uuid_format(const uint8_t id[16], char out[DS4W_UUID_STR])
{
    uuid_unparse_lower(id, out);
}

int ds4w_uuid_parse(const char *s, uint8_t id[16])
{
    if (!s || strlen(s) != 36)
        return -1;
    return uuid_parse(s, id) == 0 ? 0 : -1;
}

/* ---- JSON field validation ------------------------------------------- */

/* The JSON type of a value, in words, for error messages. */
static const char *json_type_word(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

/* Whether v has the field type t. */
static int jt_match(int t, const json_t *v)
{
    switch (t) {
    case DS4W_JT_STRING: return json_is_string(v);
    case DS4W_JT_INT: return json_is_integer(v);
    case DS4W_JT_UINT: return json_is_integer(v) && json_integer_value(v) >= 0;
    case DS4W_JT_NUM: return json_is_number(v);
    case DS4W_JT_BOOL: return json_is_boolean(v);
    case DS4W_JT_OBJECT: return json_is_object(v);
    case DS4W_JT_ARRAY: return json_is_array(v);
    default: return 1;
    }
}

int ds4w_json_check(const json_t *obj, const ds4w_field *fields, size_t n,
                    const char **bad_field, char *err, size_t errlen)
{
    if (bad_field)
        *bad_field = NULL;
    if (!json_is_object(obj))
        return fail(DS4W_E_INVALID_REQUEST, err, errlen,
                    "expected a JSON object, got %s",
                    obj ? json_type_word(obj) : "nothing");
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_object_get(obj, fields[i].name);
        if (!v) {
            if (!fields[i].required)
                continue;
            if (bad_field)
                *bad_field = fields[i].name;
            return fail(DS4W_E_INVALID_REQUEST, err, errlen,
                        "missing required field '%s'", fields[i].name);
        }
        if (!jt_match(fields[i].type, v)) {
            if (bad_field)
                *bad_field = fields[i].name;
            const char *got = json_type_word(v);
            if (fields[i].type == DS4W_JT_UINT && json_is_integer(v))
                got = "negative integer";
            return fail(DS4W_E_INVALID_REQUEST, err, errlen,
                        "field '%s': expected %s, got %s", fields[i].name,
                        ds4w_jt_name(fields[i].type), got);
        }
    }
    return DS4W_OK;
}

/* ---- SHMREF ------------------------------------------------------------ */

/* A valid segment name: "/" then 1..62 of [A-Za-z0-9._-], NUL-padded. */
static int shm_name_ok(const char *name, size_t cap)
{
    size_t n = strnlen(name, cap);
    if (n == cap || n < 2 || name[0] != '/')
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    for (size_t i = n; i < cap; i++)
        if (name[i])
            return 0;
    return 1;
}

int ds4w_shmref_decode(const uint8_t *p, size_t len, ds4w_shmref *out,
                       char *err, size_t errlen)
{
    if (len != DS4W_SHMREF_SIZE)
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "SHMREF frame is %zu bytes, expected %d", len,
                    DS4W_SHMREF_SIZE);
    memcpy(out->name, p, DS4W_SHM_NAME_MAX);
    if (!shm_name_ok(out->name, DS4W_SHM_NAME_MAX)) {
        out->name[0] = 0;
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "SHMREF: bad segment name (want '/' then [A-Za-z0-9._-], "
                    "NUL-padded to %d bytes)", DS4W_SHM_NAME_MAX);
    }
    out->offset = get64(p + 64);
    out->length = get64(p + 72);
    out->generation = get64(p + 80);
    out->checksum = get64(p + 88);
    if (out->offset + out->length < out->offset)
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "SHMREF: offset %llu + length %llu overflows",
                    (unsigned long long)out->offset,
                    (unsigned long long)out->length);
    return DS4W_OK;
}

int ds4w_shmref_encode(const ds4w_shmref *ref, uint8_t out[DS4W_SHMREF_SIZE])
{
    if (!shm_name_ok(ref->name, DS4W_SHM_NAME_MAX) ||
        ref->offset + ref->length < ref->offset)
        return -1;
    memcpy(out, ref->name, DS4W_SHM_NAME_MAX);
    put64(out + 64, ref->offset);
    put64(out + 72, ref->length);
    put64(out + 80, ref->generation);
    put64(out + 88, ref->checksum);
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

int ds4w_header_decode(const uint8_t *p, size_t len, ds4w_msg *m,
                       char *err, size_t errlen)
{
    m->hdr_ok = 0;
    m->def = NULL;
    if (len < 4 || memcmp(p, DS4W_MAGIC, 4) != 0) {
        uint8_t b[4] = {0};
        memcpy(b, p, len < 4 ? len : 4);
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "header: bad magic %02x%02x%02x%02x (%zu bytes), "
                    "expected 'DS4W'", b[0], b[1], b[2], b[3], len);
    }
    /* The version is checked before the size: a newer header may be longer,
     * and its sender deserves "unsupported_version", not "bad_frame". */
    if (len >= 6 && get16(p + 4) != DS4W_VERSION) {
        m->version = get16(p + 4);
        if (len >= DS4W_HDR_SIZE) { /* the first 32 bytes are frozen */
            m->type = get16(p + 6);
            m->flags = get32(p + 8);
            m->seq = get32(p + 12);
            memcpy(m->reqid, p + 16, 16);
            m->hdr_ok = 1;
        }
        return fail(DS4W_E_UNSUPPORTED_VERSION, err, errlen,
                    "protocol version %u not supported (this build speaks %d)",
                    m->version, DS4W_VERSION);
    }
    if (len != DS4W_HDR_SIZE)
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "header frame is %zu bytes, expected %d", len,
                    DS4W_HDR_SIZE);
    m->version = get16(p + 4);
    m->type = get16(p + 6);
    m->flags = get32(p + 8);
    m->seq = get32(p + 12);
    memcpy(m->reqid, p + 16, 16);
    m->hdr_ok = 1;
    m->def = ds4w_msgdef_find(m->type);
    if (!m->def)
        return fail(DS4W_E_UNKNOWN_TYPE, err, errlen,
                    "unknown message type 0x%04x", m->type);
    if (m->flags & ~(uint32_t)DS4W_FLAGS_KNOWN)
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "%s: unknown header flag bits 0x%x", m->def->name,
                    m->flags & ~(uint32_t)DS4W_FLAGS_KNOWN);
    return DS4W_OK;
}

/* Replace every byte that is not part of valid UTF-8 with '?' (error texts
 * quote input bytes, and ERROR messages must carry valid JSON strings). */
static void utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = 0;
        uint32_t cp = 0;
        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xe0) == 0xc0) {
            n = 1, cp = *p & 0x1f;
        } else if ((*p & 0xf0) == 0xe0) {
            n = 2, cp = *p & 0x0f;
        } else if ((*p & 0xf8) == 0xf0) {
            n = 3, cp = *p & 0x07;
        } else {
            *p++ = '?';
            continue;
        }
        int ok = 1;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                ok = 0;
                break;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (ok && (cp < min_cp[n] || cp > 0x10ffff ||
                   (cp >= 0xd800 && cp <= 0xdfff)))
            ok = 0;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n + 1;
    }
}

/* Check payload frame i of resolved kind against the limits; parse JSON. */
static int check_frame(ds4w_msg *m, int i, int kind, ds4w_buf f,
                       const ds4w_limits *lim, char *err, size_t errlen)
{
    const char *mn = m->def->name, *kn = ds4w_fk_name(kind);
    if (kind == DS4W_FK_BYTES) {
        if (f.len > lim->max_bulk_bytes)
            return fail(DS4W_E_TOO_LARGE, err, errlen,
                        "%s frame %d (BYTES): %zu bytes over the limit %zu",
                        mn, i, f.len, lim->max_bulk_bytes);
        return DS4W_OK;
    }
    if (f.len > lim->max_frame_bytes)
        return fail(DS4W_E_TOO_LARGE, err, errlen,
                    "%s frame %d (%s): %zu bytes over the limit %zu", mn, i,
                    kn, f.len, lim->max_frame_bytes);
    if (kind == DS4W_FK_I32 || kind == DS4W_FK_F32) {
        if (f.len % 4)
            return fail(DS4W_E_BAD_FRAME, err, errlen,
                        "%s frame %d (%s): %zu bytes is not a multiple of 4",
                        mn, i, kn, f.len);
        if (kind == DS4W_FK_I32 && f.len / 4 > lim->max_tokens)
            return fail(DS4W_E_TOO_LARGE, err, errlen,
                        "%s frame %d (I32): %zu tokens over the limit %zu", mn,
                        i, f.len / 4, lim->max_tokens);
        return DS4W_OK;
    }
    if (kind == DS4W_FK_SHMREF) {
        ds4w_shmref ref;
        char e2[160];
        int rc = ds4w_shmref_decode(f.data, f.len, &ref, e2, sizeof e2);
        if (rc)
            return fail(rc, err, errlen, "%s frame %d: %s", mn, i, e2);
        return DS4W_OK;
    }
    DS4_ASSERT(kind == DS4W_FK_JSON);
    if (f.len == 0)
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "%s frame %d (JSON): empty", mn, i);
    json_error_t je;
    json_t *j = json_loadb((const char *)f.data, f.len, JSON_REJECT_DUPLICATES,
                           &je);
    if (!j) {
        fail(DS4W_E_BAD_FRAME, err, errlen,
             "%s frame %d (JSON): %s at byte %d", mn, i, je.text,
             je.position);
        if (err && errlen)
            utf8_sanitize(err);
        return DS4W_E_BAD_FRAME;
    }
    if (!json_is_object(j)) {
        int rc = fail(DS4W_E_BAD_FRAME, err, errlen,
                      "%s frame %d (JSON): expected an object, got %s", mn, i,
                      json_type_word(j));
        json_decref(j);
        return rc;
    }
    m->json = j;
    m->json_frame = i;
    return DS4W_OK;
}

/* Decode header + payload frames into m (routing fields left alone). */
static int decode_into(ds4w_msg *m, const ds4w_buf *frames, size_t n,
                       const ds4w_limits *lim, char *err, size_t errlen)
{
    if (n == 0)
        return fail(DS4W_E_BAD_FRAME, err, errlen, "empty message");
    int rc = ds4w_header_decode(frames[0].data, frames[0].len, m, err, errlen);
    if (rc)
        return rc;
    const ds4w_msgdef *d = m->def;
    size_t np = n - 1;
    size_t maxf = lim->max_frames < d->nmax ? lim->max_frames : d->nmax;
    if (np < d->nreq || np > maxf) {
        if (d->nreq == maxf)
            return fail(DS4W_E_BAD_FRAME, err, errlen,
                        "%s: %zu payload frames, expected %u", d->name, np,
                        d->nreq);
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "%s: %zu payload frames, expected %u to %zu", d->name, np,
                    d->nreq, maxf);
    }
    for (size_t i = 0; i < np; i++) {
        int kind = d->frames[i] & ~DS4W_FK_OPT;
        if (kind == DS4W_FK_BULK)
            kind = (m->flags & DS4W_FLAG_INLINE) ? DS4W_FK_BYTES
                                                  : DS4W_FK_SHMREF;
        m->frame[i] = frames[i + 1];
        m->kind[i] = (uint8_t)kind;
        m->nframes = (int)i + 1;
        rc = check_frame(m, (int)i, kind, frames[i + 1], lim, err, errlen);
        if (rc)
            return rc;
    }
    if (m->json) {
        size_t nf;
        const ds4w_field *fl = ds4w_msg_fields(m->type, &nf);
        char e2[200];
        rc = ds4w_json_check(m->json, fl, nf, &m->bad_field, e2, sizeof e2);
        if (rc)
            return fail(rc, err, errlen, "%s: %s", d->name, e2);
    }
    return DS4W_OK;
}

/* Reset the decode results of m (not its zmq parts or route). */
static void msg_reset_decode(ds4w_msg *m)
{
    if (m->json)
        json_decref(m->json);
    m->json = NULL;
    m->json_frame = -1;
    m->bad_field = NULL;
    m->hdr_ok = 0;
    m->version = m->type = 0;
    m->flags = m->seq = 0;
    memset(m->reqid, 0, sizeof m->reqid);
    m->def = NULL;
    m->nframes = 0;
    memset(m->frame, 0, sizeof m->frame);
    memset(m->kind, 0, sizeof m->kind);
}

int ds4w_decode_frames(const ds4w_buf *frames, size_t nframes,
                       const ds4w_limits *lim, ds4w_msg *m,
                       char *err, size_t errlen)
{
    memset(m, 0, offsetof(ds4w_msg, parts));
    m->json_frame = -1;
    ds4w_limits l = lim ? *lim : g_limits;
    if (err && errlen)
        err[0] = 0;
    return decode_into(m, frames, nframes, &l, err, errlen);
}

void ds4w_msg_close(ds4w_msg *m)
{
    msg_reset_decode(m);
    for (int i = 0; i < m->nparts; i++)
        zmq_msg_close(&m->parts[i]);
    m->nparts = 0;
    memset(&m->route, 0, sizeof m->route);
}

/* ---- accessors ---------------------------------------------------------- */

ds4w_buf ds4w_msg_frame(const ds4w_msg *m, int i)
{
    ds4w_buf none = {NULL, 0};
    if (i < 0 || i >= m->nframes)
        return none;
    return m->frame[i];
}

size_t ds4w_msg_count(const ds4w_msg *m, int i)
{
    if (i < 0 || i >= m->nframes)
        return 0;
    if (m->kind[i] != DS4W_FK_I32 && m->kind[i] != DS4W_FK_F32)
        return 0;
    return m->frame[i].len / 4;
}

/* Copy n little-endian 4-byte words into host-order words. */
static void copy_le32(void *out, const uint8_t *p, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n)
        memcpy(out, p, n * 4);
#else
    uint32_t *o = out;
    for (size_t k = 0; k < n; k++)
        o[k] = get32(p + 4 * k);
#endif
}

size_t ds4w_msg_i32(const ds4w_msg *m, int i, int32_t *out)
{
    if (i < 0 || i >= m->nframes || m->kind[i] != DS4W_FK_I32)
        return 0;
    size_t n = m->frame[i].len / 4;
    copy_le32(out, m->frame[i].data, n);
    return n;
}

size_t ds4w_msg_f32(const ds4w_msg *m, int i, float *out)
{
    if (i < 0 || i >= m->nframes || m->kind[i] != DS4W_FK_F32)
        return 0;
    size_t n = m->frame[i].len / 4;
    copy_le32(out, m->frame[i].data, n);
    return n;
}

int ds4w_msg_shmref(const ds4w_msg *m, int i, ds4w_shmref *out)
{
    if (i < 0 || i >= m->nframes || m->kind[i] != DS4W_FK_SHMREF)
        return -1;
    return ds4w_shmref_decode(m->frame[i].data, m->frame[i].len, out, NULL,
                              0) ? -1 : 0;
}

/* ---- building ----------------------------------------------------------- */

void ds4w_out_init(ds4w_out *o, uint16_t type, const uint8_t reqid[16])
{
    memset(o, 0, sizeof *o);
    o->type = type;
    if (reqid)
        memcpy(o->reqid, reqid, 16);
}

/* Take ownership of data as the next frame of kind, or note the failure. */
static void out_add(ds4w_out *o, int kind, uint8_t *data, size_t len)
{
    if (o->nframes >= DS4W_MAX_PAYLOAD) {
        free(data);
        if (!o->failed)
            snprintf(o->fail_msg, sizeof o->fail_msg,
                     "more than %d payload frames", DS4W_MAX_PAYLOAD);
        o->failed = 1;
        return;
    }
    o->kind[o->nframes] = (uint8_t)kind;
    o->data[o->nframes] = data;
    o->len[o->nframes] = len;
    o->nframes++;
}

/* Note a builder failure (the first one is reported). */
static void out_fail(ds4w_out *o, const char *msg)
{
    if (!o->failed) {
        size_t n = strnlen(msg, sizeof o->fail_msg - 1);
        memcpy(o->fail_msg, msg, n);
        o->fail_msg[n] = 0;
    }
    o->failed = 1;
}

void ds4w_out_json(ds4w_out *o, const json_t *obj)
{
    if (!json_is_object(obj)) {
        out_fail(o, "JSON frame must be an object");
        return;
    }
    size_t nf;
    const ds4w_field *fl = ds4w_msg_fields(o->type, &nf);
    char e2[160];
    if (ds4w_json_check(obj, fl, nf, NULL, e2, sizeof e2)) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s: %s", ds4w_type_name(o->type), e2);
        out_fail(o, msg);
        return;
    }
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) {
        out_fail(o, "cannot serialise JSON");
        return;
    }
    out_add(o, DS4W_FK_JSON, (uint8_t *)s, strlen(s));
}

void ds4w_out_json_text(ds4w_out *o, const char *text, size_t len)
{
    uint8_t *p = ds4_xmalloc(len);
    memcpy(p, text, len);
    out_add(o, DS4W_FK_JSON, p, len);
}

void ds4w_out_i32(ds4w_out *o, const int32_t *v, size_t n)
{
    uint8_t *p = ds4_xmalloc(n * 4);
    for (size_t k = 0; k < n; k++)
        put32(p + 4 * k, (uint32_t)v[k]);
    out_add(o, DS4W_FK_I32, p, n * 4);
}

void ds4w_out_f32(ds4w_out *o, const float *v, size_t n)
{
    uint8_t *p = ds4_xmalloc(n * 4);
    for (size_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        put32(p + 4 * k, u);
    }
    out_add(o, DS4W_FK_F32, p, n * 4);
}

void ds4w_out_bytes(ds4w_out *o, const void *src, size_t n)
{
    uint8_t *p = ds4_xmalloc(n);
    if (n)
        memcpy(p, src, n);
    out_add(o, DS4W_FK_BYTES, p, n);
}

void ds4w_out_shmref(ds4w_out *o, const ds4w_shmref *ref)
{
    uint8_t *p = ds4_xmalloc(DS4W_SHMREF_SIZE);
    if (ds4w_shmref_encode(ref, p)) {
        free(p);
        out_fail(o, "invalid SHMREF (segment name or offset+length)");
        return;
    }
    out_add(o, DS4W_FK_SHMREF, p, DS4W_SHMREF_SIZE);
}

/* Whether a built frame of kind `have` fits schema slot `want`; BULK slots
 * also fix the INLINE flag. */
static int slot_ok(ds4w_out *o, int want, int have)
{
    want &= ~DS4W_FK_OPT;
    if (want == DS4W_FK_BULK) {
        if (have == DS4W_FK_BYTES)
            o->flags |= DS4W_FLAG_INLINE;
        else if (have == DS4W_FK_SHMREF)
            o->flags &= ~(uint32_t)DS4W_FLAG_INLINE;
        return have == DS4W_FK_BYTES || have == DS4W_FK_SHMREF;
    }
    return want == have;
}

int ds4w_out_encode(ds4w_out *o, ds4w_buf *frames, size_t *nframes,
                    char *err, size_t errlen)
{
    const ds4w_msgdef *d = ds4w_msgdef_find(o->type);
    if (!d)
        return fail(DS4W_E_UNKNOWN_TYPE, err, errlen,
                    "cannot send unknown type 0x%04x", o->type);
    if (o->failed)
        return fail(DS4W_E_INTERNAL, err, errlen, "%s: %s", d->name,
                    o->fail_msg);
    if (o->nframes < d->nreq || o->nframes > d->nmax)
        return fail(DS4W_E_INTERNAL, err, errlen,
                    "%s: built %d payload frames, schema wants %u to %u",
                    d->name, o->nframes, d->nreq, d->nmax);
    for (int i = 0; i < o->nframes; i++)
        if (!slot_ok(o, d->frames[i], o->kind[i]))
            return fail(DS4W_E_INTERNAL, err, errlen,
                        "%s: frame %d is %s, schema wants %s", d->name, i,
                        ds4w_fk_name(o->kind[i]), ds4w_fk_name(d->frames[i]));
    if (o->flags & ~(uint32_t)DS4W_FLAGS_KNOWN)
        return fail(DS4W_E_INTERNAL, err, errlen, "%s: unknown flags 0x%x",
                    d->name, o->flags);
    memcpy(o->hdr, DS4W_MAGIC, 4);
    put16(o->hdr + 4, DS4W_VERSION);
    put16(o->hdr + 6, o->type);
    put32(o->hdr + 8, o->flags);
    put32(o->hdr + 12, o->seq);
    memcpy(o->hdr + 16, o->reqid, 16);
    frames[0].data = o->hdr;
    frames[0].len = DS4W_HDR_SIZE;
    for (int i = 0; i < o->nframes; i++) {
        frames[i + 1].data = o->data[i];
        frames[i + 1].len = o->len[i];
    }
    *nframes = (size_t)o->nframes + 1;
    return DS4W_OK;
}

void ds4w_out_free(ds4w_out *o)
{
    for (int i = 0; i < o->nframes; i++) {
        free(o->data[i]);
        o->data[i] = NULL;
    }
    o->nframes = 0;
}

json_t *ds4w_error_json(int code, const char *message)
{
    char *msg = ds4_xstrdup(message ? message : "");
    utf8_sanitize(msg);
    json_t *j = json_object();
    json_object_set_new(j, "code", json_integer(code));
    json_object_set_new(j, "name", json_string(ds4w_err_name(code)));
    json_object_set_new(j, "message", json_string(msg));
    free(msg);
    return j;
}

/* ---- sockets ------------------------------------------------------------ */

/* zmq free callback for payload buffers handed over by ds4w_send. */
static void zfree(void *data, void *hint)
{
    free(data);
}

/* Send one part. Small parts are copied; with own != NULL the buffer *own
 * is handed to zmq (no second copy of bulk data) and *own is cleared as
 * soon as zmq owns it. 0, or -1 with errno. */
static int send_part(void *sock, const void *data, size_t len, uint8_t **own,
                     int flags)
{
    zmq_msg_t part;
    if (own && len) {
        if (zmq_msg_init_data(&part, *own, len, zfree, NULL))
            return -1;
        *own = NULL;
    } else {
        if (zmq_msg_init_size(&part, len))
            return -1;
        if (len)
            memcpy(zmq_msg_data(&part), data, len);
    }
    if (zmq_msg_send(&part, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&part);
        errno = e;
        return -1;
    }
    return 0;
}

int ds4w_send(void *sock, const ds4w_route *route, ds4w_out *o, int zflags,
              char *err, size_t errlen)
{
    ds4w_buf fr[DS4W_MAX_PAYLOAD + 1];
    size_t n;
    if (ds4w_out_encode(o, fr, &n, err, errlen)) {
        ds4w_out_free(o);
        count(&g_counters.tx_fail);
        errno = EINVAL;
        return -1;
    }
    int rc = 0, stage = 0;
    if (route && route->len) {
        rc = send_part(sock, route->id, route->len, NULL,
                       zflags | ZMQ_SNDMORE);
        if (!rc && route->delim)
            rc = send_part(sock, "", 0, NULL, zflags | ZMQ_SNDMORE);
        stage = 1;
    }
    if (!rc)
        rc = send_part(sock, fr[0].data, fr[0].len, NULL,
                       zflags | (n > 1 ? ZMQ_SNDMORE : 0));
    /* Once the first part is queued, libzmq accepts the rest atomically. */
    for (size_t i = 1; !rc && i < n; i++)
        rc = send_part(sock, fr[i].data, fr[i].len, &o->data[i - 1],
                       zflags | (i + 1 < n ? ZMQ_SNDMORE : 0));
    int e = errno;
    ds4w_out_free(o);
    if (rc) {
        count(&g_counters.tx_fail);
        fail(-1, err, errlen, "send %s%s: %s", ds4w_type_name(o->type),
             stage ? " to router peer" : "", zmq_strerror(e));
        errno = e;
        return -1;
    }
    count(&g_counters.tx_msgs);
    if (o->type == DS4W_T_ERROR)
        count(&g_counters.tx_errors);
    return 0;
}

int ds4w_send_json(void *sock, const ds4w_route *route, uint16_t type,
                   const uint8_t reqid[16], uint32_t flags, uint32_t seq,
                   const json_t *obj, char *err, size_t errlen)
{
    ds4w_out o;
    ds4w_out_init(&o, type, reqid);
    o.flags = flags;
    o.seq = seq;
    if (obj)
        ds4w_out_json(&o, obj);
    return ds4w_send(sock, route, &o, 0, err, errlen);
}

int ds4w_reply_error(void *sock, const ds4w_msg *m, int code,
                     const char *message)
{
    json_t *j = ds4w_error_json(code, message);
    if (m && m->bad_field)
        json_object_set_new(j, "field", json_string(m->bad_field));
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_ERROR, m && m->hdr_ok ? m->reqid : NULL);
    o.flags = DS4W_FLAG_END;
    ds4w_out_json(&o, j);
    json_decref(j);
    /* never block a daemon on a client that does not read */
    return ds4w_send(sock, m && m->route.len ? &m->route : NULL, &o,
                     ZMQ_DONTWAIT, NULL, 0);
}

/* Receive every part of one message into m->parts (extra parts dropped and
 * counted in *dropped). 0, or -1 with errno. */
static int recv_parts(void *sock, ds4w_msg *m, int zflags, size_t *dropped)
{
    int more = 1, first = 1;
    *dropped = 0;
    while (more) {
        zmq_msg_t scratch, *dst = &scratch;
        if (m->nparts < DS4W_MAX_PARTS)
            dst = &m->parts[m->nparts];
        zmq_msg_init(dst);
        int rc;
        do {
            rc = zmq_msg_recv(dst, sock, first ? zflags : 0);
        } while (rc < 0 && !first && errno == EINTR);
        if (rc < 0) {
            int e = errno;
            zmq_msg_close(dst);
            errno = e;
            return -1;
        }
        first = 0;
        more = zmq_msg_more(dst);
        if (dst == &scratch) {
            zmq_msg_close(&scratch);
            (*dropped)++;
        } else {
            m->nparts++;
        }
    }
    return 0;
}

/* Decode a received message's parts (after the envelope) and check that its
 * direction suits the socket. */
static int recv_decode(ds4w_msg *m, int is_router, size_t dropped,
                       char *err, size_t errlen)
{
    int idx = 0;
    if (is_router) {
        size_t rl = zmq_msg_size(&m->parts[0]);
        if (rl > DS4W_ROUTE_MAX)
            rl = DS4W_ROUTE_MAX;
        memcpy(m->route.id, zmq_msg_data(&m->parts[0]), rl);
        m->route.len = rl;
        idx = 1;
        if (m->nparts > 1 && zmq_msg_size(&m->parts[1]) == 0) {
            m->route.delim = 1;
            idx = 2;
        }
    }
    ds4w_buf fr[DS4W_MAX_PARTS];
    size_t n = 0;
    for (int i = idx; i < m->nparts; i++, n++) {
        fr[n].data = zmq_msg_data(&m->parts[i]);
        fr[n].len = zmq_msg_size(&m->parts[i]);
    }
    if (dropped) {
        /* read the header anyway so the ERROR reply can echo the id */
        if (n)
            ds4w_header_decode(fr[0].data, fr[0].len, m, NULL, 0);
        return fail(DS4W_E_BAD_FRAME, err, errlen,
                    "message has %zu frames, at most %d are accepted",
                    n + dropped, 1 + DS4W_MAX_PAYLOAD);
    }
    int rc = decode_into(m, fr, n, &g_limits, err, errlen);
    if (rc)
        return rc;
    if (is_router && m->def->dir != DS4W_DIR_REQ)
        return fail(DS4W_E_INVALID_REQUEST, err, errlen,
                    "%s is not a request", m->def->name);
    if (!is_router && m->def->dir == DS4W_DIR_REQ)
        return fail(DS4W_E_INVALID_REQUEST, err, errlen,
                    "%s is a request, not a reply", m->def->name);
    return DS4W_OK;
}

int ds4w_recv(void *sock, ds4w_msg *m, int is_router, int zflags,
              char *err, size_t errlen)
{
    memset(m, 0, offsetof(ds4w_msg, parts));
    m->json_frame = -1;
    m->nparts = 0;
    if (err && errlen)
        err[0] = 0;
    size_t dropped;
    if (recv_parts(sock, m, zflags, &dropped))
        return -1;
    int rc = recv_decode(m, is_router, dropped, err, errlen);
    if (rc) {
        count(&g_counters.rx_bad);
        count(&g_counters.rx_err[rc > 0 && rc < DS4W_E_COUNT ? rc : 0]);
    } else {
        count(&g_counters.rx_msgs);
    }
    return rc;
}

int ds4w_socket_setup(void *sock, int is_router)
{
    int zero = 0, one = 1;
    size_t big = g_limits.max_bulk_bytes > g_limits.max_frame_bytes
                     ? g_limits.max_bulk_bytes
                     : g_limits.max_frame_bytes;
    int64_t maxsz = (int64_t)big;
    if (zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero))
        return -1;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz))
        return -1;
    if (is_router &&
        zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one))
        return -1;
    return 0;
}
