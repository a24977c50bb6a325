/* http_client - see http_client.h. */
#include "http_client.h"

#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- growable byte buffer ------------------------------------------------ */

void hc_buf_add(hc_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = ds4_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void hc_buf_adds(hc_buf *b, const char *s) { hc_buf_add(b, s, strlen(s)); }
void hc_buf_free(hc_buf *b) { free(b->p), memset(b, 0, sizeof *b); }
void hc_buf_clear(hc_buf *b)
{
    b->n = 0;
    if (b->p)
        b->p[0] = 0;
}

/* ---- HTTP/1.1 client (plain sockets, one request per connection) ---------- */

/* Read more raw bytes; poll in short slices so Ctrl-C is noticed. */
static int hc_fill(hc_resp *r)
{
    if (r->beg > 0 && r->beg == r->end)
        r->beg = r->end = 0;
    if (r->end == sizeof r->raw) {
        if (r->beg == 0)
            return HC_ERR; /* a line longer than the buffer */
        memmove(r->raw, r->raw + r->beg, r->end - r->beg);
        r->end -= r->beg;
        r->beg = 0;
    }
    int waited = 0;
    for (;;) {
        if (r->intr && *r->intr)
            return HC_INTR;
        struct pollfd pf = {r->fd, POLLIN, 0};
        int pr = poll(&pf, 1, 100);
        if (pr < 0 && errno != EINTR)
            return HC_ERR;
        if (pr <= 0) {
            waited += 100;
            if (r->timeout_ms > 0 && waited >= r->timeout_ms)
                return HC_TIMEOUT;
            continue;
        }
        ssize_t n = read(r->fd, r->raw + r->end, sizeof r->raw - r->end);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return HC_ERR;
        r->end += (size_t)n;
        return n == 0 ? HC_EOF : (int)n;
    }
}

/* Index of the end of the line starting at beg ('\n'), or -1. */
static long hc_find_nl(const hc_resp *r)
{
    const char *p = memchr(r->raw + r->beg, '\n', r->end - r->beg);
    return p ? (long)(p - r->raw) : -1;
}

/* Case-insensitive "Name:" prefix; returns the value (spaces skipped). */
static const char *hc_hdr_value(const char *line, const char *name)
{
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) || line[n] != ':')
        return NULL;
    line += n + 1;
    while (*line == ' ' || *line == '\t')
        line++;
    return line;
}

/* Read and parse the status line and headers. 0 or a NET_ code. */
int hc_read_head(hc_resp *r)
{
    const char *end;
    for (;;) {
        end = memmem(r->raw, r->end, "\r\n\r\n", 4);
        if (end)
            break;
        if (r->end == sizeof r->raw)
            return HC_ERR;
        int rc = hc_fill(r);
        if (rc <= 0)
            return rc == HC_EOF ? HC_TRUNC : rc;
    }
    size_t hlen = (size_t)(end - r->raw) + 4;
    char *head = ds4_xmalloc(hlen + 1);
    memcpy(head, r->raw, hlen);
    head[hlen] = 0;
    r->beg = hlen;
    r->clen = -1;
    int ok = sscanf(head, "HTTP/1.%*d %d", &r->status) == 1;
    for (char *save = NULL, *l = strtok_r(head, "\r\n", &save); l; l = strtok_r(NULL, "\r\n", &save)) {
        const char *v;
        if ((v = hc_hdr_value(l, "Content-Length")))
            r->clen = strtoll(v, NULL, 10);
        else if ((v = hc_hdr_value(l, "Transfer-Encoding")))
            r->chunked = strcasestr(v, "chunked") != NULL;
        else if ((v = hc_hdr_value(l, "Content-Type")))
            snprintf(r->ctype, sizeof r->ctype, "%s", v);
    }
    free(head);
    if (!ok || r->clen < -1)
        return HC_ERR;
    r->left = r->clen;
    if (r->chunked)
        r->clen = -1;
    return 0;
}

/* Decoded body bytes into out: > 0 bytes, 0 at the end of the body, or a
 * NET_ code (HC_TRUNC: the connection ended inside the body). */
