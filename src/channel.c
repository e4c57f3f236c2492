/*  channel.c - Redis Pub/Sub channel names and payloads, checked.

    What the Redis engine (actors/bridge_redis.c) accepts from a Pub/Sub
    message, kept apart from hiredis so it can be fuzzed: a channel must be
    "room:" and a room name the handshake would accept, byte for byte (no
    case folding, no trimming); a payload must fit CHANNEL_PAYLOAD_MAX and
    be exactly one JSON object. The size is checked before parsing so that a
    huge payload costs nothing.
*/
#include "channel.h"

#include <string.h>

#include "codec.h"
#include "rtws.h"

bool
channel_room_valid (const char *room, size_t len)
{
    if (!room || len < 1 || len > RTWS_ROOM_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = room [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || c == '_' || c == '-'))
            return false;
    }
    return true;
}

const char *
channel_room (const char *channel, size_t len, size_t *room_len)
{
    size_t prefix = strlen (CHANNEL_PREFIX);
    if (!channel || len <= prefix || memcmp (channel, CHANNEL_PREFIX, prefix) != 0
    ||  !channel_room_valid (channel + prefix, len - prefix))
        return NULL;
    if (room_len)
        *room_len = len - prefix;
    return channel + prefix;
}

channel_payload_t
channel_payload_check (const char *payload, size_t len)
{
    if (len > CHANNEL_PAYLOAD_MAX)
        return CHANNEL_PAYLOAD_TOO_BIG;
    if (!codec_is_json_object (payload, len))
        return CHANNEL_PAYLOAD_NOT_JSON;
    return CHANNEL_PAYLOAD_OK;
}
