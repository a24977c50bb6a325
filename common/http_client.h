/* http_client - a small HTTP/1.1 client over plain sockets (one request per
 * connection, Connection: close) and an incremental SSE parser. Used by the
 * command-line tools (ds4, ds4-gwbench) to talk to gatewayd; blocking, one
 * connection per caller, safe to use from several threads at once (no
 * shared state). */
#ifndef DS4_HTTP_CLIENT_H
#define DS4_HTTP_CLIENT_H

#include <signal.h>
#include <stddef.h>

/* Growable NUL-terminated byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} hc_buf;

void hc_buf_add(hc_buf *b, const char *s, size_t n);
void hc_buf_adds(hc_buf *b, const char *s);
void hc_buf_free(hc_buf *b);
void hc_buf_clear(hc_buf *b);

/* Result codes of the reading functions (> 0 means bytes). */
enum { HC_EOF = 0, HC_ERR = -1, HC_INTR = -2, HC_TIMEOUT = -3, HC_TRUNC = -4 };

/* Where to send a request. */
typedef struct {
    const char *host;
    int port;
    const char *api_key;              /* NULL/"": no Authorization header */
    int timeout_s;                    /* idle bound on reads; 0 none */
    const char *user_agent;           /* NULL: "ds4-cli" */
    volatile sig_atomic_t *intr;      /* nonzero stops reads (HC_INTR); may be NULL */
} hc_target;

/* One response being read. */
typedef struct {
    int fd;
    char raw[65536];
    size_t beg, end;
    int status;
    int chunked;
    long long clen; /* -1: until EOF */
    long long left; /* bytes left in the current chunk / body */
    int cstate;     /* chunked: 0 size line, 1 data, 2 CRLF after data, 3 trailer */
    int done;
    int timeout_ms; /* idle bound */
    volatile sig_atomic_t *intr;
    char ctype[128];
} hc_resp;

/* Connect to host:port. The fd, or -1 + err. */
int hc_connect(const char *host, int port, char *err, size_t errlen);
/* Write everything; 0 or -1 (EPIPE is an error: SIGPIPE should be ignored). */
int hc_write_all(int fd, const char *p, size_t n);
/* Send one request (body: JSON, may be NULL) and read the response head
 * into r (r->fd stays open for the body; the caller closes it).
 * 0, HC_INTR, or -1 + err. */
int hc_request(const hc_target *t, const char *method, const char *path, const char *body,
               hc_resp *r, char *err, size_t errlen);
/* Parse the status line and headers (hc_request does it). 0 or an HC_ code. */
int hc_read_head(hc_resp *r);
/* Decoded body bytes into out: > 0 bytes, 0 at the end of the body, or an
 * HC_ code (HC_TRUNC: the connection ended inside the body). */
long hc_body_read(hc_resp *r, char *out, size_t cap);
/* The rest of the body into out, at most max bytes. 0 or an HC_ code. */
int hc_slurp(hc_resp *r, hc_buf *out, size_t max);
/* "message (type)" from an OpenAI or Anthropic error body, else the text. */
void hc_error_text(const char *body, char *out, size_t len);

/* SSE: cb is called for each complete event; nonzero stops the stream. */
typedef int (*hc_sse_cb)(void *ud, const char *event, const char *data, size_t len);

typedef struct {
    hc_buf line, data;
    char event[64];
    int have_data, last_cr, comments;
    hc_sse_cb cb;
    void *ud;
    /* optional: called with each comment line's text (after ':') */
    void (*on_comment)(void *ud, const char *text, size_t len);
} hc_sse;

/* Feed raw bytes; lines end with \n, \r\n or \r. Nonzero: a callback asked
 * to stop (its value), or -1 for a line over 64 MiB. Free p->line and
 * p->data with hc_buf_free when done. */
int hc_sse_feed(hc_sse *p, const char *s, size_t n);
/* One complete line without its terminator; hc_sse_line(p, "", 0) at the
 * end of the body dispatches an event not followed by a blank line. */
int hc_sse_line(hc_sse *p, const char *l, size_t n);
/* Read r's body to its end through p (the trailing event included). The
 * value a callback stopped with (nonzero), else 0; *last gets the last read
 * result (0 at a clean end, an HC_ code when the body broke off). */
int hc_sse_run(hc_resp *r, hc_sse *p, long *last);

#endif
