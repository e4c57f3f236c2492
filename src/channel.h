/*  channel.h - Redis Pub/Sub messages as rtws reads them (docs/PROTOCOL.md
    section 4): which room a channel names, and which payloads are forwarded.

    Any backend may PUBLISH to Redis, so a channel name and a payload are
    input from outside. These checks are pure (no hiredis, no state), safe
    from any thread, and fuzzed on their own (tests/fuzz/fuzz_channel.c);
    the bridge's Redis engine calls them for every message it hears.
*/
#ifndef RTWS_CHANNEL_H_INCLUDED
#define RTWS_CHANNEL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Room channels are "room:" + the room name.
#define CHANNEL_PREFIX          "room:"
//  Largest payload forwarded from Redis (a MESSAGE to the router).
#define CHANNEL_PAYLOAD_MAX     (16 * 1024 * 1024)

typedef enum {
    CHANNEL_PAYLOAD_OK,         //  one JSON object within the bound: forward it
    CHANNEL_PAYLOAD_TOO_BIG,    //  over CHANNEL_PAYLOAD_MAX bytes (not parsed)
    CHANNEL_PAYLOAD_NOT_JSON    //  not exactly one JSON object
} channel_payload_t;

//  True when room [0 .. len) matches ^[A-Za-z0-9_-]{1,64}$.
bool channel_room_valid (const char *room, size_t len);

//  Returns the room a channel [0 .. len) names, as a pointer into channel
//  (so NUL-terminated when channel is) with its length in *room_len, or
//  NULL when the channel is not "room:" + a valid room name.
const char *channel_room (const char *channel, size_t len, size_t *room_len);

//  Judges a payload [0 .. len) (any bytes): the size bound first, then
//  codec_is_json_object. A payload judged OK holds no NUL byte.
channel_payload_t channel_payload_check (const char *payload, size_t len);

#endif
