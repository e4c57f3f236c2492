/*  bridge.c - the bridge actor: the node's one door to the shared world of
    rooms and presence, and the only code that talks to Redis.

    Message vocabulary (docs/ARCHITECTURE.md; pictures are zsock_send pictures):

    PULL bound at RTWS_EP_BRIDGE (router and presence connect PUSH to it)
      in  (router)   SUBSCRIBE room            "ss"   first local member joined room
      in  (router)   UNSUBSCRIBE room          "ss"   last local member left room
      in  (router)   PUBLISH room payload conn ref
                                               "sss8s" publish payload to room on every node;
                                                      conn and ref (the message id) name
                                                      the sender, for REFUSED
      in  (presence) PRESENCE_UP user room     "sss"  first local connection of user in room
      in  (presence) PRESENCE_KEEP user room   "sss"  still here (refresh the TTL)
      in  (presence) PRESENCE_DOWN user room   "sss"  last local connection of user in room
                                                      closed
      in  (presence) BATCH ...                        several of the above (inproc.h)
    PUSH connected to RTWS_EP_ROUTER
      out (router)   MESSAGE room payload      "sss"  only for subscribed rooms, in publish
                                                      order, payload verbatim
    PUSH connected to RTWS_EP_GATEWAY
      out (gateway)  REFUSED conn ref          "s8s"  the engine cannot take conn's PUBLISH
                                                      ref (Redis outbox full)
      out (gateway)  STATS "bridge" engine connected outbox reconnects not_json too_big
                     bad_channel            "sssi88888" for /readyz and /metrics, every
                                                      BRIDGE_STATS_INTERVAL ms, at start, and
                                                      at once whenever connected changes:
                                                      engine and connected as STATUS says;
                                                      outbox depth; times connected again
                                                      after losing Redis; payloads from
                                                      Redis dropped as not one JSON object,
                                                      as too big, or for a channel that is
                                                      not room:{room} (totals; memory: 0)
    pipe (owner: rtwsd.c or a test)
      in             $TERM                     "s"    stop and free everything
      in             CONFIG config             "sp"   SIGHUP: the new configuration (owned
                                                      by rtwsd.c) replaces ours; reply "i" 1
      in             PRESENT user room         "sss"  reply "i": 1 when present, else 0
      in             SUBSCRIBED room           "ss"   reply "i": 1 when subscribed, else 0
      in             STATUS                    "s"    reply "sii8": engine name ("memory" or
                                                      "redis"); connected (memory 1; redis 1
                                                      only when both Redis connections are up
                                                      and AUTH/SELECT succeeded); outbox
                                                      depth; non-JSON payloads dropped so far

    No message carries a pointer ('p'), so nothing changes owner between threads.
    PRESENT and SUBSCRIBED answer from the engine's own view and never wait
    on Redis (the Redis engine: this node's presence and rooms).

    Engines. Every message above maps to one call of a bridge_engine_t
    (bridge_engine.h); the bridge itself only decodes, checks bounds and
    encodes. The memory engine (no REDIS_URL, below) loops PUBLISH back as
    MESSAGE when the room is subscribed and keeps presence as keys with an
    expiry, purged by a timer like Redis TTLs. The Redis engine
    (bridge_redis.c) implements the same calls with room:{room} Pub/Sub and
    rt:presence:user:{user}:{room}; its header comment holds the Redis
    layout, reconnects, the outbox and the hold.

    The loop is one zmq_poll over the pipe, the inbox and whatever the engine
    adds (the Redis engine: its two connections' raw fds), so no wait on
    Redis can hold up the pipe or the siblings. Sibling messages are taken
    in batches of up to BRIDGE_BATCH, then the engine writes what they
    produced in one go (pipelining).

    Flow control: MESSAGE to the router, REFUSED and STATS to the gateway
    never block (sndtimeo 0). The router may block sending to us, and the two of
    us form a cycle; as long as this end never blocks the cycle cannot
    deadlock. Past BRIDGE_ROUTER_HWM waiting MESSAGEs the router is wedged
    and MESSAGEs are dropped, counted and logged once per episode, as Redis
    itself does to a slow Pub/Sub subscriber; REFUSEDs past
    BRIDGE_GATEWAY_HWM likewise.

    Bounds: subscribed rooms are bounded by the router's rooms (one per room
    with a local member) and presence keys by the presence actor's pairs plus
    those awaiting expiry, at most PRESENCE_TTL old; both are bounded by the
    gateway's connection limit. Room names outside 1 .. RTWS_ROOM_MAX bytes or
    holding the key separator, and user ids over RTWS_USER_MAX bytes, are
    logged and dropped (the router and presence check them first).

    Stopping: after $TERM an engine that can still deliver (the Redis
    engine with its cmd link up) gets up to BRIDGE_DRAIN_MS to take what is
    left in the inbox and have Redis answer what it sent, so the DOWNs of a
    graceful shutdown reach Redis; then everything is freed.

    Set-up failure: only a second bridge in one process (the endpoint already
    bound) can make set-up fail, a bug in the owner. The actor logs why and
    returns without signalling; czmq's thread shim signals on our behalf when
    the handler returns, so zactor_new does not hang. Redis being down is not
    a set-up failure: the Redis engine keeps trying and STATUS says so.

    Runs on its own thread (zactor); every field of bridge_t and of the engine
    state belongs to it.
*/

#include "bridge.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

//  The self test observes Redis with a plain synchronous client.
#include <hiredis/hiredis.h>

#include "bridge_engine.h"
#include "config.h"
#include "inproc.h"
#include "log.h"
#include "rtws.h"

//  Inbox depth; when it is full the router waits (a bounded time) and
//  presence sheds.
#define BRIDGE_INBOX_HWM        100000
//  MESSAGEs the router may fall behind before the bridge sheds them.
#define BRIDGE_ROUTER_HWM       100000
//  REFUSEDs the gateway may fall behind before the bridge sheds them.
#define BRIDGE_GATEWAY_HWM      10000
//  Sibling messages handled between two polls.
#define BRIDGE_BATCH            1000
//  After $TERM, how long a busy engine may still work, ms.
#define BRIDGE_DRAIN_MS         1000
//  How often the gateway hears STATS when nothing changes, ms.
#define BRIDGE_STATS_INTERVAL   1000
//  How often the memory engine purges expired presence keys, ms.
#define BRIDGE_PURGE_INTERVAL   1000
//  Separates user and room in a presence key; room names cannot contain it.
#define BRIDGE_KEY_SEP          '\x1f'
//  Longest presence key: user, separator, room, NUL.
#define BRIDGE_KEY_MAX          (RTWS_USER_MAX + 1 + RTWS_ROOM_MAX + 1)

struct _bridge_t {
    const rtws_config_t *config;    //  read-only, outlives the actor
    zsock_t *pipe;                  //  to our owner, not ours to destroy
    zsock_t *inbox;                 //  PULL bound at RTWS_EP_BRIDGE
    zsock_t *router;                //  PUSH connected to RTWS_EP_ROUTER
    zsock_t *gateway;               //  PUSH connected to RTWS_EP_GATEWAY
    const bridge_engine_t *engine;  //  the engine's calls
    void *state;                    //  the engine's own state, owned
    uint64_t dropped;               //  MESSAGEs shed in the current overload
    uint64_t refusals_dropped;      //  REFUSEDs shed in the current overload
    int64_t next_stats;             //  zclock_mono () of the next periodic STATS
    bool stats_connected;           //  connected as the last STATS said it
    bool terminated;                //  $TERM received
};


//  --------------------------------------------------------------------------
//  What engines call back

void
bridge_deliver (bridge_t *self, const char *room, zframe_t **payload_p)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, "MESSAGE");
    zmsg_addstr (msg, room);
    zmsg_append (msg, payload_p);
    if (zmsg_send (&msg, self->router) == 0) {
        if (self->dropped) {
            log_warn ("bridge", "router inbox drains again; %" PRIu64 " MESSAGEs were dropped",
                      self->dropped);
            self->dropped = 0;
        }
        return;
    }
    zmsg_destroy (&msg);
    if (self->dropped++ == 0)
        log_error ("bridge", "router inbox full (%d MESSAGEs behind): dropping MESSAGEs",
                   BRIDGE_ROUTER_HWM);
}

void
bridge_refuse (bridge_t *self, uint64_t conn, const char *ref)
{
    if (zsock_send (self->gateway, "s8s", "REFUSED", conn, ref) == 0) {
        if (self->refusals_dropped) {
            log_warn ("bridge", "gateway inbox drains again; %" PRIu64 " REFUSEDs were dropped",
                      self->refusals_dropped);
            self->refusals_dropped = 0;
        }
        return;
    }
    if (self->refusals_dropped++ == 0)
        log_error ("bridge", "gateway inbox full (%d REFUSEDs behind): dropping REFUSEDs",
                   BRIDGE_GATEWAY_HWM);
}

//  --------------------------------------------------------------------------
//  Memory engine: one node, no Redis. Rooms are a set; presence keys carry an
//  expiry, like a Redis key with EX, so a node that forgets a DOWN still
//  loses the key within PRESENCE_TTL.

typedef struct {
    bridge_t *bridge;           //  where MESSAGEs go back
    zhashx_t *rooms;            //  subscribed room names; items are unused
    zhashx_t *presence;         //  "user\x1froom" -> int64_t expiry (zclock_mono ms)
    int64_t ttl;                //  PRESENCE_TTL in ms
    int64_t next_purge;         //  zclock_mono () of the next purge
} memory_t;

static void
s_memory_destroy (void **self_p)
{
    assert (self_p);
    if (*self_p) {
        memory_t *self = (memory_t *) *self_p;
        zhashx_destroy (&self->rooms);
        zhashx_destroy (&self->presence);
        free (self);
        *self_p = NULL;
    }
}

