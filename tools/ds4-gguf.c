/* ds4-gguf - inspect, generate and mutate DeepSeek V4 GGUF files.
 *
 *   ds4-gguf info [--brief] FILE
 *       header, metadata (arrays abbreviated), tensor table, totals and the
 *       verdict of the same layout validation the engine applies.
 *       Exit status: 0 valid, 1 invalid (message on the verdict line),
 *       2 unreadable (not a GGUF, truncated, corrupt).
 *   ds4-gguf mkmodel --out FILE [--seed N] [--layout q2|q4|exact]
 *       [--tokenizer tokenizer.json] [dimension options, see usage]
 *       writes a small deterministic test model and prints its SHA-256.
 *   ds4-gguf mutate IN OUT (--drop-tensor NAME | --retype NAME TYPE |
 *       --grow NAME | --drop-key KEY)
 *       copies IN with one edit (for validation tests).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dsv4_layout.h"
#include "common/dsv4_mkmodel.h"
#include "common/gguf.h"
#include "common/hash.h"
#include "common/quant.h"
#include "common/util.h"

/* Print usage to f. */
static void usage(FILE *f)
{
    fprintf(f,
        "usage: ds4-gguf info [--brief] FILE\n"
        "       ds4-gguf mkmodel --out FILE [--seed N] [--layout q2|q4|exact]\n"
        "                [--tokenizer PATH] [--layers L] [--ratios 0,0,4,128,...]\n"
        "                [--hidden H] [--heads N] [--head-dim D] [--rope-dim R]\n"
        "                [--q-lora Q] [--o-lora R] [--o-groups G] [--experts E]\n"
        "                [--experts-used K] [--expert-ffn I] [--hash-layers N]\n"
        "                [--swa W] [--idx-heads N] [--idx-dim D] [--idx-topk K]\n"
        "                [--hc N] [--sinkhorn N] [--ctx N] [--quiet]\n"
        "       ds4-gguf mutate IN OUT (--drop-tensor NAME | --retype NAME TYPE |\n"
        "                --grow NAME | --drop-key KEY)\n");
}

/* ---- info --------------------------------------------------------------- */

/* Print at most max bytes of a string, quoted, with an ellipsis; a cut
 * never splits a UTF-8 sequence. */
static void print_str(const char *p, uint64_t len, uint64_t max)
{
    uint64_t n = len;
    if (len > max) {
        n = max;
        while (n > 0 && ((uint8_t)p[n] & 0xc0) == 0x80)
            n--;
    }
    printf("'%.*s'%s", (int)n, p, len > max ? "..." : "");
}

/* Print one scalar value of type t at d. */
static void print_scalar(uint32_t t, const uint8_t *d)
{
    union {
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        float f;
        double g;
    } v;
    switch (t) {
    case GGUF_VT_UINT8: memcpy(&v.u8, d, 1); printf("%u", v.u8); break;
    case GGUF_VT_INT8: memcpy(&v.u8, d, 1); printf("%d", (int8_t)v.u8); break;
    case GGUF_VT_BOOL: memcpy(&v.u8, d, 1); printf("%s", v.u8 ? "true" : "false"); break;
    case GGUF_VT_UINT16: memcpy(&v.u16, d, 2); printf("%u", v.u16); break;
    case GGUF_VT_INT16: memcpy(&v.u16, d, 2); printf("%d", (int16_t)v.u16); break;
    case GGUF_VT_UINT32: memcpy(&v.u32, d, 4); printf("%" PRIu32, v.u32); break;
    case GGUF_VT_INT32: memcpy(&v.u32, d, 4); printf("%" PRId32, (int32_t)v.u32); break;
    case GGUF_VT_FLOAT32: memcpy(&v.f, d, 4); printf("%.9g", (double)v.f); break;
    case GGUF_VT_UINT64: memcpy(&v.u64, d, 8); printf("%" PRIu64, v.u64); break;
    case GGUF_VT_INT64: memcpy(&v.u64, d, 8); printf("%" PRId64, (int64_t)v.u64); break;
    case GGUF_VT_FLOAT64: memcpy(&v.g, d, 8); printf("%.17g", v.g); break;
    default: printf("?"); break;
    }
}

/* Bytes of one scalar element. */
static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    default: return 8;
    }
}

