/*  test_codec.c - the wire codec, one row per case.

    The parse table walks both tables of docs/PROTOCOL.md section 3 (client
    to server, and the error table rows a codec decides), then the hostile
    inputs: non-objects, trailing garbage, deep nesting, huge strings, NULs.
    The encoder table holds the exact text of every server frame; ts is
    checked field by field because it carries the clock.
*/
#include "codec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t s_rows_run;
static size_t s_rows_failed;

//  Records one row's outcome; prints it when it failed.
static void
s_row (bool ok, const char *name, const char *fmt_detail, const char *detail)
{
    s_rows_run++;
    if (!ok) {
        s_rows_failed++;
        printf ("FAIL %s", name);
        if (fmt_detail)
            printf (": %s%s", fmt_detail, detail ? detail : "");
        printf ("\n");
    }
}

static bool
s_same (const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp (a, b) == 0);
}

static const char *
s_kind_name (codec_kind_t kind)
{
    switch (kind) {
        case CODEC_IN_CHAT:     return "CHAT";
        case CODEC_IN_PING:     return "PING";
        case CODEC_IN_ACTIVITY: return "ACTIVITY";
        case CODEC_IN_REFRESH:  return "REFRESH";
        case CODEC_IN_ERROR:    return "ERROR";
    }
    return "?";
}

//  ---------------------------------------------------------------------
//  codec_parse

typedef struct {
    const char *why;            //  the behaviour this row protects
    const char *input;
    size_t len;                 //  0: strlen (input)
    codec_kind_t kind;
    const char *error;          //  CODEC_IN_ERROR only
    const char *id;             //  expected in->id (the ref for errors)
    const char *text;
    const char *token;
} parse_row_t;

#define ROOM "lobby"
#define CHAT() CODEC_IN_CHAT, NULL
#define ERR(e) CODEC_IN_ERROR, e
//  input and length of a literal that holds raw NUL bytes
#define RAW(s) s, sizeof (s) - 1

