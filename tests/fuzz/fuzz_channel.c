/*  fuzz_channel.c - libFuzzer target for src/channel.c: what the Redis
    engine accepts from a Pub/Sub message (docs/PROTOCOL.md section 4).

    Input layout: the first byte is the channel name's length n, the next n
    bytes (or fewer, at the end of the input) the channel, the rest the
    payload. Both are copied as hiredis hands them over: the channel with a
    NUL after its n bytes, the payload in a buffer of exactly its size.

    Properties checked:
    - channel_room answers a room exactly for "room:" + 1..64 bytes of
      [A-Za-z0-9_-] (an oracle written here), pointing into the channel,
      with its length, and NUL-terminated (the bridge uses it as a key);
    - channel_payload_check never reads a payload past its size, and a
      payload it forwards holds no NUL byte and is valid UTF-8 (the router
      carries it as a C string; clients close 1007 on invalid UTF-8), with
      '{' as its first non-blank byte;
    - a payload over CHANNEL_PAYLOAD_MAX is refused without being read
      (checked once at start-up).
*/
#include "channel.h"
#include "rtws.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    //  One byte of memory behind a length past the bound: reading it would
    //  be an ASan report, so this proves the size is checked first.
    char *one = (char *) malloc (1);
    if (!one)
        abort ();
    one [0] = '{';
    FUZZ_CHECK (channel_payload_check (one, (size_t) CHANNEL_PAYLOAD_MAX + 1)
                == CHANNEL_PAYLOAD_TOO_BIG, "oversized payload not refused");
    free (one);
    return 0;
}

static bool
s_room_oracle (const char *channel, size_t len)
{
    if (len < 6 || len > 5 + RTWS_ROOM_MAX || memcmp (channel, "room:", 5) != 0)
        return false;
    for (size_t i = 5; i < len; i++)
        if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
                     channel [i]) || channel [i] == '\0')
            return false;
    return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t channel_len = data [0];
    if (channel_len > size - 1)
        channel_len = size - 1;
    char *channel = fuzz_cstr (data + 1, channel_len);
    size_t payload_len = size - 1 - channel_len;
    char *payload = (char *) malloc (payload_len ? payload_len : 1);
    if (!payload)
        abort ();
    if (payload_len)
        memcpy (payload, data + 1 + channel_len, payload_len);

    size_t room_len = 0;
    const char *room = channel_room (channel, channel_len, &room_len);
    bool want = s_room_oracle (channel, channel_len);
    FUZZ_CHECK ((room != NULL) == want, "channel of %zu bytes: %s, oracle %s", channel_len,
                room ? "room" : "no room", want ? "room" : "no room");
    if (room) {
        FUZZ_CHECK (room == channel + 5 && room_len == channel_len - 5,
                    "room not the rest of the channel");
        FUZZ_CHECK (strlen (room) == room_len, "room is not a C string of its length");
        FUZZ_CHECK (channel_room_valid (room, room_len), "room fails channel_room_valid");
        FUZZ_CHECK (channel_room (channel, channel_len, NULL) == room, "room_len NULL differs");
    }
    FUZZ_CHECK (channel_room_valid (channel, channel_len)
                == (channel_len >= 1 && channel_len <= RTWS_ROOM_MAX
                    && strspn (channel, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-") == channel_len),
                "channel_room_valid disagrees on the channel text as a room");

    channel_payload_t verdict = channel_payload_check (payload, payload_len);
    FUZZ_CHECK (verdict == CHANNEL_PAYLOAD_OK || verdict == CHANNEL_PAYLOAD_NOT_JSON,
                "verdict %d for %zu bytes", (int) verdict, payload_len);
    if (verdict == CHANNEL_PAYLOAD_OK) {
        FUZZ_CHECK (!memchr (payload, 0, payload_len), "forwarded payload holds a NUL byte");
        FUZZ_CHECK (fuzz_utf8_valid (payload, payload_len), "forwarded payload is not UTF-8");
        size_t blank = 0;
        while (blank < payload_len && strchr (" \t\r\n", payload [blank]))
            blank++;
        FUZZ_CHECK (blank < payload_len && payload [blank] == '{',
                    "forwarded payload does not start with an object");
    }
    free (payload);
    free (channel);
    return 0;
}