/* Print one metadata line: key, type, value (arrays: first few). */
static void print_kv(const gguf_kv *kv)
{
    char tn[32];
    if (kv->type == GGUF_VT_ARRAY)
        snprintf(tn, sizeof tn, "arr[%s]", gguf_vtype_name(kv->arr_type));
    else
        snprintf(tn, sizeof tn, "%s", gguf_vtype_name(kv->type));
    printf("  %-52.*s %-9s ", (int)kv->key.len, kv->key.ptr, tn);
    if (kv->type == GGUF_VT_STRING) {
        uint64_t len;
        memcpy(&len, kv->data, 8);
        print_str((const char *)kv->data + 8, len, 80);
    } else if (kv->type != GGUF_VT_ARRAY) {
        print_scalar(kv->type, kv->data);
    } else {
        uint64_t show = kv->arr_n < 6 ? kv->arr_n : 6;
        printf("[%" PRIu64 "] [", kv->arr_n);
        for (uint64_t i = 0; i < show; i++) {
            if (i)
                printf(", ");
            gguf_str s;
            if (kv->arr_type == GGUF_VT_STRING)
                gguf_arr_str(kv, i, &s) == 0 ? print_str(s.ptr, s.len, 24)
                                             : (void)printf("?");
            else
                print_scalar(kv->arr_type,
                             kv->data + i * scalar_size(kv->arr_type));
        }
        printf("%s]", show < kv->arr_n ? ", ..." : "");
    }
    putchar('\n');
}

/* Type name or its number. */
static const char *tname(uint32_t t, char *buf, size_t cap)
{
    const ds4_type_info *ti = ds4_type_get(t);
    if (ti)
        return ti->name;
    snprintf(buf, cap, "type%u", t);
    return buf;
}

/* Tensor table and per-type totals. */
static void print_tensors(const gguf_file *f, int brief)
{
    uint64_t bytes_by_type[64] = {0}, count_by_type[64] = {0}, total = 0;
    if (!brief)
        printf("\ntensors:\n  %-40s %-8s %-24s %14s %14s\n", "name", "type",
               "shape (ne0 first)", "offset", "bytes");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[96], tb[16];
        size_t o = (size_t)snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%" PRIu64,
                                  d ? ", " : "", t->ne[d]);
        if (o < sizeof shape)
            snprintf(shape + o, sizeof shape - o, "]");
        if (!brief)
            printf("  %-40.*s %-8s %-24s %14" PRIu64 " %14" PRIu64 "\n",
                   (int)t->name.len, t->name.ptr, tname(t->type, tb, sizeof tb),
                   shape, t->offset, t->nbytes);
        total += t->nbytes;
        if (t->type < 64) {
            bytes_by_type[t->type] += t->nbytes;
            count_by_type[t->type]++;
        }
    }
    printf("\ntotals: %" PRIu64 " tensors, %" PRIu64 " bytes of tensor data "
           "(%.2f GiB)\n", f->n_tensors, total,
           (double)total / (1024.0 * 1024 * 1024));
    for (uint32_t t = 0; t < 64; t++)
        if (count_by_type[t]) {
            char tb[16];
            printf("  %-8s %6" PRIu64 " tensors %16" PRIu64 " bytes\n",
                   tname(t, tb, sizeof tb), count_by_type[t], bytes_by_type[t]);
        }
}

/* `info`: print everything, then the validation verdict. */
static int cmd_info(int argc, char **argv)
{
    int brief = 0;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--brief") == 0)
            brief = 1;
        else if (!path)
            path = argv[i];
        else
            return usage(stderr), 2;
    }
    if (!path)
        return usage(stderr), 2;
    char err[512];
    gguf_file *f;
    if (gguf_open(path, &f, err, sizeof err)) {
        printf("verdict: unreadable: %s\n", err);
        return 2;
    }
    printf("file: %s (%" PRIu64 " bytes)\n", path, f->size);
    printf("GGUF v%u, %" PRIu64 " metadata keys, %" PRIu64 " tensors, "
           "alignment %u, data at %" PRIu64 "\n", f->version, f->n_kv,
           f->n_tensors, f->alignment, f->data_offset);
    if (!brief) {
        printf("\nmetadata:\n");
        for (uint64_t i = 0; i < f->n_kv; i++)
            print_kv(&f->kv[i]);
    }
    print_tensors(f, brief);
    dsv4_hparams *hp = ds4_xmalloc(sizeof *hp);
    dsv4_validation res;
    int rc = dsv4_check_file(f, hp, &res, err, sizeof err);
    if (rc) {
        printf("verdict: INVALID DeepSeek V4 layout: %s\n", err);
    } else {
        if (res.n_extra)
            printf("warning: %" PRIu64 " tensors not in the layout (first: "
                   "%s); the engine ignores them\n", res.n_extra,
                   res.first_extra);
        printf("verdict: valid DeepSeek V4 layout: %s (%u layers, %" PRIu64
               " tensors)\n", dsv4_layout_name(res.kind), hp->n_layer,
               res.n_tensors);
    }
    free(hp);
    gguf_close(f);
    return rc ? 1 : 0;
}

