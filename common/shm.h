/* shm.h - named POSIX shared-memory segments with a self-describing header.
 *
 * Names: "/ds4-<uid>-<instance>-<purpose>" (ds4_shm_name). Every segment
 * starts with this 128-byte header, little-endian, offsets never pointers;
 * the payload follows at offset header_size. CHANGING ANY OFFSET, SIZE OR
 * CONSTANT HERE CHANGES THE FORMAT: bump DS4_SHM_VERSION.
 *
 *   0   u8  magic[8]          "DS4SHM\0\1"
 *   8   u32 layout_version    DS4_SHM_VERSION
 *   12  u32 header_size       128
 *   16  u64 total_size        header_size + payload_size (== file size)
 *   24  u64 payload_size
 *   32  u32 creator_pid
 *   36  u32 flags             DS4_SHM_F_CHECKSUM: payload_checksum is valid
 *   40  u64 creator_start     creator's start time (clock ticks since boot,
 *                             /proc/<pid>/stat field 22): detects pid reuse
 *   48  u64 generation        incremented by every publish
 *   56  u32 state             PUBLISHING (1) or COMPLETE (2)
 *   60  u32 reserved0
 *   64  u64 payload_checksum  ds4_hash64(payload, payload_size, 0)
 *   72  u64 created_unix_ns   wall-clock creation time (informational)
 *   80  char purpose[32]      NUL-padded copy of the purpose (diagnostics)
 *   112 u64 reserved1
 *   120 u64 header_checksum   ds4_hash64(bytes 0..119, 0)
 *
 * Protocol: the creator maps read-write, fills the payload, then
 * ds4_shm_publish() computes the checksums and stores COMPLETE with a
 * release fence. To republish, ds4_shm_begin_update() stores PUBLISHING
 * first. Readers attach (validated), then may bracket reads with
 * ds4_shm_generation()/ds4_shm_complete() to detect a concurrent republish.
 * Exactly one process writes a segment; others only read. */
#ifndef DS4_SHM_H
#define DS4_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DS4_SHM_MAGIC "DS4SHM\0\1"
#define DS4_SHM_VERSION 1u
#define DS4_SHM_HEADER_SIZE 128u
#define DS4_SHM_NAME_MAX 200
#define DS4_SHM_STATE_PUBLISHING 1u
#define DS4_SHM_STATE_COMPLETE 2u
#define DS4_SHM_F_CHECKSUM 1u
/* Largest payload accepted on attach (hostile sizes are refused early). */
#define DS4_SHM_PAYLOAD_MAX (1ull << 46)

struct ds4_shm_header {
    uint8_t magic[8];
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t total_size;
    uint64_t payload_size;
    uint32_t creator_pid;
    uint32_t flags;
    uint64_t creator_start;
    uint64_t generation;
    uint32_t state;
    uint32_t reserved0;
    uint64_t payload_checksum;
    uint64_t created_unix_ns;
    char purpose[32];
    uint64_t reserved1;
    uint64_t header_checksum;
};

/* Attach modes and options. */
#define DS4_SHM_RDONLY 0u
#define DS4_SHM_RDWR 1u
#define DS4_SHM_VERIFY 2u     /* verify the payload checksum if flagged */
#define DS4_SHM_ANY_STATE 4u  /* accept a segment still PUBLISHING */

/* An open segment. payload points at offset header_size of the mapping. */
typedef struct ds4_shm {
    char name[DS4_SHM_NAME_MAX + 1];
    int fd;
    int writable;
    size_t map_size;
    struct ds4_shm_header *hdr;
    uint8_t *payload;
    uint64_t payload_size;
} ds4_shm;

/* Build "/ds4-<uid>-<instance>-<purpose>" for this user. The instance is
 * [A-Za-z0-9_.] (no '-', so prefixes of different instances never
 * overlap), the purpose [A-Za-z0-9_.-]. 0, or -1 with a message. */
int ds4_shm_name(char *out, size_t outlen, const char *instance,
                 const char *purpose, char *err, size_t errlen);

/* Create a segment with payload_size bytes (zeroed), state PUBLISHING,
 * mapped read-write. If the name exists and its creator is dead (or its
 * header is invalid), it is unlinked and recreated; if its creator is alive
 * this fails with errno EEXIST. flags: DS4_SHM_F_CHECKSUM to maintain the
 * payload checksum on publish. 0, or -1 with a message. */
int ds4_shm_create(ds4_shm *s, const char *name, uint64_t payload_size,
                   uint32_t flags, char *err, size_t errlen);

/* Compute checksums, bump the generation and store COMPLETE (release). */
void ds4_shm_publish(ds4_shm *s);
/* Mark the segment PUBLISHING before rewriting its payload. */
void ds4_shm_begin_update(ds4_shm *s);

/* Attach to an existing segment with validation (magic, version, sizes
 * against fstat, header checksum, state unless DS4_SHM_ANY_STATE, payload
 * checksum with DS4_SHM_VERIFY). mode: DS4_SHM_RDONLY or DS4_SHM_RDWR, or'ed
 * with options. A garbage segment gives -1 and a message, never a crash;
 * errno is ENOENT (absent), EAGAIN (being published) or EINVAL (invalid). */
int ds4_shm_attach(ds4_shm *s, const char *name, unsigned mode, char *err,
                   size_t errlen);

/* Validate a header copy against the file size; 0 or -1 with a message. */
int ds4_shm_header_check(const struct ds4_shm_header *h, uint64_t file_size,
                         char *err, size_t errlen);

/* Unmap and close (the segment stays). Safe on a zeroed or detached s. */
void ds4_shm_detach(ds4_shm *s);
/* Remove a name; 0, or -1 with errno. */
int ds4_shm_unlink(const char *name);

/* Generation with acquire ordering (read before and after using data). */
uint64_t ds4_shm_generation(const ds4_shm *s);
/* 1 when the state is COMPLETE (acquire). */
int ds4_shm_complete(const ds4_shm *s);
/* Verify the payload checksum now; 0 ok, -1 mismatch or not flagged. */
int ds4_shm_verify_payload(const ds4_shm *s);

/* 1 if the process that created h still runs (same pid and start time). */
int ds4_shm_creator_alive(const struct ds4_shm_header *h);
/* Start time of pid in clock ticks since boot (/proc/<pid>/stat field 22);
 * 0, or -1 if the process does not exist or /proc is unreadable. */
int ds4_proc_start_time(pid_t pid, uint64_t *out);

/* Scan /dev/shm for "ds4-<uid>-<instance>-*" (instance NULL: every
 * instance) and unlink segments whose creator is dead or whose header is
 * invalid. Returns how many were removed, or -1 if /dev/shm is unreadable. */
int ds4_shm_cleanup_stale(uid_t uid, const char *instance);

#endif
