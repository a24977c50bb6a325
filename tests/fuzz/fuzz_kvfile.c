/* fuzz_kvfile.c - libFuzzer target for kvd checkpoint files.
 *
 * 1. The in-memory reader (kv_file_parse): a rejected input carries a
 *    message; an accepted one is rebuilt from its parsed fields with the
 *    writer's code and must come out byte-identical (so nothing the reader
 *    accepts is ambiguous).
 * Each input is tried as given and with its header checksum resealed (so
 * mutations reach the field checks behind it).
 * 2. The store: the input is written into a kvd directory under the name
 *    its header claims (or a fixed one) and the directory is opened and
 *    queried with the input's own token ids. A file the reader rejects must
 *    never be served (quarantined at open or on read); an accepted file is
 *    served with exactly its payload. Any violation aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "kvd/kv_format.h"
#include "kvd/kv_store.h"
#include "log.h"
#include "util.h"

#define FZ_ASSERT(c)                                                          \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "fuzz_kvfile: %s:%d: %s\n", __FILE__, __LINE__,   \
                    #c);                                                      \
            abort();                                                          \
        }                                                                     \
    } while (0)

static char dir[64];

static void empty_dir(const char *path, int keep_top)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            empty_dir(p, 0);
        else
            unlink(p);
    }
    closedir(d);
    if (!keep_top)
        rmdir(path);
}

static void cleanup(void)
{
    if (dir[0])
        empty_dir(dir, 0);
}

struct sink {
    void *p;
};
static void *s_alloc(void *arg, uint64_t size, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    struct sink *s = arg;
    FZ_ASSERT(size <= (1u << 26)); /* the input is small: nothing bigger */
    s->p = malloc(size ? (size_t)size : 1);
    return s->p;
}
static void s_discard(void *arg, void *dest)
{
    struct sink *s = arg;
    FZ_ASSERT(dest == s->p);
    free(dest);
    s->p = NULL;
}

static void one(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        ds4_log_set_level(DS4_LOG_ERROR);
        ds4_log_set_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
        /* tmpfs when there is one: the directory's fsyncs cost nothing */
        snprintf(dir, sizeof dir, "%s/ds4-fuzz-kvfile-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        FZ_ASSERT(mkdtemp(dir) != NULL);
        atexit(cleanup);
    }
    /* 1: the reader */
    kv_hdr h;
    const uint8_t *payload = NULL;
    char err[256] = "";
    int ok = kv_file_parse(data, size, &h, &payload, err, sizeof err) == 0;
    int32_t *ids = NULL;
    if (ok) {
        FZ_ASSERT(payload && payload >= data && payload + h.payload_size == data + size);
        ids = ds4_xmalloc((size_t)h.n_tokens * 4);
        memcpy(ids, data + KV_HDR_SIZE, (size_t)h.n_tokens * 4);
        size_t len;
        uint8_t *again = kv_file_build(&h, ids, payload, &len);
        FZ_ASSERT(len == size && memcmp(again, data, size) == 0);
        free(again);
    } else {
        FZ_ASSERT(err[0] != 0 && payload == NULL);
    }
    /* 2: the store */
    empty_dir(dir, 1);
    char name[KV_KEY_LEN + 8] = "0123456789abcdef-0123456789abcdef.kv";
    kv_hdr hh;
    char e2[256];
    int hdr_ok = size >= KV_HDR_SIZE && kv_hdr_decode(data, &hh, e2, sizeof e2) == 0;
    if (hdr_ok) {
        char key[KV_KEY_LEN + 1];
        kv_key(hh.ids_hash, hh.fingerprint, key);
        snprintf(name, sizeof name, "%s%s", key, KV_SUFFIX);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FZ_ASSERT(fd >= 0);
    FZ_ASSERT(kv_pwrite_full(fd, data, size, 0) == 0);
    close(fd);
    kv_store s;
    kv_store_cfg cfg = {0, 3600, 0, NULL};
    FZ_ASSERT(kv_store_open(&s, dir, 0, &cfg, err, sizeof err) == 0);
    FZ_ASSERT(s.idx.n <= 1);
    if (hdr_ok) {
        /* query with the ids the file claims (as far as the input has them) */
        size_t n = hh.n_tokens;
        int32_t *q = ds4_xcalloc(n, 4);
        size_t have = size > KV_HDR_SIZE ? (size - KV_HDR_SIZE) / 4 : 0;
        memcpy(q, data + KV_HDR_SIZE, (n < have ? n : have) * 4);
        struct sink sk = {NULL};
        kv_sink sink = {s_alloc, s_discard, &sk};
        kv_query kq = {hh.fingerprint, hh.family, 1, 0};
        kv_found f;
        const char *why;
        int rc = kv_store_lookup(&s, q, n, &kq, &sink, &f, &why, err, sizeof err);
        FZ_ASSERT(rc >= 0);
        if (rc == 1) {
            FZ_ASSERT(ok); /* served => the reader accepts it */
            FZ_ASSERT(f.h.payload_size == h.payload_size &&
                      memcmp(f.dest, payload, (size_t)h.payload_size) == 0);
            free(f.dest);
        } else {
            FZ_ASSERT(!ok); /* a good file is always served */
        }
        free(q);
    } else {
        FZ_ASSERT(!ok && s.idx.n == 0);
    }
    kv_store_close(&s);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    /* Again with the header checksum made right, so the field checks
     * behind it are explored too. */
    if (size >= KV_HDR_SIZE) {
        uint8_t *c = ds4_xmalloc(size);
        memcpy(c, data, size);
        uint64_t sum = ds4_hash64(c, 248, 0);
        memcpy(c + 248, &sum, 8);
        one(c, size);
        free(c);
    }
    return 0;
}
