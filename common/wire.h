/* wire.h - the ds4 wire protocol over libzmq: a fixed binary header frame
 * followed by typed payload frames, strictly decoded.
 *
 * Daemons serve ROUTER sockets, clients use DEALER sockets (no empty
 * delimiter frame). A message on the wire is
 *
 *   [routing id]            only between a ROUTER and its peer
 *   [empty delimiter]       only if the peer is a REQ socket (echoed back)
 *   header (32 bytes)       see below
 *   payload frames 0..3     kinds fixed per type in wire_msgs.h
 *
 * Header, little-endian, 32 bytes:
 *   0  magic "DS4W"   4  u16 version   6  u16 type   8  u32 flags
 *   12 u32 seq        16 request id (16-byte binary UUID)
 *
 * Nothing received is trusted: a decode error yields an error code (enum
 * ds4w_err) and a message naming the problem, never an abort. The decoder
 * is a pure function over byte buffers (ds4w_decode_frames) so tests and
 * the fuzz target need no sockets. docs/PROTOCOL.md is the catalogue.
 */
#ifndef DS4_WIRE_H
#define DS4_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <zmq.h>

#include "wire_msgs.h"

#define DS4W_MAGIC "DS4W"
#define DS4W_VERSION 1      /* the version this build speaks */
#define DS4W_HDR_SIZE 32
#define DS4W_MAX_PAYLOAD 4  /* payload frames after the header */
#define DS4W_ROUTE_MAX 255  /* libzmq routing ids are at most 255 bytes */
/* parts kept by ds4w_recv: routing id + delimiter + header + payload */
#define DS4W_MAX_PARTS (3 + DS4W_MAX_PAYLOAD)
#define DS4W_UUID_STR 37    /* 36 chars + NUL */

/* Header flags. Unknown bits are rejected (bad_frame). */
enum {
    DS4W_FLAG_INLINE = 1u << 0, /* BULK frames are BYTES, not SHMREF; on a
                                   request: "reply with inline bytes" */
    DS4W_FLAG_END = 1u << 1,    /* last message of a reply stream */
    DS4W_FLAG_TEST = 1u << 2,   /* sender runs in test mode */
};
#define DS4W_FLAGS_KNOWN (DS4W_FLAG_INLINE | DS4W_FLAG_END | DS4W_FLAG_TEST)

/* Error codes: on the wire in ERROR.code, and returned by the decoder.
 * Values are stable; names are what logs and PROTOCOL.md use. */
enum ds4w_err {
    DS4W_OK = 0,
    DS4W_E_BAD_FRAME = 1,           /* malformed header or payload frame */
    DS4W_E_UNKNOWN_TYPE = 2,        /* type id not in the table */
    DS4W_E_UNSUPPORTED_VERSION = 3, /* header version not spoken here */
    DS4W_E_BUSY = 4,                /* queue full: retry later */
    DS4W_E_TOO_LARGE = 5,           /* frame or array over a limit */
    DS4W_E_NOT_READY = 6,           /* daemon still starting */
    DS4W_E_INTERNAL = 7,            /* bug or resource failure in the daemon */
    DS4W_E_CANCELLED = 8,           /* request cancelled */
    DS4W_E_CONTEXT_OVERFLOW = 9,    /* prompt + output exceed the context */
    DS4W_E_INVALID_REQUEST = 10,    /* well-formed but wrong fields/values */
    DS4W_E_NOT_FOUND = 11,          /* unknown request id, key, segment */
    DS4W_E_FORBIDDEN = 12,          /* e.g. forced decoding outside test mode */
    DS4W_E_UNAVAILABLE = 13,        /* a stage this one needs is down */
    DS4W_E_COUNT
};

/* Payload frame kinds (values used in wire_msgs.h through DS4W_FK_*). */
enum ds4w_fk {
    DS4W_FK_NONE = 0,
    DS4W_FK_JSON = 1,   /* UTF-8 JSON object */
    DS4W_FK_I32 = 2,    /* little-endian int32 array (token ids) */
    DS4W_FK_F32 = 3,    /* little-endian IEEE float32 array */
    DS4W_FK_BYTES = 4,  /* opaque bytes */
    DS4W_FK_SHMREF = 5, /* struct ds4w_shmref, 96 bytes */
    DS4W_FK_BULK = 6,   /* SHMREF, or BYTES when DS4W_FLAG_INLINE */
    DS4W_FK_OPT = 0x10, /* or'ed in: frame may be absent */
    DS4W_FK_JSON_OPT = DS4W_FK_JSON | DS4W_FK_OPT,
    DS4W_FK_I32_OPT = DS4W_FK_I32 | DS4W_FK_OPT,
    DS4W_FK_F32_OPT = DS4W_FK_F32 | DS4W_FK_OPT,
    DS4W_FK_BYTES_OPT = DS4W_FK_BYTES | DS4W_FK_OPT,
    DS4W_FK_SHMREF_OPT = DS4W_FK_SHMREF | DS4W_FK_OPT,
    DS4W_FK_BULK_OPT = DS4W_FK_BULK | DS4W_FK_OPT,
};