/* ---- mkmodel ------------------------------------------------------------ */

/* Parse an unsigned decimal option value; -1 on garbage or overflow. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* --ratios 0,0,4,128: sets the layer count too. */
static int parse_ratios(const char *s, dsv4_hparams *hp)
{
    uint32_t n = 0;
    char *dup = ds4_xstrdup(s), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(dup, ",", &save); tok && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (n >= DSV4_MAX_LAYERS || parse_u64(tok, 1u << 20, &v))
            rc = -1;
        else
            hp->compress_ratio[n++] = (uint32_t)v;
    }
    free(dup);
    if (rc || n == 0)
        return -1;
    hp->n_layer = n;
    for (uint32_t i = 0; i < n; i++)
        hp->swiglu_clamp[i] = 10.0f;
    return 0;
}

/* Default tokenizer: from the current directory (the repo root), else
 * relative to the binary (build/ds4-gguf -> ../node_modules/...). */
static const char *default_tokenizer(char *buf, size_t cap)
{
    if (access(DSV4_TOKENIZER_JSON, R_OK) == 0)
        return DSV4_TOKENIZER_JSON;
    char exe[PATH_MAX];
    if (cap < sizeof exe + sizeof DSV4_TOKENIZER_JSON + 8)
        return DSV4_TOKENIZER_JSON;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, cap, "%s/../%s", exe, DSV4_TOKENIZER_JSON);
            if (access(buf, R_OK) == 0)
                return buf;
        }
    }
    return DSV4_TOKENIZER_JSON;
}

/* Dimension options: name -> field. */
static uint32_t *dim_field(dsv4_hparams *hp, const char *opt)
{
    static const struct {
        const char *name;
        size_t off;
    } opts[] = {
#define O(n, f) {n, offsetof(dsv4_hparams, f)}
        O("--hidden", n_embd), O("--heads", n_head), O("--head-dim", head_dim),
        O("--rope-dim", n_rot), O("--q-lora", q_lora_rank),
        O("--o-lora", o_lora_rank), O("--o-groups", o_groups),
        O("--experts", n_expert), O("--experts-used", n_expert_used),
        O("--expert-ffn", n_ff_exp), O("--hash-layers", n_hash_layer),
        O("--swa", n_swa), O("--idx-heads", n_idx_head),
        O("--idx-dim", idx_head_dim), O("--idx-topk", idx_top_k),
        O("--hc", n_hc), O("--sinkhorn", hc_sinkhorn_iter),
#undef O
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(opts); i++)
        if (strcmp(opt, opts[i].name) == 0)
            return (uint32_t *)(void *)((char *)hp + opts[i].off);
    return NULL;
}

/* --layers L: the first L entries of the default schedule pattern
 * (0, 0, then 4/128 alternating). */
static void set_layers(dsv4_hparams *hp, uint32_t n)
{
    hp->n_layer = n;
    for (uint32_t i = 0; i < n; i++) {
        hp->compress_ratio[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
        hp->swiglu_clamp[i] = 10.0f;
    }
}

/* Parse mkmodel options into o; returns 0, or -1 after printing why. */
static int parse_mkmodel(int argc, char **argv, dsv4_mkmodel_opts *o,
                         const char **out, const char **tok)
{
    int hash_set = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        uint32_t *field = dim_field(&o->hp, a);
        if (strcmp(a, "--quiet") == 0) {
            o->progress = 0;
            continue;
        }
        if (!v) {
            fprintf(stderr, "ds4-gguf mkmodel: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--out") == 0) {
            *out = v;
        } else if (strcmp(a, "--tokenizer") == 0) {
            *tok = v;
        } else if (strcmp(a, "--layout") == 0) {
            if (strcmp(v, "q2") == 0) o->layout = DSV4_MK_Q2;
            else if (strcmp(v, "q4") == 0) o->layout = DSV4_MK_Q4;
            else if (strcmp(v, "exact") == 0) o->layout = DSV4_MK_EXACT;
            else goto bad;
        } else if (strcmp(a, "--ratios") == 0) {
            if (parse_ratios(v, &o->hp))
                goto bad;
        } else if (parse_u64(v, strcmp(a, "--seed") == 0 ? UINT64_MAX
                                                         : UINT32_MAX, &n)) {
            goto bad;
        } else if (strcmp(a, "--seed") == 0) {
            o->seed = n;
        } else if (strcmp(a, "--ctx") == 0) {
            o->hp.n_ctx = n;
        } else if (strcmp(a, "--layers") == 0) {
            if (n == 0 || n > DSV4_MAX_LAYERS)
                goto bad;
            set_layers(&o->hp, (uint32_t)n);
        } else if (field) {
            *field = (uint32_t)n;
            hash_set |= field == &o->hp.n_hash_layer;
            if (field == &o->hp.head_dim)
                o->hp.value_dim = (uint32_t)n;
        } else {
            fprintf(stderr, "ds4-gguf mkmodel: unknown option %s\n", a);
            return -1;
        }
        continue;
bad:
        fprintf(stderr, "ds4-gguf mkmodel: bad value '%s' for %s\n", v, a);
        return -1;
    }
    if (!*out) {
        fprintf(stderr, "ds4-gguf mkmodel: --out FILE is required\n");
        return -1;
    }
    /* Fewer layers than the default 3 hash layers: all of them hash. */
    if (!hash_set && o->hp.n_hash_layer > o->hp.n_layer)
        o->hp.n_hash_layer = o->hp.n_layer;
    return 0;
}

