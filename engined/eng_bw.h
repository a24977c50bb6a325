/* eng_bw.h - measured device-memory read bandwidth, the denominator of the
 * benchmark's decode bound (taken in the same run as the measurement it
 * judges). */
#ifndef DS4_ENG_BW_H
#define DS4_ENG_BW_H

#include <stdint.h>

#include "engined/eng_cl.h"

typedef struct eng_bw_result {
    double gbps_median;   /* 1e9 bytes per second */
    double gbps_best;
    uint64_t bytes;       /* buffer read per repeat */
    int repeats;
} eng_bw_result;

/* Read a freshly filled buffer of `bytes` (0: min(1 GiB, max_alloc / 2))
 * `repeats` times after one warm-up; median and best of the repeats.
 * 0, or -1 with cl->err. */
int eng_bw_measure(eng_cl *cl, uint64_t bytes, int repeats, eng_bw_result *out);

#endif
