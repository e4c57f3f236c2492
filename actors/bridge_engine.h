/*  bridge_engine.h - inside the bridge actor: the table every engine fills.

    Private to the bridge (bridge.c, bridge_redis.c); no other actor
    includes it. The bridge decodes and checks each sibling message, then
    makes one call of its engine; the engine answers only through
    bridge_deliver and bridge_refuse, never on the bridge's sockets itself.
    Every call runs on the bridge thread.
*/
#ifndef RTWS_BRIDGE_ENGINE_H_INCLUDED
#define RTWS_BRIDGE_ENGINE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef struct _bridge_t bridge_t;

//  What STATUS (the pipe's "sii8" answer) and STATS (to the gateway) report.
typedef struct {
    bool connected;             //  memory: always; Redis: both links up and handshaken
    size_t outbox;              //  PUBLISHes waiting plus commands unanswered
    uint64_t non_json;          //  payloads from outside dropped as not a JSON object
    uint64_t too_big;           //  ... dropped as larger than the bound
    uint64_t bad_channel;       //  messages dropped: channel not room:{valid room}
    uint64_t reconnects;        //  times connected again after losing Redis
} bridge_status_t;

typedef struct {
    const char *name;                                       //  "memory", "redis"
    //  NULL when the engine cannot start (said why in the log).
    void *(*create) (bridge_t *bridge, const rtws_config_t *config);
    void (*destroy) (void **self_p);
    void (*subscribe) (void *self, const char *room);
    void (*unsubscribe) (void *self, const char *room);
    //  Takes the payload frame, published verbatim. conn and ref name the
    //  sender, for bridge_refuse when the engine cannot take the message.
    void (*publish) (void *self, const char *room, zframe_t **payload_p,
                     uint64_t conn, const char *ref);
    void (*presence_up) (void *self, const char *user, const char *room);
    void (*presence_keep) (void *self, const char *user, const char *room);
    void (*presence_down) (void *self, const char *user, const char *room);
    //  Diagnostics for the pipe, from the engine's own view: they never wait.
    bool (*present) (void *self, const char *user, const char *room);
    bool (*subscribed) (void *self, const char *room);
    void (*status) (void *self, bridge_status_t *status);
    //  zclock_mono () time at which timer () wants to run next.
    int64_t (*next_timer) (void *self);
    void (*timer) (void *self, int64_t now);
    //  Sockets beside the bridge's own, or NULL: poll_fill adds up to max
    //  items (raw fds or sockets) to the bridge's zmq_poll set and returns
    //  how many; poll_handle gets the same items back with their revents.
    size_t (*poll_fill) (void *self, zmq_pollitem_t *items, size_t max);
    void (*poll_handle) (void *self, zmq_pollitem_t *items, size_t count);
    //  After a batch of sibling messages: send what they queued. May be NULL.
    void (*flush) (void *self);
    //  After $TERM: true while the engine still has work worth a short wait
    //  (sent commands unanswered, an outbox it can still deliver). May be NULL.
    bool (*busy) (void *self);
} bridge_engine_t;

//  Most items an engine adds to the poll set.
#define BRIDGE_ENGINE_ITEMS_MAX 4

//  MESSAGE room payload to the router, taking the payload; never blocks.
void bridge_deliver (bridge_t *bridge, const char *room, zframe_t **payload_p);

//  REFUSED conn ref to the gateway; never blocks.
void bridge_refuse (bridge_t *bridge, uint64_t conn, const char *ref);

//  The Redis engine (bridge_redis.c).
extern const bridge_engine_t bridge_redis_engine;

//  Its presence scripts (EVAL text; KEYS[1] the key, KEYS[2] the node set,
//  ARGV[1] the node id, ARGV[2] the TTL in ms), for the test that plays a
//  second node.
extern const char bridge_redis_script_up [];
extern const char bridge_redis_script_down [];

#endif
