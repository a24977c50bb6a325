/* eng_cost.c - bytes read per decoded token (see eng_cost.h). */
#include "eng_cost.h"

#include <string.h>

static int is_expert(int id)
{
    return id == DSV4_T_FFN_GATE_EXPS || id == DSV4_T_FFN_UP_EXPS ||
           id == DSV4_T_FFN_DOWN_EXPS;
}

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

void eng_token_bytes_at(const eng_model *m, uint64_t ctx, uint32_t kv_elem_bytes,
                        uint32_t idx_elem_bytes, eng_token_bytes *out)
{
    const dsv4_hparams *hp = &m->hp;
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const eng_tensor *t = &m->tensors[i];
        if (t->id == DSV4_T_TOKEN_EMBD)
            out->head += t->nbytes / hp->n_vocab;
        else if (t->id == DSV4_T_FFN_TID2EID)
            out->dense += t->nbytes / hp->n_vocab; /* one token's row */
        else if (is_expert(t->id))
            out->experts += t->nbytes / hp->n_expert * hp->n_expert_used;
        else if (t->layer < 0)
            out->head += t->nbytes;
        else
            out->dense += t->nbytes;
    }
    uint64_t row = (uint64_t)hp->head_dim * kv_elem_bytes;
    uint64_t idx_row = (uint64_t)hp->idx_head_dim * idx_elem_bytes;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        uint32_t r = hp->compress_ratio[l];
        out->kv += min64(ctx + 1, hp->n_swa) * row; /* the window */
        if (r == 4) {
            uint64_t comp = (ctx + 1) / 4;
            out->kv += comp * idx_row + min64(comp, hp->idx_top_k) * row;
        } else if (r > 0) {
            out->kv += (ctx + 1) / r * row;
        }
    }
    out->total = out->dense + out->experts + out->head + out->kv;
}
