/* gw_sse.h - Server-Sent Events framing into a byte buffer. Each API module
 * writes its own event sequence with these; the HTTP layer hands the buffer
 * to the client as it fills (chunked transfer, flushed per event). */
#ifndef DS4_GW_SSE_H
#define DS4_GW_SSE_H

#include <jansson.h>

#include "gw_json.h"

/* "data: <compact json>\n\n" (takes a reference to obj: it is decref'd). */
void gw_sse_data(gw_buf *b, json_t *obj);
/* "event: <name>\ndata: <compact json>\n\n" (obj decref'd). */
void gw_sse_event(gw_buf *b, const char *name, json_t *obj);
/* "data: [DONE]\n\n" (OpenAI chat and completions streams). */
void gw_sse_done(gw_buf *b);
/* ": <text>\n\n" - a comment, ignored by every SSE parser (keepalive). */
void gw_sse_comment(gw_buf *b, const char *text);

#endif