static void
s_expiry_free (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

static void *
s_memory_create (bridge_t *bridge, const rtws_config_t *config)
{
    memory_t *self = (memory_t *) zmalloc (sizeof (memory_t));
    self->bridge = bridge;
    self->rooms = zhashx_new ();
    self->presence = zhashx_new ();
    if (!self->rooms || !self->presence) {
        void *state = self;
        s_memory_destroy (&state);
        return NULL;
    }
    zhashx_set_destructor (self->presence, s_expiry_free);
    self->ttl = (int64_t) config->presence_ttl * 1000;
    self->next_purge = zclock_mono () + BRIDGE_PURGE_INTERVAL;
    return self;
}

static void
s_memory_subscribe (void *state, const char *room)
{
    memory_t *self = (memory_t *) state;
    //  zhashx needs a non-NULL item; the set only looks at keys.
    if (zhashx_insert (self->rooms, room, self) == -1)
        log_debug ("bridge", "SUBSCRIBE %s again: already subscribed", room);
}

static void
s_memory_unsubscribe (void *state, const char *room)
{
    memory_t *self = (memory_t *) state;
    zhashx_delete (self->rooms, room);
}

//  Never refuses: nothing here waits for anyone.
static void
s_memory_publish (void *state, const char *room, zframe_t **payload_p,
                  uint64_t conn, const char *ref)
{
    memory_t *self = (memory_t *) state;
    //  This node is the whole world: a room nobody here serves has no reader.
    if (zhashx_lookup (self->rooms, room))
        bridge_deliver (self->bridge, room, payload_p);
    else
        log_debug ("bridge", "PUBLISH to unsubscribed %s: dropped", room);
    zframe_destroy (payload_p);
}

static void
s_memory_key (char *key, const char *user, const char *room)
{
    snprintf (key, BRIDGE_KEY_MAX, "%s%c%s", user, BRIDGE_KEY_SEP, room);
}

//  UP and KEEP both set the key with a fresh TTL, as SET key 1 EX ttl does:
//  a KEEP after a lost UP (or after expiry) brings the key back.
static void
s_memory_presence_set (void *state, const char *user, const char *room)
{
    memory_t *self = (memory_t *) state;
    char key [BRIDGE_KEY_MAX];
    s_memory_key (key, user, room);
    int64_t expiry = zclock_mono () + self->ttl;
    int64_t *item = (int64_t *) zhashx_lookup (self->presence, key);
    if (item)
        *item = expiry;
    else {
        item = (int64_t *) zmalloc (sizeof (int64_t));
        *item = expiry;
        zhashx_insert (self->presence, key, item);
    }
}

static void
s_memory_presence_down (void *state, const char *user, const char *room)
{
    memory_t *self = (memory_t *) state;
    char key [BRIDGE_KEY_MAX];
    s_memory_key (key, user, room);
    zhashx_delete (self->presence, key);
}

static bool
s_memory_present (void *state, const char *user, const char *room)
{
    memory_t *self = (memory_t *) state;
    char key [BRIDGE_KEY_MAX];
    s_memory_key (key, user, room);
    int64_t *expiry = (int64_t *) zhashx_lookup (self->presence, key);
    //  An expired key counts as gone even before the purge removes it.
    return expiry && *expiry > zclock_mono ();
}

static bool
s_memory_subscribed (void *state, const char *room)
{
    memory_t *self = (memory_t *) state;
    return zhashx_lookup (self->rooms, room) != NULL;
}

static void
s_memory_status (void *state, bridge_status_t *status)
{
    //  The whole world is in this process: always connected, nothing waits,
    //  and nothing comes from outside.
    status->connected = true;
    status->outbox = 0;
    status->non_json = 0;
}

static int64_t
s_memory_next_timer (void *state)
{
    memory_t *self = (memory_t *) state;
    return self->next_purge;
}

static void
s_string_free (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

//  Drops expired presence keys, so crashed-away users do not pile up.
static void
s_memory_timer (void *state, int64_t now)
{
    memory_t *self = (memory_t *) state;
    //  zhashx must not change while we walk it: collect first, then delete.
    zlistx_t *expired = zlistx_new ();
    assert (expired);
    zlistx_set_destructor (expired, s_string_free);
    for (int64_t *expiry = (int64_t *) zhashx_first (self->presence); expiry;
         expiry = (int64_t *) zhashx_next (self->presence))
        if (*expiry <= now)
            zlistx_add_end (expired, strdup ((const char *) zhashx_cursor (self->presence)));
    for (const char *key = (const char *) zlistx_first (expired); key;
         key = (const char *) zlistx_next (expired))
        zhashx_delete (self->presence, key);
    if (zlistx_size (expired))
        log_debug ("bridge", "%zu presence keys expired", zlistx_size (expired));
    zlistx_destroy (&expired);
    self->next_purge = now + BRIDGE_PURGE_INTERVAL;
}

static const bridge_engine_t s_memory_engine = {
    .name = "memory",
    .create = s_memory_create,
    .destroy = s_memory_destroy,
    .subscribe = s_memory_subscribe,
    .unsubscribe = s_memory_unsubscribe,
    .publish = s_memory_publish,
    .presence_up = s_memory_presence_set,
    .presence_keep = s_memory_presence_set,
    .presence_down = s_memory_presence_down,
    .present = s_memory_present,
    .subscribed = s_memory_subscribed,
    .status = s_memory_status,
    .next_timer = s_memory_next_timer,
    .timer = s_memory_timer
};

static const bridge_engine_t *
s_engine_for (const rtws_config_t *config)
{
    if (config->redis_url && *config->redis_url)
        return &bridge_redis_engine;
    return &s_memory_engine;
}


//  --------------------------------------------------------------------------
//  Constructor and destructor

static void
    s_bridge_destroy (bridge_t **self_p);

static bridge_t *
s_bridge_new (zsock_t *pipe, const rtws_config_t *config)
{
    bridge_t *self = (bridge_t *) zmalloc (sizeof (bridge_t));
    self->config = config;
    self->pipe = pipe;
    self->inbox = inproc_pull_new (RTWS_EP_BRIDGE, BRIDGE_INBOX_HWM, "bridge");
    if (self->inbox)
        //  Batches end when the inbox is empty; the poll does the waiting.
        zsock_set_rcvtimeo (self->inbox, 0);
    self->router = inproc_push_new (RTWS_EP_ROUTER, BRIDGE_ROUTER_HWM, 0, "bridge");
    self->gateway = inproc_push_new (RTWS_EP_GATEWAY, BRIDGE_GATEWAY_HWM, 0, "bridge");
    if (!self->inbox || !self->router || !self->gateway) {
        s_bridge_destroy (&self);
        return NULL;
    }
    const bridge_engine_t *engine = s_engine_for (config);
    self->state = engine->create (self, config);
    if (!self->state) {
        log_error ("bridge", "cannot start the %s engine", engine->name);
        s_bridge_destroy (&self);
        return NULL;
    }
    self->engine = engine;
    log_info ("bridge", "%s engine ready", engine->name);
    return self;
}

static void
s_bridge_destroy (bridge_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        bridge_t *self = *self_p;
        if (self->engine)
            self->engine->destroy (&self->state);
        inproc_bound_destroy (&self->inbox, RTWS_EP_BRIDGE);
        zsock_destroy (&self->router);
        zsock_destroy (&self->gateway);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Helpers for sibling messages

//  A sibling sent a known verb with the wrong frames: a programming error.
static void
s_malformed (const char *command)
{
    log_error ("bridge", "malformed %s from a sibling", command);
    assert (false);
}

//  Room names are 1 .. RTWS_ROOM_MAX bytes and never hold the key separator,
//  so a presence key splits back into one (user, room) only. The router
//  checks the full syntax; this is the bridge's own bound.
static bool
s_room_ok (const char *room)
{
    size_t size = strlen (room);
    return size >= 1 && size <= RTWS_ROOM_MAX && strchr (room, BRIDGE_KEY_SEP) == NULL;
}

static bool
s_user_ok (const char *user)
{
    return strlen (user) <= RTWS_USER_MAX;
}


//  --------------------------------------------------------------------------
//  Sibling messages

//  SUBSCRIBE room, UNSUBSCRIBE room
static void
s_bridge_subscription (bridge_t *self, zmsg_t *msg, bool subscribe)
{
    const char *command = subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE";
    if (zmsg_size (msg) != 2) {
        s_malformed (command);
        return;
    }
    zmsg_first (msg);
    char *room = zframe_strdup (zmsg_next (msg));
    if (!s_room_ok (room))
        log_warn ("bridge", "%s of a bad room name (%zu bytes): dropped", command, strlen (room));
    else
    if (subscribe)
        self->engine->subscribe (self->state, room);
    else
        self->engine->unsubscribe (self->state, room);
    free (room);
}

//  PUBLISH room payload conn ref: conn and ref name the sender, for a
//  REFUSED answer when the engine cannot take the message.
static void
s_bridge_publish (bridge_t *self, zmsg_t *msg)
{
    if (zmsg_size (msg) != 5) {
        s_malformed ("PUBLISH");
        return;
    }
    zframe_t *verb = zmsg_pop (msg);
    zframe_destroy (&verb);
    char *room = zmsg_popstr (msg);
    zframe_t *payload = zmsg_pop (msg);
    //  Picture "8" travels as decimal text.
    char *conn_text = zmsg_popstr (msg);
    char *ref = zmsg_popstr (msg);
    char *end = NULL;
    errno = 0;
    uint64_t conn = conn_text && *conn_text >= '0' && *conn_text <= '9'
                  ? strtoull (conn_text, &end, 10) : 0;
    if (!end || *end || errno) {
        s_malformed ("PUBLISH");
        zframe_destroy (&payload);
        free (conn_text);
        free (room);
        free (ref);
        return;
    }
    if (!s_room_ok (room))
        log_warn ("bridge", "PUBLISH to a bad room name (%zu bytes): dropped", strlen (room));
    else
        self->engine->publish (self->state, room, &payload, conn, ref);
    zframe_destroy (&payload);
    free (conn_text);
    free (room);
    free (ref);
}

//  PRESENCE_UP, PRESENCE_KEEP, PRESENCE_DOWN user room
static void
s_bridge_presence (bridge_t *self, zmsg_t *msg, const char *command,
                   void (*call) (void *self, const char *user, const char *room))
{
    if (zmsg_size (msg) != 3) {
        s_malformed (command);
        return;
    }
    zframe_t *verb = zmsg_pop (msg);
    zframe_destroy (&verb);
    char *user = zmsg_popstr (msg);
    char *room = zmsg_popstr (msg);
    if (!s_user_ok (user) || !s_room_ok (room))
        log_warn ("bridge", "%s with a user id of %zu bytes or a bad room name (%zu bytes): "
                  "dropped", command, strlen (user), strlen (room));
    else
        call (self->state, user, room);
    free (user);
    free (room);
}


//  --------------------------------------------------------------------------
//  The actor loop

static void
s_bridge_handle (bridge_t *self, zmsg_t *msg)
{
    zframe_t *verb = zmsg_first (msg);
    if (zframe_streq (verb, "PUBLISH"))
        s_bridge_publish (self, msg);
    else
    if (zframe_streq (verb, "SUBSCRIBE"))
        s_bridge_subscription (self, msg, true);
    else
    if (zframe_streq (verb, "UNSUBSCRIBE"))
        s_bridge_subscription (self, msg, false);
    else
    if (zframe_streq (verb, "PRESENCE_UP"))
        s_bridge_presence (self, msg, "PRESENCE_UP", self->engine->presence_up);
    else
    if (zframe_streq (verb, "PRESENCE_KEEP"))
        s_bridge_presence (self, msg, "PRESENCE_KEEP", self->engine->presence_keep);
    else
    if (zframe_streq (verb, "PRESENCE_DOWN"))
        s_bridge_presence (self, msg, "PRESENCE_DOWN", self->engine->presence_down);
    else {
        char *text = zframe_strdup (verb);
        log_error ("bridge", "unknown command '%.32s' from a sibling", text);
        free (text);
        assert (false);
    }
}

static void
s_bridge_take (void *self, zmsg_t *msg)
{
    s_bridge_handle ((bridge_t *) self, msg);
    zmsg_destroy (&msg);
}

//  Takes up to BRIDGE_BATCH sibling messages, then lets the engine send
//  what they produced together.
static void
s_bridge_recv_inbox (bridge_t *self)
{
    //  A BATCH's messages (presence sends one flush's as one) count one
    //  each: a batch may pass the bound.
    size_t taken = 0;
    while (taken < BRIDGE_BATCH) {
        zmsg_t *msg = zmsg_recv (self->inbox);
        if (!msg)
            break;              //  Empty (rcvtimeo 0) or interrupted
        size_t handed = inproc_batch_each (&msg, s_bridge_take, self);
        taken += handed ? handed : 1;
    }
    if (self->engine->flush)
        self->engine->flush (self->state);
}

//  STATS for the gateway: periodically, and at once when connected changed
//  (so /readyz follows Redis within a poll). Never blocks: when the gateway
//  inbox is full this one is lost and the next follows.
static void
s_bridge_stats (bridge_t *self, int64_t now)
{
    bridge_status_t status = { false, 0, 0, 0, 0, 0 };
    self->engine->status (self->state, &status);
    if (now < self->next_stats && status.connected == self->stats_connected)
        return;
    zsock_send (self->gateway, "sssi88888", "STATS", "bridge", self->engine->name,
                status.connected ? 1 : 0, (uint64_t) status.outbox, status.reconnects,
                status.non_json, status.too_big, status.bad_channel);
    self->stats_connected = status.connected;
    self->next_stats = now + BRIDGE_STATS_INTERVAL;
}

static void
s_bridge_recv_pipe (bridge_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg)
        return;
    char *command = zmsg_popstr (msg);
    if (command && streq (command, "$TERM"))
        self->terminated = true;
    else
    if (command && streq (command, "CONFIG")) {
        //  SIGHUP: nothing bridge reads may change at run time (rtwsd keeps
        //  those values), but the old configuration is about to be freed.
        self->config = (const rtws_config_t *) inproc_pop_pointer (msg);
        zsock_send (self->pipe, "i", 1);
    }
    else
    if (command && streq (command, "PRESENT")) {
        char *user = zmsg_popstr (msg);
        char *room = zmsg_popstr (msg);
        bool present = user && room && s_user_ok (user) && s_room_ok (room)
                    && self->engine->present (self->state, user, room);
        zsock_send (self->pipe, "i", present ? 1 : 0);
        free (user);
        free (room);
    }
    else
    if (command && streq (command, "SUBSCRIBED")) {
        char *room = zmsg_popstr (msg);
        bool subscribed = room && s_room_ok (room)
                       && self->engine->subscribed (self->state, room);
        zsock_send (self->pipe, "i", subscribed ? 1 : 0);
        free (room);
    }
    else
    if (command && streq (command, "STATUS")) {
        bridge_status_t status = { false, 0, 0, 0, 0, 0 };
        self->engine->status (self->state, &status);
        int depth = status.outbox > INT_MAX ? INT_MAX : (int) status.outbox;
        zsock_send (self->pipe, "sii8", self->engine->name, status.connected ? 1 : 0,
                    depth, status.non_json);
    }
    else {
        log_error ("bridge", "unknown pipe command '%.32s'", command ? command : "");
        assert (false);
    }
    free (command);
    zmsg_destroy (&msg);
}

void
bridge_actor (zsock_t *pipe, void *args)
{
    rtws_thread_name ("rtws-bridge");
    const rtws_config_t *config = (const rtws_config_t *) args;
    assert (config);
    bridge_t *self = s_bridge_new (pipe, config);
    if (!self)
        return;                 //  Said why; the zactor shim signals for us
    zsock_signal (pipe, 0);

    const bridge_engine_t *engine = self->engine;
    int64_t stop_at = 0;        //  after $TERM: when to stop waiting for the engine
    while (true) {
        int64_t now = zclock_mono ();
        if (self->terminated) {
            if (!stop_at)
                stop_at = now + BRIDGE_DRAIN_MS;
            //  Siblings' last words (DOWNs of a graceful shutdown) may
            //  still sit in the inbox: they count as work too.
            bool pending = engine->busy
                        && ((zsock_events (self->inbox) & ZMQ_POLLIN)
                            || engine->busy (self->state));
            if (!pending || now >= stop_at)
                break;
        }
        if (now >= engine->next_timer (self->state))
            engine->timer (self->state, now);
        //  After $TERM the gateway is gone: no more STATS.
        if (!self->terminated)
            s_bridge_stats (self, now);
        int64_t timeout = engine->next_timer (self->state) - now;
        if (!self->terminated && self->next_stats - now < timeout)
            timeout = self->next_stats - now;
        if (self->terminated && stop_at - now < timeout)
            timeout = stop_at - now;
        if (timeout < 0)
            timeout = 0;

        zmq_pollitem_t items [2 + BRIDGE_ENGINE_ITEMS_MAX] = {
            //  After $TERM the owner sends nothing more; only the rest counts.
            { zsock_resolve (self->pipe), 0, self->terminated ? 0 : ZMQ_POLLIN, 0 },
            { zsock_resolve (self->inbox), 0, ZMQ_POLLIN, 0 }
        };
        size_t extra = engine->poll_fill
                     ? engine->poll_fill (self->state, items + 2, BRIDGE_ENGINE_ITEMS_MAX) : 0;
        int rc = zmq_poll (items, (int) (2 + extra), timeout > INT_MAX ? INT_MAX : (long) timeout);
        if (rc == -1) {
            if (errno == ETERM)
                break;          //  Context terminated under us
            continue;           //  EINTR: a signal is the owner's to handle
        }
        if (items [0].revents & ZMQ_POLLIN)
            s_bridge_recv_pipe (self);
        //  Redis before siblings: replies free outbox room for their PUBLISHes.
        if (extra)
            engine->poll_handle (self->state, items + 2, extra);
        if (items [1].revents & ZMQ_POLLIN)
            s_bridge_recv_inbox (self);
    }
    s_bridge_destroy (&self);
}

//  --------------------------------------------------------------------------
//  Self test: the bridge alone; the test plays the router, the gateway and
//  presence, and for the Redis engine runs a redis-server of its own.

#define TEST_TIMEOUT 2000       //  ms to wait for any expected message

typedef struct {
    bool verbose;
    int failures;
    int syncs;                  //  sync PUBLISHes sent so far
} test_t;

static void
s_check (test_t *t, bool ok, const char *behaviour)
{
    if (!ok) {
        t->failures++;
        fprintf (stderr, "bridge_test: FAIL: %s\n", behaviour);
    }
    else
    if (t->verbose)
        printf ("bridge_test: ok: %s\n", behaviour);
}

//  Receives the next message on router and checks it is MESSAGE room payload.
static void
s_expect (test_t *t, zsock_t *router, const char *behaviour,
          const char *room, const char *payload)
{
    char *verb = NULL, *got_room = NULL, *got_payload = NULL;
    zmsg_t *msg = zmsg_recv (router);
    bool ok = msg && zmsg_size (msg) == 3;
    if (ok) {
        verb = zmsg_popstr (msg);
        got_room = zmsg_popstr (msg);
        got_payload = zmsg_popstr (msg);
        ok = streq (verb, "MESSAGE") && streq (got_room, room) && streq (got_payload, payload);
    }
    if (!ok)
        fprintf (stderr, "bridge_test: got %s %s %.40s, want MESSAGE %s %.40s\n",
                 verb ? verb : msg ? "a malformed message" : "nothing (timeout)",
                 got_room ? got_room : "", got_payload ? got_payload : "", room, payload);
    s_check (t, ok, behaviour);
    free (verb);
    free (got_room);
    free (got_payload);
    zmsg_destroy (&msg);
}

//  s_expect with a longer wait, for what comes after a reconnect.
static void
s_expect_within (test_t *t, zsock_t *router, int ms, const char *behaviour,
                 const char *room, const char *payload)
{
    zsock_set_rcvtimeo (router, ms);
    s_expect (t, router, behaviour, room, payload);
    zsock_set_rcvtimeo (router, TEST_TIMEOUT);
}

//  A PUBLISH to the always-subscribed "sync" room comes back behind every
//  MESSAGE the bridge sent before it, and after every message the test sent
//  before it was handled: it proves nothing else was emitted, and makes the
//  next pipe query see the effect of everything before. With Redis it also
//  comes after every presence script and SUBSCRIBE sent before it (presence
//  goes out before PUBLISHes, which wait for SUBSCRIBE confirmations).
static void
s_sync (test_t *t, zsock_t *to_bridge, zsock_t *router, const char *behaviour)
{
    char payload [32];
    snprintf (payload, sizeof payload, "{\"sync\":%d}", t->syncs++);
    zsock_send (to_bridge, "sss8s", "PUBLISH", "sync", payload, (uint64_t) 1, "ref");
    s_expect (t, router, behaviour, "sync", payload);
}

//  Returns the pipe's "i" answer to the query, or -1 on timeout.
static int
s_ask (zactor_t *bridge, const char *command, const char *arg1, const char *arg2)
{
    int answer = -1;
    if (arg2)
        zsock_send (bridge, "sss", command, arg1, arg2);
    else
        zsock_send (bridge, "ss", command, arg1);
    if (zsock_recv (bridge, "i", &answer) == -1)
        return -1;
    return answer;
}

//  The pipe's STATUS answer; connected is -1 when none came.
typedef struct {
    char engine [16];
    int connected;
    int outbox;
    uint64_t non_json;
} test_status_t;

static test_status_t
s_status (zactor_t *bridge)
{
    test_status_t status = { "", -1, -1, 0 };
    char *engine = NULL;
    zsock_send (bridge, "s", "STATUS");
    if (zsock_recv (bridge, "sii8", &engine, &status.connected, &status.outbox,
                    &status.non_json) == 0)
        snprintf (status.engine, sizeof status.engine, "%s", engine);
    free (engine);
    return status;
}

//  Waits ms on a poller with nothing to read: the test's clock, not a sleep
//  for things to settle.
static void
s_wait (zpoller_t *idle, int ms)
{
    zpoller_wait (idle, ms);
}

//  Waits until every PUBLISH sent so far has been answered by Redis (STATUS
//  outbox 0). A subscriber can hear a message before the publisher's
//  connection reads its reply, and an unanswered PUBLISH is sent again
//  after a lost connection: a test that kills Redis waits for this first.
static bool
s_await_answered (zactor_t *bridge, zpoller_t *idle, int deadline_ms)
{
    int64_t deadline = zclock_mono () + deadline_ms;
    while (zclock_mono () < deadline) {
        if (s_status (bridge).outbox == 0)
            return true;
        s_wait (idle, 10);
    }
    return false;
}

//  Asks STATUS every 10 ms until connected is want; returns the ms it took,
//  or -1 when the deadline passed first.
static int64_t
s_await_connected (zactor_t *bridge, zpoller_t *idle, int want, int deadline_ms)
{
    int64_t start = zclock_mono ();
    while (zclock_mono () - start < deadline_ms) {
        if (s_status (bridge).connected == want)
            return zclock_mono () - start;
        s_wait (idle, 10);
    }
    return -1;
}

//  Starts a bridge and the test's PUSH into it.
static zactor_t *
s_launch (rtws_config_t *config, zsock_t **to_bridge_p)
{
    zactor_t *bridge = zactor_new (bridge_actor, config);
    assert (bridge);
    zsock_set_rcvtimeo (bridge, TEST_TIMEOUT);
    //  One PUSH plays both router and presence so the test controls their
    //  interleaving (the real ones race each other, which is fine).
    *to_bridge_p = zsock_new_push (">" RTWS_EP_BRIDGE);
    assert (*to_bridge_p);
    zsock_set_sndtimeo (*to_bridge_p, TEST_TIMEOUT);
    return bridge;
}

//  s_launch, then subscribes "sync" and proves the loop-back works.
static zactor_t *
s_start (test_t *t, rtws_config_t *config, zsock_t *router, zsock_t **to_bridge_p)
{
    zactor_t *bridge = s_launch (config, to_bridge_p);
    zsock_send (*to_bridge_p, "ss", "SUBSCRIBE", "sync");
    s_sync (t, *to_bridge_p, router, "bridge starts and loops a subscribed room back");
    return bridge;
}

static void
s_stop (zactor_t **bridge_p, zsock_t **to_bridge_p)
{
    //  A blocking pipe again, so zactor_destroy waits for the thread to end.
    zsock_set_rcvtimeo (*bridge_p, -1);
    zactor_destroy (bridge_p);
    zsock_destroy (to_bridge_p);
}

//  The next message on the gateway socket other than a STATS (every bridge
//  sends those every second whatever the test does), or NULL on timeout.
static zmsg_t *
s_recv_gateway (zsock_t *gateway)
{
    while (true) {
        zmsg_t *msg = zmsg_recv (gateway);
        if (!msg || !zframe_streq (zmsg_first (msg), "STATS"))
            return msg;
        zmsg_destroy (&msg);
    }
}

//  Checks the next message on gateway is REFUSED conn ref.
static void
s_expect_refused (test_t *t, zsock_t *gateway, uint64_t conn, const char *ref,
                  const char *behaviour)
{
    char *verb = NULL, *got_conn = NULL, *got_ref = NULL;
    zmsg_t *msg = s_recv_gateway (gateway);
    if (msg && zmsg_size (msg) == 3) {
        verb = zmsg_popstr (msg);
        got_conn = zmsg_popstr (msg);
        got_ref = zmsg_popstr (msg);
    }
    bool ok = verb && streq (verb, "REFUSED") && got_conn
           && strtoull (got_conn, NULL, 10) == conn
           && got_ref && streq (got_ref, ref);
    s_check (t, ok, behaviour);
    zmsg_destroy (&msg);
    free (verb);
    free (got_conn);
    free (got_ref);
}

//  A STATS "bridge" as the gateway reads it.
typedef struct {
    char engine [16];
    int connected;
    uint64_t outbox;
    uint64_t reconnects;
    uint64_t non_json;
    uint64_t too_big;
    uint64_t bad_channel;
} test_stats_t;

//  Throws away the STATS waiting on the gateway socket (those of bridges
//  already stopped, too); false when something else was waiting.
static bool
s_flush_stats (zsock_t *gateway)
{
    zsock_set_rcvtimeo (gateway, 0);
    bool only_stats = true;
    zmsg_t *msg;
    while ((msg = zmsg_recv (gateway))) {
        if (!zframe_streq (zmsg_first (msg), "STATS"))
            only_stats = false;
        zmsg_destroy (&msg);
    }
    zsock_set_rcvtimeo (gateway, TEST_TIMEOUT);
    return only_stats;
}

//  Reads STATS from the gateway socket until one says connected and has at
//  least reconnects and too_big, within ms; false on timeout or when any
//  other message comes first.
static bool
s_await_stats (zsock_t *gateway, int connected, uint64_t reconnects, uint64_t too_big, int ms,
               test_stats_t *got)
{
    int64_t deadline = zclock_mono () + ms;
    bool found = false;
    while (!found) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            break;
        zsock_set_rcvtimeo (gateway, (int) left);
        zmsg_t *msg = zmsg_recv (gateway);
        if (!msg)
            break;
        bool stats = zmsg_size (msg) == 9 && zframe_streq (zmsg_first (msg), "STATS");
        if (stats) {
            char *text [8];
            for (int i = 0; i < 8; i++)
                text [i] = zframe_strdup (zmsg_next (msg));
            stats = streq (text [0], "bridge");
            snprintf (got->engine, sizeof got->engine, "%s", text [1]);
            got->connected = atoi (text [2]);
            got->outbox = strtoull (text [3], NULL, 10);
            got->reconnects = strtoull (text [4], NULL, 10);
            got->non_json = strtoull (text [5], NULL, 10);
            got->too_big = strtoull (text [6], NULL, 10);
            got->bad_channel = strtoull (text [7], NULL, 10);
            for (int i = 0; i < 8; i++)
                free (text [i]);
        }
        zmsg_destroy (&msg);
        if (!stats)
            break;
        found = got->connected == connected && got->reconnects >= reconnects
             && got->too_big >= too_big;
    }
    zsock_set_rcvtimeo (gateway, TEST_TIMEOUT);
    return found;
}


//  The memory engine: no Redis, this process is the whole world.
static void
s_test_memory (test_t *t, rtws_config_t *config, zsock_t *router, zsock_t *gateway,
               zpoller_t *idle)
{
    config->presence_ttl = 60;
    zsock_t *to_bridge = NULL;
    zactor_t *bridge = s_start (t, config, router, &to_bridge);

    test_status_t status = s_status (bridge);
    s_check (t, streq (status.engine, "memory") && status.connected == 1
             && status.outbox == 0 && status.non_json == 0,
             "STATUS of the memory engine: memory, connected, empty outbox, nothing dropped");
    test_stats_t stats;
    s_check (t, s_await_stats (gateway, 1, 0, 0, 2500, &stats) && streq (stats.engine, "memory")
             && stats.outbox == 0 && stats.reconnects == 0 && stats.non_json == 0
             && stats.too_big == 0 && stats.bad_channel == 0,
             "STATS to the gateway: memory engine, connected, nothing waiting or dropped");

    //  Rooms: subscribed ones loop back verbatim, others are dropped.
    zsock_send (to_bridge, "ss", "SUBSCRIBE", "a");
    const char *verbatim = "{\"type\":\"chat.delivery\",\"room\":\"a\",\"user\":\"u\","
                           "\"text\":\"h\xc3\xa9llo  \\\"w\\\"\",\"id\":\"x\",\"ts\":1.5}";
    zsock_send (to_bridge, "sss8s", "PUBLISH", "a", verbatim, (uint64_t) 1, "ref");
    s_expect (t, router, "PUBLISH to a subscribed room comes back as MESSAGE, verbatim",
              "a", verbatim);
    s_check (t, s_ask (bridge, "SUBSCRIBED", "a", NULL) == 1, "SUBSCRIBED a is 1");
    s_check (t, s_ask (bridge, "SUBSCRIBED", "b", NULL) == 0, "SUBSCRIBED b is 0");
    zsock_send (to_bridge, "sss8s", "PUBLISH", "b", "{\"to\":\"b\"}", (uint64_t) 1, "ref");
    s_sync (t, to_bridge, router, "PUBLISH to an unsubscribed room is dropped");

    //  Order holds over 1000 PUBLISHes, with dropped ones in between.
    char payload [64];
    for (int i = 0; i < 1000; i++) {
        snprintf (payload, sizeof payload, "{\"seq\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", "a", payload, (uint64_t) 1, "ref");
        zsock_send (to_bridge, "sss8s", "PUBLISH", "b", payload, (uint64_t) 1, "ref");
    }
    int in_order = 0;
    for (int i = 0; i < 1000; i++) {
        char *verb = NULL, *room = NULL, *got = NULL;
        snprintf (payload, sizeof payload, "{\"seq\":%d}", i);
        if (zsock_recv (router, "sss", &verb, &room, &got) == 0
        &&  verb && streq (verb, "MESSAGE") && room && streq (room, "a")
        &&  got && streq (got, payload))
            in_order++;
        free (verb);
        free (room);
        free (got);
        if (in_order != i + 1)
            break;
    }
    s_check (t, in_order == 1000, "1000 MESSAGEs come back in publish order, only for a");
    s_sync (t, to_bridge, router, "nothing for the unsubscribed room among them");

    //  UNSUBSCRIBE stops the loop-back.
    zsock_send (to_bridge, "ss", "UNSUBSCRIBE", "a");
    zsock_send (to_bridge, "sss8s", "PUBLISH", "a", "{\"after\":1}", (uint64_t) 1, "ref");
    s_sync (t, to_bridge, router, "PUBLISH after UNSUBSCRIBE is dropped");
    s_check (t, s_ask (bridge, "SUBSCRIBED", "a", NULL) == 0,
             "SUBSCRIBED a is 0 after UNSUBSCRIBE");
    zsock_send (to_bridge, "ss", "SUBSCRIBE", "a");
    zsock_send (to_bridge, "sss8s", "PUBLISH", "a", "{\"again\":1}", (uint64_t) 1, "ref");
    s_expect (t, router, "SUBSCRIBE again resumes the loop-back", "a", "{\"again\":1}");

    //  Bad names are dropped, not asserted.
    char long_room [RTWS_ROOM_MAX + 2];
    memset (long_room, 'r', sizeof long_room - 1);
    long_room [sizeof long_room - 1] = 0;
    zsock_send (to_bridge, "ss", "SUBSCRIBE", long_room);
    zsock_send (to_bridge, "sss8s", "PUBLISH", long_room, "{}", (uint64_t) 1, "ref");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "u", long_room);
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "u", "x\x1fy");
    s_sync (t, to_bridge, router, "bad room names are dropped");
    s_check (t, s_ask (bridge, "SUBSCRIBED", long_room, NULL) == 0,
             "a too-long room is not subscribed");
    s_check (t, s_ask (bridge, "PRESENT", "u", "x\x1fy") == 0,
             "a room with the separator gets no key");

    //  Presence.
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r1") == 0, "nobody is present at start");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "alice", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_UP sends nothing to the router");
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r1") == 1, "PRESENCE_UP makes PRESENT 1");
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r2") == 0, "presence is per room");
    s_check (t, s_ask (bridge, "PRESENT", "bob", "r1") == 0, "presence is per user");
    zsock_send (to_bridge, "sss", "PRESENCE_KEEP", "alice", "r1");
    zsock_send (to_bridge, "sss", "PRESENCE_KEEP", "bob", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_KEEP sends nothing to the router");
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r1") == 1, "PRESENCE_KEEP keeps PRESENT 1");
    s_check (t, s_ask (bridge, "PRESENT", "bob", "r1") == 1,
             "PRESENCE_KEEP sets the key like UP (a lost UP heals)");
    zsock_send (to_bridge, "sss", "PRESENCE_DOWN", "alice", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_DOWN sends nothing to the router");
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r1") == 0, "PRESENCE_DOWN makes PRESENT 0");
    s_check (t, s_ask (bridge, "PRESENT", "bob", "r1") == 1, "DOWN of one user leaves the other");
    zsock_send (to_bridge, "sss", "PRESENCE_DOWN", "carol", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_DOWN of an absent user is harmless");
    s_stop (&bridge, &to_bridge);

    //  With PRESENCE_TTL=1 a key without KEEP expires; one kept alive stays.
    config->presence_ttl = 1;
    bridge = s_start (t, config, router, &to_bridge);
    int64_t start = zclock_mono ();
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "dave", "r1");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "erin", "r1");
    s_sync (t, to_bridge, router, "UP with PRESENCE_TTL=1 is handled");
    s_check (t, s_ask (bridge, "PRESENT", "dave", "r1") == 1, "a fresh key is present");
    int64_t gone_after = -1;
    bool erin_stayed = true;
    //  Long enough for dave to expire and for a purge to run after that
    //  (the purge itself is only visible to valgrind and the debug log).
    while (zclock_mono () - start < 2500) {
        s_wait (idle, 100);
        //  erin is refreshed every 100 ms, well inside her 1 s TTL.
        zsock_send (to_bridge, "sss", "PRESENCE_KEEP", "erin", "r1");
        if (s_ask (bridge, "PRESENT", "erin", "r1") != 1)
            erin_stayed = false;
        if (gone_after < 0 && s_ask (bridge, "PRESENT", "dave", "r1") == 0)
            gone_after = zclock_mono () - start;
    }
    if (t->verbose)
        printf ("bridge_test: key without KEEP gone after %" PRId64 " ms\n", gone_after);
    s_check (t, gone_after >= 0, "a key without KEEP expires after PRESENCE_TTL");
    s_check (t, gone_after < 0 || gone_after >= 900, "a key without KEEP lives about PRESENCE_TTL");
    s_check (t, erin_stayed, "a key refreshed by KEEP outlives two TTLs");
    s_check (t, s_ask (bridge, "PRESENT", "dave", "r1") == 0, "an expired key stays gone");
    s_stop (&bridge, &to_bridge);

    s_check (t, s_flush_stats (gateway), "the memory engine never refuses");
}