long hc_body_read(hc_resp *r, char *out, size_t cap)
{
    for (;;) {
        if (r->done)
            return 0;
        size_t avail = r->end - r->beg;
        if (!r->chunked) {
            if (r->clen >= 0 && r->left == 0) {
                r->done = 1;
                return 0;
            }
            if (avail) {
                size_t n = avail < cap ? avail : cap;
                if (r->clen >= 0 && (long long)n > r->left)
                    n = (size_t)r->left;
                memcpy(out, r->raw + r->beg, n);
                r->beg += n;
                if (r->clen >= 0)
                    r->left -= (long long)n;
                return (long)n;
            }
        } else if (r->cstate == 1 && avail) {
            size_t n = avail < cap ? avail : cap;
            if ((long long)n > r->left)
                n = (size_t)r->left;
            memcpy(out, r->raw + r->beg, n);
            r->beg += n;
            r->left -= (long long)n;
            if (r->left == 0)
                r->cstate = 2;
            return (long)n;
        } else if (r->cstate != 1) {
            long nl = hc_find_nl(r);
            if (nl >= 0) {
                char line[128];
                size_t len = (size_t)nl - r->beg;
                snprintf(line, sizeof line, "%.*s", (int)(len < 127 ? len : 127), r->raw + r->beg);
                r->beg = (size_t)nl + 1;
                if (r->cstate == 2) { /* the CRLF after a chunk's data */
                    if (line[0] && strcmp(line, "\r"))
                        return HC_ERR;
                    r->cstate = 0;
                } else if (r->cstate == 0) {
                    char *e;
                    errno = 0;
                    long long sz = strtoll(line, &e, 16);
                    if (e == line || errno || sz < 0)
                        return HC_ERR;
                    if (sz == 0)
                        r->cstate = 3;
                    else
                        r->cstate = 1, r->left = sz;
                } else if (!line[0] || !strcmp(line, "\r")) { /* end of trailer */
                    r->done = 1;
                    return 0;
                }
                continue;
            }
        }
        int rc = hc_fill(r);
        if (rc == HC_EOF) {
            if ((!r->chunked && r->clen < 0) || (r->chunked && r->cstate == 3)) {
                r->done = 1;
                return 0;
            }
            return HC_TRUNC;
        }
        if (rc < 0)
            return rc;
    }
}

