/* ds4-load - open the OpenCL device, load a DeepSeek V4 GGUF onto it and
 * report the device memory plan and the upload speed.
 *
 *   ds4-load [--reserve-mb N] [--max-buf-mb N] [--plan-only] [--verify]
 *            MODEL.gguf
 *   ds4-load [--reserve-mb N] [--max-buf-mb N] --full-q2
 *
 * --full-q2 plans the full-size DeepSeek V4 Flash q2 layout (ds4's types,
 * from the layout description, no file needed) on this device: does the
 * 81 GB model fit, in how many buffers.
 * Prints the device, the plan (per-buffer sizes, total device memory
 * needed vs available) and the upload time and GB/s; progress goes to
 * stderr. --verify reads every tensor back and compares it with the file.
 * DS4_DEVICE_MEM_MB overrides the device memory the plan is checked
 * against; DS4_CL_PLATFORM / DS4_CL_DEVICE pick the device.
 * Exit status: 0 loaded, 1 bad model or plan, 2 device error, 64 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engined/eng_cl.h"
#include "engined/eng_model.h"

typedef struct load_opts {
    const char *path;
    uint64_t reserve, max_buf;
    int plan_only, verify, full_q2;
} load_opts;

/* Print usage and return the usage exit code. */
static int usage(void)
{
    fprintf(stderr, "usage: ds4-load [--reserve-mb N] [--max-buf-mb N] "
            "[--plan-only] [--verify] MODEL.gguf\n"
            "       ds4-load [--reserve-mb N] [--max-buf-mb N] --full-q2\n");
    return 64;
}

/* Parse a non-negative MiB count into bytes. 0 or -1. */
static int parse_mb(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v > (1ull << 40))
        return -1;
    *out = (uint64_t)v << 20;
    return 0;
}

/* Command line into o. 0, or the exit code for a usage error. */
static int parse_args(int argc, char **argv, load_opts *o)
{
    o->reserve = ENG_MODEL_RESERVE_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--plan-only") == 0)
            o->plan_only = 1;
        else if (strcmp(a, "--verify") == 0)
            o->verify = 1;
        else if (strcmp(a, "--full-q2") == 0)
            o->full_q2 = o->plan_only = 1;
        else if (strcmp(a, "--reserve-mb") == 0 ||
                 strcmp(a, "--max-buf-mb") == 0) {
            uint64_t *dst = a[2] == 'r' ? &o->reserve : &o->max_buf;
            if (parse_mb(i + 1 < argc ? argv[++i] : NULL, dst)) {
                fprintf(stderr, "ds4-load: %s needs a number of MiB\n", a);
                return usage();
            }
        } else if (a[0] == '-' || o->path) {
            fprintf(stderr, "ds4-load: unexpected argument '%s'\n", a);
            return usage();
        } else
            o->path = a;
    }
    return !o->path != !o->full_q2 ? 0 : usage();
}

/* Progress state: print at most every 1/4 s. */
typedef struct progress {
    uint64_t t0, last_ns;
} progress;

static void on_progress(void *ud, uint64_t done, uint64_t total,
                        const char *tensor)
{
    progress *p = ud;
    uint64_t now = ds4_now_ns();
    if (done < total && now - p->last_ns < 250000000ull)
        return;
    p->last_ns = now;
    double s = (now - p->t0) / 1e9;
    fprintf(stderr, "\rupload %6.2f / %.2f GiB (%3.0f%%) %6.2f GB/s  %-40.40s",
            done / 1073741824.0, total / 1073741824.0,
            total ? 100.0 * done / total : 100.0, s > 0 ? done / s / 1e9 : 0,
            tensor);
    if (done == total)
        fputc('\n', stderr);
}

/* Read every uploaded part back and compare with the file; mismatches. */
static uint64_t verify(eng_cl *cl, const eng_model *m)
{
    uint64_t bad = 0, cap = ENG_MODEL_CHUNK;
    uint8_t *buf = ds4_xmalloc(cap);
    for (uint32_t j = 0; j < m->plan.n_parts; j++) {
        const eng_part *pt = &m->plan.parts[j];
        const eng_tensor *t = &m->tensors[pt->tensor];
        for (uint64_t o = 0; o < pt->bytes; o += cap) {
            uint64_t n = pt->bytes - o < cap ? pt->bytes - o : cap;
            if (eng_cl_read(cl, m->bufs[pt->buf], pt->off + o, buf, n) ||
                memcmp(buf, t->data + pt->src_off + o, n) != 0) {
                fprintf(stderr, "verify: tensor '%s' differs near byte "
                        "%llu\n", t->name,
                        (unsigned long long)(pt->src_off + o));
                bad++;
                break;
            }
        }
    }
    free(buf);
    return bad;
}

/* Plan and (unless plan-only) upload; the exit status. */
static int load(eng_cl *cl, const load_opts *o)
{
    char err[2048], a[32];
    uint64_t t0 = ds4_now_ns();
    eng_model *m;
    if (o->full_q2) {
        dsv4_hparams *hp = ds4_xmalloc(sizeof *hp);
        dsv4_hparams_full(hp);
        m = eng_model_virtual(hp);
        free(hp);
    } else if (eng_model_open(o->path, &m, err, sizeof err)) {
        fprintf(stderr, "ds4-load: %s\n", err);
        return 1;
    }
    printf("%s in %.3f s\n", o->full_q2 ? "layout built" :
           "opened and validated", (ds4_now_ns() - t0) / 1e9);
    eng_plan plan;
    eng_plan_opts po = {.reserve = o->reserve, .max_buf = o->max_buf};
    if (eng_model_plan(m, cl, &po, &plan, err, sizeof err)) {
        fprintf(stderr, "ds4-load: %s\n", err);
        eng_model_close(m);
        return 1;
    }
    eng_plan_print(m, &plan, stdout);
    fflush(stdout);
    int rc = 0;
    if (!o->plan_only) {
        progress pr = {ds4_now_ns(), 0};
        if (eng_model_upload(m, cl, &plan, on_progress, &pr, err,
                             sizeof err)) {
            fprintf(stderr, "\nds4-load: %s\n", err);
            rc = 2;
        } else {
            printf("uploaded %s in %.3f s: %.2f GB/s\n",
                   eng_fmt_bytes(plan.tensor_bytes, a, sizeof a), m->upload_s,
                   m->upload_s > 0 ? plan.tensor_bytes / m->upload_s / 1e9
                                   : 0.0);
            if (o->verify) {
                uint64_t bad = verify(cl, m);
                printf("verify: %s\n", bad ? "MISMATCH" : "all tensors equal "
                       "the file");
                rc = bad ? 2 : 0;
            }
        }
    }
    eng_plan_free(&plan);
    eng_model_close(m);
    return rc;
}

int main(int argc, char **argv)
{
    load_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    eng_cl cl;
    if (eng_cl_open(&cl)) {
        fprintf(stderr, "ds4-load: %s\n", cl.err);
        eng_cl_close(&cl);
        return 2;
    }
    char g[32], mx[32];
    printf("device: %s (%s), %s global memory, largest buffer %s\n",
           cl.info.name, cl.info.platform,
           eng_fmt_bytes(cl.info.global_mem, g, sizeof g),
           eng_fmt_bytes(cl.info.max_alloc, mx, sizeof mx));
    rc = load(&cl, &o);
    eng_cl_close(&cl);
    return rc;
}
