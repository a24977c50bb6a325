/* model_fp.c - model fingerprints (see model_fp.h). */
#include "model_fp.h"

#include <string.h>

#include "hash.h"

/* A routed-expert tensor: blk.N.ffn_{gate,up,down}_exps.weight. */
static int is_routed_expert(const gguf_tensor *t)
{
    static const char *const sfx[] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        size_t n = strlen(sfx[i]);
        for (uint64_t o = 0; o + n <= t->name.len; o++)
            if (memcmp(t->name.ptr + o, sfx[i], n) == 0)
                return 1;
    }
    return 0;
}

static void le64(uint8_t b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

void ds4_model_fingerprint(const gguf_file *f, ds4_model_fp *fp)
{
    uint8_t d[32], b[8];
    ds4_sha256_ctx c;

    /* exact: file size + everything before the tensor data */
    ds4_sha256_init(&c);
    le64(b, f->size);
    ds4_sha256_update(&c, b, 8);
    ds4_sha256_update(&c, f->base, f->data_offset <= f->size ? f->data_offset : f->size);
    ds4_sha256_final(&c, d);
    ds4_hex(d, 32, fp->exact);

    /* family: the metadata section (header up to the first tensor entry,
     * whose u64 name length sits just before its name bytes), then the
     * non-expert tensors' names, types and shapes */
    uint64_t meta_end = f->data_offset;
    if (f->n_tensors > 0) {
        const uint8_t *p = (const uint8_t *)f->tensors[0].name.ptr;
        if (p >= f->base + 8 && p <= f->base + f->size)
            meta_end = (uint64_t)(p - f->base) - 8;
    }
    if (meta_end > f->size)
        meta_end = f->size;
    ds4_sha256_init(&c);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if ((kv->key.len >= 8 && memcmp(kv->key.ptr, "general.", 8) == 0) ||
            gguf_str_eq(kv->key, "ds4.mkmodel.layout"))
            continue; /* name, file type, quantizer, test-model layout:
                         differ between quants of one model */
        /* the value runs from kv->data to the next entry's key length */
        const uint8_t *end = i + 1 < f->n_kv ? (const uint8_t *)f->kv[i + 1].key.ptr - 8
                                             : f->base + meta_end;
        if (kv->data < f->base || end < kv->data || end > f->base + f->size)
            end = kv->data; /* cannot happen for a parsed file */
        le64(b, kv->key.len);
        ds4_sha256_update(&c, b, 8);
        ds4_sha256_update(&c, kv->key.ptr, kv->key.len);
        le64(b, kv->type);
        ds4_sha256_update(&c, b, 8);
        ds4_sha256_update(&c, kv->data, (size_t)(end - kv->data));
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (is_routed_expert(t))
            continue;
        le64(b, t->name.len);
        ds4_sha256_update(&c, b, 8);
        ds4_sha256_update(&c, t->name.ptr, t->name.len);
        le64(b, t->type);
        ds4_sha256_update(&c, b, 8);
        le64(b, t->n_dims);
        ds4_sha256_update(&c, b, 8);
        for (uint32_t k = 0; k < t->n_dims; k++) {
            le64(b, t->ne[k]);
            ds4_sha256_update(&c, b, 8);
        }
    }
    ds4_sha256_final(&c, d);
    ds4_hex(d, 32, fp->family);
}
