/* gw_replay.c - bounded LRU map from client-visible ids to the exact text
 * and token ids of generated turns (see gw_replay.h). One mutex guards the
 * whole store: operations are a few hash probes and copies, far below the
 * cost of the HTTP request that triggers them. */
#include "gw_replay.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "util.h"

struct rcall {
    char *id, *name;
    json_t *args;      /* parsed arguments (NULL if they were not JSON) */
    char *args_text;
};

struct rentry {
    struct rentry *prev, *next; /* LRU: head is the most recent */
    char *reasoning;            /* NULL: none */
    size_t rlen;
    char *body;
    size_t blen;
    int32_t *rids, *bids;       /* NULL: text only */
    size_t nrids, nbids;
    char *content;
    size_t clen;
    struct rcall *calls;
    size_t ncalls;
    char **keys;                /* every key that maps here */
    size_t nkeys;
    size_t bytes;
};

struct kslot {
    char *key;
    struct rentry *e;
    struct kslot *next;
};

struct gw_replay {
    pthread_mutex_t mu;
    size_t max_entries, max_bytes;
    struct rentry *head, *tail;
    struct kslot **bucket;
    size_t nbucket, nkeys;
    gw_replay_stats st;
};

static uint64_t key_hash(const char *k)
{
    return ds4_hash64(k, strlen(k), 0x5bd1e995);
}

gw_replay *gw_replay_new(size_t max_entries, size_t max_bytes)
{
    gw_replay *r = ds4_xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->max_entries = max_entries ? max_entries : 1;
    r->max_bytes = max_bytes ? max_bytes : 1;
    r->nbucket = 1024;
    r->bucket = ds4_xcalloc(r->nbucket, sizeof *r->bucket);
    return r;
}

