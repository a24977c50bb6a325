/* gw_json.c - gateway errors, typed JSON field access, byte buffers. */
#include "gw_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "tokenizerd/tok_utf8.h"
#include "util.h"

int gw_ekind_status(int kind)
{
    switch (kind) {
    case GW_E_INVALID: return 400;
    case GW_E_AUTH: return 401;
    case GW_E_PERMISSION: return 403;
    case GW_E_NOT_FOUND: return 404;
    case GW_E_METHOD: return 405;
    case GW_E_TOO_LARGE: return 413;
    case GW_E_RATE_LIMIT: return 429;
    case GW_E_UNAVAILABLE: return 503;
    default: return 500;
    }
}

int gw_fail(gw_err *e, int kind, const char *param, const char *fmt, ...)
{
    if (!e)
        return -1;
    e->kind = kind;
    e->status = gw_ekind_status(kind);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code[0] = 0;
    e->retry_after_s = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void gw_path(char *out, size_t cap, const char *prefix, const char *key)
{
    if (prefix && *prefix)
        snprintf(out, cap, "%s.%s", prefix, key);
    else
        snprintf(out, cap, "%s", key);
}

void gw_path_idx(char *out, size_t cap, const char *prefix, size_t i)
{
    snprintf(out, cap, "%s[%zu]", prefix ? prefix : "", i);
}

const char *gw_jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

json_t *gw_get_any(const json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

/* Common start of every getter: 1 present, 0 absent optional, -1 error. */
static int present(const json_t *obj, const char *path, const char *key, int req, json_t **v,
                   char *fp, size_t fpcap, gw_err *e)
{
    gw_path(fp, fpcap, path, key);
    *v = gw_get_any(obj, key);
    if (*v)
        return 1;
    if (req)
        return gw_fail(e, GW_E_INVALID, fp, "missing required field '%s'", fp);
    return 0;
}

static int wrong(gw_err *e, const char *fp, const char *want, const json_t *v)
{
    return gw_fail(e, GW_E_INVALID, fp, "field '%s': expected %s, got %s", fp, want, gw_jtype(v));
}

int gw_get_string(const json_t *obj, const char *path, const char *key, int req,
                  const char **out, gw_err *e)
{
    char fp[GW_PARAM_MAX];
    json_t *v;
    int rc = present(obj, path, key, req, &v, fp, sizeof fp, e);
    if (rc <= 0)
        return rc;
    if (!json_is_string(v))
        return wrong(e, fp, "string", v);
    *out = json_string_value(v);
    return 1;
}

int gw_get_bool(const json_t *obj, const char *path, const char *key, int req, int *out,
                gw_err *e)
{
    char fp[GW_PARAM_MAX];
    json_t *v;
    int rc = present(obj, path, key, req, &v, fp, sizeof fp, e);
    if (rc <= 0)
        return rc;
    if (!json_is_boolean(v))
        return wrong(e, fp, "boolean", v);
    *out = json_is_true(v);
    return 1;
}

int gw_get_int(const json_t *obj, const char *path, const char *key, int req, int64_t min,
               int64_t max, int64_t *out, gw_err *e)
{
    char fp[GW_PARAM_MAX];
    json_t *v;
    int rc = present(obj, path, key, req, &v, fp, sizeof fp, e);
    if (rc <= 0)
        return rc;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v); /* 16.0 from a JS client */
    } else {
        return wrong(e, fp, "integer", v);
    }
    if (x < min || x > max)
        return gw_fail(e, GW_E_INVALID, fp, "field '%s': %lld is out of range [%lld, %lld]", fp,
                       (long long)x, (long long)min, (long long)max);
    *out = x;
    return 1;
}

int gw_get_num(const json_t *obj, const char *path, const char *key, int req, double min,
               double max, double *out, gw_err *e)
{
    char fp[GW_PARAM_MAX];
    json_t *v;
    int rc = present(obj, path, key, req, &v, fp, sizeof fp, e);
    if (rc <= 0)
        return rc;
    if (!json_is_number(v))
        return wrong(e, fp, "number", v);
    double x = json_number_value(v);
    if (!(x >= min && x <= max))
        return gw_fail(e, GW_E_INVALID, fp, "field '%s': %g is out of range [%g, %g]", fp, x,
                       min, max);
    *out = x;
    return 1;
}

