/* quant_iq2.c - IQ2_XXS: the lookup tables (data converted verbatim from
 * tests/data/quant-vectors/iq2xxs_grid.txt and ksigns_iq2xs.txt; the test
 * re-reads those files and checks these arrays equal them) and the
 * quantizer (exhaustive per-group grid search, see ds4_iq2xxs_quantize_block).
 */
#include "quant.h"
#include "util.h"

#include <pthread.h>

#define IQ2_MAXCLS 64
#include <string.h>

/* Bit-exactness needs separately rounded operations even where a build
 * forgets -ffp-contract=off (clang contracts by default). */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* 256 grid entries; byte j (little-endian) is the magnitude of element j. */
const uint64_t ds4_iq2xxs_grid[256] = {
    0x0808080808080808ULL, 0x080808080808082bULL, 0x0808080808081919ULL, 0x0808080808082b08ULL,
    0x0808080808082b2bULL, 0x0808080808190819ULL, 0x0808080808191908ULL, 0x08080808082b0808ULL,
    0x08080808082b082bULL, 0x08080808082b2b08ULL, 0x08080808082b2b2bULL, 0x0808080819080819ULL,
    0x0808080819081908ULL, 0x0808080819190808ULL, 0x0808080819192b08ULL, 0x08080808192b0819ULL,
    0x08080808192b1908ULL, 0x080808082b080808ULL, 0x080808082b08082bULL, 0x080808082b082b2bULL,
    0x080808082b2b082bULL, 0x0808081908080819ULL, 0x0808081908081908ULL, 0x0808081908190808ULL,
    0x0808081908191919ULL, 0x0808081919080808ULL, 0x080808192b081908ULL, 0x080808192b192b08ULL,
    0x0808082b08080808ULL, 0x0808082b0808082bULL, 0x0808082b082b082bULL, 0x0808082b2b08082bULL,
    0x0808190808080819ULL, 0x0808190808081908ULL, 0x0808190808190808ULL, 0x08081908082b0819ULL,
    0x08081908082b1908ULL, 0x0808190819080808ULL, 0x080819081908082bULL, 0x0808190819082b08ULL,
    0x08081908192b0808ULL, 0x080819082b080819ULL, 0x080819082b081908ULL, 0x080819082b190808ULL,
    0x080819082b2b1908ULL, 0x0808191908080808ULL, 0x080819190808082bULL, 0x0808191908082b08ULL,
    0x08081919082b0808ULL, 0x080819191908192bULL, 0x08081919192b2b19ULL, 0x080819192b080808ULL,
    0x080819192b190819ULL, 0x0808192b08082b19ULL, 0x0808192b08190808ULL, 0x0808192b19080808ULL,
    0x0808192b2b081908ULL, 0x0808192b2b2b1908ULL, 0x08082b0808080808ULL, 0x08082b0808081919ULL,
    0x08082b0808082b08ULL, 0x08082b0808191908ULL, 0x08082b08082b2b08ULL, 0x08082b0819080819ULL,
    0x08082b0819081908ULL, 0x08082b0819190808ULL, 0x08082b081919082bULL, 0x08082b082b082b08ULL,
    0x08082b1908081908ULL, 0x08082b1919080808ULL, 0x08082b2b0808082bULL, 0x08082b2b08191908ULL,
    0x0819080808080819ULL, 0x0819080808081908ULL, 0x0819080808190808ULL, 0x08190808082b0819ULL,
    0x0819080819080808ULL, 0x08190808192b0808ULL, 0x081908082b081908ULL, 0x081908082b190808ULL,
    0x081908082b191919ULL, 0x0819081908080808ULL, 0x0819081908082b08ULL, 0x08190819082b0808ULL,
    0x0819081919190808ULL, 0x0819081919192b2bULL, 0x081908192b080808ULL, 0x0819082b082b1908ULL,
    0x0819082b19081919ULL, 0x0819190808080808ULL, 0x0819190808082b08ULL, 0x08191908082b0808ULL,
    0x08191908082b1919ULL, 0x0819190819082b19ULL, 0x081919082b080808ULL, 0x0819191908192b08ULL,
    0x08191919192b082bULL, 0x0819192b08080808ULL, 0x0819192b0819192bULL, 0x08192b0808080819ULL,
    0x08192b0808081908ULL, 0x08192b0808190808ULL, 0x08192b0819080808ULL, 0x08192b082b080819ULL,
    0x08192b1908080808ULL, 0x08192b1908081919ULL, 0x08192b192b2b0808ULL, 0x08192b2b19190819ULL,
    0x082b080808080808ULL, 0x082b08080808082bULL, 0x082b080808082b2bULL, 0x082b080819081908ULL,
    0x082b0808192b0819ULL, 0x082b08082b080808ULL, 0x082b08082b08082bULL, 0x082b0819082b2b19ULL,
    0x082b081919082b08ULL, 0x082b082b08080808ULL, 0x082b082b0808082bULL, 0x082b190808080819ULL,
    0x082b190808081908ULL, 0x082b190808190808ULL, 0x082b190819080808ULL, 0x082b19081919192bULL,
    0x082b191908080808ULL, 0x082b191919080819ULL, 0x082b1919192b1908ULL, 0x082b192b2b190808ULL,
    0x082b2b0808082b08ULL, 0x082b2b08082b0808ULL, 0x082b2b082b191908ULL, 0x082b2b2b19081908ULL,
    0x1908080808080819ULL, 0x1908080808081908ULL, 0x1908080808190808ULL, 0x1908080808192b08ULL,
    0x19080808082b0819ULL, 0x19080808082b1908ULL, 0x1908080819080808ULL, 0x1908080819082b08ULL,
    0x190808081919192bULL, 0x19080808192b0808ULL, 0x190808082b080819ULL, 0x190808082b081908ULL,
    0x190808082b190808ULL, 0x1908081908080808ULL, 0x19080819082b0808ULL, 0x19080819192b0819ULL,
    0x190808192b080808ULL, 0x190808192b081919ULL, 0x1908082b08080819ULL, 0x1908082b08190808ULL,
    0x1908082b19082b08ULL, 0x1908082b1919192bULL, 0x1908082b192b2b08ULL, 0x1908190808080808ULL,
    0x1908190808082b08ULL, 0x19081908082b0808ULL, 0x190819082b080808ULL, 0x190819082b192b19ULL,
    0x190819190819082bULL, 0x19081919082b1908ULL, 0x1908192b08080808ULL, 0x19082b0808080819ULL,
    0x19082b0808081908ULL, 0x19082b0808190808ULL, 0x19082b0819080808ULL, 0x19082b0819081919ULL,
    0x19082b1908080808ULL, 0x19082b1919192b08ULL, 0x19082b19192b0819ULL, 0x19082b192b08082bULL,
    0x19082b2b19081919ULL, 0x19082b2b2b190808ULL, 0x1919080808080808ULL, 0x1919080808082b08ULL,
    0x1919080808190819ULL, 0x1919080808192b19ULL, 0x19190808082b0808ULL, 0x191908082b080808ULL,
    0x191908082b082b08ULL, 0x1919081908081908ULL, 0x191908191908082bULL, 0x191908192b2b1908ULL,
    0x1919082b2b190819ULL, 0x191919082b190808ULL, 0x191919082b19082bULL, 0x1919191908082b2bULL,
    0x1919192b08080819ULL, 0x1919192b19191908ULL, 0x19192b0808080808ULL, 0x19192b0808190819ULL,
    0x19192b0808192b19ULL, 0x19192b08192b1908ULL, 0x19192b1919080808ULL, 0x19192b2b08082b08ULL,
    0x192b080808081908ULL, 0x192b080808190808ULL, 0x192b080819080808ULL, 0x192b0808192b2b08ULL,
    0x192b081908080808ULL, 0x192b081919191919ULL, 0x192b082b08192b08ULL, 0x192b082b192b0808ULL,
    0x192b190808080808ULL, 0x192b190808081919ULL, 0x192b191908190808ULL, 0x192b19190819082bULL,
    0x192b19192b081908ULL, 0x192b2b081908082bULL, 0x2b08080808080808ULL, 0x2b0808080808082bULL,
    0x2b08080808082b2bULL, 0x2b08080819080819ULL, 0x2b0808082b08082bULL, 0x2b08081908081908ULL,
    0x2b08081908192b08ULL, 0x2b08081919080808ULL, 0x2b08082b08190819ULL, 0x2b08190808080819ULL,
    0x2b08190808081908ULL, 0x2b08190808190808ULL, 0x2b08190808191919ULL, 0x2b08190819080808ULL,
    0x2b081908192b0808ULL, 0x2b08191908080808ULL, 0x2b0819191908192bULL, 0x2b0819192b191908ULL,
    0x2b08192b08082b19ULL, 0x2b08192b19080808ULL, 0x2b08192b192b0808ULL, 0x2b082b080808082bULL,
    0x2b082b1908081908ULL, 0x2b082b2b08190819ULL, 0x2b19080808081908ULL, 0x2b19080808190808ULL,
    0x2b190808082b1908ULL, 0x2b19080819080808ULL, 0x2b1908082b2b0819ULL, 0x2b1908190819192bULL,
    0x2b1908192b080808ULL, 0x2b19082b19081919ULL, 0x2b19190808080808ULL, 0x2b191908082b082bULL,
    0x2b19190819081908ULL, 0x2b19191919190819ULL, 0x2b192b082b080819ULL, 0x2b192b19082b0808ULL,
    0x2b2b08080808082bULL, 0x2b2b080819190808ULL, 0x2b2b08082b081919ULL, 0x2b2b081908082b19ULL,
    0x2b2b082b08080808ULL, 0x2b2b190808192b08ULL, 0x2b2b2b0819190808ULL, 0x2b2b2b1908081908ULL,
};

