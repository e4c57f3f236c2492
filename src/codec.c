/*  codec.c - the wire codec: client frames in, server frames out (jansson).

    docs/PROTOCOL.md section 3 is the specification. Everything here is a
    pure function of its arguments (plus the clock and the kernel's random
    source), so any thread may call it.

    Decisions where the contract is silent:
    - "\u0000" in a string. Our strings travel as NUL-terminated C strings
      (zsock "s" frames), so a NUL cannot be carried. Such a frame is still
      a JSON object, so it is not bad_json: it is parsed with JSON_ALLOW_NUL,
      and a NUL inside a field we use makes the frame bad_message ("text",
      "id" of chat.message, "token"). A NUL in "type" can match no known
      type, so it is unknown_type; a NUL in "room" can never equal a path
      room, so it is room_mismatch; a NUL in system.ping's "id" means the
      id cannot be echoed, so the ack carries a fresh one. NULs in fields
      we ignore are ignored.
    - "room": null and "id": null are treated as absent, the way clients
      that serialise an unset optional field send them.
    - Duplicate keys are not rejected; jansson keeps the last one.
    - Nesting depth is bounded by jansson itself (JSON_PARSER_MAX_DEPTH,
      2048 in 2.14): deeper input is a parse error, so bad_json, without
      recursing further. The frame size bound (MAX_MESSAGE_SIZE) is the
      gateway's job; nothing here allocates more than a small multiple of
      the frame.
    - Encoders return NULL when a string is not valid UTF-8 (jansson refuses
      to build it) or memory runs out; callers treat that as "drop and log".
    - A raw NUL byte is never JSON (outside strings it is no token, inside
      them it must be escaped), but jansson 2.14 silently skips one that
      directly follows a number or true/false/null: it loads "{\"a\":0<NUL>}"
      as {"a":0}. Both readers here refuse any raw NUL before jansson sees
      the text (found by tests/fuzz/fuzz_channel.c).
*/
#include "codec.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

//  The depth limit is what keeps a hostile "[[[[..." frame from exhausting
//  the stack; refuse to build against a jansson that does not have one.
#ifndef JSON_PARSER_MAX_DEPTH
#   error "jansson without JSON_PARSER_MAX_DEPTH has no nesting limit"
#endif

//  Every frame we emit is compact; insertion order is the contract's order.
#define CODEC_DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

//  A string field as codec_parse sees it.
typedef enum {
    S_FIELD_ABSENT,         //  missing or JSON null
    S_FIELD_STRING,         //  a string without NUL: usable as a C string
    S_FIELD_NUL,            //  a string holding "\u0000": cannot be carried
    S_FIELD_OTHER           //  present with another JSON type
} s_field_t;

static s_field_t
s_field (json_t *obj, const char *key, const char **value)
{
    json_t *field = json_object_get (obj, key);
    *value = NULL;
    if (!field || json_is_null (field))
        return S_FIELD_ABSENT;
    if (!json_is_string (field))
        return S_FIELD_OTHER;
    const char *text = json_string_value (field);
    if (strlen (text) != json_string_length (field))
        return S_FIELD_NUL;
    *value = text;
    return S_FIELD_STRING;
}

static codec_kind_t
s_error (codec_in_t *in, const char *error)
{
    in->kind = CODEC_IN_ERROR;
    in->error = error;
    return in->kind;
}

//  Copies a field out of the parsed tree. Running out of memory here is
//  answered as bad_message: not exact, but the connection and the process
//  carry on, which matters more than the error name.
static int
s_dup (char **dest, const char *src)
{
    *dest = strdup (src);
    return *dest ? 0 : -1;
}

//  Checks in the order of the error table: a malformed frame is
//  bad_message even when its room is also wrong, and the id is kept as
//  soon as it is known good so that every later error can echo it as ref.
static codec_kind_t
s_parse_chat (json_t *obj, const char *room, codec_in_t *in)
{
    const char *value;
    s_field_t id = s_field (obj, "id", &value);
    if (id == S_FIELD_OTHER || id == S_FIELD_NUL)
        return s_error (in, "bad_message");
    if (id == S_FIELD_STRING && s_dup (&in->id, value))
        return s_error (in, "bad_message");

    if (s_field (obj, "text", &value) != S_FIELD_STRING)
        return s_error (in, "bad_message");
    const char *text = value;

    s_field_t frame_room = s_field (obj, "room", &value);
    if (frame_room != S_FIELD_ABSENT
    && (frame_room != S_FIELD_STRING || !room || strcmp (value, room) != 0))
        return s_error (in, "room_mismatch");

    if (s_dup (&in->text, text))
        return s_error (in, "bad_message");
    in->kind = CODEC_IN_CHAT;
    return in->kind;
}

