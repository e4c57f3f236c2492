/*  codec.h - the wire codec: client frames in, server frames out (jansson).

    Pure functions over bytes; safe from any thread. docs/PROTOCOL.md
    section 3 is the specification, and tests/test_codec.c walks its tables.
*/
#ifndef RTWS_CODEC_H_INCLUDED
#define RTWS_CODEC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CODEC_IN_CHAT,          //  chat.message, valid: text (and id) set
    CODEC_IN_PING,          //  system.ping: id set when the client gave a string id
    CODEC_IN_ACTIVITY,      //  system.pong / system.ack: no reply
    CODEC_IN_REFRESH,       //  auth.refresh with a string token (issue: token lifetime)
    CODEC_IN_ERROR          //  answer with codec_system_error (error, ref)
} codec_kind_t;

typedef struct {
    codec_kind_t kind;
    const char *error;      //  CODEC_IN_ERROR: "bad_json", "bad_message",
                            //  "room_mismatch" or "unknown_type" (static string)
    char *id;               //  client's "id" when it is a string, else NULL (owned)
    char *text;             //  chat.message "text" (owned), NULL otherwise
    char *token;            //  auth.refresh "token" (owned), NULL otherwise
} codec_in_t;

//  Parses one complete text frame (UTF-8 already validated by the gateway)
//  from a connection whose path room is room. Always fills *in; returns its
//  kind. For CODEC_IN_ERROR, in->id is the ref to echo (may be NULL).
//  Call codec_in_clear afterwards.
codec_kind_t codec_parse (const char *data, size_t len, const char *room, codec_in_t *in);

//  Frees what codec_parse allocated in *in; idempotent.
void codec_in_clear (codec_in_t *in);

//  Server frames. Each returns a NUL-terminated compact JSON text the
//  caller frees, and writes its length to *len when len is not NULL.
//  ts is Unix time in seconds with sub-second precision.
char *codec_chat_delivery (const char *room, const char *user, const char *text,
                           const char *id, double ts, size_t *len);
char *codec_system_ack (const char *ref, size_t *len);
char *codec_system_ping (double ts, size_t *len);
//  ref may be NULL: then the "ref" field is left out.
char *codec_system_error (const char *error, const char *ref, size_t *len);
//  exp <= 0 encodes "exp": null.
char *codec_auth_ok (long long exp, size_t *len);

//  True when data is exactly one JSON object (payloads from Redis).
bool codec_is_json_object (const char *data, size_t len);

//  Writes a fresh random 32-character lower-case hex id and a NUL into out.
void codec_new_id (char out [33]);

//  Current Unix time in seconds with microsecond precision.
double codec_now (void);

#endif