static const parse_row_t s_parse_rows [] = {
    //  client to server: chat.message
    { "chat.message with text",
      "{\"type\":\"chat.message\",\"text\":\"hi\"}", 0, CHAT (), NULL, "hi", NULL },
    { "chat.message with string id",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"id\":\"m1\"}", 0, CHAT (), "m1", "hi", NULL },
    { "chat.message with id null is as if absent",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"id\":null}", 0, CHAT (), NULL, "hi", NULL },
    { "chat.message with room equal to the path room",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"lobby\"}", 0, CHAT (), NULL, "hi", NULL },
    { "chat.message with room null is as if absent",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":null}", 0, CHAT (), NULL, "hi", NULL },
    { "chat.message with empty text",
      "{\"type\":\"chat.message\",\"text\":\"\"}", 0, CHAT (), NULL, "", NULL },
    { "chat.message fields in any order, extra fields ignored",
      "{\"x\":[1,{\"y\":2}],\"text\":\"hi\",\"id\":\"m2\",\"type\":\"chat.message\"}", 0,
      CHAT (), "m2", "hi", NULL },
    { "chat.message text with escapes decoded",
      "{\"type\":\"chat.message\",\"text\":\"a\\\"b\\\\c\\nd\\u00e9\\ud83d\\ude00\"}", 0,
      CHAT (), NULL, "a\"b\\c\nd\xc3\xa9\xf0\x9f\x98\x80", NULL },
    { "chat.message raw UTF-8 text kept",
      "{\"type\":\"chat.message\",\"text\":\"h\xc3\xa9llo \xe2\x9c\x93\"}", 0,
      CHAT (), NULL, "h\xc3\xa9llo \xe2\x9c\x93", NULL },
    { "duplicate keys: the last one wins",
      "{\"type\":\"chat.message\",\"text\":\"one\",\"text\":\"two\"}", 0, CHAT (), NULL, "two", NULL },
    { "whitespace around the object",
      " \t\r\n{\"type\":\"chat.message\",\"text\":\"hi\"} \n", 0, CHAT (), NULL, "hi", NULL },

    //  client to server: system.ping
    { "system.ping without id",
      "{\"type\":\"system.ping\"}", 0, CODEC_IN_PING, NULL, NULL, NULL, NULL },
    { "system.ping with string id",
      "{\"type\":\"system.ping\",\"id\":\"p1\"}", 0, CODEC_IN_PING, NULL, "p1", NULL, NULL },
    { "system.ping with numeric id: no id to echo",
      "{\"type\":\"system.ping\",\"id\":7}", 0, CODEC_IN_PING, NULL, NULL, NULL, NULL },
    { "system.ping with id null",
      "{\"type\":\"system.ping\",\"id\":null}", 0, CODEC_IN_PING, NULL, NULL, NULL, NULL },
    { "system.ping with id holding NUL: not echoed",
      "{\"type\":\"system.ping\",\"id\":\"p\\u0000q\"}", 0, CODEC_IN_PING, NULL, NULL, NULL, NULL },

    //  client to server: system.pong, system.ack
    { "system.pong is activity",
      "{\"type\":\"system.pong\"}", 0, CODEC_IN_ACTIVITY, NULL, NULL, NULL, NULL },
    { "system.ack is activity",
      "{\"type\":\"system.ack\",\"id\":null,\"version\":1,\"ref\":\"r\"}", 0,
      CODEC_IN_ACTIVITY, NULL, NULL, NULL, NULL },
    { "system.pong with any fields",
      "{\"type\":\"system.pong\",\"ts\":1.5,\"id\":[1]}", 0,
      CODEC_IN_ACTIVITY, NULL, NULL, NULL, NULL },

    //  client to server: anything else with a string type
    { "unknown type",
      "{\"type\":\"chat.typing\"}", 0, ERR ("unknown_type"), NULL, NULL, NULL },
    { "unknown type with id: ref",
      "{\"type\":\"chat.typing\",\"id\":\"u1\"}", 0, ERR ("unknown_type"), "u1", NULL, NULL },
    { "empty type",
      "{\"type\":\"\"}", 0, ERR ("unknown_type"), NULL, NULL, NULL },
    { "types are case-sensitive",
      "{\"type\":\"Chat.Message\",\"text\":\"hi\"}", 0, ERR ("unknown_type"), NULL, NULL, NULL },
    { "server-only type system.error from a client",
      "{\"type\":\"system.error\",\"error\":\"x\"}", 0, ERR ("unknown_type"), NULL, NULL, NULL },
    { "server-only type chat.delivery from a client",
      "{\"type\":\"chat.delivery\",\"text\":\"x\"}", 0, ERR ("unknown_type"), NULL, NULL, NULL },
    { "type with NUL matches no known type",
      "{\"type\":\"chat.message\\u0000\",\"text\":\"x\"}", 0, ERR ("unknown_type"), NULL, NULL, NULL },

    //  auth.refresh (token lifetime)
    { "auth.refresh with token",
      "{\"type\":\"auth.refresh\",\"token\":\"a.b.c\"}", 0, CODEC_IN_REFRESH, NULL, NULL, NULL, "a.b.c" },
    { "auth.refresh with token and id",
      "{\"type\":\"auth.refresh\",\"token\":\"a.b.c\",\"id\":\"r1\"}", 0,
      CODEC_IN_REFRESH, NULL, "r1", NULL, "a.b.c" },
    { "auth.refresh without token",
      "{\"type\":\"auth.refresh\"}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "auth.refresh without token, with id: ref",
      "{\"type\":\"auth.refresh\",\"id\":\"r2\"}", 0, ERR ("bad_message"), "r2", NULL, NULL },
    { "auth.refresh with numeric token",
      "{\"type\":\"auth.refresh\",\"token\":5}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "auth.refresh with token null",
      "{\"type\":\"auth.refresh\",\"token\":null}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "auth.refresh with token holding NUL",
      "{\"type\":\"auth.refresh\",\"token\":\"a\\u0000b\"}", 0, ERR ("bad_message"), NULL, NULL, NULL },

    //  error table: text that is not a JSON object
    { "not JSON at all", "hello", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "JSON array", "[]", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "array holding a valid frame",
      "[{\"type\":\"chat.message\",\"text\":\"x\"}]", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "JSON number", "42", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "JSON string", "\"chat.message\"", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "JSON null", "null", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "JSON true", "true", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "only whitespace", " \n ", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "truncated object", "{\"type\":\"chat.message\"", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "trailing garbage",
      "{\"type\":\"chat.message\",\"text\":\"x\"} x", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "two objects", "{}{}", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "trailing comma", "{\"type\":\"system.pong\",}", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "single quotes", "{'type':'system.pong'}", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "NaN is not JSON", "{\"type\":\"system.pong\",\"x\":NaN}", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "byte order mark", "\xef\xbb\xbf{\"type\":\"system.pong\"}", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "invalid UTF-8 inside a string",
      "{\"type\":\"chat.message\",\"text\":\"\xff\"}", 0, ERR ("bad_json"), NULL, NULL, NULL },
    { "raw NUL byte inside a string",
      RAW ("{\"type\":\"chat.message\",\"text\":\"a\0b\"}"), ERR ("bad_json"), NULL, NULL, NULL },
    { "raw NUL byte after the object",
      RAW ("{\"type\":\"system.pong\"}\0"), ERR ("bad_json"), NULL, NULL, NULL },
    { "raw NUL byte right after a number (jansson 2.14 would skip it)",
      RAW ("{\"type\":\"system.pong\",\"n\":0\0}"), ERR ("bad_json"), NULL, NULL, NULL },
    { "only len bytes are parsed",
      "{\"type\":\"system.pong\"}garbage", 22, CODEC_IN_ACTIVITY, NULL, NULL, NULL, NULL },

    //  error table: object without a string type
    { "empty object", "{}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "object without type", "{\"text\":\"hi\"}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "object without type, with id: ref",
      "{\"text\":\"hi\",\"id\":\"n1\"}", 0, ERR ("bad_message"), "n1", NULL, NULL },
    { "numeric type", "{\"type\":1}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "numeric type with id: ref", "{\"type\":1,\"id\":\"n2\"}", 0, ERR ("bad_message"), "n2", NULL, NULL },
    { "type null", "{\"type\":null}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "type array", "{\"type\":[\"chat.message\"]}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "type object", "{\"type\":{}}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "no type, non-string id: no ref", "{\"id\":5}", 0, ERR ("bad_message"), NULL, NULL, NULL },

    //  error table: chat.message without a string text
    { "chat.message without text",
      "{\"type\":\"chat.message\"}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message without text, with id: ref",
      "{\"type\":\"chat.message\",\"id\":\"m3\"}", 0, ERR ("bad_message"), "m3", NULL, NULL },
    { "chat.message with numeric text",
      "{\"type\":\"chat.message\",\"text\":5}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message with text null",
      "{\"type\":\"chat.message\",\"text\":null}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message with text object",
      "{\"type\":\"chat.message\",\"text\":{\"a\":1}}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message with text holding NUL",
      "{\"type\":\"chat.message\",\"text\":\"a\\u0000b\",\"id\":\"m4\"}", 0,
      ERR ("bad_message"), "m4", NULL, NULL },

    //  chat.message with an id that is not a string
    { "chat.message with numeric id",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"id\":5}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message with boolean id",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"id\":true}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message with object id",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"id\":{}}", 0, ERR ("bad_message"), NULL, NULL, NULL },
    { "chat.message with id holding NUL",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"id\":\"a\\u0000\"}", 0,
      ERR ("bad_message"), NULL, NULL, NULL },

    //  error table: chat.message whose room differs from the path room
    { "room differs",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"other\"}", 0,
      ERR ("room_mismatch"), NULL, NULL, NULL },
    { "room differs, with id: ref",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"other\",\"id\":\"m5\"}", 0,
      ERR ("room_mismatch"), "m5", NULL, NULL },
    { "room compared case-sensitively",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"LOBBY\"}", 0,
      ERR ("room_mismatch"), NULL, NULL, NULL },
    { "room empty",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"\"}", 0,
      ERR ("room_mismatch"), NULL, NULL, NULL },
    { "room a prefix of the path room",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"lob\"}", 0,
      ERR ("room_mismatch"), NULL, NULL, NULL },
    { "room not a string",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":1}", 0,
      ERR ("room_mismatch"), NULL, NULL, NULL },
    { "room holding NUL after the path room",
      "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"lobby\\u0000x\"}", 0,
      ERR ("room_mismatch"), NULL, NULL, NULL },
    { "missing text is reported before a room mismatch",
      "{\"type\":\"chat.message\",\"room\":\"other\"}", 0, ERR ("bad_message"), NULL, NULL, NULL },
};

#define PARSE_ROWS (sizeof s_parse_rows / sizeof s_parse_rows [0])

static void
s_check_parse (const char *name, const char *input, size_t len, const char *room,
               const parse_row_t *row)
{
    codec_in_t in;
    codec_kind_t kind = codec_parse (input, len, room, &in);
    bool ok = kind == row->kind && in.kind == row->kind
           && s_same (in.error, row->kind == CODEC_IN_ERROR ? row->error : NULL)
           && s_same (in.id, row->id)
           && s_same (in.text, row->text)
           && s_same (in.token, row->token);
    if (!ok) {
        char detail [512];
        snprintf (detail, sizeof detail,
                  "got %s error=%s id=%s text=%.40s token=%s; expected %s error=%s id=%s text=%.40s token=%s",
                  s_kind_name (kind), in.error ? in.error : "-", in.id ? in.id : "-",
                  in.text ? in.text : "-", in.token ? in.token : "-",
                  s_kind_name (row->kind), row->error ? row->error : "-",
                  row->id ? row->id : "-", row->text ? row->text : "-",
                  row->token ? row->token : "-");
        s_row (false, name, detail, NULL);
    }
    else
        s_row (true, name, NULL, NULL);
    codec_in_clear (&in);
    codec_in_clear (&in);           //  idempotent
}

static void
s_test_parse_table (void)
{
    for (size_t i = 0; i < PARSE_ROWS; i++) {
        const parse_row_t *row = &s_parse_rows [i];
        char name [160];
        snprintf (name, sizeof name, "parse row %zu (%s)", i + 1, row->why);
        size_t len = row->len ? row->len : strlen (row->input);
        //  a private copy lets ASan catch any read past len
        char *copy = malloc (len);
        if (!copy)
            abort ();
        memcpy (copy, row->input, len);
        s_check_parse (name, copy, len, ROOM, row);
        free (copy);
    }
}

//  Returns n copies of unit followed by tail, NUL-terminated (caller frees).
static char *
s_repeat (const char *head, const char *unit, size_t n, const char *tail, size_t *len)
{
    size_t head_len = strlen (head), unit_len = strlen (unit), tail_len = strlen (tail);
    size_t total = head_len + unit_len * n + tail_len;
    char *text = malloc (total + 1);
    if (!text)
        abort ();
    memcpy (text, head, head_len);
    for (size_t i = 0; i < n; i++)
        memcpy (text + head_len + i * unit_len, unit, unit_len);
    memcpy (text + head_len + unit_len * n, tail, tail_len);
    text [total] = '\0';
    *len = total;
    return text;
}

static void
s_test_parse_hostile (void)
{
    const parse_row_t bad_json = { "", "", 0, ERR ("bad_json"), NULL, NULL, NULL };
    size_t len;
    char *text;

    //  jansson's own depth limit (JSON_PARSER_MAX_DEPTH) stops these
    //  without recursing 100000 deep: no crash, just bad_json.
    text = s_repeat ("", "[", 100000, "", &len);
    s_check_parse ("100000 nested '['", text, len, ROOM, &bad_json);
    free (text);

    text = s_repeat ("", "{\"a\":", 100000, "", &len);
    s_check_parse ("100000 nested objects", text, len, ROOM, &bad_json);
    free (text);

    //  balanced and otherwise valid, but deeper than the limit
    char *inner = s_repeat ("", "[", 100000, "", &len);
    char *closing = s_repeat ("", "]", 100000, "}", &len);
    size_t total = strlen ("{\"type\":\"chat.message\",\"text\":\"x\",\"deep\":")
                 + 100000 * 2 + 1;
    text = malloc (total + 1);
    if (!text)
        abort ();
    snprintf (text, total + 1, "{\"type\":\"chat.message\",\"text\":\"x\",\"deep\":%s%s",
              inner, closing);
    s_check_parse ("valid frame nested 100000 deep", text, strlen (text), ROOM, &bad_json);
    free (inner);
    free (closing);
    free (text);

    //  a modest depth well under the limit is still a valid frame
    {
        char *open = s_repeat ("{\"type\":\"chat.message\",\"text\":\"x\",\"deep\":", "[", 100, "", &len);
        char *close = s_repeat ("", "]", 100, "}", &len);
        size_t n = strlen (open) + strlen (close) + 1;
        text = malloc (n);
        if (!text)
            abort ();
        snprintf (text, n, "%s%s", open, close);
        const parse_row_t ok = { "", "", 0, CHAT (), NULL, "x", NULL };
        s_check_parse ("frame nested 100 deep", text, strlen (text), ROOM, &ok);
        free (open);
        free (close);
        free (text);
    }

    //  huge strings are carried whole (the frame bound is the gateway's)
    {
        size_t n = 4 * 1024 * 1024;
        char *big = s_repeat ("", "a", n, "", &len);
        size_t frame_len = n + 64;
        char *frame = malloc (frame_len);
        if (!frame)
            abort ();
        int m = snprintf (frame, frame_len, "{\"type\":\"chat.message\",\"text\":\"%s\",\"id\":\"%s\"}",
                          big, "big");
        const parse_row_t ok = { "", "", 0, CHAT (), "big", big, NULL };
        s_check_parse ("4 MiB text", frame, (size_t) m, ROOM, &ok);

        m = snprintf (frame, frame_len, "{\"type\":\"system.ping\",\"id\":\"%.*s\"}",
                      (int) (n / 2), big);
        big [n / 2] = '\0';
        const parse_row_t ping = { "", "", 0, CODEC_IN_PING, NULL, big, NULL, NULL };
        s_check_parse ("2 MiB ping id", frame, (size_t) m, ROOM, &ping);
        free (frame);
        free (big);
    }

    //  empty and NULL input
    s_check_parse ("empty input", "", 0, ROOM, &bad_json);
    s_check_parse ("NULL input", NULL, 0, ROOM, &bad_json);

    //  a connection without a room can still not claim one
    const parse_row_t mismatch = { "", "", 0, ERR ("room_mismatch"), NULL, NULL, NULL };
    s_check_parse ("room given, path room NULL",
                   "{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"lobby\"}",
                   strlen ("{\"type\":\"chat.message\",\"text\":\"hi\",\"room\":\"lobby\"}"),
                   NULL, &mismatch);

    //  codec_parse must not trust what *in held before
    codec_in_t in;
    memset (&in, 0xab, sizeof in);
    codec_parse ("{\"type\":\"system.pong\"}", 22, ROOM, &in);
    s_row (in.kind == CODEC_IN_ACTIVITY && !in.id && !in.text && !in.token && !in.error,
           "parse fills every field of *in", NULL, NULL);
    codec_in_clear (&in);
    codec_in_clear (NULL);
    s_row (true, "codec_in_clear (NULL) is harmless", NULL, NULL);
}

//  ---------------------------------------------------------------------
//  encoders: exact text

static void
s_check_encode (const char *why, char *text, size_t len, const char *expected)
{
    bool ok = s_same (text, expected) && (!text || len == strlen (text));
    char detail [512];
    snprintf (detail, sizeof detail, "got %s (len %zu), expected %s",
              text ? text : "NULL", len, expected ? expected : "NULL");
    s_row (ok, why, ok ? NULL : detail, NULL);
    free (text);
}

static void
s_test_encode_table (void)
{
    size_t ack_len = 0;
    char *ack = codec_system_ack ("p1", &ack_len);
    struct {
        const char *why;
        char *text;
        size_t len;
        const char *expected;
    } rows [] = {
        { "system.ack with ref", ack, 0,
          "{\"type\":\"system.ack\",\"id\":null,\"version\":1,\"ref\":\"p1\"}" },
        { "system.error bad_json without ref",
          codec_system_error ("bad_json", NULL, NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"bad_json\"}" },
        { "system.error bad_message with ref",
          codec_system_error ("bad_message", "m1", NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"bad_message\",\"ref\":\"m1\"}" },
        { "system.error room_mismatch",
          codec_system_error ("room_mismatch", NULL, NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"room_mismatch\"}" },
        { "system.error unknown_type",
          codec_system_error ("unknown_type", NULL, NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"unknown_type\"}" },
        { "system.error rate_limited with ref",
          codec_system_error ("rate_limited", "x", NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"rate_limited\",\"ref\":\"x\"}" },
        { "system.error unavailable with ref",
          codec_system_error ("unavailable", "u", NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"unavailable\",\"ref\":\"u\"}" },
        { "system.error bad_token",
          codec_system_error ("bad_token", NULL, NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"bad_token\"}" },
        { "ref with characters JSON must escape",
          codec_system_error ("bad_message", "a\"b\\c\n\x01", NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"bad_message\",\"ref\":\"a\\\"b\\\\c\\n\\u0001\"}" },
        { "ref with non-ASCII kept as UTF-8",
          codec_system_error ("bad_message", "\xc3\xa9", NULL), 0,
          "{\"type\":\"system.error\",\"error\":\"bad_message\",\"ref\":\"\xc3\xa9\"}" },
        { "auth.ok with exp",
          codec_auth_ok (1764186515LL, NULL), 0, "{\"type\":\"auth.ok\",\"exp\":1764186515}" },
        { "auth.ok with exp past 2038",
          codec_auth_ok (4102444800LL, NULL), 0, "{\"type\":\"auth.ok\",\"exp\":4102444800}" },
        { "auth.ok without exp",
          codec_auth_ok (0, NULL), 0, "{\"type\":\"auth.ok\",\"exp\":null}" },
        { "auth.ok with negative exp",
          codec_auth_ok (-5, NULL), 0, "{\"type\":\"auth.ok\",\"exp\":null}" },
        { "invalid UTF-8 refused",
          codec_system_error ("bad_message", "\xff", NULL), 0, NULL },
    };
    //  the first row's length came through its len pointer
    rows [0].len = ack_len;
    for (size_t i = 1; i < sizeof rows / sizeof rows [0]; i++)
        rows [i].len = rows [i].text ? strlen (rows [i].text) : 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++)
        s_check_encode (rows [i].why, rows [i].text, rows [i].len, rows [i].expected);

    //  lengths written through len for every encoder
    char *text;
    size_t len = 0;
    text = codec_system_error ("bad_json", "r", &len);
    s_row (text && len == strlen (text), "system.error writes *len", NULL, NULL);
    free (text);
    len = 0;
    text = codec_auth_ok (5, &len);
    s_row (text && len == strlen (text), "auth.ok writes *len", NULL, NULL);
    free (text);
}

static bool
s_is_hex_id (const char *id)
{
    if (!id || strlen (id) != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        if (!((id [i] >= '0' && id [i] <= '9') || (id [i] >= 'a' && id [i] <= 'f')))
            return false;
    return true;
}

//  Splits text at "\"ts\":" and checks the part before it exactly and the
//  number after it by value, then that the whole text is a JSON object
//  whose ts is a real with six decimals and no exponent.
static void
s_check_with_ts (const char *why, char *text, size_t len, const char *expected_head,
                 double ts, const char *expected_ts_text)
{
    char detail [512];
    bool ok = text != NULL && len == strlen (text);
    const char *ts_at = text ? strstr (text, ",\"ts\":") : NULL;
    ok = ok && ts_at
      && (size_t) (ts_at - text) == strlen (expected_head)
      && strncmp (text, expected_head, strlen (expected_head)) == 0;
    json_t *obj = text ? json_loads (text, 0, NULL) : NULL;
    json_t *field = obj ? json_object_get (obj, "ts") : NULL;
    double got = field && json_is_number (field) ? json_number_value (field) : -1;
    ok = ok && field && got - ts < 1e-6 && ts - got < 1e-6;
    ok = ok && !strpbrk (ts_at ? ts_at : "", "eE");
    if (expected_ts_text) {
        char tail [96];
        snprintf (tail, sizeof tail, ",\"ts\":%s}", expected_ts_text);
        ok = ok && s_same (ts_at, tail);
    }
    else {
        //  six decimals, then the closing brace
        const char *dot = ts_at ? strchr (ts_at, '.') : NULL;
        ok = ok && dot && strlen (dot) == 8 && dot [7] == '}';
    }
    snprintf (detail, sizeof detail, "got %s (len %zu), expected %s...ts %.6f",
              text ? text : "NULL", len, expected_head, ts);
    s_row (ok, why, ok ? NULL : detail, NULL);
    json_decref (obj);
    free (text);
}

static void
s_test_encode_ts (void)
{
    size_t len = 0;
    const char *head = "{\"type\":\"chat.delivery\",\"room\":\"lobby\",\"user\":\"alice\","
                       "\"text\":\"hi\",\"id\":\"m1\"";
    char *text = codec_chat_delivery ("lobby", "alice", "hi", "m1", 1764182915.123456, &len);
    s_check_with_ts ("chat.delivery exact fields and order", text, len, head,
                     1764182915.123456, "1764182915.123456");

    text = codec_chat_delivery ("lobby", "alice", "hi", "m1", 1.5, &len);
    s_check_with_ts ("ts 1.5 printed with six decimals", text, len, head, 1.5, "1.500000");

    text = codec_chat_delivery ("lobby", "alice", "hi", "m1", 0.0000001, &len);
    s_check_with_ts ("tiny ts never in exponent form", text, len, head, 0.0, "0.000000");

    text = codec_chat_delivery ("lobby", "alice", "hi", "m1", 1764182915.9999996, &len);
    s_check_with_ts ("ts rounding carries into the seconds", text, len, head,
                     1764182916.0, "1764182916.000000");

    text = codec_chat_delivery ("lobby", "alice", "hi", "m1", 1764182915.000001, &len);
    s_check_with_ts ("one microsecond kept", text, len, head,
                     1764182915.000001, "1764182915.000001");

    double now = codec_now ();
    text = codec_chat_delivery ("lobby", "alice", "hi", "m1", now, &len);
    s_check_with_ts ("ts from codec_now", text, len, head, now, NULL);

    text = codec_chat_delivery ("r-1_x", "42", "l1\n\"q\" </script> \xf0\x9f\x98\x80", "m1",
                                1764182915.5, &len);
    s_check_with_ts ("chat.delivery escapes text, keeps UTF-8 and '/'", text, len,
                     "{\"type\":\"chat.delivery\",\"room\":\"r-1_x\",\"user\":\"42\","
                     "\"text\":\"l1\\n\\\"q\\\" </script> \xf0\x9f\x98\x80\",\"id\":\"m1\"",
                     1764182915.5, "1764182915.500000");

    text = codec_system_ping (1764182915.25, &len);
    s_check_with_ts ("system.ping exact fields and order", text, len,
                     "{\"type\":\"system.ping\",\"id\":null,\"version\":1", 1764182915.25,
                     "1764182915.250000");

    //  fresh ids where the caller had none
    text = codec_chat_delivery ("lobby", "alice", "hi", NULL, 1.0, &len);
    json_t *obj = text ? json_loads (text, 0, NULL) : NULL;
    s_row (obj && s_is_hex_id (json_string_value (json_object_get (obj, "id"))),
           "chat.delivery without id gets a 32-hex id", text, NULL);
    json_decref (obj);
    free (text);

    text = codec_system_ack (NULL, &len);
    obj = text ? json_loads (text, 0, NULL) : NULL;
    s_row (obj && s_is_hex_id (json_string_value (json_object_get (obj, "ref")))
           && json_is_null (json_object_get (obj, "id")),
           "system.ack without ref gets a 32-hex ref", text, NULL);
    json_decref (obj);
    free (text);

    text = codec_chat_delivery ("lobby", "alice", "\xc3", "m1", 1.0, &len);
    s_row (text == NULL, "chat.delivery with invalid UTF-8 text is refused", NULL, NULL);
    free (text);

    //  a huge text round-trips
    size_t big_len;
    char *big = s_repeat ("", "\xc3\xa9", 1024 * 1024, "", &big_len);
    text = codec_chat_delivery ("lobby", "alice", big, "m1", 1.0, &len);
    obj = text ? json_loads (text, 0, NULL) : NULL;
    s_row (obj && s_same (json_string_value (json_object_get (obj, "text")), big),
           "2 MiB text round-trips", NULL, NULL);
    json_decref (obj);
    free (text);
    free (big);

    //  every server frame is what codec_is_json_object accepts
    text = codec_system_ping (codec_now (), &len);
    s_row (text && codec_is_json_object (text, len), "server frames are JSON objects", NULL, NULL);
    free (text);
}

//  ---------------------------------------------------------------------
//  codec_is_json_object

static void
s_test_is_json_object (void)
{
    struct {
        const char *why;
        const char *input;
        size_t len;             //  0: strlen
        bool expected;
    } rows [] = {
        { "empty object", "{}", 0, true },
        { "object", "{\"type\":\"chat.delivery\",\"text\":\"x\"}", 0, true },
        { "object with surrounding whitespace", " {} \n", 0, true },
        { "escaped NUL in a string is valid JSON", "{\"a\":\"\\u0000\"}", 0, true },
        { "array", "[]", 0, false },
        { "array of objects", "[{}]", 0, false },
        { "number", "42", 0, false },
        { "string", "\"x\"", 0, false },
        { "null", "null", 0, false },
        { "true", "true", 0, false },
        { "empty", "", 0, false },
        { "whitespace", "  ", 0, false },
        { "trailing garbage", "{} x", 0, false },
        { "two objects", "{}{}", 0, false },
        { "object then array", "{}[]", 0, false },
        { "truncated", "{\"a\":", 0, false },
        { "not JSON", "hello", 0, false },
        { "raw NUL inside a string", RAW ("{\"a\":\"\0\"}"), false },
        { "raw NUL after the object", RAW ("{}\0"), false },
        { "raw NUL right after a number", RAW ("{\"a\":0\0}"), false },
        { "raw NUL right after true", RAW ("{\"a\":true\0}"), false },
        { "only len bytes count", "{}garbage", 2, true },
        { "invalid UTF-8", "{\"a\":\"\xff\"}", 0, false },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++) {
        size_t len = rows [i].len ? rows [i].len : strlen (rows [i].input);
        char *copy = malloc (len + 1);
        if (!copy)
            abort ();
        memcpy (copy, rows [i].input, len);
        bool got = codec_is_json_object (copy, len);
        char name [128];
        snprintf (name, sizeof name, "is_json_object: %s", rows [i].why);
        s_row (got == rows [i].expected, name, got ? "got true" : "got false", NULL);
        free (copy);
    }
    s_row (!codec_is_json_object (NULL, 0), "is_json_object: NULL", NULL, NULL);

    size_t len;
    char *deep = s_repeat ("", "[", 100000, "", &len);
    s_row (!codec_is_json_object (deep, len), "is_json_object: 100000 nested '['", NULL, NULL);
    free (deep);
}

//  ---------------------------------------------------------------------
//  ids and clock

static int
s_compare_ids (const void *a, const void *b)
{
    return strcmp ((const char *) a, (const char *) b);
}

static void
s_test_ids (void)
{
    enum { IDS = 10000 };
    char (*ids) [33] = malloc (IDS * sizeof *ids);
    if (!ids)
        abort ();
    bool all_hex = true;
    for (size_t i = 0; i < IDS; i++) {
        memset (ids [i], 'X', sizeof ids [i]);
        codec_new_id (ids [i]);
        if (!s_is_hex_id (ids [i]))
            all_hex = false;
    }
    s_row (all_hex, "new ids are 32 lower-case hex characters and NUL", ids [0], NULL);
    qsort (ids, IDS, sizeof *ids, s_compare_ids);
    bool distinct = true;
    for (size_t i = 1; i < IDS; i++)
        if (strcmp (ids [i - 1], ids [i]) == 0)
            distinct = false;
    s_row (distinct, "10000 new ids are distinct", NULL, NULL);
    //  all 16 hex digits appear: the ids are not, say, decimal or constant
    bool seen [16] = { false };
    for (size_t i = 0; i < IDS; i++)
        for (size_t j = 0; j < 32; j++) {
            char c = ids [i][j];
            seen [c <= '9' ? c - '0' : c - 'a' + 10] = true;
        }
    bool every_digit = true;
    for (size_t i = 0; i < 16; i++)
        every_digit = every_digit && seen [i];
    s_row (every_digit, "new ids use every hex digit", NULL, NULL);
    free (ids);

    double before = (double) time (NULL);
    double now = codec_now ();
    double after = (double) time (NULL) + 1;
    s_row (now >= before && now <= after, "codec_now is Unix time in seconds", NULL, NULL);
    //  sub-second: over many calls some fraction is not a whole second
    bool fraction = false;
    for (int i = 0; i < 1000 && !fraction; i++) {
        double t = codec_now ();
        fraction = t != (double) (long long) t;
    }
    s_row (fraction, "codec_now has sub-second precision", NULL, NULL);
}

int
main (void)
{
    s_test_parse_table ();
    s_test_parse_hostile ();
    s_test_encode_table ();
    s_test_encode_ts ();
    s_test_is_json_object ();
    s_test_ids ();
    printf ("test_codec: %zu rows, %zu failed\n", s_rows_run, s_rows_failed);
    return s_rows_failed ? 1 : 0;
}
