/*  fuzz_codec.c - libFuzzer target for src/codec.c.

    The input is one client text frame for a connection whose path room is
    "lobby" (seeds: tests/fuzz/corpus/codec, one per row of docs/PROTOCOL.md
    section 3). Properties checked:

    - codec_parse agrees with an independent reading of the frame by
      jansson, following the tables of PROTOCOL.md section 3: kind, error
      name, ref (a string id without NUL), text and token; a frame holding
      a raw NUL byte is never JSON (bad_json), whatever jansson makes of it;
    - what codec_parse accepts can always be answered: a chat.message's text
      and id encode as a chat.delivery, a ping's id as an ack's ref, an
      error's ref as a system.error;
    - every encoder, fed pieces of the input (split at NUL bytes) as its
      strings, returns NULL exactly when a string is not valid UTF-8, and
      otherwise compact JSON that reads back to exactly its arguments, in
      the contract's field order, with ts within a microsecond, and that
      codec_is_json_object accepts (other nodes take it from Redis).
*/
#include <jansson.h>
#include <math.h>

#include "codec.h"
#include "fuzz_util.h"

#define ROOM "lobby"

//  --------------------------------------------------------------------------
//  The oracle: PROTOCOL.md section 3 read directly off the jansson tree.

typedef struct {
    codec_kind_t kind;
    const char *error;
    const char *id;             //  expected in->id (points into the tree)
    const char *text;
    const char *token;
} expect_t;

//  0 absent or null, 1 string without NUL (value set), 2 string with NUL,
//  3 another type.
static int
s_field (json_t *obj, const char *key, const char **value)
{
    json_t *field = json_object_get (obj, key);
    *value = NULL;
    if (!field || json_is_null (field))
        return 0;
    if (!json_is_string (field))
        return 3;
    if (memchr (json_string_value (field), 0, json_string_length (field)))
        return 2;
    *value = json_string_value (field);
    return 1;
}

static void
s_expect (json_t *obj, expect_t *want)
{
    memset (want, 0, sizeof *want);
    want->kind = CODEC_IN_ERROR;
    const char *type, *id, *text, *room, *token;
    int type_f = s_field (obj, "type", &type);
    int id_f = s_field (obj, "id", &id);
    if (type_f == 1 && strcmp (type, "chat.message") == 0) {
        //  bad_message before room_mismatch; the id echoes once it is good
        if (id_f >= 2) {
            want->error = "bad_message";
            return;
        }
        want->id = id;
        if (s_field (obj, "text", &text) != 1) {
            want->error = "bad_message";
            return;
        }
        int room_f = s_field (obj, "room", &room);
        if (room_f != 0 && (room_f != 1 || strcmp (room, ROOM) != 0)) {
            want->error = "room_mismatch";
            return;
        }
        want->kind = CODEC_IN_CHAT;
        want->text = text;
        return;
    }
    want->id = id;
    if (type_f == 0 || type_f == 3)
        want->error = "bad_message";
    else
    if (type_f == 2)
        want->error = "unknown_type";
    else
    if (strcmp (type, "system.ping") == 0)
        want->kind = CODEC_IN_PING;
    else
    if (strcmp (type, "system.pong") == 0 || strcmp (type, "system.ack") == 0)
        want->kind = CODEC_IN_ACTIVITY;
    else
    if (strcmp (type, "auth.refresh") == 0) {
        if (s_field (obj, "token", &token) == 1) {
            want->kind = CODEC_IN_REFRESH;
            want->token = token;
        }
        else
            want->error = "bad_message";
    }
    else
        want->error = "unknown_type";
}

static bool
s_same (const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp (a, b) == 0);
}

static const char *
s_show (const char *text)
{
    return text ? text : "(null)";
}

//  --------------------------------------------------------------------------
//  Reading encoder output back