int gw_get_object(const json_t *obj, const char *path, const char *key, int req,
                  json_t **out, gw_err *e)
{
    char fp[GW_PARAM_MAX];
    json_t *v;
    int rc = present(obj, path, key, req, &v, fp, sizeof fp, e);
    if (rc <= 0)
        return rc;
    if (!json_is_object(v))
        return wrong(e, fp, "object", v);
    *out = v;
    return 1;
}

int gw_get_array(const json_t *obj, const char *path, const char *key, int req,
                 json_t **out, gw_err *e)
{
    char fp[GW_PARAM_MAX];
    json_t *v;
    int rc = present(obj, path, key, req, &v, fp, sizeof fp, e);
    if (rc <= 0)
        return rc;
    if (!json_is_array(v))
        return wrong(e, fp, "array", v);
    *out = v;
    return 1;
}

json_t *gw_parse_body(const char *body, size_t len, gw_err *e)
{
    if (!len) {
        gw_fail(e, GW_E_INVALID, NULL, "the request body is empty (expected a JSON object)");
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        gw_fail(e, GW_E_INVALID, NULL, "malformed JSON body: %s (line %d, column %d)", je.text,
                je.line, je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        gw_fail(e, GW_E_INVALID, NULL, "the request body must be a JSON object, got %s",
                gw_jtype(v));
        json_decref(v);
        return NULL;
    }
    return v;
}

void gw_buf_put(gw_buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n + 1)
            c *= 2;
        b->p = ds4_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void gw_buf_puts(gw_buf *b, const char *s)
{
    gw_buf_put(b, s, strlen(s));
}

void gw_buf_printf(gw_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        gw_buf_put(b, tmp, (size_t)n);
        return;
    }
    char *big = ds4_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gw_buf_put(b, big, (size_t)n);
    free(big);
}

static int dump_cb(const char *s, size_t n, void *ud)
{
    gw_buf_put(ud, s, n);
    return 0;
}

void gw_buf_json(gw_buf *b, const json_t *obj)
{
    if (!obj) {
        gw_buf_puts(b, "null");
        return;
    }
    json_dump_callback(obj, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY);
}

void gw_buf_consume(gw_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p)
        b->p[b->len] = 0;
}

void gw_buf_reset(gw_buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = 0;
}

void gw_buf_free(gw_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

char *gw_json_dump(const json_t *obj)
{
    gw_buf b = {0};
    gw_buf_json(&b, obj);
    return b.p ? b.p : ds4_xstrdup("");
}

int gw_utf8_valid(const char *s, size_t n)
{
    return tok_utf8_valid_prefix(s, n) == n && !memchr(s, 0, n);
}

json_t *gw_json_str(const char *s, size_t n)
{
    json_t *v = NULL;
    if (gw_utf8_valid(s, n)) {
        v = json_stringn(s, n);
    } else {
        tok_buf t = {0};
        tok_buf_reserve(&t, n + 16);
        tok_utf8_sanitize(s, n, &t);
        /* NUL bytes survive sanitizing; jansson's stringn accepts them */
        v = json_stringn(t.data, t.len);
        tok_buf_free(&t);
    }
    return v ? v : json_string("");
}

void gw_rand_id(char *out, size_t cap, const char *prefix)
{
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = getrandom(r + got, sizeof r - got, 0);
        if (k > 0)
            got += (size_t)k;
        else
            break;
    }
    if (got < sizeof r) { /* no entropy source: still unique per process */
        static uint64_t ctr;
        uint64_t t = ds4_now_ns() ^ __atomic_add_fetch(&ctr, 1, __ATOMIC_RELAXED);
        memcpy(r, &t, 8);
    }
    static const char hx[] = "0123456789abcdef";
    char h[33];
    for (int i = 0; i < 16; i++) {
        h[2 * i] = hx[r[i] >> 4];
        h[2 * i + 1] = hx[r[i] & 15];
    }
    h[32] = 0;
    snprintf(out, cap, "%s%s", prefix, h);
}
