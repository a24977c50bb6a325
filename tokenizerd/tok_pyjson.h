/* tok_pyjson.h - JSON values with Python json semantics, for the chat
 * renderer and the DSML parser: a parse tree that keeps what jansson would
 * lose (number lexemes verbatim, member order, Python dict semantics for
 * duplicate keys: the first position keeps the last value) and a serializer
 * that writes exactly what json.dumps(v, ensure_ascii=False) writes.
 *
 * The parser accepts any bytes: invalid UTF-8 in strings, lone surrogate
 * escapes, nesting deeper than TOK_PYJSON_MAX_DEPTH and trailing text are
 * errors with a message naming the byte offset.
 *
 * The string/canonicalization helpers used outside tokenizerd
 * (tok_chat_json_quote, tok_chat_json_valid, tok_chat_json_canon) are
 * declared in tok_chat.h and implemented in tok_pyjson.c. */
#ifndef DS4_TOK_PYJSON_H
#define DS4_TOK_PYJSON_H

#include <stddef.h>

#include "tok_chat.h" /* struct tok_chat_sb */

#define TOK_PYJSON_MAX_DEPTH 200

enum tok_pyjson_type {
    TOK_PYJSON_NULL,
    TOK_PYJSON_FALSE,
    TOK_PYJSON_TRUE,
    TOK_PYJSON_NUM,
    TOK_PYJSON_STR,
    TOK_PYJSON_ARR,
    TOK_PYJSON_OBJ,
};

struct tok_pyjson_kv;

/* One value; zero-initialized is null. */
struct tok_pyjson {
    int t;                     /* enum tok_pyjson_type */
    int is_float;              /* NUM: had a fraction or exponent, or NaN/Infinity */
    char *s;                   /* STR: decoded bytes (NUL-terminated); NUM: the lexeme */
    size_t n;                  /* bytes in s, or items in a / kv */
    struct tok_pyjson *a;      /* ARR items */
    struct tok_pyjson_kv *kv;  /* OBJ members in first-seen order, keys unique */
};

struct tok_pyjson_kv {
    char *k;
    size_t kn;
    struct tok_pyjson v;
};

/* Parse exactly one value from [s, s+n) (surrounding whitespace allowed)
 * into *v. strict = 1: plain JSON; 0: also Python's NaN, Infinity,
 * -Infinity. 0, or -1 with *v left empty and err (if given) filled. */
int tok_pyjson_parse(const char *s, size_t n, struct tok_pyjson *v, int strict, char *err,
                     size_t errlen);

/* Free the storage of v (not v itself) and reset it to null. */
void tok_pyjson_free(struct tok_pyjson *v);

/* Append v as Python json.dumps(v, ensure_ascii=False) writes it. */
void tok_pyjson_dump(struct tok_chat_sb *b, const struct tok_pyjson *v);

/* Member `key` of object o, or NULL (also when o is NULL or not an object). */
const struct tok_pyjson *tok_pyjson_get(const struct tok_pyjson *o, const char *key);

#endif