enum ds4w_dir { DS4W_DIR_REQ = 1, DS4W_DIR_REP = 2, DS4W_DIR_EVT = 3 };
enum ds4w_svc { DS4W_SVC_ANY = 0, DS4W_SVC_TOK, DS4W_SVC_ENG, DS4W_SVC_KV };

/* Message type ids: DS4W_T_PING, DS4W_T_GEN_SUBMIT, ... */
enum ds4w_type {
#define DS4W_X_ENUM(id, name, dir, svc, f0, f1, f2, f3) DS4W_T_##name = id,
    DS4W_MESSAGES(DS4W_X_ENUM)
#undef DS4W_X_ENUM
};

/* JSON field types for ds4w_json_check. */
enum ds4w_jt {
    DS4W_JT_ANY = 0, DS4W_JT_STRING, DS4W_JT_INT, DS4W_JT_UINT, DS4W_JT_NUM,
    DS4W_JT_BOOL, DS4W_JT_OBJECT, DS4W_JT_ARRAY
};
enum { DS4W_JF_OPT = 0, DS4W_JF_REQ = 1 };

/* One expected field of a JSON object. */
typedef struct ds4w_field {
    const char *name;
    uint8_t type;     /* enum ds4w_jt */
    uint8_t required; /* DS4W_JF_REQ or DS4W_JF_OPT */
} ds4w_field;

/* One row of the message table. */
typedef struct ds4w_msgdef {
    uint16_t id;
    const char *name;   /* "GEN_SUBMIT" */
    uint8_t dir;        /* enum ds4w_dir */
    uint8_t svc;        /* enum ds4w_svc */
    uint8_t frames[DS4W_MAX_PAYLOAD]; /* enum ds4w_fk, FK_NONE after last */
    uint8_t nreq;       /* frames that must be present */
    uint8_t nmax;       /* frames that may be present */
} ds4w_msgdef;

/* A byte buffer that something else owns. */
typedef struct ds4w_buf {
    const uint8_t *data;
    size_t len;
} ds4w_buf;

/* A reference to bytes in a POSIX shared-memory segment (SPEC §2). On the
 * wire: name[64] (NUL-terminated, "/" then [A-Za-z0-9._-]), then u64 LE
 * offset, length, generation, checksum (ds4_hash64 of the bytes, seed 0;
 * 0 means "not computed"). */
#define DS4W_SHM_NAME_MAX 64
#define DS4W_SHMREF_SIZE 96
typedef struct ds4w_shmref {
    char name[DS4W_SHM_NAME_MAX];
    uint64_t offset;
    uint64_t length;
    uint64_t generation;
    uint64_t checksum;
} ds4w_shmref;

/* Limits applied by the decoder (and ZMQ_MAXMSGSIZE via ds4w_socket_setup). */
typedef struct ds4w_limits {
    size_t max_frames;      /* payload frames accepted (<= DS4W_MAX_PAYLOAD) */
    size_t max_frame_bytes; /* any JSON, I32, F32 or SHMREF frame */
    size_t max_bulk_bytes;  /* a BYTES frame (inline bulk data) */
    size_t max_tokens;      /* elements of an I32 frame */
} ds4w_limits;

/* Routing envelope of a message received on a ROUTER socket. */
typedef struct ds4w_route {
    uint8_t id[DS4W_ROUTE_MAX];
    size_t len;  /* 0: no route (DEALER side) */
    int delim;   /* peer sent an empty delimiter (REQ socket): echo it */
} ds4w_route;

/* A decoded message. Frames point into bytes owned by the caller
 * (ds4w_decode_frames) or by the message itself (ds4w_recv). */
typedef struct ds4w_msg {
    int hdr_ok;             /* header readable: reqid/type/seq valid */
    uint16_t version;
    uint16_t type;
    uint32_t flags;
    uint32_t seq;
    uint8_t reqid[16];
    const ds4w_msgdef *def; /* NULL when the type is unknown */
    int nframes;            /* payload frames present */
    ds4w_buf frame[DS4W_MAX_PAYLOAD];
    uint8_t kind[DS4W_MAX_PAYLOAD]; /* resolved kind of each frame */
    json_t *json;           /* parsed JSON frame (owned), or NULL */
    const char *bad_field;  /* JSON field an invalid_request names, or NULL */
    int json_frame;         /* its index, or -1 */
    ds4w_route route;
    int nparts;             /* zmq parts owned (ds4w_recv) */
    zmq_msg_t parts[DS4W_MAX_PARTS];
} ds4w_msg;