codec_kind_t
codec_parse (const char *data, size_t len, const char *room, codec_in_t *in)
{
    assert (in);
    memset (in, 0, sizeof *in);
    if (!data || len == 0 || memchr (data, '\0', len))
        return s_error (in, "bad_json");

    json_error_t error;
    json_t *obj = json_loadb (data, len, JSON_ALLOW_NUL, &error);
    if (!obj || !json_is_object (obj)) {
        json_decref (obj);
        return s_error (in, "bad_json");
    }
    const char *type;
    const char *id_value;
    s_field_t type_field = s_field (obj, "type", &type);
    s_field_t id_field = s_field (obj, "id", &id_value);

    if (type_field == S_FIELD_STRING && strcmp (type, "chat.message") == 0)
        s_parse_chat (obj, room, in);
    else {
        //  Every other outcome echoes a string id, if there was one, as ref
        //  (a ping's id is its ack's ref, too).
        if (id_field == S_FIELD_STRING)
            in->id = strdup (id_value);

        if (type_field == S_FIELD_ABSENT || type_field == S_FIELD_OTHER)
            s_error (in, "bad_message");
        else
        if (type_field == S_FIELD_NUL)
            s_error (in, "unknown_type");
        else
        if (strcmp (type, "system.ping") == 0)
            in->kind = CODEC_IN_PING;
        else
        if (strcmp (type, "system.pong") == 0 || strcmp (type, "system.ack") == 0)
            in->kind = CODEC_IN_ACTIVITY;
        else
        if (strcmp (type, "auth.refresh") == 0) {
            const char *token;
            if (s_field (obj, "token", &token) != S_FIELD_STRING)
                s_error (in, "bad_message");
            else
            if (s_dup (&in->token, token))
                s_error (in, "bad_message");
            else
                in->kind = CODEC_IN_REFRESH;
        }
        else
            s_error (in, "unknown_type");
    }
    json_decref (obj);
    return in->kind;
}

void
codec_in_clear (codec_in_t *in)
{
    if (!in)
        return;
    free (in->id);
    free (in->text);
    free (in->token);
    in->id = NULL;
    in->text = NULL;
    in->token = NULL;
}

//  Dumps obj (taking our reference) to a malloc'd string; NULL on failure.
//  When ts_field is set, appends it as the last member: jansson prints reals
//  with %.17g, which turns small values into exponent form and cannot be
//  told to keep exactly six decimals, so ts is written by hand.
static char *
s_dump (json_t *obj, const char *ts_field, size_t *len)
{
    if (!obj)
        return NULL;
    char *text = json_dumps (obj, CODEC_DUMP_FLAGS);
    json_decref (obj);
    if (!text)
        return NULL;
    size_t text_len = strlen (text);
    if (ts_field) {
        //  text ends in "}" and has at least one member before it
        assert (text_len >= 2 && text [text_len - 1] == '}');
        size_t ts_len = strlen (ts_field);
        char *joined = malloc (text_len + ts_len + 2);    //  "," and NUL
        if (!joined) {
            free (text);
            return NULL;
        }
        text_len--;             //  drop the closing "}"
        memcpy (joined, text, text_len);
        joined [text_len++] = ',';
        memcpy (joined + text_len, ts_field, ts_len);
        text_len += ts_len;
        joined [text_len++] = '}';
        joined [text_len] = '\0';
        free (text);
        text = joined;
    }
    if (len)
        *len = text_len;
    return text;
}

//  Writes "\"ts\":<seconds>.<6 digits>" into buf. Integer arithmetic keeps
//  it locale-free and never in exponent form. ts comes from codec_now, so
//  a non-finite or negative value is a programming error.
static void
s_format_ts (double ts, char *buf, size_t size)
{
    assert (isfinite (ts) && ts >= 0 && ts < 1e15);
    long long seconds = (long long) ts;
    //  round half up by hand: llround would pull in libm for one call
    long long micros = (long long) ((ts - (double) seconds) * 1e6 + 0.5);
    if (micros >= 1000000) {
        seconds++;
        micros -= 1000000;
    }
    snprintf (buf, size, "\"ts\":%lld.%06lld", seconds, micros);
}

//  Objects are built member by member rather than with json_pack so that
//  each failure (json_string returns NULL for invalid UTF-8) is checked
//  where it happens. json_object_set_new steals value even on failure.
static int
s_set (json_t *obj, const char *key, json_t *value)
{
    return obj && value && json_object_set_new (obj, key, value) == 0 ? 0 : -1;
}

