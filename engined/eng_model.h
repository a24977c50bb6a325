/* eng_model.h - the engine's model loader: open a ds4 GGUF, validate it
 * against the DeepSeek V4 layout, plan how its tensors are packed into
 * device buffers, and upload them.
 *
 * Three steps, so a caller can report the plan (or refuse it) before any
 * device memory is touched:
 *   eng_model_open    gguf_open + dsv4_check_file, then a table of every
 *                     expected tensor indexed by (dsv4 tensor id, layer);
 *   eng_model_plan    packs tensors, in file order (globals, layer 0, 1,
 *                     ...), into buffers no larger than the device's largest
 *                     allocation, each tensor at a 256-byte aligned offset;
 *                     a routed-expert tensor larger than one buffer is split
 *                     between whole experts (the outermost dim); checks the
 *                     total plus a reserve against the device memory;
 *   eng_model_upload  allocates the buffers and copies the bytes from the
 *                     file mapping in chunks, reporting progress.
 * Afterwards eng_model_tensor() gives the (cl_mem, offset) of a tensor and
 * eng_model_expert() the slice of one routed expert.
 *
 * Errors are -1 with a message naming the problem (the validator's message
 * unchanged for layout mismatches). Not thread-safe. */
#ifndef DS4_ENG_MODEL_H
#define DS4_ENG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/dsv4_layout.h"
#include "common/gguf.h"
#include "engined/eng_cl.h"

#define ENG_MODEL_ALIGN 256                   /* tensor offsets in a buffer */
#define ENG_MODEL_CHUNK (64ull << 20)         /* bytes per upload write */
#define ENG_MODEL_RESERVE_DEFAULT (1ull << 30) /* device memory kept free */

/* One expected tensor of the file. */
typedef struct eng_tensor {
    char name[DSV4_NAME_MAX];
    int id;                   /* enum dsv4_tensor_id */
    int layer;                /* -1 for global tensors */
    uint32_t type;            /* enum ds4_type */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t file_off;        /* absolute offset of the data in the file */
    uint64_t nbytes;
    const uint8_t *data;      /* inside the file mapping */
    uint32_t part0, n_parts;  /* placement parts, set by eng_model_upload */
} eng_tensor;

/* A contiguous piece of one tensor placed in one device buffer: the whole
 * tensor, or experts [e0, e1) of a split routed-expert tensor. */
typedef struct eng_part {
    uint32_t tensor;          /* index into eng_model.tensors */
    uint32_t buf;             /* index into the plan's buffers */
    uint64_t off;             /* byte offset inside the buffer */
    uint64_t src_off;         /* byte offset inside the tensor */
    uint64_t bytes;
    uint32_t e0, e1;          /* expert range (0, 1 for unsplit non-expert) */
} eng_part;

/* Planning inputs; zero fields take the device's values. */
typedef struct eng_plan_opts {
    uint64_t budget;     /* device memory available; 0: DS4_DEVICE_MEM_MB
                            from the environment if set, else global_mem */
    uint64_t reserve;    /* bytes to keep free for KV and scratch */
    uint64_t max_buf;    /* largest buffer; 0: the device's max_alloc */
} eng_plan_opts;

typedef struct eng_plan {
    uint32_t n_bufs;
    uint64_t *buf_bytes;      /* size of each buffer */
    uint32_t n_parts;
    eng_part *parts;          /* in placement order, tensor by tensor */
    uint32_t *tensor_part0;   /* first part of each tensor */
    uint32_t *tensor_nparts;
    uint64_t tensor_bytes;    /* bytes of tensor data */
    uint64_t total_bytes;     /* sum of buf_bytes (data + alignment pad) */
    uint64_t reserve;
    uint64_t available;       /* budget the plan was checked against */
    uint64_t max_buf;
    uint32_t n_split;         /* tensors split over several parts */
    uint32_t align;           /* offset alignment used: max(256, the
                                 device's base address alignment) */
    int budget_from_env;      /* available came from DS4_DEVICE_MEM_MB */
} eng_plan;