/* A message being built for sending; owns copies of its payload. */
typedef struct ds4w_out {
    uint16_t type;
    uint32_t flags;
    uint32_t seq;
    uint8_t reqid[16];
    int nframes;
    uint8_t kind[DS4W_MAX_PAYLOAD];
    uint8_t *data[DS4W_MAX_PAYLOAD];
    size_t len[DS4W_MAX_PAYLOAD];
    uint8_t hdr[DS4W_HDR_SIZE];
    int failed;             /* a builder call failed (reported at send) */
    char fail_msg[128];
} ds4w_out;

/* Process-wide counters (relaxed atomics), for the daemon's stats segment. */
typedef struct ds4w_counters {
    uint64_t rx_msgs;              /* messages received and decoded OK */
    uint64_t rx_bad;               /* messages rejected by the decoder */
    uint64_t rx_err[DS4W_E_COUNT]; /* rejections by code */
    uint64_t tx_msgs;              /* messages sent */
    uint64_t tx_fail;              /* sends that failed */
    uint64_t tx_errors;            /* ERROR messages sent */
} ds4w_counters;

/* --- table and names ---------------------------------------------------- */

/* Table row of a type id, or NULL if unknown. */
const ds4w_msgdef *ds4w_msgdef_find(uint16_t type);
/* Table row by name ("GEN_SUBMIT"), or NULL. */
const ds4w_msgdef *ds4w_msgdef_by_name(const char *name);
/* The whole table (for docs checks and tools); *n rows. */
const ds4w_msgdef *ds4w_msgdefs(size_t *n);
/* Name of a type id, "?" if unknown. */
const char *ds4w_type_name(uint16_t type);
/* Expected top-level JSON fields of a type; *n of them (0: free-form). */
const ds4w_field *ds4w_msg_fields(uint16_t type, size_t *n);
/* "bad_frame", ... ; "unknown" for codes out of range. */
const char *ds4w_err_name(int code);
/* Code for a name, or -1. */
int ds4w_err_from_name(const char *name);
/* HTTP status a gateway should give for a code (429 busy, 503 down...). */
int ds4w_err_http_status(int code);
/* "JSON", "I32", ... for a frame kind (OPT bit ignored). */
const char *ds4w_fk_name(int kind);

/* --- limits and counters -------------------------------------------------- */

/* The built-in defaults (max_frame_bytes 64 MiB, bulk 2 GiB, 4 Mi tokens). */
ds4w_limits ds4w_limits_default(void);
/* Process-wide limits used by ds4w_recv; set once at startup. */
void ds4w_limits_set(const ds4w_limits *lim);
ds4w_limits ds4w_limits_get(void);
/* Snapshot of the process-wide counters. */
void ds4w_counters_get(ds4w_counters *out);

/* --- UUIDs ------------------------------------------------------------------ */

/* A new random request id. */
void ds4w_uuid_new(uint8_t id[16]);
/* 36-char lower-case text form plus NUL (the form used in every log line). */
void ds4w_uuid_format(const uint8_t id[16], char out[DS4W_UUID_STR]);
/* Parse the 36-char text form: 0, or -1 if malformed. */
int ds4w_uuid_parse(const char *s, uint8_t id[16]);

/* --- decoding (pure) -------------------------------------------------------- */

/* Decode one message from its frames (header first, no routing frames).
 * lim NULL means ds4w_limits_get(). Returns DS4W_OK, or an error code with
 * a message in err; on error m->hdr_ok says whether m->reqid/type/seq may be
 * echoed in the ERROR reply. Always call ds4w_msg_close(m) afterwards. The
 * frames must outlive m. Also checks the JSON fields (ds4w_msg_fields). */
int ds4w_decode_frames(const ds4w_buf *frames, size_t nframes,
                       const ds4w_limits *lim, ds4w_msg *m,
                       char *err, size_t errlen);
/* Decode the fixed header only (used by the above). */
int ds4w_header_decode(const uint8_t *p, size_t len, ds4w_msg *m,
                       char *err, size_t errlen);
/* Release what a decoded/received message owns; m may be reused after. */
void ds4w_msg_close(ds4w_msg *m);

/* Payload frame i as bytes (NULL data/0 len if absent). */
ds4w_buf ds4w_msg_frame(const ds4w_msg *m, int i);
/* Elements of an I32 or F32 frame i (0 if absent or of another kind). */
size_t ds4w_msg_count(const ds4w_msg *m, int i);
/* Copy an I32 frame into out (host order); returns the element count.
 * out must hold ds4w_msg_count(m, i) elements. */
