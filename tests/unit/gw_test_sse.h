/* gw_test_sse.h - parse a Server-Sent Events byte stream into a list of
 * (event name, JSON data) for the gateway tests. Comment lines (": ...")
 * are counted, not returned; "data: [DONE]" becomes the JSON string
 * "[DONE]"; a data line that is not JSON is a parse failure. Header-only. */
#ifndef DS4_GW_TEST_SSE_H
#define DS4_GW_TEST_SSE_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct sse_ev {
    char name[64]; /* "" when the event had no "event:" line */
    json_t *data;
} sse_ev;

typedef struct sse_list {
    sse_ev *ev;
    size_t n;
    int comments;
    int bad;       /* malformed lines or non-JSON data */
    int complete;  /* the text ended with a blank line */
} sse_list;

static inline void sse_free(sse_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        json_decref(l->ev[i].data);
    free(l->ev);
    memset(l, 0, sizeof *l);
}

/* Parse text[0..len). */
static inline void sse_parse(const char *text, size_t len, sse_list *l)
{
    memset(l, 0, sizeof *l);
    char name[64] = "";
    char *data = NULL;
    size_t dlen = 0;
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - (text + i)) : len - i;
        const char *line = text + i;
        i += ll + (nl ? 1 : 0);
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ll == 0) { /* dispatch */
            l->complete = 1;
            if (data) {
                json_t *j;
                if (dlen == 6 && !memcmp(data, "[DONE]", 6))
                    j = json_string("[DONE]");
                else
                    j = json_loadb(data, dlen, 0, NULL);
                if (!j)
                    l->bad++;
                else {
                    l->ev = realloc(l->ev, (l->n + 1) * sizeof *l->ev);
                    snprintf(l->ev[l->n].name, sizeof l->ev[l->n].name, "%s", name);
                    l->ev[l->n++].data = j;
                }
                free(data);
                data = NULL;
                dlen = 0;
            }
            name[0] = 0;
            continue;
        }
        l->complete = 0;
        if (line[0] == ':') {
            l->comments++;
        } else if (ll >= 6 && !memcmp(line, "event:", 6)) {
            size_t o = line[6] == ' ' ? 7 : 6;
            snprintf(name, sizeof name, "%.*s", (int)(ll - o), line + o);
        } else if (ll >= 5 && !memcmp(line, "data:", 5)) {
            size_t o = line[5] == ' ' ? 6 : 5;
            data = realloc(data, dlen + (ll - o) + 2);
            if (dlen)
                data[dlen++] = '\n';
            memcpy(data + dlen, line + o, ll - o);
            dlen += ll - o;
            data[dlen] = 0;
        } else {
            l->bad++;
        }
    }
    free(data);
}

/* String member at a path of nested object keys (NULL-terminated). */
static inline const char *sse_str(json_t *j, ...)
{
    va_list ap;
    va_start(ap, j);
    const char *k;
    while (j && (k = va_arg(ap, const char *)))
        j = json_object_get(j, k);
    va_end(ap);
    return json_string_value(j);
}

#endif