//  --------------------------------------------------------------------------
//  The Redis engine against a real redis-server

typedef struct {
    char server [PATH_MAX];     //  the redis-server binary
    int port;                   //  its loopback port
    char unix_path [64];        //  and its unix socket
    pid_t pid;                  //  0 when not running
} test_redis_t;

static bool
s_find_redis_server (char *path, size_t size)
{
    const char *env = getenv ("PATH");
    char dirs [8192];
    snprintf (dirs, sizeof dirs, "%s:/usr/bin:/usr/sbin:/usr/local/bin", env ? env : "");
    char *save = NULL;
    for (char *dir = strtok_r (dirs, ":", &save); dir; dir = strtok_r (NULL, ":", &save)) {
        snprintf (path, size, "%s/redis-server", dir);
        if (access (path, X_OK) == 0)
            return true;
    }
    return false;
}

//  A loopback port nobody listens on right now, below the kernel's
//  ephemeral range (32768+): the tests restart redis-server on the same
//  port, and a port from bind(0) could be handed meanwhile to any other
//  test's bind(0) or connect().
static int
s_free_port (void)
{
    int port = -1;
    for (int attempt = 0; attempt < 200 && port < 0; attempt++) {
        //  Not randof: czmq seeds it from the clock's second, so test
        //  processes started together would draw the same ports.
        uint32_t draw = 0;
        if (getrandom (&draw, sizeof draw, 0) != (ssize_t) sizeof draw)
            draw = (uint32_t) (zclock_usecs () ^ ((uint64_t) getpid () << 16));
        int candidate = 20000 + (int) (draw % 12768);
        int fd = socket (AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            break;
        struct sockaddr_in addr;
        memset (&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
        addr.sin_port = htons ((uint16_t) candidate);
        if (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0)
            port = candidate;
        close (fd);
    }
    return port;
}

//  A synchronous client with a TEST_TIMEOUT on every reply, or NULL.
static redisContext *
s_client (test_redis_t *redis)
{
    struct timeval connect_timeout = { 0, 200000 };
    redisContext *c = redisConnectWithTimeout ("127.0.0.1", redis->port, connect_timeout);
    if (!c || c->err) {
        if (c)
            redisFree (c);
        return NULL;
    }
    struct timeval timeout = { TEST_TIMEOUT / 1000, 0 };
    redisSetTimeout (c, timeout);
    return c;
}

static void s_redis_kill (test_redis_t *redis);

//  Starts redis-server on redis->port; it dies with this thread (the main
//  one) even when the test crashes. Waits until it answers PING.
static bool
s_redis_start (test_redis_t *redis, zpoller_t *idle)
{
    char port [16];
    snprintf (port, sizeof port, "%d", redis->port);
    char *argv [] = {
        redis->server, "--port", port, "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", "/tmp",
        "--unixsocket", redis->unix_path, "--unixsocketperm", "700", NULL
    };
    struct rlimit limit;
    int max_fd = getrlimit (RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536
               ? (int) limit.rlim_cur : 65536;
    sigset_t none;
    sigemptyset (&none);
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid == 0) {
        //  Only async-signal-safe calls between fork and exec.
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent)
            _exit (127);
        sigprocmask (SIG_SETMASK, &none, NULL);
        int null = open ("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2 (null, STDIN_FILENO);
            dup2 (null, STDOUT_FILENO);
            dup2 (null, STDERR_FILENO);
        }
        //  Our sockets (the bridge's links among them) are not Redis's.
        for (int fd = 3; fd < max_fd; fd++)
            close (fd);
        execv (redis->server, argv);
        _exit (127);
    }
    if (pid < 0)
        return false;
    redis->pid = pid;
    int64_t deadline = zclock_mono () + 5000;
    while (zclock_mono () < deadline) {
        if (waitpid (pid, NULL, WNOHANG) == pid) {
            redis->pid = 0;
            return false;       //  It died (port taken?)
        }
        redisContext *c = s_client (redis);
        if (c) {
            //  Ours, not another test's on the same port: its process id.
            redisReply *reply = (redisReply *) redisCommand (c, "INFO server");
            const char *field = reply && reply->type == REDIS_REPLY_STRING
                              ? strstr (reply->str, "process_id:") : NULL;
            long answered = field ? strtol (field + strlen ("process_id:"), NULL, 10) : 0;
            if (reply)
                freeReplyObject (reply);
            redisFree (c);
            if (answered == (long) pid)
                return true;
            if (answered > 0) {
                fprintf (stderr, "bridge_test: port %d answers redis-server pid %ld, not ours\n",
                         redis->port, answered);
                s_redis_kill (redis);
                return false;
            }
        }
        s_wait (idle, 20);
    }
    return false;
}

static void
s_redis_kill (test_redis_t *redis)
{
    if (redis->pid > 0) {
        kill (redis->pid, SIGKILL);     //  works on a stopped process too
        waitpid (redis->pid, NULL, 0);
        redis->pid = 0;
    }
}

//  Runs a command given as a NULL-terminated argv; the reply or NULL.
static redisReply *
s_run (redisContext *c, const char **argv)
{
    int argc = 0;
    while (argv [argc])
        argc++;
    return (redisReply *) redisCommandArgv (c, argc, argv, NULL);
}

//  The integer answer to a command, or LLONG_MIN when it is not one.
static long long
s_integer (redisContext *c, const char **argv)
{
    redisReply *reply = s_run (c, argv);
    long long value = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : LLONG_MIN;
    if (reply)
        freeReplyObject (reply);
    return value;
}

//  True when the reply to the command is exactly the string (or status) text.
static bool
s_string_is (redisContext *c, const char **argv, const char *text)
{
    redisReply *reply = s_run (c, argv);
    bool is = reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)
           && streq (reply->str, text);
    if (reply)
        freeReplyObject (reply);
    return is;
}