size_t ds4w_msg_i32(const ds4w_msg *m, int i, int32_t *out);
/* Same for an F32 frame. */
size_t ds4w_msg_f32(const ds4w_msg *m, int i, float *out);
/* The SHMREF of frame i (kind SHMREF, or BULK without INLINE): 0 or -1. */
int ds4w_msg_shmref(const ds4w_msg *m, int i, ds4w_shmref *out);

/* Parse and validate a 96-byte SHMREF frame. */
int ds4w_shmref_decode(const uint8_t *p, size_t len, ds4w_shmref *out,
                       char *err, size_t errlen);
/* Serialise a SHMREF (which must be valid) into 96 bytes. 0 or -1. */
int ds4w_shmref_encode(const ds4w_shmref *ref, uint8_t out[DS4W_SHMREF_SIZE]);

/* Check a JSON object against expected fields: DS4W_OK, or
 * DS4W_E_INVALID_REQUEST with "field 'x': expected ..., got ..." or
 * "missing required field 'x'" (the field name also in *bad_field if
 * non-NULL). Use it for nested objects in daemons too. Unknown fields are
 * accepted. */
int ds4w_json_check(const json_t *obj, const ds4w_field *fields, size_t n,
                    const char **bad_field, char *err, size_t errlen);
/* A field's JSON name for messages ("unsigned integer", "string", ...). */
const char *ds4w_jt_name(int type);

/* --- building and sending ----------------------------------------------- */

/* Start a message of a type with a request id (NULL: all zero). */
void ds4w_out_init(ds4w_out *o, uint16_t type, const uint8_t reqid[16]);
/* Append payload frames; each copies its input. Failures (too many frames)
 * are remembered and reported by ds4w_out_encode/ds4w_send. */
void ds4w_out_json(ds4w_out *o, const json_t *obj);
void ds4w_out_json_text(ds4w_out *o, const char *text, size_t len);
void ds4w_out_i32(ds4w_out *o, const int32_t *v, size_t n);
void ds4w_out_f32(ds4w_out *o, const float *v, size_t n);
void ds4w_out_bytes(ds4w_out *o, const void *p, size_t n);
void ds4w_out_shmref(ds4w_out *o, const ds4w_shmref *ref);
/* Fill o->hdr and the frame list (header first, nframes+1 entries) after
 * checking the message against its schema; DS4W_OK or an error code. The
 * encoded frames point into o. */
int ds4w_out_encode(ds4w_out *o, ds4w_buf *frames, size_t *nframes,
                    char *err, size_t errlen);
/* Free what o owns. */
void ds4w_out_free(ds4w_out *o);

/* Send o on a socket (route NULL on a DEALER; a received m->route on a
 * ROUTER). zflags e.g. ZMQ_DONTWAIT. 0, or -1 with errno set (EINVAL: the
 * message does not match its schema; EHOSTUNREACH: peer gone on a
 * ROUTER_MANDATORY socket; EAGAIN) and a message in err. Frees o. */
int ds4w_send(void *sock, const ds4w_route *route, ds4w_out *o, int zflags,
              char *err, size_t errlen);
/* One-JSON-frame message (obj may be NULL for an optional frame). */
int ds4w_send_json(void *sock, const ds4w_route *route, uint16_t type,
                   const uint8_t reqid[16], uint32_t flags, uint32_t seq,
                   const json_t *obj, char *err, size_t errlen);
/* An ERROR (flags END) to the sender of m, echoing its request id when the
 * header was readable; message is the text; m->bad_field, if set, becomes
 * the "field" member. Never blocks. 0 or -1. */
int ds4w_reply_error(void *sock, const ds4w_msg *m, int code,
                     const char *message);
/* Build the ERROR JSON object {code, name, message}. */
json_t *ds4w_error_json(int code, const char *message);

/* Receive one whole message (all parts are always consumed) and decode it.
 * is_router: the socket is a ROUTER, expect a routing id (and maybe an empty
 * delimiter) first; a ROUTER also rejects reply types and a DEALER request
 * types (invalid_request). Returns DS4W_OK, an error code > 0 (answer it
 * with ds4w_reply_error; m->route is set), or -1 with errno from zmq
 * (EAGAIN, EINTR, ETERM). Call ds4w_msg_close(m) in every case. */
int ds4w_recv(void *sock, ds4w_msg *m, int is_router, int zflags,
              char *err, size_t errlen);

/* Socket options every ds4 socket wants: linger 0 (bounded drain is the
 * daemon's job), ZMQ_MAXMSGSIZE from the limits, ROUTER_MANDATORY on a
 * ROUTER (so sends to vanished clients fail with EHOSTUNREACH). 0 or -1. */
int ds4w_socket_setup(void *sock, int is_router);

#endif