char *
codec_chat_delivery (const char *room, const char *user, const char *text,
                     const char *id, double ts, size_t *len)
{
    assert (room && user && text);
    char fresh [33];
    if (!id) {
        codec_new_id (fresh);
        id = fresh;
    }
    char ts_field [64];
    s_format_ts (ts, ts_field, sizeof ts_field);

    json_t *obj = json_object ();
    if (s_set (obj, "type", json_string ("chat.delivery"))
    ||  s_set (obj, "room", json_string (room))
    ||  s_set (obj, "user", json_string (user))
    ||  s_set (obj, "text", json_string (text))
    ||  s_set (obj, "id", json_string (id))) {
        json_decref (obj);
        return NULL;
    }
    return s_dump (obj, ts_field, len);
}

char *
codec_system_ack (const char *ref, size_t *len)
{
    //  The contract's ack always carries a ref: the ping's id, or a new one.
    char fresh [33];
    if (!ref) {
        codec_new_id (fresh);
        ref = fresh;
    }
    json_t *obj = json_object ();
    if (s_set (obj, "type", json_string ("system.ack"))
    ||  s_set (obj, "id", json_null ())
    ||  s_set (obj, "version", json_integer (1))
    ||  s_set (obj, "ref", json_string (ref))) {
        json_decref (obj);
        return NULL;
    }
    return s_dump (obj, NULL, len);
}

char *
codec_system_ping (double ts, size_t *len)
{
    char ts_field [64];
    s_format_ts (ts, ts_field, sizeof ts_field);
    json_t *obj = json_object ();
    if (s_set (obj, "type", json_string ("system.ping"))
    ||  s_set (obj, "id", json_null ())
    ||  s_set (obj, "version", json_integer (1))) {
        json_decref (obj);
        return NULL;
    }
    return s_dump (obj, ts_field, len);
}

char *
codec_system_error (const char *error, const char *ref, size_t *len)
{
    assert (error);
    json_t *obj = json_object ();
    if (s_set (obj, "type", json_string ("system.error"))
    ||  s_set (obj, "error", json_string (error))
    ||  (ref && s_set (obj, "ref", json_string (ref)))) {
        json_decref (obj);
        return NULL;
    }
    return s_dump (obj, NULL, len);
}

char *
codec_auth_ok (long long exp, size_t *len)
{
    json_t *obj = json_object ();
    if (s_set (obj, "type", json_string ("auth.ok"))
    ||  s_set (obj, "exp", exp > 0 ? json_integer ((json_int_t) exp) : json_null ())) {
        json_decref (obj);
        return NULL;
    }
    return s_dump (obj, NULL, len);
}

bool
codec_is_json_object (const char *data, size_t len)
{
    //  JSON_ALLOW_NUL: a "\u0000" escape is valid JSON and is forwarded as
    //  the escape text, which clients decode. A raw NUL byte is refused
    //  here (jansson may skip one, see the top of this file), so the
    //  payload stays a valid C string.
    if (!data || len == 0 || memchr (data, '\0', len))
        return false;
    json_error_t error;
    json_t *obj = json_loadb (data, len, JSON_ALLOW_NUL, &error);
    bool is_object = obj && json_is_object (obj);
    json_decref (obj);
    return is_object;
}

//  Fills buf from the kernel's CSPRNG. getrandom only blocks before the
//  pool is initialised at boot and may then be interrupted; anything else
//  (ENOSYS in an old sandbox) falls back to /dev/urandom.
static int
s_random (unsigned char *buf, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t rc = getrandom (buf + done, size - done, 0);
        if (rc > 0)
            done += (size_t) rc;
        else
        if (rc < 0 && errno != EINTR)
            break;
    }
    if (done == size)
        return 0;
    int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (done < size) {
        ssize_t rc = read (fd, buf + done, size - done);
        if (rc > 0)
            done += (size_t) rc;
        else
        if (rc == 0 || errno != EINTR)
            break;
    }
    close (fd);
    return done == size ? 0 : -1;
}

void
codec_new_id (char out [33])
{
    unsigned char bytes [16];
    //  Ids must be unique across nodes without coordination; handing out a
    //  predictable one would silently merge messages, so give up instead.
    if (s_random (bytes, sizeof bytes)) {
        log_error ("codec", "no random source: %s", strerror (errno));
        abort ();
    }
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof bytes; i++) {
        out [2 * i] = hex [bytes [i] >> 4];
        out [2 * i + 1] = hex [bytes [i] & 0x0f];
    }
    out [32] = '\0';
}

double
codec_now (void)
{
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    return (double) now.tv_sec + (double) (now.tv_nsec / 1000) / 1e6;
}