//  Subscribers of channel as PUBSUB NUMSUB counts them, or -1.
static long long
s_numsub (redisContext *c, const char *channel)
{
    redisReply *reply = s_run (c, (const char *[]) { "PUBSUB", "NUMSUB", channel, NULL });
    long long count = -1;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
    &&  reply->element [1]->type == REDIS_REPLY_INTEGER)
        count = reply->element [1]->integer;
    if (reply)
        freeReplyObject (reply);
    return count;
}

//  Polls NUMSUB until it is want; false when the deadline passed first.
static bool
s_await_numsub (redisContext *c, zpoller_t *idle, const char *channel, long long want)
{
    int64_t deadline = zclock_mono () + TEST_TIMEOUT;
    while (zclock_mono () < deadline) {
        if (s_numsub (c, channel) == want)
            return true;
        s_wait (idle, 10);
    }
    return false;
}

//  Calls of command Redis counted since it started or the last CONFIG
//  RESETSTAT, or -1.
static long long
s_calls (redisContext *c, const char *command)
{
    redisReply *reply = s_run (c, (const char *[]) { "INFO", "commandstats", NULL });
    long long calls = -1;
    char field [64];
    snprintf (field, sizeof field, "cmdstat_%s:calls=", command);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        const char *line = strstr (reply->str, field);
        calls = line ? atoll (line + strlen (field)) : 0;
    }
    if (reply)
        freeReplyObject (reply);
    return calls;
}