/* 128 sign patterns: bit j set negates element j; even parity throughout. */
const uint8_t ds4_ksigns_iq2xs[128] = {
    0, 129, 130, 3, 132, 5, 6, 135, 136, 9, 10, 139, 12, 141, 142, 15,
    144, 17, 18, 147, 20, 149, 150, 23, 24, 153, 154, 27, 156, 29, 30, 159,
    160, 33, 34, 163, 36, 165, 166, 39, 40, 169, 170, 43, 172, 45, 46, 175,
    48, 177, 178, 51, 180, 53, 54, 183, 184, 57, 58, 187, 60, 189, 190, 63,
    192, 65, 66, 195, 68, 197, 198, 71, 72, 201, 202, 75, 204, 77, 78, 207,
    80, 209, 210, 83, 212, 85, 86, 215, 216, 89, 90, 219, 92, 221, 222, 95,
    96, 225, 226, 99, 228, 101, 102, 231, 232, 105, 106, 235, 108, 237, 238, 111,
    240, 113, 114, 243, 116, 245, 246, 119, 120, 249, 250, 123, 252, 125, 126, 255,
};

/* --------------------------------------------------------- quantizer
 *
 * A 32-value sub-block is decoded as db * grid[k][j] * sign, with
 * db = (d * (0.5 + s)) * 0.25 shared by its four 8-value groups. For a fixed
 * db the best grid entry and signs of a group can be found exactly:
 *   - signs follow the input signs; when that pattern has odd parity (not
 *     encodable) the element with the least cost 4*db*g_j*|x_j| is flipped,
 *     and which element that is does not depend on db;
 *   - so the error of entry k is db^2*G2[k] - 2*db*E[k] + sum x^2, with
 *     G2[k] = sum g_j^2 and E[k] = sum g_j|x_j|, minus 2*min_j g_j|x_j|
 *     when the parity is odd.
 * The search computes E[k] for all 256 entries once per group, sweeps db per
 * sub-block to find its ideal scale, then picks the block scale d (f16) and
 * the 4-bit s of each sub-block, refitting d by least squares. Only IEEE
 * basic float/double operations are used, in a fixed order. */

