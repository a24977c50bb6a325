/* eng_weights.h - the model weights shared between engined's lives
 * (SPEC §4 "Weights").
 *
 * The weights are the GGUF file itself, mapped shared: one copy in the
 * page cache, used by every process that maps it (the backend uploads to
 * the device from its own mapping). Beside it, a small POSIX shm manifest
 * "/ds4-<uid>-<instance>-weights" (common/shm.h header: magic, layout
 * version, creator pid, generation, checksums, PUBLISHING/COMPLETE) holds:
 *
 *   0    char magic[8]     "DS4WMAN1"
 *   8    u32 version       1
 *   12   u32 flags         1: layout validated, 2: pages read into the cache
 *   16   u64 file_size     identity of the file: size, mtime (ns), inode,
 *   24   u64 mtime_ns        device and canonical path
 *   32   u64 inode
 *   40   u64 device
 *   48   u64 tensor_bytes
 *   56   u64 n_tensors
 *   64   u64 prepare_ns    what the cold preparation cost
 *   72   char exact[64]    exact-model fingerprint (hex, SPEC §5)
 *   136  char family[64]   family fingerprint
 *   200  char path[1024]   canonical path, NUL-padded
 *   1224 (end)
 *
 * Cold start: open the GGUF, validate its layout (dsv4_check_file),
 * fingerprint it, read every page once (MADV_WILLNEED + a read per page:
 * the file is then in the page cache and any I/O error or truncation
 * shows here, not as a SIGBUS in the middle of an upload), then publish
 * the manifest COMPLETE. Restart (also after kill -9): a manifest that is
 * COMPLETE, checksum-valid and describes the same file (path, size, mtime,
 * inode, device) is re-attached: no validation or read pass. It is then
 * republished under the new pid. Anything else (absent, PUBLISHING from a
 * start that died half-way, corrupt, another file or a modified one) is
 * stale: rebuilt by the cold path. The manifest stays after engined exits
 * (that is its purpose); `ds4_shm_unlink` removes it. */
#ifndef DS4_ENG_WEIGHTS_H
#define DS4_ENG_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#define ENG_WEIGHTS_MAGIC "DS4WMAN1"
#define ENG_WEIGHTS_VERSION 1u
#define ENG_WEIGHTS_PAYLOAD 1224u
#define ENG_WEIGHTS_PURPOSE "weights"

typedef struct eng_weights eng_weights;

/* Prepare the model file: re-attach a matching manifest or do the cold
 * preparation and publish one (use_manifest 0: cold preparation only, no
 * manifest). 0, or -1 with a message (file missing, invalid layout). */
int eng_weights_attach(const char *path, const char *instance, int use_manifest,
                       eng_weights **out, char *err, size_t errlen);
/* 1 when a manifest was re-attached (no cold preparation). */
int eng_weights_reattached(const eng_weights *w);
/* Why the last manifest was not re-attached ("absent", "file changed"...). */
const char *eng_weights_stale_reason(const eng_weights *w);
const char *eng_weights_fingerprint(const eng_weights *w);
/* Milliseconds spent in eng_weights_attach. */
double eng_weights_ms(const eng_weights *w);
/* The manifest's shm name (empty without one). */
const char *eng_weights_shm_name(const eng_weights *w);
/* Unmap (the manifest stays published). */
void eng_weights_close(eng_weights *w);

#endif