//  Checks the next reply on a test subscriber is message channel payload.
static bool
s_subscriber_got (redisContext *subscriber, const char *channel, const char *payload)
{
    redisReply *reply = NULL;
    bool ok = redisGetReply (subscriber, (void **) &reply) == REDIS_OK && reply
           && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
           && streq (reply->element [0]->str, "message")
           && streq (reply->element [1]->str, channel)
           && reply->element [2]->len == strlen (payload)
           && memcmp (reply->element [2]->str, payload, strlen (payload)) == 0;
    if (reply)
        freeReplyObject (reply);
    return ok;
}

//  Runs one presence script as another node would.
static long long
s_other_node (redisContext *c, bool up, const char *node, const char *user,
              const char *room, const char *ttl_ms)
{
    char key [128], nodes [128];
    snprintf (key, sizeof key, "rt:presence:user:%s:%s", user, room);
    snprintf (nodes, sizeof nodes, "rt:presence:nodes:%s:%s", user, room);
    return s_integer (c, (const char *[]) {
        "EVAL", up ? bridge_redis_script_up : bridge_redis_script_down, "2",
        key, nodes, node, ttl_ms, NULL });
}

static long long
s_exists (redisContext *c, const char *key)
{
    return s_integer (c, (const char *[]) { "EXISTS", key, NULL });
}

static long long
s_pttl (redisContext *c, const char *key)
{
    return s_integer (c, (const char *[]) { "PTTL", key, NULL });
}