/* Per-group precomputation: E[k] per grid entry and the sign byte / flip
 * element for odd parity. */
typedef struct iq2_group {
    float E[256];
    uint8_t flip[256]; /* element flipped for entry k (8 = none) */
    uint8_t signs;     /* input sign bits */
    double x2;
    /* entries grouped by G2 (the grid has only 12 distinct values): for a
     * given db only the entry with the largest E of each class can win */
    float cE[IQ2_MAXCLS];
    uint8_t ck[IQ2_MAXCLS];
} iq2_group;

static float iq2_gval[256][8]; /* grid magnitudes as floats */
static float iq2_G2[256];
static uint8_t iq2_cls[256];          /* class of each entry */
static float iq2_cls_G2[IQ2_MAXCLS];  /* G2 of each class, first-seen order */
static int iq2_ncls;
static pthread_once_t iq2_once = PTHREAD_ONCE_INIT;

/* Fill the float views of the grid (once; quantizing may run in threads). */
static void iq2_init_once(void)
{
    for (int k = 0; k < 256; k++) {
        float g2 = 0;
        for (int j = 0; j < 8; j++) {
            float g = (float)((ds4_iq2xxs_grid[k] >> (8 * j)) & 255);
            iq2_gval[k][j] = g;
            g2 += g * g;
        }
        iq2_G2[k] = g2;
        int c = 0;
        while (c < iq2_ncls && iq2_cls_G2[c] != g2)
            c++;
        if (c == iq2_ncls) {
            DS4_ASSERT(iq2_ncls < IQ2_MAXCLS);
            iq2_cls_G2[iq2_ncls++] = g2;
        }
        iq2_cls[k] = (uint8_t)c;
    }
}

