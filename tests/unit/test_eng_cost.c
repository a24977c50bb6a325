/* test_eng_cost.c - bytes per decoded token of the full-size q2 layout:
 * SPEC 7 puts it at about 9.6 GB (weights touched + KV); the routed experts
 * read are n_expert_used / n_expert of the expert tensors; KV grows with
 * the context as each layer kind reads (window, indexer + top-k, 1/128). */
#include <stdint.h>

#include "engined/eng_cost.h"
#include "test.h"

int main(void)
{
    dsv4_hparams hp;
    dsv4_hparams_full(&hp);
    eng_model *m = eng_model_virtual(&hp);
    eng_token_bytes b2k, b32k;
    eng_token_bytes_at(m, 2048, 2, 2, &b2k);
    eng_token_bytes_at(m, 32768, 2, 2, &b32k);
    double gb = b2k.total / 1e9;
    printf("q2 full layout: %.3f GB per token at 2k (dense %.3f, experts %.3f, head %.3f, "
           "kv %.4f), %.3f GB at 32k\n", gb, b2k.dense / 1e9, b2k.experts / 1e9,
           b2k.head / 1e9, b2k.kv / 1e9, b32k.total / 1e9);
    CHECKF(gb > 8.5 && gb < 10.5, "%.3f GB per token, SPEC 7 says about 9.6", gb);
    uint64_t exps = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].id == DSV4_T_FFN_GATE_EXPS || m->tensors[i].id == DSV4_T_FFN_UP_EXPS ||
            m->tensors[i].id == DSV4_T_FFN_DOWN_EXPS)
            exps += m->tensors[i].nbytes;
    CHECK(b2k.experts == exps / 256 * 6);
    CHECK(b32k.kv > b2k.kv && b32k.dense == b2k.dense && b32k.experts == b2k.experts);
    /* at context 0 only one window row per layer is read */
    eng_token_bytes b0;
    eng_token_bytes_at(m, 0, 2, 2, &b0);
    CHECK(b0.kv == (uint64_t)hp.n_layer * hp.head_dim * 2);
    eng_model_close(m);
    return test_main_end("eng_cost");
}