//  Rooms, fan-out, payload checks and the hold, on a connected bridge.
static void
s_test_redis_rooms (test_t *t, zactor_t *bridge, zsock_t *to_bridge, zsock_t *router,
                    redisContext *c, test_redis_t *redis, zpoller_t *idle)
{
    //  SUBSCRIBE and UNSUBSCRIBE reach Redis; the sync PUBLISH is held
    //  until the SUBSCRIBE before it is confirmed.
    zsock_send (to_bridge, "ss", "SUBSCRIBE", "y");
    s_sync (t, to_bridge, router, "SUBSCRIBE y, then a sync");
    s_check (t, s_numsub (c, "room:y") == 1, "SUBSCRIBE y: PUBSUB NUMSUB room:y is 1");
    s_check (t, s_ask (bridge, "SUBSCRIBED", "y", NULL) == 1, "SUBSCRIBED y is 1");
    zsock_send (to_bridge, "ss", "UNSUBSCRIBE", "y");
    s_check (t, s_await_numsub (c, idle, "room:y", 0), "UNSUBSCRIBE y: NUMSUB room:y drops to 0");
    s_check (t, s_ask (bridge, "SUBSCRIBED", "y", NULL) == 0, "SUBSCRIBED y is 0");

    //  Joins and leaves racing end subscribed exactly when the last word was SUBSCRIBE.
    const char *flips [] = { "SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE" };
    for (int i = 0; i < 5; i++)
        zsock_send (to_bridge, "ss", flips [i], "z");
    s_sync (t, to_bridge, router, "S/U/S/U/S on z, then a sync");
    s_check (t, s_numsub (c, "room:z") == 1, "racing joins and leaves end subscribed (NUMSUB 1)");
    for (int i = 1; i < 4; i++)
        zsock_send (to_bridge, "ss", flips [i], "z");
    s_sync (t, to_bridge, router, "U/S/U on z, then a sync");
    s_check (t, s_await_numsub (c, idle, "room:z", 0),
             "racing leaves and joins end unsubscribed (NUMSUB 0)");
    s_sync (t, to_bridge, router, "another sync");
    s_check (t, s_numsub (c, "room:z") == 0, "and stay unsubscribed");

    //  Fan-out: one PUBLISH per message, seen verbatim by any subscriber.
    redisContext *subscriber = s_client (redis);
    assert (subscriber);
    redisReply *reply = s_run (subscriber, (const char *[]) { "SUBSCRIBE", "room:x", NULL });
    s_check (t, reply && reply->type == REDIS_REPLY_ARRAY, "the test subscribes room:x");
    if (reply)
        freeReplyObject (reply);
    zsock_send (to_bridge, "ss", "SUBSCRIBE", "x");
    s_sync (t, to_bridge, router, "SUBSCRIBE x, then a sync");
    freeReplyObject (s_run (c, (const char *[]) { "CONFIG", "RESETSTAT", NULL }));
    const char *verbatim = "{\"type\":\"chat.delivery\",\"room\":\"x\",\"user\":\"u\","
                           "\"text\":\"h\xc3\xa9llo  \\\"w\\\"\",\"id\":\"x\",\"ts\":1.5}";
    zsock_send (to_bridge, "sss8s", "PUBLISH", "x", verbatim, (uint64_t) 7, "m1");
    s_expect (t, router, "the bridge's PUBLISH comes back to its own room as MESSAGE, verbatim",
              "x", verbatim);
    s_check (t, s_subscriber_got (subscriber, "room:x", verbatim),
             "the bridge's PUBLISH reaches another subscriber of room:x, verbatim");
    s_sync (t, to_bridge, router, "a sync after it");
    s_check (t, s_calls (c, "publish") == 2, "one PUBLISH per message (2 for the message and the sync)");

    //  What a backend publishes comes out verbatim; anything but one JSON
    //  object is dropped and counted, as are payloads over 16 MiB.
    uint64_t non_json = s_status (bridge).non_json;
    freeReplyObject (s_run (c, (const char *[]) { "PUBLISH", "room:x", "{\"a\":1}", NULL }));
    s_expect (t, router, "a backend's PUBLISH room:x '{\"a\":1}' comes out as MESSAGE verbatim",
              "x", "{\"a\":1}");
    const char *junk [] = { "not json", "[1,2]", "{\"a\":1} trailing", "\"s\"", "", "{\"a\":" };
    for (size_t i = 0; i < sizeof junk / sizeof junk [0]; i++)
        freeReplyObject (s_run (c, (const char *[]) { "PUBLISH", "room:x", junk [i], NULL }));
    size_t big_size = 16 * 1024 * 1024 + 1;
    char *big = (char *) malloc (big_size + 1);
    assert (big);
    memset (big, ' ', big_size);
    memcpy (big, "{\"p\":\"", 6);
    memcpy (big + big_size - 2, "\"}", 2);
    big [big_size] = '\0';
    freeReplyObject (s_run (c, (const char *[]) { "PUBLISH", "room:x", big, NULL }));
    free (big);
    freeReplyObject (s_run (c, (const char *[]) { "PUBLISH", "room:x", "{\"b\":2}", NULL }));
    s_expect (t, router, "non-JSON and over-16-MiB payloads are dropped, the next one passes",
              "x", "{\"b\":2}");
    test_status_t status = s_status (bridge);
    s_check (t, status.non_json == non_json + 6, "STATUS counts the 6 non-JSON payloads");
    if (t->verbose)
        printf ("bridge_test: non-JSON dropped %" PRIu64 "\n", status.non_json);
    //  The subscriber saw all of those too; start it afresh.
    redisFree (subscriber);

    //  Order over 1000 PUBLISHes.
    char payload [64];
    for (int i = 0; i < 1000; i++) {
        snprintf (payload, sizeof payload, "{\"seq\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", "x", payload, (uint64_t) 7, "ref");
    }
    int in_order = 0;
    for (int i = 0; i < 1000; i++) {
        char *verb = NULL, *room = NULL, *got = NULL;
        snprintf (payload, sizeof payload, "{\"seq\":%d}", i);
        if (zsock_recv (router, "sss", &verb, &room, &got) == 0
        &&  verb && streq (verb, "MESSAGE") && room && streq (room, "x")
        &&  got && streq (got, payload))
            in_order++;
        free (verb);
        free (room);
        free (got);
        if (in_order != i + 1)
            break;
    }
    s_check (t, in_order == 1000, "1000 PUBLISHes through Redis come back in publish order");

    //  The hold: a first PUBLISH right behind its room's SUBSCRIBE comes back,
    //  also when that SUBSCRIBE is the last of 2000 (Redis reads a long
    //  pipeline in pieces, and serves the cmd link in between).
    int held_ok = 0;
    for (int i = 0; i < 20; i++) {
        char room [16];
        snprintf (room, sizeof room, "h%d", i);
        snprintf (payload, sizeof payload, "{\"hold\":%d}", i);
        zsock_send (to_bridge, "ss", "SUBSCRIBE", room);
        zsock_send (to_bridge, "sss8s", "PUBLISH", room, payload, (uint64_t) 7, "ref");
        char *verb = NULL, *got_room = NULL, *got = NULL;
        if (zsock_recv (router, "sss", &verb, &got_room, &got) == 0
        &&  streq (verb, "MESSAGE") && streq (got_room, room) && streq (got, payload))
            held_ok++;
        free (verb);
        free (got_room);
        free (got);
    }
    s_check (t, held_ok == 20, "a first PUBLISH right after SUBSCRIBE reaches its sender (20 of 20)");
    for (int i = 20; i < 2000; i++) {
        char room [16];
        snprintf (room, sizeof room, "h%d", i);
        zsock_send (to_bridge, "ss", "SUBSCRIBE", room);
    }
    zsock_send (to_bridge, "sss8s", "PUBLISH", "h1999", "{\"last\":1}", (uint64_t) 7, "ref");
    s_expect (t, router, "a PUBLISH behind 2000 SUBSCRIBEs waits for the last one", "h1999",
              "{\"last\":1}");
    for (int i = 0; i < 2000; i++) {
        char room [16];
        snprintf (room, sizeof room, "h%d", i);
        zsock_send (to_bridge, "ss", "UNSUBSCRIBE", room);
    }
    s_check (t, s_await_numsub (c, idle, "room:h1999", 0), "the hold rooms are unsubscribed again");
    reply = s_run (c, (const char *[]) { "PUBSUB", "CHANNELS", "room:h*", NULL });
    s_check (t, reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 0,
             "no room stays subscribed without members (PUBSUB CHANNELS room:h* is empty)");
    if (reply)
        freeReplyObject (reply);
    freeReplyObject (s_run (c, (const char *[]) { "PUBLISH", "room:h3", "{\"late\":1}", NULL }));
    s_sync (t, to_bridge, router, "nothing comes for a room after its UNSUBSCRIBE");
}

//  Presence keys as two nodes and a crashed one see them.
static void
s_test_redis_presence (test_t *t, zactor_t *bridge, zsock_t *to_bridge, zsock_t *router,
                       redisContext *c, zpoller_t *idle)
{
    const char *key = "rt:presence:user:alice:r1";
    const char *nodes = "rt:presence:nodes:alice:r1";
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "alice", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_UP, then a sync");
    s_check (t, s_string_is (c, (const char *[]) { "GET", key, NULL }, "1"),
             "PRESENCE_UP sets rt:presence:user:alice:r1 = \"1\"");
    long long pttl = s_pttl (c, key);
    s_check (t, pttl > 55000 && pttl <= 60000, "the key carries PRESENCE_TTL (60 s)");
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r1") == 1, "PRESENT alice r1 is 1");
    redisReply *reply = s_run (c, (const char *[]) { "ZRANGE", nodes, "0", "-1", NULL });
    bool one_node = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
                 && reply->element [0]->len == 32
                 && strspn (reply->element [0]->str, "0123456789abcdef") == 32;
    if (reply)
        freeReplyObject (reply);
    s_check (t, one_node, "the node set holds this node's 32-hex id");
    long long nodes_pttl = s_pttl (c, nodes);
    s_check (t, nodes_pttl > 55000 && nodes_pttl <= 60000, "the node set expires with the key");

    //  Two tabs on two nodes: closing one keeps the key.
    s_check (t, s_other_node (c, true, "node-two", "alice", "r1", "60000") == 1,
             "a second node joins alice in r1");
    s_check (t, s_integer (c, (const char *[]) { "ZCARD", nodes, NULL }) == 2, "two nodes hold alice");
    zsock_send (to_bridge, "sss", "PRESENCE_DOWN", "alice", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_DOWN, then a sync");
    s_check (t, s_exists (c, key) == 1, "DOWN from this node keeps the key while the other holds it");
    s_check (t, s_ask (bridge, "PRESENT", "alice", "r1") == 0, "PRESENT alice r1 is 0 here");
    s_other_node (c, false, "node-two", "alice", "r1", "60000");
    s_check (t, s_exists (c, key) == 0 && s_exists (c, nodes) == 0,
             "DOWN from both nodes deletes the key and the node set");

    //  The other order: the other node leaves first.
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "alice", "r2");
    s_sync (t, to_bridge, router, "PRESENCE_UP alice r2, then a sync");
    s_other_node (c, true, "node-two", "alice", "r2", "60000");
    s_other_node (c, false, "node-two", "alice", "r2", "60000");
    s_check (t, s_exists (c, "rt:presence:user:alice:r2") == 1, "the other node's DOWN keeps ours");
    zsock_send (to_bridge, "sss", "PRESENCE_DOWN", "alice", "r2");
    s_sync (t, to_bridge, router, "PRESENCE_DOWN alice r2, then a sync");
    s_check (t, s_exists (c, "rt:presence:user:alice:r2") == 0
             && s_exists (c, "rt:presence:nodes:alice:r2") == 0, "our DOWN, the last, deletes it");

    //  KEEP refreshes the TTL, and sets the key when the UP was lost.
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "bob", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_UP bob, then a sync");
    freeReplyObject (s_run (c, (const char *[]) {
        "PEXPIRE", "rt:presence:user:bob:r1", "5000", NULL }));
    zsock_send (to_bridge, "sss", "PRESENCE_KEEP", "bob", "r1");
    zsock_send (to_bridge, "sss", "PRESENCE_KEEP", "carol", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_KEEP bob and carol, then a sync");
    s_check (t, s_pttl (c, "rt:presence:user:bob:r1") > 55000, "KEEP refreshes the TTL");
    s_check (t, s_exists (c, "rt:presence:user:carol:r1") == 1, "KEEP without UP sets the key");

    //  A crashed node's entry keeps the key only until it would have expired.
    s_other_node (c, true, "crashed-node", "dora", "r1", "300");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "dora", "r1");
    zsock_send (to_bridge, "sss", "PRESENCE_DOWN", "dora", "r1");
    s_sync (t, to_bridge, router, "dora UP and DOWN here, then a sync");
    s_check (t, s_exists (c, "rt:presence:user:dora:r1") == 1,
             "a crashed node's live entry keeps the key after our DOWN");
    int64_t start = zclock_mono ();
    while (zclock_mono () - start < TEST_TIMEOUT
       &&  s_exists (c, "rt:presence:user:dora:r1") == 1)
        s_wait (idle, 20);
    int64_t gone_after = zclock_mono () - start;
    s_check (t, s_exists (c, "rt:presence:user:dora:r1") == 0
             && s_exists (c, "rt:presence:nodes:dora:r1") == 0,
             "and the key goes when that entry expires, not PRESENCE_TTL later");
    if (t->verbose)
        printf ("bridge_test: crashed node's entry gone after %" PRId64 " ms\n", gone_after);
}

