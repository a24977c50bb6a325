/* kv_writer.c - kvd's writer thread (see kv_writer.h). */
#include "kv_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static void gate_wait(kv_writer *w)
{
    if (!w->gate[0])
        return;
    if (w->gate_fd < 0)
        w->gate_fd = open(w->gate, O_RDONLY | O_CLOEXEC); /* blocks for a writer */
    char b;
    if (w->gate_fd < 0 || read(w->gate_fd, &b, 1) != 1)
        ds4_warn("write gate %s: %s", w->gate, w->gate_fd < 0 ? strerror(errno) : "closed");
}

static void *writer_main(void *arg)
{
    kv_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->q_head && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->q_head)
            break; /* stop, and nothing left */
        kv_wjob *j = w->q_head;
        w->q_head = j->next;
        if (!w->q_head)
            w->q_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        gate_wait(w);
        kv_put_write(&j->job, &j->req);
        pthread_mutex_lock(&w->mu);
        j->next = NULL;
        if (w->d_tail)
            w->d_tail->next = j;
        else
            w->d_head = j;
        w->d_tail = j;
        uint64_t one = 1;
        (void)!write(w->efd, &one, sizeof one);
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int kv_writer_start(kv_writer *w, const char *gate, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->gate_fd = -1;
    if (gate)
        snprintf(w->gate, sizeof w->gate, "%s", gate);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        ds4_seterr(err, errlen, "eventfd: %s", strerror(errno));
        return -1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pthread_create(&w->th, NULL, writer_main, w);
    if (rc) {
        ds4_seterr(err, errlen, "cannot start the writer thread: %s", strerror(rc));
        close(w->efd);
        return -1;
    }
    w->started = 1;
    return 0;
}

void kv_writer_stop(kv_writer *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    w->started = 0;
    while (w->d_head) {
        kv_wjob *j = w->d_head;
        w->d_head = j->next;
        kv_wjob_free(j);
    }
    close(w->efd);
    if (w->gate_fd >= 0)
        close(w->gate_fd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

void kv_writer_submit(kv_writer *w, kv_wjob *j)
{
    j->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->q_tail)
        w->q_tail->next = j;
    else
        w->q_head = j;
    w->q_tail = j;
    w->inflight++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static kv_wjob *take_locked(kv_writer *w)
{
    kv_wjob *j = w->d_head;
    if (j) {
        w->d_head = j->next;
        if (!w->d_head)
            w->d_tail = NULL;
        j->next = NULL;
        w->inflight--;
    }
    return j;
}

kv_wjob *kv_writer_take(kv_writer *w)
{
    uint64_t v;
    (void)!read(w->efd, &v, sizeof v); /* reset; more may be signalled later */
    pthread_mutex_lock(&w->mu);
    kv_wjob *j = take_locked(w);
    pthread_mutex_unlock(&w->mu);
    return j;
}

kv_wjob *kv_writer_take_wait(kv_writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->d_head && w->inflight)
        pthread_cond_wait(&w->cv, &w->mu);
    kv_wjob *j = take_locked(w);
    pthread_mutex_unlock(&w->mu);
    return j;
}

int kv_writer_fd(const kv_writer *w)
{
    return w->efd;
}

void kv_wjob_free(kv_wjob *j)
{
    if (!j)
        return;
    if (j->seg.hdr)
        ds4_shm_detach(&j->seg);
    free(j->ids);
    free(j->inline_copy);
    free(j);
}
