/* kv_writer.h - kvd's writer thread: the file I/O of KV_PUT (kv_put_write:
 * temp file, data, fsyncs, rename) runs here, so a checkpoint of hundreds
 * of megabytes being written never delays a lookup. One thread, jobs in
 * order (two puts of one key land in the order they came). The store's
 * thread begins a job (kv_store_put_begin), submits it, and ends it
 * (kv_store_put_end) when the writer hands it back; the writer signals
 * finished jobs on an eventfd the daemon polls.
 *
 * Test mode: with a gate path (DS4_KVD_WRITE_GATE, a FIFO), the writer
 * reads one byte from it before each job, so a test can hold a write in
 * flight for as long as it likes. */
#ifndef DS4_KV_WRITER_H
#define DS4_KV_WRITER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_store.h"
#include "shm.h"
#include "wire.h"

typedef struct kv_wjob {
    kv_put_job job;
    kv_put_req req;          /* points into the fields below */
    int32_t *ids;            /* owned */
    uint8_t *inline_copy;    /* owned (inline payload) */
    ds4_shm seg;             /* sender's segment, attached (fd -1 if none) */
    ds4w_route route;        /* where the reply goes */
    uint8_t reqid[16];
    kv_put_res res;
    struct kv_wjob *next;
} kv_wjob;

typedef struct kv_writer {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kv_wjob *q_head, *q_tail;       /* to write */
    kv_wjob *d_head, *d_tail;       /* written, to end */
    size_t inflight;                /* submitted, not yet taken back */
    int efd;                        /* eventfd: finished jobs */
    int stop, started;
    char gate[256];
    int gate_fd;
} kv_writer;

/* Start the thread (gate: NULL or a FIFO path, test mode only). 0 or -1. */
int kv_writer_start(kv_writer *w, const char *gate, char *err, size_t errlen);
/* Finish every queued job, then stop the thread (finished jobs stay to be
 * taken). */
void kv_writer_stop(kv_writer *w);
void kv_writer_submit(kv_writer *w, kv_wjob *j);
/* A finished job (in submission order), or NULL. */
kv_wjob *kv_writer_take(kv_writer *w);
/* Block until a finished job is there and take it; NULL if none in flight. */
kv_wjob *kv_writer_take_wait(kv_writer *w);
/* eventfd that is readable while finished jobs wait (read it to reset). */
int kv_writer_fd(const kv_writer *w);
void kv_wjob_free(kv_wjob *j);

#endif