//  One of the links is cut by Redis: presence said meanwhile still arrives.
static void
s_test_redis_client_kill (test_t *t, zactor_t *bridge, zsock_t *to_bridge, zsock_t *router,
                          redisContext *c, zpoller_t *idle)
{
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "dan", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_UP dan, then a sync");
    s_check (t, s_exists (c, "rt:presence:user:dan:r1") == 1, "dan is present");

    //  The cmd link is the bridge's one "normal" client; CLIENT KILL skips ours.
    s_check (t, s_integer (c, (const char *[]) { "CLIENT", "KILL", "TYPE", "normal", NULL }) == 1,
             "CLIENT KILL TYPE normal cuts the cmd link");
    s_check (t, s_await_connected (bridge, idle, 0, TEST_TIMEOUT) >= 0,
             "STATUS connected drops to 0 when the cmd link is cut");
    zsock_send (to_bridge, "sss", "PRESENCE_DOWN", "dan", "r1");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "erin", "r1");
    int64_t start = zclock_mono ();
    while (s_ask (bridge, "PRESENT", "erin", "r1") != 1 && zclock_mono () - start < TEST_TIMEOUT)
        s_wait (idle, 5);
    bool while_down = s_status (bridge).connected == 0;
    if (t->verbose)
        printf ("bridge_test: DOWN dan / UP erin handled while disconnected: %s\n",
                while_down ? "yes" : "no (reconnected first)");
    int64_t took = s_await_connected (bridge, idle, 1, 5000);
    s_check (t, took >= 0, "the cmd link comes back within the first backoff");
    if (t->verbose)
        printf ("bridge_test: cmd link back after %" PRId64 " ms\n", took);
    s_sync (t, to_bridge, router, "a sync after the cmd link is back");
    s_check (t, s_exists (c, "rt:presence:user:dan:r1") == 0,
             "a DOWN that happened while the link was down reaches Redis after reconnecting");
    s_check (t, s_exists (c, "rt:presence:user:erin:r1") == 1,
             "an UP that happened while the link was down reaches Redis after reconnecting");

    //  Now the sub link: every room is subscribed again, and what was
    //  published meanwhile waits for those SUBSCRIBEs, however many.
    char room [16], payload [32];
    for (int i = 0; i < 2000; i++) {
        snprintf (room, sizeof room, "f%d", i);
        zsock_send (to_bridge, "ss", "SUBSCRIBE", room);
    }
    s_sync (t, to_bridge, router, "2000 more rooms subscribed");
    s_check (t, s_integer (c, (const char *[]) { "CLIENT", "KILL", "TYPE", "pubsub", NULL }) == 1,
             "CLIENT KILL TYPE pubsub cuts the sub link");
    s_check (t, s_await_connected (bridge, idle, 0, TEST_TIMEOUT) >= 0,
             "STATUS connected drops to 0 when the sub link is cut");
    for (int i = 0; i < 2000; i++) {
        snprintf (room, sizeof room, "f%d", i);
        snprintf (payload, sizeof payload, "{\"f\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", room, payload, (uint64_t) 7, "ref");
    }
    s_check (t, s_await_connected (bridge, idle, 1, 5000) >= 0, "the sub link comes back");
    int delivered = 0;
    for (int i = 0; i < 2000; i++) {
        char *verb = NULL, *got_room = NULL, *got = NULL;
        snprintf (room, sizeof room, "f%d", i);
        snprintf (payload, sizeof payload, "{\"f\":%d}", i);
        if (zsock_recv (router, "sss", &verb, &got_room, &got) == 0
        &&  streq (verb, "MESSAGE") && streq (got_room, room) && streq (got, payload))
            delivered++;
        free (verb);
        free (got_room);
        free (got);
        if (delivered != i + 1)
            break;
    }
    s_check (t, delivered == 2000,
             "PUBLISHes made while the sub link was down wait until every room is "
             "subscribed again, then all 2000 come back in order");
    s_sync (t, to_bridge, router, "the sync room is subscribed again");
    s_check (t, s_numsub (c, "room:x") == 1, "so is x (NUMSUB room:x back to 1)");
    for (int i = 0; i < 2000; i++) {
        snprintf (room, sizeof room, "f%d", i);
        zsock_send (to_bridge, "ss", "UNSUBSCRIBE", room);
    }
    s_check (t, s_await_numsub (c, idle, "room:f1999", 0), "the 2000 rooms are left again");
}

//  Redis killed, stopped and restarted under a bridge with a 5-message outbox.
static void
s_test_redis_outage (test_t *t, rtws_config_t *config, zsock_t *router, zsock_t *gateway,
                     test_redis_t *redis, zpoller_t *idle)
{
    config->redis_outbox_size = 5;
    zsock_t *to_bridge = NULL;
    zactor_t *bridge = s_start (t, config, router, &to_bridge);
    zsock_send (to_bridge, "ss", "SUBSCRIBE", "x");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "fay", "r1");
    s_sync (t, to_bridge, router, "SUBSCRIBE x and PRESENCE_UP fay, then a sync");

    //  Killed: PUBLISHes wait, in order, up to the bound; then REFUSED.
    s_check (t, s_await_answered (bridge, idle, TEST_TIMEOUT),
             "every PUBLISH answered before the kill");
    s_check (t, s_flush_stats (gateway), "nothing but STATS on the gateway socket before the kill");
    s_redis_kill (redis);
    int64_t took = s_await_connected (bridge, idle, 0, TEST_TIMEOUT);
    s_check (t, took >= 0, "kill redis-server: STATUS connected becomes 0");
    //  Sent when connected changed, not at the next periodic STATS.
    test_stats_t stats;
    s_check (t, s_await_stats (gateway, 0, 0, 0, 200, &stats) && streq (stats.engine, "redis"),
             "the gateway hears STATS connected 0 as soon as Redis is lost");
    char payload [64];
    for (int i = 0; i < 5; i++) {
        snprintf (payload, sizeof payload, "{\"out\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", "x", payload, (uint64_t) 7, "ref");
    }
    zsock_send (to_bridge, "sss8s", "PUBLISH", "x", "{\"out\":5}", (uint64_t) 42, "full-ref");
    s_expect_refused (t, gateway, 42, "full-ref",
                      "outbox full: REFUSED conn ref goes to the gateway");
    test_status_t status = s_status (bridge);
    s_check (t, status.connected == 0 && status.outbox == 5,
             "PUBLISHes during the outage wait in the outbox (depth 5)");

    //  Restarted on the same port: reconnect, subscribe again, drain in order.
    int64_t restart = zclock_mono ();
    s_check (t, s_redis_start (redis, idle), "redis-server restarts on the same port");
    for (int i = 0; i < 5; i++) {
        snprintf (payload, sizeof payload, "{\"out\":%d}", i);
        s_expect_within (t, router, 12000, "after reconnecting the outbox drains in order",
                         "x", payload);
    }
    if (t->verbose)
        printf ("bridge_test: outbox drained %" PRId64 " ms after the restart\n",
                zclock_mono () - restart);
    redisContext *c = s_client (redis);
    assert (c);
    s_check (t, s_numsub (c, "room:x") == 1, "x is subscribed again (NUMSUB room:x 1)");
    s_sync (t, to_bridge, router, "a sync after the restart");
    s_check (t, s_exists (c, "rt:presence:user:fay:r1") == 1,
             "presence is asserted again in the new Redis");
    s_check (t, s_status (bridge).outbox == 0, "the outbox is empty again");
    s_check (t, s_await_stats (gateway, 1, 1, 0, 2500, &stats) && stats.reconnects == 1,
             "STATS: connected again, one reconnect counted");

    //  Stopped: the bridge never blocks, PUBLISHes in flight count against
    //  the bound, and everything flows again on SIGCONT.
    s_check (t, s_await_answered (bridge, idle, TEST_TIMEOUT),
             "every PUBLISH answered before SIGSTOP");
    kill (redis->pid, SIGSTOP);
    for (int i = 0; i < 3; i++) {
        snprintf (payload, sizeof payload, "{\"stop\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", "x", payload, (uint64_t) 7, "ref");
    }
    int64_t slowest = 0;
    int64_t start = zclock_mono ();
    bool answered = true;
    while (zclock_mono () - start < 2000) {
        int64_t asked = zclock_mono ();
        status = s_status (bridge);
        if (status.connected < 0)
            answered = false;
        if (zclock_mono () - asked > slowest)
            slowest = zclock_mono () - asked;
        s_wait (idle, 50);
    }
    if (t->verbose)
        printf ("bridge_test: slowest STATUS while Redis is stopped: %" PRId64 " ms\n", slowest);
    s_check (t, answered && slowest < 250, "SIGSTOPped Redis: the bridge answers STATUS promptly");
    s_check (t, status.outbox == 3, "PUBLISHes sent and unanswered count in the outbox depth");
    for (int i = 3; i < 5; i++) {
        snprintf (payload, sizeof payload, "{\"stop\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", "x", payload, (uint64_t) 7, "ref");
    }
    zsock_send (to_bridge, "sss8s", "PUBLISH", "x", "{\"stop\":5}", (uint64_t) 43, "stop-ref");
    s_expect_refused (t, gateway, 43, "stop-ref",
                      "a paused Redis fills the outbox too: REFUSED");
    kill (redis->pid, SIGCONT);
    for (int i = 0; i < 5; i++) {
        snprintf (payload, sizeof payload, "{\"stop\":%d}", i);
        s_expect (t, router, "SIGCONT: traffic resumes in order", "x", payload);
    }

    //  Killed while stopped: what was sent and unanswered is sent again.
    s_check (t, s_await_answered (bridge, idle, TEST_TIMEOUT),
             "every PUBLISH answered before SIGSTOP");
    kill (redis->pid, SIGSTOP);
    for (int i = 0; i < 3; i++) {
        snprintf (payload, sizeof payload, "{\"again\":%d}", i);
        zsock_send (to_bridge, "sss8s", "PUBLISH", "x", payload, (uint64_t) 7, "ref");
    }
    int64_t wait_start = zclock_mono ();
    while (s_status (bridge).outbox != 3 && zclock_mono () - wait_start < TEST_TIMEOUT)
        s_wait (idle, 5);
    redisFree (c);
    s_redis_kill (redis);
    s_check (t, s_await_connected (bridge, idle, 0, TEST_TIMEOUT) >= 0,
             "killed while stopped: connected 0");
    s_check (t, s_status (bridge).outbox == 3, "the unanswered PUBLISHes are back in the outbox");
    s_check (t, s_redis_start (redis, idle), "redis-server restarts again");
    for (int i = 0; i < 3; i++) {
        snprintf (payload, sizeof payload, "{\"again\":%d}", i);
        s_expect_within (t, router, 12000, "unanswered PUBLISHes go out again, in order",
                         "x", payload);
    }
    s_sync (t, to_bridge, router, "nothing else after them");
    s_stop (&bridge, &to_bridge);
    config->redis_outbox_size = 10000;
}

//  A bridge that must never connect: STATUS says 0 throughout.
static void
s_test_redis_refused (test_t *t, rtws_config_t *config, const char *url, zpoller_t *idle,
                      const char *behaviour)
{
    free (config->redis_url);
    config->redis_url = strdup (url);
    zsock_t *to_bridge = NULL;
    zactor_t *bridge = s_launch (config, &to_bridge);
    //  Past the first attempt and its 1 s retry.
    s_check (t, s_await_connected (bridge, idle, 1, 1300) < 0
             && s_status (bridge).connected == 0, behaviour);
    s_stop (&bridge, &to_bridge);
}

