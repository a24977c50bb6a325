/* fuzz_wire.c - libFuzzer target for the wire decoder and the JSON field
 * validator.
 *
 * Input: one mode byte, then frames as [u32 little-endian length][bytes]
 * (a length past the end takes what is left; at most 12 frames). Mode bit 0
 * selects small limits so the too_large paths are reachable.
 *
 * Properties: the decoder never crashes and always explains a rejection
 * with a non-empty message that becomes a valid ERROR JSON; a message it
 * accepts re-encodes through the builders and decodes again to the same
 * header, the same binary frames and an equal JSON object. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"

#define MAX_IN_FRAMES 12

/* Split the input into frames; returns the count. */
static size_t split(const uint8_t *p, size_t n, ds4w_buf *fr)
{
    size_t k = 0;
    while (n > 0 && k < MAX_IN_FRAMES) {
        uint32_t len = 0;
        size_t hl = n < 4 ? n : 4;
        for (size_t i = 0; i < hl; i++)
            len |= (uint32_t)p[i] << (8 * i);
        p += hl;
        n -= hl;
        if (len > n)
            len = (uint32_t)n;
        fr[k].data = p;
        fr[k].len = len;
        k++;
        p += len;
        n -= len;
    }
    return k;
}

/* Rebuild an accepted message with the builders and check it decodes to
 * the same thing. */
static void roundtrip(const ds4w_msg *m)
{
    ds4w_out o;
    ds4w_out_init(&o, m->type, m->reqid);
    o.flags = m->flags;
    o.seq = m->seq;
    for (int i = 0; i < m->nframes; i++) {
        size_t n = m->frame[i].len / 4;
        switch (m->kind[i]) {
        case DS4W_FK_JSON:
            ds4w_out_json(&o, m->json);
            break;
        case DS4W_FK_I32: {
            int32_t *v = malloc(n * 4 + 4);
            if (ds4w_msg_i32(m, i, v) != n)
                __builtin_trap();
            ds4w_out_i32(&o, v, n);
            free(v);
            break;
        }
        case DS4W_FK_F32: {
            float *v = malloc(n * 4 + 4);
            if (ds4w_msg_f32(m, i, v) != n)
                __builtin_trap();
            ds4w_out_f32(&o, v, n);
            free(v);
            break;
        }
        case DS4W_FK_BYTES:
            ds4w_out_bytes(&o, m->frame[i].data, m->frame[i].len);
            break;
        case DS4W_FK_SHMREF: {
            ds4w_shmref r;
            if (ds4w_msg_shmref(m, i, &r))
                __builtin_trap();
            ds4w_out_shmref(&o, &r);
            break;
        }
        default:
            __builtin_trap();
        }
    }
    ds4w_buf fr[DS4W_MAX_PAYLOAD + 1];
    size_t n;
    char err[256];
    if (ds4w_out_encode(&o, fr, &n, err, sizeof err))
        __builtin_trap(); /* the builders refuse what the decoder accepted */
    /* default limits: jansson may print a real longer than it was read
     * ("-0.24" -> "-0.23999999999999999"), which a tiny limit rejects */
    ds4w_limits dl = ds4w_limits_default();
    ds4w_msg m2;
    if (ds4w_decode_frames(fr, n, &dl, &m2, err, sizeof err))
        __builtin_trap();
    if (m2.type != m->type || m2.flags != m->flags || m2.seq != m->seq ||
        memcmp(m2.reqid, m->reqid, 16) || m2.nframes != m->nframes)
        __builtin_trap();
    for (int i = 0; i < m->nframes; i++) {
        if (m->kind[i] == DS4W_FK_JSON) {
            if (!json_equal(m->json, m2.json))
                __builtin_trap();
        } else if (m2.frame[i].len != m->frame[i].len ||
                   (m->frame[i].len &&
                    memcmp(m2.frame[i].data, m->frame[i].data,
                           m->frame[i].len))) {
            __builtin_trap();
        }
    }
    ds4w_msg_close(&m2);
    ds4w_out_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ds4w_limits lim = ds4w_limits_default();
    if (data[0] & 1) {
        lim.max_frame_bytes = 64;
        lim.max_bulk_bytes = 16;
        lim.max_tokens = 8;
    }
    ds4w_buf fr[MAX_IN_FRAMES];
    size_t n = split(data + 1, size - 1, fr);
    ds4w_msg m;
    char err[256];
    err[0] = 0;
    int rc = ds4w_decode_frames(fr, n, &lim, &m, err, sizeof err);
    if (rc) {
        if (rc >= DS4W_E_COUNT || !err[0])
            __builtin_trap();
        json_t *e = ds4w_error_json(rc, err);
        if (!json_is_string(json_object_get(e, "message")))
            __builtin_trap(); /* the text was not made valid UTF-8 */
        json_decref(e);
    } else {
        if (!m.def)
            __builtin_trap();
        /* the helper on arbitrary accepted objects, as daemons use it */
        static const ds4w_field any_fields[] = {
            {"text", DS4W_JT_STRING, DS4W_JF_OPT},
            {"usage", DS4W_JT_OBJECT, DS4W_JF_OPT},
            {"max_tokens", DS4W_JT_UINT, DS4W_JF_OPT},
            {"seed", DS4W_JT_INT, DS4W_JF_REQ},
        };
        if (m.json) {
            const char *bad;
            ds4w_json_check(m.json, any_fields, 4, &bad, err, sizeof err);
        }
        roundtrip(&m);
    }
    ds4w_msg_close(&m);
    return 0;
}