/* `mkmodel`: generate, write, self-validate, print the SHA-256. */
static int cmd_mkmodel(int argc, char **argv)
{
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.progress = 1;
    const char *out = NULL, *tok_path = NULL;
    if (parse_mkmodel(argc, argv, &o, &out, &tok_path))
        return usage(stderr), 2;
    char err[512], buf[PATH_MAX + 128], sha[65];
    if (!tok_path)
        tok_path = default_tokenizer(buf, sizeof buf);
    if (o.progress)
        fprintf(stderr, "mkmodel: reading tokenizer %s\n", tok_path);
    dsv4_tokdata *tok;
    if (dsv4_tokdata_load(tok_path, &tok, err, sizeof err)) {
        fprintf(stderr, "ds4-gguf mkmodel: %s\n", err);
        return 1;
    }
    o.tok = tok;
    o.hp.n_vocab = tok->n_tokens;
    int rc = dsv4_mkmodel_write(&o, out, sha, err, sizeof err);
    dsv4_tokdata_free(tok);
    if (rc) {
        fprintf(stderr, "ds4-gguf mkmodel: %s\n", err);
        return 1;
    }
    gguf_file *f;
    dsv4_hparams *hp = ds4_xmalloc(sizeof *hp);
    dsv4_validation res;
    rc = gguf_open(out, &f, err, sizeof err);
    if (rc == 0) {
        rc = dsv4_check_file(f, hp, &res, err, sizeof err);
        gguf_close(f);
    }
    free(hp);
    if (rc) {
        fprintf(stderr, "ds4-gguf mkmodel: the written file does not "
                "validate: %s\n", err);
        return 1;
    }
    fprintf(stderr, "mkmodel: %s: %s\n", out, dsv4_layout_name(res.kind));
    printf("%s  %s\n", sha, out);
    return 0;
}

/* ---- mutate ------------------------------------------------------------- */

/* `mutate`: copy IN to OUT with one edit. */
static int cmd_mutate(int argc, char **argv)
{
    if (argc < 4)
        return usage(stderr), 2;
    dsv4_gguf_edit e = {0};
    const char *op = argv[2];
    if (strcmp(op, "--drop-tensor") == 0) {
        e.drop_tensor = argv[3];
    } else if (strcmp(op, "--grow") == 0) {
        e.grow_tensor = argv[3];
    } else if (strcmp(op, "--drop-key") == 0) {
        e.drop_key = argv[3];
    } else if (strcmp(op, "--retype") == 0 && argc >= 5 &&
               ds4_type_from_name(argv[4]) >= 0) {
        e.retype_tensor = argv[3];
        e.new_type = (uint32_t)ds4_type_from_name(argv[4]);
    } else {
        return usage(stderr), 2;
    }
    char err[512];
    gguf_file *f;
    if (gguf_open(argv[0], &f, err, sizeof err)) {
        fprintf(stderr, "ds4-gguf mutate: %s\n", err);
        return 2;
    }
    dsv4_build *b;
    int rc = dsv4_gguf_rewrite(f, &e, &b, err, sizeof err);
    if (rc == 0) {
        rc = gguf_writer_write(dsv4_build_writer(b), argv[1], err,
                               sizeof err);
        dsv4_build_free(b);
    }
    gguf_close(f);
    if (rc) {
        fprintf(stderr, "ds4-gguf mutate: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr), 2;
    if (strcmp(argv[1], "info") == 0)
        return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "mkmodel") == 0)
        return cmd_mkmodel(argc - 2, argv + 2);
    if (strcmp(argv[1], "mutate") == 0)
        return cmd_mutate(argc - 2, argv + 2);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout), 0;
    usage(stderr);
    return 2;
}
