/* fuzz_engined_req.c - libFuzzer target for engined's request handling
 * (the socket thread's side: wire decoding, then eng_service_handle's
 * validation of GEN_SUBMIT, LOGITS_GET, GEN_CANCEL, PING, STATS_GET).
 *
 * Input: one control byte (bits 0-2: message type, bit 3: test mode,
 * bit 4: a full queue), then frames as [u32 little-endian length][bytes]
 * (a length past the end takes what is left; at most 4 payload frames);
 * the header is built here with the chosen type, so the fuzzer spends its
 * time in the payloads.
 *
 * Properties: no crash; a refusal has a known error code and a message
 * (invalid_request names a field only as a bounded string); every reply
 * the service queued (PONG, STATS, GEN_ACCEPTED, ERROR busy) passes the
 * wire schema check; a queued job has a non-empty prompt of in-vocabulary
 * ids and prompt + max_tokens within the context.
 *
 * The service code is compiled in from its sources (the libFuzzer build
 * links no engined library); no scheduler thread runs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engined/eng_sample.c"
#include "engined/eng_service.c"

/* No scheduler in the fuzzer (eng_service_start is never called). */
void *eng_sched_main(void *arg)
{
    (void)arg;
    return NULL;
}

static eng_service S;
static int inited;

static void setup(void)
{
    ds4_log_set_level(DS4_LOG_ERROR);
    eng_service_opts o = {.model = "fuzz.gguf", .backend = "ref", .max_ctx = 4096,
                          .max_batch = 2, .max_queue = 4, .retry_after_ms = 100};
    if (eng_service_init(&S, &o, NULL, NULL, 0))
        abort();
    S.ready = 1;
    S.n_vocab = 129280;
    memset(S.fingerprint, 'a', 64);
    inited = 1;
}

/* Drop queued jobs and check the replies left in the outbox. */
static void drain(void)
{
    for (eng_outmsg *m = S.ohead, *n; m; m = n) {
        n = m->next;
        ds4w_buf fr[DS4W_MAX_PAYLOAD + 1];
        size_t nf;
        if (ds4w_out_encode(&m->out, fr, &nf, NULL, 0) != DS4W_OK)
            __builtin_trap();
        ds4w_out_free(&m->out);
        free(m);
    }
    S.ohead = S.otail = NULL;
    for (eng_job *j = S.all, *n; j; j = n) {
        n = j->all_next;
        if (j->n_prompt == 0 || (uint64_t)j->n_prompt + j->max_tokens > S.o.max_ctx)
            __builtin_trap();
        for (uint32_t i = 0; i < j->n_prompt; i++)
            if (j->prompt[i] < 0 || (uint32_t)j->prompt[i] >= S.n_vocab)
                __builtin_trap();
        eng_job_free(j);
    }
    S.all = S.qhead = S.qtail = NULL;
    S.n_queued = S.n_running = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t types[8] = {DS4W_T_GEN_SUBMIT, DS4W_T_GEN_SUBMIT, DS4W_T_LOGITS_GET,
                                      DS4W_T_GEN_CANCEL, DS4W_T_PING,       DS4W_T_STATS_GET,
                                      DS4W_T_GEN_SUBMIT, DS4W_T_TOKENIZE};
    if (!inited)
        setup();
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    S.o.test_mode = (ctl >> 3) & 1;
    uint8_t hdr[DS4W_HDR_SIZE] = {'D', 'S', '4', 'W', 1, 0};
    uint16_t t = types[ctl & 7];
    hdr[6] = (uint8_t)t;
    hdr[7] = (uint8_t)(t >> 8);
    hdr[16] = ctl;
    ds4w_buf fr[1 + DS4W_MAX_PAYLOAD] = {{hdr, sizeof hdr}};
    size_t k = 1;
    while (size > 0 && k < 1 + DS4W_MAX_PAYLOAD) {
        uint32_t len = 0;
        size_t hl = size < 4 ? size : 4;
        for (size_t i = 0; i < hl; i++)
            len |= (uint32_t)data[i] << (8 * i);
        data += hl;
        size -= hl;
        if (len > size)
            len = (uint32_t)size;
        fr[k].data = data;
        fr[k].len = len;
        k++;
        data += len;
        size -= len;
    }
    if (ctl & 16) { /* a full queue: busy path */
        for (int i = 0; i < 8; i++) {
            eng_job *j = ds4_xcalloc(1, sizeof *j);
            j->reqid[0] = (uint8_t)(0xF0 + i);
            j->next = NULL;
            if (S.qtail)
                S.qtail->next = j;
            else
                S.qhead = j;
            S.qtail = j;
            j->all_next = S.all;
            S.all = j;
            j->prompt = ds4_xmalloc(4);
            j->prompt[0] = 1;
            j->n_prompt = 1;
            S.n_queued++;
        }
    }
    ds4w_msg m;
    char err[256] = "";
    int rc = ds4w_decode_frames(fr, k, NULL, &m, err, sizeof err);
    if (rc == DS4W_OK) {
        const char *field = NULL;
        err[0] = 0;
        rc = eng_service_handle(&S, &m, &field, err, sizeof err);
        if (rc != DS4W_OK) {
            if (rc <= 0 || rc >= DS4W_E_COUNT || !err[0])
                __builtin_trap();
            if (field && strlen(field) > 64)
                __builtin_trap();
        }
    }
    ds4w_msg_close(&m);
    drain();
    return 0;
}
