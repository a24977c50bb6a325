/* eng_sample.h - next-token sampling over a logits row (SPEC §4), and the
 * top-k log-probabilities reported with each token.
 *
 * The pipeline, on the n_vocab logits l of one step:
 *   1. temperature T <= 0 (or top_k == 1): greedy, the argmax (lowest id
 *      on exact ties). Nothing random is drawn.
 *   2. w_i = exp((l_i - max l) / T), so the top token has weight 1.
 *   3. top_k > 0: only the k largest weights stay candidates; Z is the sum
 *      of the candidates' weights (else Z is the sum over the vocabulary).
 *   4. min_p: drop tokens with w_i < min_p (probability below min_p times
 *      that of the most probable token, as ds4).
 *   5. top_p < 1: in descending order (ties: lower id first), keep the
 *      shortest prefix whose mass sum(w)/Z reaches top_p.
 *   6. draw u in [0, 1) (24 bits of the job's RNG) and pick the survivor
 *      where the running sum of w passes u * sum(w) - in descending order
 *      when a top_p or top_k cut was made, else in id order (no sort is
 *      needed then; the choice is as deterministic either way).
 * NaN logits count as -inf; a row with no finite logit is an error (-1).
 * The RNG is xorshift64* (as ds4), seeded through splitmix64, so one seed
 * gives one sequence of draws on every machine.
 *
 * Log-probabilities are those of the model's own distribution (softmax of
 * the raw logits, temperature 1, no filtering), like OpenAI's and vLLM's
 * default: they do not change with the sampling settings. */
#ifndef DS4_ENG_SAMPLE_H
#define DS4_ENG_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* ds4 defaults (SPEC §4). */
#define ENG_SAMPLE_DEF_TEMPERATURE 1.0f
#define ENG_SAMPLE_DEF_TOP_P 1.0f
#define ENG_SAMPLE_DEF_MIN_P 0.05f
#define ENG_SAMPLE_DEF_TOP_K 0u
#define ENG_SAMPLE_MAX_LOGPROBS 64u /* top entries per token, at most */

typedef struct eng_sample_params {
    float temperature; /* <= 0: greedy */
    float top_p;       /* (0, 1]; 1: off */
    float min_p;       /* [0, 1]; 0: off */
    uint32_t top_k;    /* 0: off */
} eng_sample_params;

typedef struct eng_rng {
    uint64_t s; /* never 0 */
} eng_rng;

/* Scratch reused across calls (one per sampling thread). */
typedef struct eng_sample_scratch {
    uint32_t *idx;
    float *w;
    size_t cap;
} eng_sample_scratch;

/* The defaults above. */
void eng_sample_defaults(eng_sample_params *p);

/* Seed the generator (any value, 0 included). */
void eng_rng_seed(eng_rng *r, uint64_t seed);
/* Next 64 random bits. */
uint64_t eng_rng_next(eng_rng *r);
/* Uniform in [0, 1) from the top 24 bits of the next draw. */
float eng_rng_float(eng_rng *r);
/* A seed from the OS (getrandom), for jobs that gave none. */
uint64_t eng_rng_os_seed(void);

/* Argmax of n logits (lowest id on ties, NaN ignored); -1 if none finite. */
int32_t eng_argmax(const float *logits, uint32_t n);

/* Sample one token id (see the pipeline above); -1 if no logit is finite. */
int32_t eng_sample(const float *logits, uint32_t n, const eng_sample_params *p,
                   eng_rng *rng, eng_sample_scratch *scr);

/* Log-probability of `chosen` under softmax(logits) in *chosen_lp, and the
 * k (<= n) most probable tokens in descending order (ties: lower id) in
 * top_ids/top_lps (room for k). Returns how many were written (k, or 0 if
 * no logit is finite). */
uint32_t eng_logprobs(const float *logits, uint32_t n, int32_t chosen,
                      uint32_t k, float *chosen_lp, int32_t *top_ids,
                      float *top_lps);

void eng_sample_scratch_free(eng_sample_scratch *scr);

#endif