/* Connect to host:port (loopback or not), bounded by timeout. -1 + err. */
int hc_connect(const char *host, int port, char *err, size_t errlen)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc) {
        ds4_seterr(err, errlen, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        ds4_seterr(err, errlen, "cannot connect to %s:%d: %s (is the stack running? "
                   "scripts/ds4-up.sh status)", host, port, strerror(e ? e : ECONNREFUSED));
    return fd;
}

/* Write everything (the peer may close early: EPIPE is an error, not a
 * signal, since SIGPIPE is ignored). */
int hc_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Send one request and read the response head into r. 0 or -1 + err. */
int hc_request(const hc_target *c, const char *method, const char *path,
               const char *body, hc_resp *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->fd = hc_connect(c->host, c->port, err, errlen);
    if (r->fd < 0)
        return -1;
    r->timeout_ms = c->timeout_s > 0 ? c->timeout_s * 1000 : 0;
    r->intr = c->intr;
    hc_buf req = {0};
    char line[512];
    snprintf(line, sizeof line, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: %s\r\n"
             "Connection: close\r\n", method, path, c->host, c->port,
             c->user_agent ? c->user_agent : "ds4-cli");
    hc_buf_adds(&req, line);
    if (c->api_key && *c->api_key) {
        hc_buf_adds(&req, "Authorization: Bearer ");
        hc_buf_adds(&req, c->api_key);
        hc_buf_adds(&req, "\r\n");
    }
    if (body) {
        snprintf(line, sizeof line, "Content-Type: application/json\r\n"
                 "Accept: text/event-stream\r\nContent-Length: %zu\r\n", strlen(body));
        hc_buf_adds(&req, line);
    }
    hc_buf_adds(&req, "\r\n");
    if (body)
        hc_buf_adds(&req, body);
    int rc = hc_write_all(r->fd, req.p, req.n);
    hc_buf_free(&req);
    if (rc == 0)
        rc = hc_read_head(r);
    if (rc < 0) {
        ds4_seterr(err, errlen, rc == HC_INTR ? "interrupted"
                   : rc == HC_TIMEOUT ? "no answer from %s:%d" : "bad or no HTTP response from %s:%d",
                   c->host, c->port);
        close(r->fd);
        r->fd = -1;
        return rc == HC_INTR ? HC_INTR : -1;
    }
    return 0;
}

/* The rest of the body (bounded), for errors and small responses. */
int hc_slurp(hc_resp *r, hc_buf *out, size_t max)
{
    char tmp[8192];
    long n;
    while ((n = hc_body_read(r, tmp, sizeof tmp)) > 0) {
        if (out->n + (size_t)n > max)
            return HC_ERR;
        hc_buf_add(out, tmp, (size_t)n);
    }
    return (int)n;
}

/* "message (type)" from an OpenAI or Anthropic error body, else the text. */
void hc_error_text(const char *body, char *out, size_t len)
{
    json_t *j = json_loads(body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *type = json_string_value(json_object_get(e, "type"));
    if (!msg && json_is_string(e))
        msg = json_string_value(e);
    if (msg)
        snprintf(out, len, "%s%s%s%s", msg, type ? " (" : "", type ? type : "", type ? ")" : "");
    else
        snprintf(out, len, "%.300s", body);
    json_decref(j);
}

/* ---- SSE parsing ----------------------------------------------------------- */

/* One complete line (without its terminator). */
int hc_sse_line(hc_sse *p, const char *l, size_t n)
{
    if (n == 0) { /* dispatch */
        int rc = 0;
        if (p->have_data)
            rc = p->cb(p->ud, p->event[0] ? p->event : "message", p->data.p ? p->data.p : "",
                       p->data.n);
        hc_buf_clear(&p->data);
        p->have_data = 0;
        p->event[0] = 0;
        return rc;
    }
    if (l[0] == ':') {
        p->comments++;
        if (p->on_comment)
            p->on_comment(p->ud, l + 1, n - 1);
        return 0;
    }
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl && *v == ' ')
        v++, vl--;
    if (fl == 4 && !memcmp(l, "data", 4)) {
        if (p->have_data)
            hc_buf_add(&p->data, "\n", 1);
        hc_buf_add(&p->data, v, vl);
        p->have_data = 1;
    } else if (fl == 5 && !memcmp(l, "event", 5)) {
        snprintf(p->event, sizeof p->event, "%.*s", (int)(vl < 63 ? vl : 63), v);
    }
    return 0;
}

/* Feed raw bytes; lines end with \n, \r\n or \r. Nonzero: a callback
 * asked to stop (its value), or -1 for a line over 64 MiB. */
int hc_sse_feed(hc_sse *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\n' && p->last_cr) {
            p->last_cr = 0;
            continue;
        }
        p->last_cr = ch == '\r';
        if (ch == '\n' || ch == '\r') {
            int rc = hc_sse_line(p, p->line.p ? p->line.p : "", p->line.n);
            hc_buf_clear(&p->line);
            if (rc)
                return rc;
            continue;
        }
        if (p->line.n >= (64u << 20))
            return -1;
        hc_buf_add(&p->line, &ch, 1);
    }
    return 0;
}

int hc_sse_run(hc_resp *r, hc_sse *p, long *last)
{
    char tmp[16384];
    long n;
    int stop = 0;
    while (!stop && (n = hc_body_read(r, tmp, sizeof tmp)) > 0)
        stop = hc_sse_feed(p, tmp, (size_t)n);
    if (!stop && n == 0)
        stop = hc_sse_line(p, "", 0); /* an event not followed by a blank line */
    *last = n;
    return stop;
}