/* Precompute E[k] and flips of one 8-value group. */
static void iq2_group_prep(const float *x, iq2_group *gr)
{
    float ax[8];
    int par = 0;
    gr->signs = 0;
    gr->x2 = 0;
    for (int j = 0; j < 8; j++) {
        ax[j] = x[j] < 0 ? -x[j] : x[j];
        if (x[j] < 0) {
            gr->signs |= (uint8_t)(1u << j);
            par ^= 1;
        }
        gr->x2 += (double)x[j] * x[j];
    }
    for (int k = 0; k < 256; k++) {
        float dsum = 0, pmin = 0;
        int jmin = 0;
        for (int j = 0; j < 8; j++) {
            float p = iq2_gval[k][j] * ax[j];
            dsum += p;
            if (j == 0 || p < pmin)
                pmin = p, jmin = j;
        }
        gr->E[k] = par ? dsum - 2 * pmin : dsum;
        gr->flip[k] = (uint8_t)(par ? jmin : 8);
    }
    for (int c = 0; c < iq2_ncls; c++)
        gr->ck[c] = 0xff;
    for (int k = 0; k < 256; k++) {
        int c = iq2_cls[k];
        if (gr->ck[c] == 0xff || gr->E[k] > gr->cE[c])
            gr->cE[c] = gr->E[k], gr->ck[c] = (uint8_t)k;
    }
}

/* Best grid entry for scale db; returns its error term db*G2 - 2E (times
 * db, add x2 for the squared error). */
static int iq2_best_entry(const iq2_group *gr, float db, float *val)
{
    int cb = 0;
    float vb = db * iq2_cls_G2[0] - 2 * gr->cE[0];
    for (int c = 1; c < iq2_ncls; c++) {
        float v = db * iq2_cls_G2[c] - 2 * gr->cE[c];
        if (v < vb)
            vb = v, cb = c;
    }
    *val = vb;
    return gr->ck[cb];
}

/* Squared error of a sub-block (4 groups) at scale db, with the entries. */
static double iq2_sub_err(const iq2_group *gr, float db, int *k)
{
    double e = 0;
    for (int l = 0; l < 4; l++) {
        float v;
        k[l] = iq2_best_entry(&gr[l], db, &v);
        e += (double)db * v + gr[l].x2;
    }
    return e;
}

/* Ideal (unquantized) scale of a sub-block: sweep, then one refit. */
static float iq2_sub_scale(const iq2_group *gr, float amax)
{
    float best_db = 0;
    double best = -1;
    int k[4];
    for (int t = 0; t < 20; t++) {
        float db = amax * (0.35f + 0.05f * (float)t) / 43.0f;
        double e = iq2_sub_err(gr, db, k);
        double se = 0, sg = 0;
        for (int l = 0; l < 4; l++)
            se += gr[l].E[k[l]], sg += iq2_G2[k[l]];
        if (se > 0 && sg > 0) { /* least-squares scale for these entries */
            float db2 = (float)(se / sg);
            int k2[4];
            double e2 = iq2_sub_err(gr, db2, k2);
            if (e2 < e)
                e = e2, db = db2;
        }
        if (best < 0 || e < best)
            best = e, best_db = db;
    }
    return best_db;
}

/* Sub-block scale from block scale d and 4-bit s, rounded as the decoder. */
static float iq2_db(float d, int s)
{
    return (d * (0.5f + (float)s)) * 0.25f;
}

/* Choice for one block: d, per-sub-block s and entries, total error. */
typedef struct iq2_choice {
    uint16_t dh;
    uint8_t s[8];
    uint8_t k[8][4];
    double err;
} iq2_choice;