typedef struct eng_model {
    char *path;
    gguf_file *f;
    dsv4_hparams hp;
    dsv4_validation val;
    uint32_t n_tensors;
    eng_tensor *tensors;      /* in file (ds4 layout) order */
    int32_t *index;           /* [id * (n_layer + 1) + layer + 1] -> tensor */
    /* after eng_model_upload */
    eng_plan plan;            /* copy owned by the model */
    cl_mem *bufs;
    uint32_t n_bufs;
    double upload_s;          /* seconds the upload took */
} eng_model;

/* What the engine needs to address a tensor (or one part of it). */
typedef struct eng_tensor_ref {
    cl_mem buf;
    uint64_t off;             /* byte offset of the data inside buf */
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes;          /* bytes of this part */
    uint32_t n_parts;         /* > 1: buf/off hold experts [e0, e1) only */
    uint32_t e0, e1;
    const eng_tensor *t;
} eng_tensor_ref;

/* Progress of an upload: bytes done of total, the tensor being copied. */
typedef void (*eng_progress_fn)(void *ud, uint64_t done, uint64_t total,
                                const char *tensor);

/* Open, parse and validate a GGUF; build the tensor table. 0, or -1 with
 * the reason in err (the file stays closed). */
int eng_model_open(const char *path, eng_model **out, char *err,
                   size_t errlen);

/* A table of the layout hp describes, with ds4's q2 types and no file:
 * for planning only (sizing a device for the full-size model without the
 * 81 GB file); eng_model_upload refuses it. Free with eng_model_close. */
eng_model *eng_model_virtual(const dsv4_hparams *hp);

/* Tensor by id and layer (layer ignored for global ids); NULL when the
 * layout has none there (e.g. a compressor on a ratio-0 layer). */
const eng_tensor *eng_model_find(const eng_model *m, int id, int layer);

/* Pack the tensors into buffers (see above). cl may be NULL when opts
 * gives both budget and max_buf. 0, or -1 with err naming the tensor that
 * cannot be placed or stating memory needed vs available. */
int eng_model_plan(const eng_model *m, const eng_cl *cl,
                   const eng_plan_opts *opts, eng_plan *plan, char *err,
                   size_t errlen);

void eng_plan_free(eng_plan *plan);

/* Print the plan (buffers, totals) for people. */
void eng_plan_print(const eng_model *m, const eng_plan *plan, FILE *out);

/* Allocate the plan's buffers and copy every tensor into them in chunks
 * of ENG_MODEL_CHUNK, calling progress (may be NULL) after each. The
 * model keeps a copy of the plan. 0, or -1 with err (buffers released). */
int eng_model_upload(eng_model *m, eng_cl *cl, const eng_plan *plan,
                     eng_progress_fn progress, void *ud, char *err,
                     size_t errlen);

/* Allocate the plan's buffers and adopt the plan (tensor lookups work
 * afterwards) without copying any data: for eng_synth_fill, which
 * generates synthetic weights on the device for layout-only models.
 * 0, or -1 with err (nothing allocated). */
int eng_model_alloc(eng_model *m, eng_cl *cl, const eng_plan *plan,
                    char *err, size_t errlen);

/* Device location of a tensor after upload: for a split tensor, part 0.
 * 0, or -1 when absent or not uploaded. */
int eng_model_tensor(const eng_model *m, int id, int layer,
                     eng_tensor_ref *ref);

/* Part p of a tensor (experts [e0, e1) of a split one). 0 or -1. */
int eng_model_tensor_part(const eng_model *m, int id, int layer, uint32_t p,
                          eng_tensor_ref *ref);

/* Device location of routed expert e of an expert tensor: its slice of
 * nbytes/E bytes, wherever the split put it. 0 or -1. */
int eng_model_expert(const eng_model *m, int id, int layer, uint32_t e,
                     cl_mem *buf, uint64_t *off);

/* Release device buffers, the mapping and the table (NULL is fine). */
void eng_model_close(eng_model *m);

/* "80.76 GiB" / "123.4 MiB" / "512 B" into buf; returns buf. */
const char *eng_fmt_bytes(uint64_t bytes, char *buf, size_t cap);

#endif
