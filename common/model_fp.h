/* model_fp.h - model fingerprints (SPEC 5), the identity KV checkpoints and
 * shared weight segments are checked against.
 *
 *   exact   SHA-256 of the file size (u64 LE) and the file's bytes from the
 *           start up to the tensor data: the header, every metadata entry
 *           and the tensor table (names, types, shapes, offsets). Two files
 *           with the same exact fingerprint describe the same model bytes
 *           layout; it is cheap (no tensor data is read).
 *   family  SHA-256 of every metadata entry except general.* (name,
 *           file type, quantizer) and ds4.mkmodel.layout (the test-model
 *           generator's quant record), then for every tensor that is
 *           not a routed expert (ffn_{gate,up,down}_exps): its name, type and
 *           shape (no offsets, since they move with the experts' size). The
 *           q2 and q4 files of one model share it, so their KV may be reused
 *           across quants when the user allows it.
 * Both are 64 lower-case hex chars. */
#ifndef DS4_MODEL_FP_H
#define DS4_MODEL_FP_H

#include "gguf.h"

typedef struct ds4_model_fp {
    char exact[65];
    char family[65];
} ds4_model_fp;

void ds4_model_fingerprint(const gguf_file *f, ds4_model_fp *fp);

#endif