/* For f16 scale dh, pick each sub-block's s near its ideal scale. */
static void iq2_assign(const iq2_group *gr, const float *ideal, uint16_t dh, iq2_choice *c)
{
    float d = ds4_f16_to_f32(dh);
    c->dh = dh;
    c->err = 0;
    for (int b = 0; b < 8; b++) {
        float t = d > 0 ? ideal[b] * 4.0f / d : 0; /* ~ s + 0.5 */
        int s0 = !(t > 0) ? 0 : t > 16 ? 16 : (int)t;
        double best = -1;
        for (int s = s0 - 2; s <= s0 + 1; s++) {
            if (s < 0 || s > 15)
                continue;
            int k[4];
            double e = iq2_sub_err(gr + 4 * b, iq2_db(d, s), k);
            if (best < 0 || e < best) {
                best = e;
                c->s[b] = (uint8_t)s;
                for (int l = 0; l < 4; l++)
                    c->k[b][l] = (uint8_t)k[l];
            }
        }
        if (best < 0) { /* s0 far out of range: clamp */
            int s = s0 < 0 ? 0 : 15, k[4];
            best = iq2_sub_err(gr + 4 * b, iq2_db(d, s), k);
            c->s[b] = (uint8_t)s;
            for (int l = 0; l < 4; l++)
                c->k[b][l] = (uint8_t)k[l];
        }
        c->err += best;
    }
}

/* Least-squares block scale d for fixed s and entries. */
static double iq2_refit(const iq2_group *gr, const iq2_choice *c)
{
    double num = 0, den = 0;
    for (int b = 0; b < 8; b++) {
        double cs = (0.5 + c->s[b]) * 0.25;
        for (int l = 0; l < 4; l++) {
            num += cs * gr[4 * b + l].E[c->k[b][l]];
            den += cs * cs * iq2_G2[c->k[b][l]];
        }
    }
    return den > 0 ? num / den : 0;
}

/* f16 bits of a non-negative scale, clamped to the finite range. */
static uint16_t iq2_f16(double v)
{
    if (!(v > 0))
        return 0;
    return ds4_f32_to_f16(v > 65504.0 ? 65504.0f : (float)v);
}

/* Write the 66-byte block for a choice. */
static void iq2_pack(const iq2_group *gr, const iq2_choice *c, uint8_t *out)
{
    out[0] = (uint8_t)c->dh;
    out[1] = (uint8_t)(c->dh >> 8);
    for (int b = 0; b < 8; b++) {
        uint32_t a0 = 0, a1 = (uint32_t)c->s[b] << 28;
        for (int l = 0; l < 4; l++) {
            const iq2_group *g = &gr[4 * b + l];
            int k = c->k[b][l];
            uint8_t signs = g->signs;
            if (g->flip[k] < 8)
                signs ^= (uint8_t)(1u << g->flip[k]);
            a0 |= (uint32_t)k << (8 * l);
            a1 |= (uint32_t)(signs & 127) << (7 * l);
        }
        for (int i = 0; i < 4; i++) {
            out[2 + 8 * b + i] = (uint8_t)(a0 >> (8 * i));
            out[6 + 8 * b + i] = (uint8_t)(a1 >> (8 * i));
        }
    }
}

/* Quantize 256 floats into one 66-byte IQ2_XXS block (see above). */
void ds4_iq2xxs_quantize_block(const float *x, uint8_t *out)
{
    pthread_once(&iq2_once, iq2_init_once);
    iq2_group gr[32];
    float ideal[8], dmax = 0;
    for (int i = 0; i < 32; i++)
        iq2_group_prep(x + 8 * i, &gr[i]);
    for (int b = 0; b < 8; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) {
            float a = x[32 * b + i] < 0 ? -x[32 * b + i] : x[32 * b + i];
            amax = a > amax ? a : amax;
        }
        ideal[b] = amax > 0 ? iq2_sub_scale(gr + 4 * b, amax) : 0;
        dmax = ideal[b] > dmax ? ideal[b] : dmax;
    }
    iq2_choice best, cur;
    memset(&best, 0, sizeof best);
    if (!(dmax > 0)) { /* all zero (or not finite): d = 0 decodes to zeros */
        iq2_pack(gr, &best, out);
        return;
    }
    static const float frac[4] = {1.0f, 0.92f, 0.84f, 0.76f};
    best.err = -1;
    for (int f = 0; f < 4; f++) {
        uint16_t dh = iq2_f16((double)dmax * 4.0 / 15.5 / frac[f]);
        for (int it = 0; it < 3; it++) {
            iq2_assign(gr, ideal, dh, &cur);
            if (best.err < 0 || cur.err < best.err)
                best = cur;
            uint16_t next = iq2_f16(iq2_refit(gr, &cur));
            if (next == dh)
                break;
            dh = next;
        }
    }
    iq2_pack(gr, &best, out);
}