static void
s_test_redis (test_t *t, rtws_config_t *config, zsock_t *router, zsock_t *gateway,
              zpoller_t *idle)
{
    test_redis_t redis;
    memset (&redis, 0, sizeof redis);
    if (!s_find_redis_server (redis.server, sizeof redis.server)) {
        printf ("bridge_test: SKIP: redis-server not found, Redis engine cases not run\n");
        return;
    }
    snprintf (redis.unix_path, sizeof redis.unix_path, "/tmp/rtws-bridge-test-%d.sock",
              (int) getpid ());
    char url [128];
    config->presence_ttl = 60;

    //  Redis down at start-up: the bridge runs, says not connected, keeps
    //  what is published, and delivers it once Redis is there. Another
    //  process may take the free port before redis-server binds it: then
    //  all of this again on another port.
    zsock_t *to_bridge = NULL;
    zactor_t *bridge = NULL;
    int64_t start = 0;
    bool started = false;
    for (int attempt = 0; attempt < 3 && !started; attempt++) {
        redis.port = s_free_port ();
        assert (redis.port > 0);
        snprintf (url, sizeof url, "redis://127.0.0.1:%d", redis.port);
        free (config->redis_url);
        config->redis_url = strdup (url);
        bridge = s_launch (config, &to_bridge);
        test_status_t status = s_status (bridge);
        s_check (t, streq (status.engine, "redis") && status.connected == 0,
                 "Redis down at start-up: STATUS redis, not connected");
        zsock_send (to_bridge, "ss", "SUBSCRIBE", "sync");
        zsock_send (to_bridge, "sss8s", "PUBLISH", "sync", "{\"early\":1}", (uint64_t) 1, "ref");
        start = zclock_mono ();
        while (s_status (bridge).outbox != 1 && zclock_mono () - start < TEST_TIMEOUT)
            s_wait (idle, 5);
        s_check (t, s_status (bridge).outbox == 1,
                 "a PUBLISH before Redis is up waits in the outbox");
        started = s_redis_start (&redis, idle);
        if (!started) {
            printf ("bridge_test: redis-server did not start on port %d\n", redis.port);
            s_stop (&bridge, &to_bridge);
            s_redis_kill (&redis);
            //  What that bridge sent the router (its early PUBLISH, had
            //  Redis come up late) is not the next attempt's.
            zmsg_t *stale;
            while ((zsock_events (router) & ZMQ_POLLIN) && (stale = zmsg_recv (router)))
                zmsg_destroy (&stale);
        }
    }
    if (!started) {
        s_check (t, false, "redis-server starts");
        return;
    }
    s_expect_within (t, router, 12000, "once Redis is up the early PUBLISH is delivered",
                     "sync", "{\"early\":1}");
    if (t->verbose)
        printf ("bridge_test: connected %" PRId64 " ms after start\n", zclock_mono () - start);
    test_status_t status = s_status (bridge);
    s_check (t, status.connected == 1 && status.outbox == 0 && status.non_json == 0,
             "STATUS: connected 1, outbox 0, nothing dropped");

    redisContext *c = s_client (&redis);
    assert (c);
    s_test_redis_rooms (t, bridge, to_bridge, router, c, &redis, idle);
    test_stats_t stats;
    s_check (t, s_await_stats (gateway, 1, 0, 1, 2500, &stats) && streq (stats.engine, "redis")
             && stats.too_big == 1 && stats.non_json == s_status (bridge).non_json
             && stats.non_json >= 6 && stats.bad_channel == 0,
             "STATS to the gateway: redis, connected, the dropped payloads by reason");
    s_test_redis_presence (t, bridge, to_bridge, router, c, idle);
    s_test_redis_client_kill (t, bridge, to_bridge, router, c, idle);
    //  A graceful stop still sends what the last messages asked for, even
    //  a PUBLISH held behind 2000 unconfirmed SUBSCRIBEs.
    redisContext *subscriber = s_client (&redis);
    assert (subscriber);
    freeReplyObject (s_run (subscriber, (const char *[]) { "SUBSCRIBE", "room:g1999", NULL }));
    for (int i = 0; i < 2000; i++) {
        char room [16];
        snprintf (room, sizeof room, "g%d", i);
        zsock_send (to_bridge, "ss", "SUBSCRIBE", room);
    }
    zsock_send (to_bridge, "sss8s", "PUBLISH", "g1999", "{\"last\":1}", (uint64_t) 7, "ref");
    s_stop (&bridge, &to_bridge);
    s_check (t, s_subscriber_got (subscriber, "room:g1999", "{\"last\":1}"),
             "a PUBLISH held when $TERM comes still reaches Redis before the bridge stops");
    redisFree (subscriber);
    //  Whether our own copy came back before the stop is a race with the
    //  PUBLISH reply; if it did, it is that message and nothing else.
    zsock_set_rcvtimeo (router, 0);
    zmsg_t *own = zmsg_recv (router);
    zsock_set_rcvtimeo (router, TEST_TIMEOUT);
    char *own_room = own ? zmsg_popstr (own) : NULL;
    free (own_room);
    own_room = own ? zmsg_popstr (own) : NULL;
    s_check (t, !own || (own_room && streq (own_room, "g1999")),
             "the router got nothing else before the stop");
    free (own_room);
    zmsg_destroy (&own);
    s_check (t, s_await_numsub (c, idle, "room:x", 0), "a stopped bridge leaves no subscription");
    redisFree (c);

    s_test_redis_outage (t, config, router, gateway, &redis, idle);

    //  PRESENCE_TTL=1: a key without KEEP is gone within about a second.
    config->presence_ttl = 1;
    bridge = s_start (t, config, router, &to_bridge);
    c = s_client (&redis);
    assert (c);
    start = zclock_mono ();
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "hal", "r1");
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "ivy", "r1");
    s_sync (t, to_bridge, router, "UP hal and ivy with PRESENCE_TTL=1");
    s_check (t, s_pttl (c, "rt:presence:user:hal:r1") <= 1000, "the key's TTL is 1 s");
    int64_t gone_after = -1;
    bool ivy_stayed = true;
    while (zclock_mono () - start < 2500 && gone_after < 0) {
        s_wait (idle, 100);
        zsock_send (to_bridge, "sss", "PRESENCE_KEEP", "ivy", "r1");
        if (s_exists (c, "rt:presence:user:ivy:r1") != 1)
            ivy_stayed = false;
        if (s_exists (c, "rt:presence:user:hal:r1") == 0)
            gone_after = zclock_mono () - start;
    }
    if (t->verbose)
        printf ("bridge_test: Redis key without KEEP gone after %" PRId64 " ms\n", gone_after);
    s_check (t, gone_after >= 800, "a key without KEEP expires after about PRESENCE_TTL");
    s_check (t, s_exists (c, "rt:presence:nodes:hal:r1") == 0, "so does its node set");
    s_check (t, ivy_stayed, "a key refreshed by KEEP stays");

    //  DOWNs that wait for Redis longer than PRESENCE_TTL have nothing left
    //  to delete: they are forgotten, so a long outage holds few of them.
    redisFree (c);
    s_redis_kill (&redis);
    s_check (t, s_await_connected (bridge, idle, 0, TEST_TIMEOUT) >= 0, "Redis gone again");
    for (int i = 0; i < 50; i++) {
        char user [16];
        snprintf (user, sizeof user, "u%d", i);
        zsock_send (to_bridge, "sss", "PRESENCE_UP", user, "r1");
        zsock_send (to_bridge, "sss", "PRESENCE_DOWN", user, "r1");
    }
    //  Time is the behaviour here: one TTL and one sweep interval.
    s_wait (idle, 2100);
    s_check (t, s_redis_start (&redis, idle), "redis-server restarts");
    s_check (t, s_await_connected (bridge, idle, 1, 12000) >= 0, "the bridge reconnects");
    s_sync (t, to_bridge, router, "a sync after reconnecting");
    c = s_client (&redis);
    assert (c);
    long long scripts = s_calls (c, "evalsha");
    if (t->verbose)
        printf ("bridge_test: presence scripts after the long outage: %lld\n", scripts);
    s_check (t, scripts == 2, "after the outage only hal and ivy are re-asserted; "
             "the 50 DOWNs older than PRESENCE_TTL were forgotten");
    s_stop (&bridge, &to_bridge);
    config->presence_ttl = 60;

    //  A unix socket URL.
    char unix_url [128];
    snprintf (unix_url, sizeof unix_url, "unix://%s", redis.unix_path);
    free (config->redis_url);
    config->redis_url = strdup (unix_url);
    bridge = s_start (t, config, router, &to_bridge);
    s_check (t, s_status (bridge).connected == 1, "unix:///path connects");
    s_stop (&bridge, &to_bridge);

    //  AUTH and SELECT: errors are a failed connection, never a crash.
    freeReplyObject (s_run (c, (const char *[]) { "CONFIG", "SET", "requirepass", "s3cret", NULL }));
    snprintf (url, sizeof url, "redis://:wrong@127.0.0.1:%d/3", redis.port);
    s_test_redis_refused (t, config, url, idle, "a wrong password: not connected, still answering");
    snprintf (url, sizeof url, "redis://127.0.0.1:%d/3", redis.port);
    s_test_redis_refused (t, config, url, idle, "no password where one is needed: not connected");
    snprintf (url, sizeof url, "redis://:s3cret@127.0.0.1:%d/99", redis.port);
    s_test_redis_refused (t, config, url, idle, "a db out of range: not connected");
    snprintf (url, sizeof url, "redis://:s3cret@127.0.0.1:%d/3", redis.port);
    free (config->redis_url);
    config->redis_url = strdup (url);
    bridge = s_start (t, config, router, &to_bridge);
    zsock_send (to_bridge, "sss", "PRESENCE_UP", "gus", "r1");
    s_sync (t, to_bridge, router, "PRESENCE_UP gus with a password and db 3");
    freeReplyObject (s_run (c, (const char *[]) { "SELECT", "3", NULL }));
    s_check (t, s_exists (c, "rt:presence:user:gus:r1") == 1, "the right password: the key is in db 3");
    freeReplyObject (s_run (c, (const char *[]) { "SELECT", "0", NULL }));
    s_check (t, s_exists (c, "rt:presence:user:gus:r1") == 0, "and not in db 0");
    s_stop (&bridge, &to_bridge);

    redisFree (c);
    s_redis_kill (&redis);
    unlink (redis.unix_path);
    free (config->redis_url);
    config->redis_url = NULL;
}

int
bridge_test (bool verbose)
{
    test_t test = { verbose, 0, 0 };
    test_t *t = &test;
    if (verbose)
        rtws_log_set_level (RTWS_LOG_DEBUG);
    else
        rtws_log_set_level (RTWS_LOG_ERROR);

    rtws_config_t *config = rtws_config_new ();
    assert (config);

    //  Play the router and the gateway: bind the endpoints the bridge pushes to.
    zsock_t *router = zsock_new_pull ("@" RTWS_EP_ROUTER);
    zsock_t *gateway = zsock_new_pull ("@" RTWS_EP_GATEWAY);
    zpoller_t *idle = zpoller_new (NULL);
    assert (router && gateway && idle);
    zsock_set_rcvtimeo (router, TEST_TIMEOUT);
    zsock_set_rcvtimeo (gateway, TEST_TIMEOUT);

    int64_t start = zclock_mono ();
    s_test_memory (t, config, router, gateway, idle);
    int64_t memory_done = zclock_mono ();
    s_test_redis (t, config, router, gateway, idle);
    if (verbose)
        printf ("bridge_test: memory engine %" PRId64 " ms, Redis engine %" PRId64 " ms\n",
                memory_done - start, zclock_mono () - memory_done);

    zsock_set_rcvtimeo (router, 0);
    zmsg_t *stray = zmsg_recv (router);
    s_check (t, stray == NULL, "nothing unexpected left on the router socket");
    zmsg_destroy (&stray);
    s_check (t, s_flush_stats (gateway), "nothing unexpected left on the gateway socket");
    zpoller_destroy (&idle);
    zsock_destroy (&gateway);
    zsock_destroy (&router);
    rtws_config_destroy (&config);

    printf ("bridge_test: %s (%d failure%s)\n", t->failures ? "FAILED" : "OK",
            t->failures, t->failures == 1 ? "" : "s");
    return t->failures;
}
