/* gw_json.h - the gateway's error value and typed access to fields of
 * untrusted JSON request bodies.
 *
 * Every problem with a client's request becomes a gw_err: an HTTP status,
 * an error kind (mapped to each API's own error "type" string by the API
 * modules), the offending field as a path ("messages[2].content"), an
 * optional machine code ("context_length_exceeded") and a sentence. The
 * getters below fill it the same way the wire decoder words its errors
 * ("field 'max_tokens': expected integer, got string"), so a client always
 * learns which field was wrong.
 *
 * JSON null in an optional field counts as absent: SDKs send null for
 * parameters the user did not set. */
#ifndef DS4_GW_JSON_H
#define DS4_GW_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* What went wrong, independent of the API's spelling. */
enum gw_ekind {
    GW_E_INVALID = 0,     /* 400: malformed body, wrong field, over context */
    GW_E_AUTH,            /* 401: missing or wrong API key */
    GW_E_PERMISSION,      /* 403: e.g. test-only field outside test mode */
    GW_E_NOT_FOUND,       /* 404: unknown path or model */
    GW_E_METHOD,          /* 405: wrong method on a known path */
    GW_E_TOO_LARGE,       /* 413: body over the limit */
    GW_E_RATE_LIMIT,      /* 429: engine queue full */
    GW_E_SERVER,          /* 500: a bug or a stage's internal error */
    GW_E_UNAVAILABLE,     /* 503: a stage is down or not ready */
};

#define GW_PARAM_MAX 160

typedef struct gw_err {
    int status;                 /* HTTP status */
    int kind;                   /* enum gw_ekind */
    char param[GW_PARAM_MAX];   /* offending field path, "" if none */
    char code[48];              /* machine code, "" if none */
    char msg[512];              /* human sentence */
    unsigned retry_after_s;     /* for 429 (Retry-After), 0 = none */
} gw_err;

/* Fill e (status from kind); param may be NULL. Returns -1 so callers can
 * `return gw_fail(...)`. */
int gw_fail(gw_err *e, int kind, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* HTTP status of an error kind. */
int gw_ekind_status(int kind);

/* A field path: "prefix.key" or "key" when prefix is empty/NULL; indexes
 * with gw_path_idx ("messages[3]"). Truncates safely. */
void gw_path(char *out, size_t cap, const char *prefix, const char *key);
void gw_path_idx(char *out, size_t cap, const char *prefix, size_t i);

/* Name of a JSON value's type for messages: "string", "integer", ... */
const char *gw_jtype(const json_t *v);

enum { GW_OPT = 0, GW_REQ = 1 };

/* Typed getters on obj[key] (path names obj for messages; "" for the top
 * level). Each returns 1 when the field is present, 0 when absent (or null)
 * and optional, -1 with e filled when required and absent or of the wrong
 * type or out of range. */
int gw_get_string(const json_t *obj, const char *path, const char *key, int req,
                  const char **out, gw_err *e);
int gw_get_bool(const json_t *obj, const char *path, const char *key, int req, int *out,
                gw_err *e);
int gw_get_int(const json_t *obj, const char *path, const char *key, int req, int64_t min,
               int64_t max, int64_t *out, gw_err *e);
int gw_get_num(const json_t *obj, const char *path, const char *key, int req, double min,
               double max, double *out, gw_err *e);
int gw_get_object(const json_t *obj, const char *path, const char *key, int req,
                  json_t **out, gw_err *e);
int gw_get_array(const json_t *obj, const char *path, const char *key, int req,
                 json_t **out, gw_err *e);
/* Present (not null) value of any type, or NULL. */
json_t *gw_get_any(const json_t *obj, const char *key);

/* Parse an HTTP body as one JSON object: invalid UTF-8, \u0000, trailing
 * data, duplicate keys and non-objects are 400s. NULL with e filled. */
json_t *gw_parse_body(const char *body, size_t len, gw_err *e);

/* A growable byte buffer (always NUL-terminated once used). */
typedef struct gw_buf {
    char *p;
    size_t len, cap;
} gw_buf;

void gw_buf_put(gw_buf *b, const void *s, size_t n);
void gw_buf_puts(gw_buf *b, const char *s);
void gw_buf_printf(gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append obj as compact JSON (jansson); obj NULL appends "null". */
void gw_buf_json(gw_buf *b, const json_t *obj);
/* Drop the first n bytes. */
void gw_buf_consume(gw_buf *b, size_t n);
void gw_buf_reset(gw_buf *b);
void gw_buf_free(gw_buf *b);

/* Compact JSON text of obj (malloc'd). */
char *gw_json_dump(const json_t *obj);

/* json_string for bytes that may not be valid UTF-8 (invalid sequences
 * become U+FFFD, as Python's errors="replace"). Never NULL. */
json_t *gw_json_str(const char *s, size_t n);

/* 1 if [s, s+n) is valid UTF-8 without NUL bytes. */
int gw_utf8_valid(const char *s, size_t n);

/* Random lower-case hex id with a prefix: "call_" + 32 hex. out needs
 * strlen(prefix) + 33 bytes. */
void gw_rand_id(char *out, size_t cap, const char *prefix);

#endif
