/* eng_cost.h - what one decoded token reads from device memory: the
 * weights it touches (every dense tensor, one embedding row, the routed
 * experts it selects) and the attention state at a given context (window
 * rows, indexer rows scanned, top-k compressed rows, heavily compressed
 * rows). The benchmark divides these bytes by the measured bandwidth for
 * the decode bound (SPEC 7: about 9.6 GB per token for the q2 file). */
#ifndef DS4_ENG_COST_H
#define DS4_ENG_COST_H

#include <stdint.h>

#include "engined/eng_model.h"

typedef struct eng_token_bytes {
    uint64_t dense;       /* attention, compressors, indexer, router,
                             shared expert, norms, mHC of every layer */
    uint64_t experts;     /* n_expert_used of n_expert routed experts */
    uint64_t head;        /* output head + final mHC + one embedding row */
    uint64_t kv;          /* attention state read at the context */
    uint64_t total;
} eng_token_bytes;

/* Bytes one decode step reads at context ctx (tokens already held), with
 * KV rows of kv_elem_bytes per element (2: F16 as ds4 stores them) and
 * indexer rows of idx_elem_bytes per element. Layers [0, m->hp.n_layer). */
void eng_token_bytes_at(const eng_model *m, uint64_t ctx, uint32_t kv_elem_bytes,
                        uint32_t idx_elem_bytes, eng_token_bytes *out);

#endif