static bool
s_is_hex32 (const char *text)
{
    if (strlen (text) != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        if (!((text [i] >= '0' && text [i] <= '9') || (text [i] >= 'a' && text [i] <= 'f')))
            return false;
    return true;
}

//  Parses out (len bytes) strictly and checks the keys are exactly keys, in
//  that order. Returns the object (caller decrefs).
static json_t *
s_read_back (const char *what, const char *out, size_t len, const char **keys, size_t count)
{
    FUZZ_CHECK (strlen (out) == len, "%s: len %zu, strlen %zu", what, len, strlen (out));
    FUZZ_CHECK (codec_is_json_object (out, len), "%s: not a JSON object: %s", what, out);
    FUZZ_CHECK (out [0] == '{' && out [len - 1] == '}', "%s: not compact: %s", what, out);
    json_error_t error;
    json_t *obj = json_loadb (out, len, 0, &error);
    FUZZ_CHECK (obj && json_is_object (obj), "%s: unreadable: %s", what, error.text);
    FUZZ_CHECK (json_object_size (obj) == count, "%s: %zu keys", what, json_object_size (obj));
    //  Field order is the contract's: each key appears after the previous.
    const char *from = out;
    for (size_t i = 0; i < count; i++) {
        char quoted [32];
        snprintf (quoted, sizeof quoted, "{\"%s\":", keys [i]);
        const char *at = i == 0 ? (strncmp (out, quoted, strlen (quoted)) == 0 ? out : NULL)
                                : strstr (from, quoted + 1);
        FUZZ_CHECK (at && json_object_get (obj, keys [i]), "%s: key %s out of order in %s",
                    what, keys [i], out);
        from = at;
    }
    return obj;
}

static void
s_expect_string (const char *what, json_t *obj, const char *key, const char *want)
{
    json_t *field = json_object_get (obj, key);
    FUZZ_CHECK (json_is_string (field)
             && json_string_length (field) == strlen (want)
             && memcmp (json_string_value (field), want, strlen (want)) == 0,
                "%s: %s does not read back as given", what, key);
}

static void
s_expect_ts (const char *what, json_t *obj, double ts)
{
    json_t *field = json_object_get (obj, "ts");
    FUZZ_CHECK (json_is_number (field), "%s: ts is not a number", what);
    double got = json_number_value (field);
    //  six decimals, rounded: half a microsecond, plus the double's own
    //  precision at this magnitude when it is read back
    double slack = 0.5e-6 + 4 * fabs (ts) * 2.3e-16 + 1e-12;
    FUZZ_CHECK (fabs (got - ts) <= slack, "%s: ts %.6f read back as %.6f", what, ts, got);
}

//  --------------------------------------------------------------------------

static void
s_check_delivery (const char *room, const char *user, const char *text, const char *id,
                  double ts, bool must_encode)
{
    size_t len = 0;
    char *out = codec_chat_delivery (room, user, text, id, ts, &len);
    bool valid = fuzz_utf8_valid (room, strlen (room)) && fuzz_utf8_valid (user, strlen (user))
              && fuzz_utf8_valid (text, strlen (text)) && (!id || fuzz_utf8_valid (id, strlen (id)));
    FUZZ_CHECK ((out != NULL) == valid, "chat.delivery: %s for %s strings",
                out ? "encoded" : "refused", valid ? "valid" : "invalid");
    FUZZ_CHECK (!must_encode || out, "chat.delivery: cannot answer an accepted chat.message");
    if (!out)
        return;
    static const char *keys [] = { "type", "room", "user", "text", "id", "ts" };
    json_t *obj = s_read_back ("chat.delivery", out, len, keys, 6);
    s_expect_string ("chat.delivery", obj, "type", "chat.delivery");
    s_expect_string ("chat.delivery", obj, "room", room);
    s_expect_string ("chat.delivery", obj, "user", user);
    s_expect_string ("chat.delivery", obj, "text", text);
    if (id)
        s_expect_string ("chat.delivery", obj, "id", id);
    else
        FUZZ_CHECK (s_is_hex32 (json_string_value (json_object_get (obj, "id"))),
                    "chat.delivery: fresh id is not 32 lower-case hex");
    s_expect_ts ("chat.delivery", obj, ts);
    json_decref (obj);
    free (out);
}

static void
s_check_ack (const char *ref, bool must_encode)
{
    size_t len = 0;
    char *out = codec_system_ack (ref, &len);
    bool valid = !ref || fuzz_utf8_valid (ref, strlen (ref));
    FUZZ_CHECK ((out != NULL) == valid, "system.ack: %s", out ? "encoded" : "refused");
    FUZZ_CHECK (!must_encode || out, "system.ack: cannot answer an accepted ping");
    if (!out)
        return;
    static const char *keys [] = { "type", "id", "version", "ref" };
    json_t *obj = s_read_back ("system.ack", out, len, keys, 4);
    s_expect_string ("system.ack", obj, "type", "system.ack");
    FUZZ_CHECK (json_is_null (json_object_get (obj, "id")), "system.ack: id not null");
    FUZZ_CHECK (json_integer_value (json_object_get (obj, "version")) == 1, "system.ack: version");
    if (ref)
        s_expect_string ("system.ack", obj, "ref", ref);
    else
        FUZZ_CHECK (s_is_hex32 (json_string_value (json_object_get (obj, "ref"))),
                    "system.ack: fresh ref is not 32 lower-case hex");
    json_decref (obj);
    free (out);
}

static void
s_check_error (const char *error, const char *ref, bool must_encode)
{
    size_t len = 0;
    char *out = codec_system_error (error, ref, &len);
    bool valid = fuzz_utf8_valid (error, strlen (error)) && (!ref || fuzz_utf8_valid (ref, strlen (ref)));
    FUZZ_CHECK ((out != NULL) == valid, "system.error: %s", out ? "encoded" : "refused");
    FUZZ_CHECK (!must_encode || out, "system.error: cannot answer a bad frame");
    if (!out)
        return;
    static const char *keys [] = { "type", "error", "ref" };
    json_t *obj = s_read_back ("system.error", out, len, keys, ref ? 3 : 2);
    s_expect_string ("system.error", obj, "type", "system.error");
    s_expect_string ("system.error", obj, "error", error);
    if (ref)
        s_expect_string ("system.error", obj, "ref", ref);
    json_decref (obj);
    free (out);
}

static void
s_check_fixed (double ts, long long exp)
{
    size_t len = 0;
    char *out = codec_system_ping (ts, &len);
    FUZZ_CHECK (out, "system.ping refused");
    static const char *ping_keys [] = { "type", "id", "version", "ts" };
    json_t *obj = s_read_back ("system.ping", out, len, ping_keys, 4);
    s_expect_string ("system.ping", obj, "type", "system.ping");
    s_expect_ts ("system.ping", obj, ts);
    json_decref (obj);
    free (out);

    out = codec_auth_ok (exp, &len);
    FUZZ_CHECK (out, "auth.ok refused");
    static const char *ok_keys [] = { "type", "exp" };
    obj = s_read_back ("auth.ok", out, len, ok_keys, 2);
    json_t *field = json_object_get (obj, "exp");
    if (exp > 0)
        FUZZ_CHECK (json_is_integer (field) && json_integer_value (field) == exp,
                    "auth.ok: exp %lld not kept", exp);
    else
        FUZZ_CHECK (json_is_null (field), "auth.ok: exp %lld not null", exp);
    json_decref (obj);
    free (out);
}

//  A timestamp in the domain codec_now produces, [0, 1e15), spread over
//  magnitudes so that small values and sub-second digits are both common.
static double
s_ts (uint64_t hash)
{
    double base = (double) (hash % 1000000000000000000ULL) / 1000.0;
    return base / pow (10.0, (double) (hash >> 60));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    uint64_t hash = fuzz_hash (data, size);
    double ts = s_ts (hash);

    //  1. The frame through codec_parse, against the oracle
    codec_in_t in;
    codec_kind_t kind = codec_parse ((const char *) data, size, ROOM, &in);
    FUZZ_CHECK (kind == in.kind, "returned kind differs from in->kind");
    json_error_t error;
    json_t *obj = size && !memchr (data, 0, size)
                ? json_loadb ((const char *) data, size, JSON_ALLOW_NUL, &error) : NULL;
    expect_t want;
    if (!obj || !json_is_object (obj)) {
        memset (&want, 0, sizeof want);
        want.kind = CODEC_IN_ERROR;
        want.error = "bad_json";
    }
    else
        s_expect (obj, &want);
    FUZZ_CHECK (in.kind == want.kind && s_same (in.error, want.error),
                "kind %d error %s, want kind %d error %s", in.kind, s_show (in.error),
                want.kind, s_show (want.error));
    FUZZ_CHECK (s_same (in.id, want.id), "id '%s', want '%s'", s_show (in.id), s_show (want.id));
    FUZZ_CHECK (s_same (in.text, want.text), "text differs from the frame's");
    FUZZ_CHECK (s_same (in.token, want.token), "token differs from the frame's");
    json_decref (obj);

    //  2. Whatever was accepted can be answered
    if (in.kind == CODEC_IN_CHAT)
        s_check_delivery (ROOM, "user", in.text, in.id, ts, true);
    else
    if (in.kind == CODEC_IN_PING)
        s_check_ack (in.id, true);
    else
    if (in.kind == CODEC_IN_ERROR)
        s_check_error (in.error, in.id, true);
    codec_in_clear (&in);
    codec_in_clear (&in);       //  idempotent

    //  3. The encoders with the input's pieces as their strings
    char *text = fuzz_cstr (data, size);
    const char *piece [4] = { text, NULL, NULL, NULL };
    size_t pieces = 1;
    for (size_t i = 0; i < size && pieces < 4; i++)
        if (text [i] == '\0')
            piece [pieces++] = text + i + 1;
    s_check_delivery (piece [pieces > 3 ? 3 : 0] [0] ? piece [pieces > 3 ? 3 : 0] : ROOM,
                      piece [0], pieces > 1 ? piece [1] : piece [0],
                      pieces > 2 ? piece [2] : NULL, ts, false);
    s_check_ack (pieces > 1 ? piece [1] : (hash & 1 ? piece [0] : NULL), false);
    s_check_error (piece [0], pieces > 1 ? piece [1] : (hash & 2 ? piece [0] : NULL), false);
    s_check_fixed (ts, (long long) hash);
    free (text);
    return 0;
}