static struct kslot **slot_find(gw_replay *r, const char *key)
{
    struct kslot **p = &r->bucket[key_hash(key) & (r->nbucket - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

static void rehash(gw_replay *r)
{
    size_t nb = r->nbucket * 2;
    struct kslot **b = ds4_xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < r->nbucket; i++)
        for (struct kslot *s = r->bucket[i], *nx; s; s = nx) {
            nx = s->next;
            struct kslot **d = &b[key_hash(s->key) & (nb - 1)];
            s->next = *d;
            *d = s;
        }
    free(r->bucket);
    r->bucket = b;
    r->nbucket = nb;
}

static void lru_unlink(gw_replay *r, struct rentry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        r->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        r->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(gw_replay *r, struct rentry *e)
{
    e->prev = NULL;
    e->next = r->head;
    if (r->head)
        r->head->prev = e;
    r->head = e;
    if (!r->tail)
        r->tail = e;
}

static void entry_free(struct rentry *e)
{
    free(e->reasoning);
    free(e->body);
    free(e->rids);
    free(e->bids);
    free(e->content);
    for (size_t i = 0; i < e->ncalls; i++) {
        free(e->calls[i].id);
        free(e->calls[i].name);
        free(e->calls[i].args_text);
        json_decref(e->calls[i].args);
    }
    free(e->calls);
    for (size_t i = 0; i < e->nkeys; i++)
        free(e->keys[i]);
    free(e->keys);
    free(e);
}

/* Remove an entry and all its keys. */
static void entry_drop(gw_replay *r, struct rentry *e)
{
    for (size_t i = 0; i < e->nkeys; i++) {
        struct kslot **p = slot_find(r, e->keys[i]);
        if (*p && (*p)->e == e) {
            struct kslot *s = *p;
            *p = s->next;
            free(s->key);
            free(s);
            r->nkeys--;
        }
    }
    lru_unlink(r, e);
    r->st.entries--;
    r->st.bytes -= e->bytes;
    entry_free(e);
}

/* Detach key from whatever entry holds it (dropping that entry when it
 * has no key left). */
static void key_release(gw_replay *r, const char *key)
{
    struct kslot **p = slot_find(r, key);
    if (!*p)
        return;
    struct kslot *s = *p;
    struct rentry *e = s->e;
    *p = s->next;
    free(s->key);
    free(s);
    r->nkeys--;
    for (size_t i = 0; i < e->nkeys; i++)
        if (strcmp(e->keys[i], key) == 0) {
            free(e->keys[i]);
            e->keys[i] = e->keys[--e->nkeys];
            break;
        }
    if (!e->nkeys)
        entry_drop(r, e);
}

static void key_add(gw_replay *r, struct rentry *e, const char *key)
{
    if (!key || !*key)
        return;
    for (size_t i = 0; i < e->nkeys; i++)
        if (strcmp(e->keys[i], key) == 0)
            return;
    key_release(r, key);
    struct kslot **p = slot_find(r, key);
    struct kslot *s = ds4_xcalloc(1, sizeof *s);
    s->key = ds4_xstrdup(key);
    s->e = e;
    *p = s;
    r->nkeys++;
    e->keys = ds4_xrealloc(e->keys, (e->nkeys + 1) * sizeof *e->keys);
    e->keys[e->nkeys++] = ds4_xstrdup(key);
    e->bytes += strlen(key) + 64;
    if (r->nkeys > r->nbucket)
        rehash(r);
}

void gw_replay_content_key(const char *s, size_t n, char out[72])
{
    uint8_t d[32];
    char hex[65];
    ds4_sha256(s, n, d);
    ds4_hex(d, 32, hex);
    memcpy(out, "sha256:", 7);
    memcpy(out + 7, hex, 65);
}

static char *dupn(const char *s, size_t n)
{
    char *p = ds4_xmalloc(n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void gw_replay_put(gw_replay *r, const gw_replay_turn *t)
{
    struct rentry *e = ds4_xcalloc(1, sizeof *e);
    if (t->reasoning) {
        e->reasoning = dupn(t->reasoning, t->reasoning_len);
        e->rlen = t->reasoning_len;
    }
    e->body = dupn(t->body ? t->body : "", t->body ? t->body_len : 0);
    e->blen = t->body ? t->body_len : 0;
    if (t->reasoning_ids && t->reasoning) {
        e->rids = ds4_xmalloc((t->n_reasoning_ids + 1) * sizeof *e->rids);
        memcpy(e->rids, t->reasoning_ids, t->n_reasoning_ids * sizeof *e->rids);
        e->nrids = t->n_reasoning_ids;
    }
    if (t->body_ids) {
        e->bids = ds4_xmalloc((t->n_body_ids + 1) * sizeof *e->bids);
        memcpy(e->bids, t->body_ids, t->n_body_ids * sizeof *e->bids);
        e->nbids = t->n_body_ids;
    }
    e->content = dupn(t->content ? t->content : "", t->content ? t->content_len : 0);
    e->clen = t->content ? t->content_len : 0;
    e->ncalls = t->n_calls;
    e->calls = ds4_xcalloc(t->n_calls + 1, sizeof *e->calls);
    size_t bytes = sizeof *e + e->rlen + e->blen + e->clen + (e->nrids + e->nbids) * 4;
    for (size_t i = 0; i < t->n_calls; i++) {
        const gw_replay_call *c = &t->calls[i];
        e->calls[i].id = c->id ? ds4_xstrdup(c->id) : NULL;
        e->calls[i].name = ds4_xstrdup(c->name ? c->name : "");
        e->calls[i].args_text = ds4_xstrdup(c->args ? c->args : "");
        e->calls[i].args = json_loads(e->calls[i].args_text, JSON_DECODE_ANY, NULL);
        bytes += strlen(e->calls[i].args_text) * 3 + strlen(e->calls[i].name) + 128;
    }
    e->bytes = bytes;

    pthread_mutex_lock(&r->mu);
    lru_push_front(r, e);
    r->st.entries++;
    for (size_t i = 0; i < t->n_calls; i++)
        key_add(r, e, t->calls[i].id);
    for (size_t i = 0; i < t->n_keys; i++)
        key_add(r, e, t->keys[i]);
    if (!t->n_calls) {
        char ck[72];
        gw_replay_content_key(e->content, e->clen, ck);
        key_add(r, e, ck);
    }
    r->st.bytes += e->bytes;
    if (!e->nkeys) /* nothing to find it by */
        entry_drop(r, e);
    while (r->tail && (r->st.entries > r->max_entries || r->st.bytes > r->max_bytes)) {
        entry_drop(r, r->tail);
        r->st.evictions++;
    }
    pthread_mutex_unlock(&r->mu);
}

/* Content equality up to surrounding ASCII whitespace (some clients trim). */
static int content_eq(const char *a, size_t an, const char *b, size_t bn)
{
    while (an && strchr(" \t\r\n", a[0]))
        a++, an--;
    while (an && strchr(" \t\r\n", a[an - 1]))
        an--;
    while (bn && strchr(" \t\r\n", b[0]))
        b++, bn--;
    while (bn && strchr(" \t\r\n", b[bn - 1]))
        bn--;
    return an == bn && (!an || memcmp(a, b, an) == 0);
}

static int args_eq(const struct rcall *c, const char *args)
{
    const char *a = args ? args : "";
    if (strcmp(c->args_text, a) == 0)
        return 1;
    if (!c->args)
        return 0;
    json_t *v = json_loads(a, JSON_DECODE_ANY, NULL);
    int eq = v && json_equal(v, c->args);
    json_decref(v);
    return eq;
}

static int entry_matches(const struct rentry *e, const char *content, size_t clen,
                         const gw_replay_call *calls, size_t ncalls)
{
    if (!content_eq(e->content, e->clen, content ? content : "", content ? clen : 0))
        return 0;
    if (ncalls != e->ncalls)
        return 0;
    for (size_t i = 0; i < ncalls; i++) {
        const struct rcall *c = &e->calls[i];
        if (strcmp(c->name, calls[i].name ? calls[i].name : "") != 0)
            return 0;
        if (calls[i].id && c->id && strcmp(calls[i].id, c->id) != 0)
            return 0;
        if (!args_eq(c, calls[i].args))
            return 0;
    }
    return 1;
}

static json_t *ids_json(const int32_t *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *raw_json(const struct rentry *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "reasoning",
                        e->reasoning ? json_stringn(e->reasoning, e->rlen) : json_null());
    json_object_set_new(o, "body", json_stringn(e->body, e->blen));
    if (e->rids)
        json_object_set_new(o, "reasoning_ids", ids_json(e->rids, e->nrids));
    if (e->bids)
        json_object_set_new(o, "body_ids", ids_json(e->bids, e->nbids));
    return o;
}

json_t *gw_replay_lookup(gw_replay *r, const char *const *keys, size_t n_keys,
                         const char *content, size_t content_len,
                         const gw_replay_call *calls, size_t n_calls)
{
    char ck[72];
    gw_replay_content_key(content ? content : "", content ? content_len : 0, ck);
    json_t *out = NULL;
    int found_any = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i <= n_keys + n_calls && !out; i++) {
        const char *k = i < n_keys ? keys[i] : i < n_keys + n_calls ? calls[i - n_keys].id : ck;
        if (!k || !*k)
            continue;
        struct kslot **p = slot_find(r, k);
        if (!*p)
            continue;
        found_any = 1;
        struct rentry *e = (*p)->e;
        if (entry_matches(e, content, content_len, calls, n_calls)) {
            out = raw_json(e);
            lru_unlink(r, e);
            lru_push_front(r, e);
        }
    }
    if (out)
        r->st.hits++;
    else if (found_any)
        r->st.mismatches++;
    else
        r->st.misses++;
    pthread_mutex_unlock(&r->mu);
    return out;
}

void gw_replay_get_stats(gw_replay *r, gw_replay_stats *s)
{
    pthread_mutex_lock(&r->mu);
    *s = r->st;
    pthread_mutex_unlock(&r->mu);
}

void gw_replay_free(gw_replay *r)
{
    if (!r)
        return;
    while (r->head)
        entry_drop(r, r->head);
    free(r->bucket);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
