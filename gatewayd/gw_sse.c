/* gw_sse.c - SSE framing (see gw_sse.h). JSON is compact, so it never
 * contains a raw newline and fits one "data:" line. */
#include "gw_sse.h"

void gw_sse_data(gw_buf *b, json_t *obj)
{
    gw_buf_puts(b, "data: ");
    gw_buf_json(b, obj);
    gw_buf_puts(b, "\n\n");
    json_decref(obj);
}

void gw_sse_event(gw_buf *b, const char *name, json_t *obj)
{
    gw_buf_puts(b, "event: ");
    gw_buf_puts(b, name);
    gw_buf_puts(b, "\ndata: ");
    gw_buf_json(b, obj);
    gw_buf_puts(b, "\n\n");
    json_decref(obj);
}

void gw_sse_done(gw_buf *b)
{
    gw_buf_puts(b, "data: [DONE]\n\n");
}

void gw_sse_comment(gw_buf *b, const char *text)
{
    gw_buf_puts(b, ": ");
    gw_buf_puts(b, text);
    gw_buf_puts(b, "\n\n");
}
