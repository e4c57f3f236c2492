/*  bridge.c - the bridge actor: the node's one door to the shared world of
    rooms and presence. It is the only code that will ever talk to Redis;
    today it runs the memory engine (one node, no Redis) behind exactly the
    messages the Redis engine will use.

    Message vocabulary (docs/ARCHITECTURE.md; pictures are zsock_send pictures):

    PULL bound at RTWS_EP_BRIDGE (router and presence connect PUSH to it)
      in  (router)   SUBSCRIBE room            "ss"   first local member joined room
      in  (router)   UNSUBSCRIBE room          "ss"   last local member left room
      in  (router)   PUBLISH room payload conn ref
                                               "sss8s" publish payload to room on every node
      in  (presence) PRESENCE_UP user room     "sss"  first local connection of user in room
      in  (presence) PRESENCE_KEEP user room   "sss"  still here (refresh the TTL)
      in  (presence) PRESENCE_DOWN user room   "sss"  last local connection of user in room
                                                      closed
    PUSH connected to RTWS_EP_ROUTER
      out (router)   MESSAGE room payload      "sss"  only for subscribed rooms, in publish
                                                      order, payload verbatim
    pipe (owner: rtwsd.c or a test)
      in             $TERM                     "s"    stop and free everything
      in             PRESENT user room         "sss"  reply "i": 1 when present, else 0
      in             SUBSCRIBED room           "ss"   reply "i": 1 when subscribed, else 0

    No message carries a pointer ('p'), so nothing changes owner between threads.

    Engines. Every message above maps to one call of an engine_t; the bridge
    itself only decodes, checks bounds and encodes. The memory engine (no
    REDIS_URL) loops PUBLISH back as MESSAGE when the room is subscribed and
    keeps presence as keys with an expiry, purged by a timer like Redis TTLs.
    The Redis engine (next issue) implements the same calls with
    room:{room} Pub/Sub and rt:presence:user:{user}:{room} SET EX / DEL.

    Flow control: MESSAGE to the router never blocks (sndtimeo 0). The router
    may block sending to us, and the two of us form a cycle; as long as this
    end never blocks the cycle cannot deadlock. Past BRIDGE_ROUTER_HWM waiting
    MESSAGEs the router is wedged and MESSAGEs are dropped, counted and logged
    once per episode, as Redis itself does to a slow Pub/Sub subscriber.

    Bounds: subscribed rooms are bounded by the router's rooms (one per room
    with a local member) and presence keys by the presence actor's pairs plus
    those awaiting expiry, at most PRESENCE_TTL old; both are bounded by the
    gateway's connection limit. Room names outside 1 .. RTWS_ROOM_MAX bytes or
    holding the key separator, and user ids over RTWS_USER_MAX bytes, are
    logged and dropped (the router and presence check them first).

    Set-up failure: only a second bridge in one process (the endpoint already
    bound) can make set-up fail, a bug in the owner. The actor logs why and
    returns without signalling; czmq's thread shim signals on our behalf when
    the handler returns, so zactor_new does not hang.

    Runs on its own thread (zactor); every field of bridge_t and of the engine
    state belongs to it.
*/

#include "bridge.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "rtws.h"

//  Inbox depth; when it is full the router waits (a bounded time) and
//  presence sheds.
#define BRIDGE_INBOX_HWM        100000
//  MESSAGEs the router may fall behind before the bridge sheds them.
#define BRIDGE_ROUTER_HWM       100000
//  How often the memory engine purges expired presence keys, ms.
#define BRIDGE_PURGE_INTERVAL   1000
//  Separates user and room in a presence key; room names cannot contain it.
#define BRIDGE_KEY_SEP          '\x1f'
//  Longest presence key: user, separator, room, NUL.
#define BRIDGE_KEY_MAX          (RTWS_USER_MAX + 1 + RTWS_ROOM_MAX + 1)

typedef struct _bridge_t bridge_t;

//  What an engine does with each bridge message. Every call runs on the
//  bridge thread. An engine hands a frame published to a subscribed room back
//  with s_bridge_deliver (); it never sends on the bridge's sockets itself.
typedef struct {
    const char *name;                                       //  for logs
    void *(*create) (bridge_t *bridge, const rtws_config_t *config);
    void (*destroy) (void **self_p);
    void (*subscribe) (void *self, const char *room);
    void (*unsubscribe) (void *self, const char *room);
    //  Takes the payload frame, published verbatim.
    void (*publish) (void *self, const char *room, zframe_t **payload_p);
    void (*presence_up) (void *self, const char *user, const char *room);
    void (*presence_keep) (void *self, const char *user, const char *room);
    void (*presence_down) (void *self, const char *user, const char *room);
    //  Diagnostics for the pipe (tests).
    bool (*present) (void *self, const char *user, const char *room);
    bool (*subscribed) (void *self, const char *room);
    //  zclock_mono () time at which timer () wants to run next.
    int64_t (*next_timer) (void *self);
    void (*timer) (void *self, int64_t now);
} engine_t;

struct _bridge_t {
    const rtws_config_t *config;    //  read-only, outlives the actor
    zsock_t *pipe;                  //  to our owner, not ours to destroy
    zsock_t *inbox;                 //  PULL bound at RTWS_EP_BRIDGE
    zsock_t *router;                //  PUSH connected to RTWS_EP_ROUTER
    zpoller_t *poller;              //  pipe and inbox
    const engine_t *engine;         //  the engine's calls
    void *state;                    //  the engine's own state, owned
    uint64_t dropped;               //  MESSAGEs shed in the current overload
    bool terminated;                //  $TERM received
};


//  --------------------------------------------------------------------------
//  MESSAGE to the router: the one way frames come back from an engine.

static void
s_bridge_deliver (bridge_t *self, const char *room, zframe_t **payload_p)
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

static void
s_memory_publish (void *state, const char *room, zframe_t **payload_p)
{
    memory_t *self = (memory_t *) state;
    //  This node is the whole world: a room nobody here serves has no reader.
    if (zhashx_lookup (self->rooms, room))
        s_bridge_deliver (self->bridge, room, payload_p);
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

static const engine_t s_memory_engine = {
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
    .next_timer = s_memory_next_timer,
    .timer = s_memory_timer
};

static const engine_t *
s_engine_for (const rtws_config_t *config)
{
    if (config->redis_url && *config->redis_url)
        //  The Redis engine is the next issue; until it lands a node given
        //  REDIS_URL still serves its own clients. The URL may hold a
        //  password, so it is not logged.
        log_warn ("bridge", "REDIS_URL is set but the Redis engine is not built yet: "
                  "running the memory engine (this node sees no other node)");
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

    self->inbox = zsock_new (ZMQ_PULL);
    if (self->inbox) {
        zsock_set_rcvhwm (self->inbox, BRIDGE_INBOX_HWM);
        zsock_set_linger (self->inbox, 0);
        if (zsock_bind (self->inbox, "%s", RTWS_EP_BRIDGE) == -1) {
            log_error ("bridge", "cannot bind %s: %s", RTWS_EP_BRIDGE, zmq_strerror (errno));
            zsock_destroy (&self->inbox);
        }
    }
    if (!self->inbox) {
        s_bridge_destroy (&self);
        return NULL;
    }
    self->router = zsock_new (ZMQ_PUSH);
    if (self->router) {
        zsock_set_sndhwm (self->router, BRIDGE_ROUTER_HWM);
        zsock_set_sndtimeo (self->router, 0);
        zsock_set_linger (self->router, 0);
        if (zsock_connect (self->router, "%s", RTWS_EP_ROUTER) == -1) {
            log_error ("bridge", "cannot connect %s: %s", RTWS_EP_ROUTER, zmq_strerror (errno));
            zsock_destroy (&self->router);
        }
    }
    self->poller = self->router ? zpoller_new (self->pipe, self->inbox, NULL) : NULL;
    if (!self->poller) {
        s_bridge_destroy (&self);
        return NULL;
    }
    //  Only $TERM stops the actor; a SIGINT is the owner's to turn into one.
    zpoller_set_nonstop (self->poller, true);

    const engine_t *engine = s_engine_for (config);
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
        zpoller_destroy (&self->poller);
        if (self->inbox)
            //  Unbind explicitly: closing alone frees the endpoint later, on
            //  libzmq's reaper thread, and a restarted bridge (or the next
            //  test) must be able to bind it as soon as zactor_destroy returns.
            zsock_unbind (self->inbox, "%s", RTWS_EP_BRIDGE);
        zsock_destroy (&self->inbox);
        zsock_destroy (&self->router);
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
//  so a presence key splits back into one (user, room) only.
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

static void
s_bridge_publish (bridge_t *self, zmsg_t *msg)
{
    //  PUBLISH room payload conn ref: conn and ref name the sender, for a
    //  REFUSED answer when the engine cannot take the message.
    if (zmsg_size (msg) != 5) {
        s_malformed ("PUBLISH");
        return;
    }
    zframe_t *verb = zmsg_pop (msg);
    zframe_destroy (&verb);
    char *room = zmsg_popstr (msg);
    zframe_t *payload = zmsg_pop (msg);
    if (!s_room_ok (room))
        log_warn ("bridge", "PUBLISH to a bad room name (%zu bytes): dropped", strlen (room));
    else
        self->engine->publish (self->state, room, &payload);
    zframe_destroy (&payload);
    free (room);
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
s_bridge_recv_inbox (bridge_t *self)
{
    zmsg_t *msg = zmsg_recv (self->inbox);
    if (!msg)
        return;                 //  Interrupted; the poller reports termination
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
    zmsg_destroy (&msg);
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
    const rtws_config_t *config = (const rtws_config_t *) args;
    assert (config);
    bridge_t *self = s_bridge_new (pipe, config);
    if (!self)
        return;                 //  Said why; the zactor shim signals for us
    zsock_signal (pipe, 0);

    while (!self->terminated) {
        int64_t now = zclock_mono ();
        if (now >= self->engine->next_timer (self->state))
            self->engine->timer (self->state, now);
        int64_t timeout = self->engine->next_timer (self->state) - now;
        if (timeout < 0)
            timeout = 0;
        void *which = zpoller_wait (self->poller, timeout > INT_MAX ? INT_MAX : (int) timeout);
        if (which == self->pipe)
            s_bridge_recv_pipe (self);
        else
        if (which == self->inbox)
            s_bridge_recv_inbox (self);
        else
        if (zpoller_terminated (self->poller))
            break;              //  Context terminated under us
    }
    s_bridge_destroy (&self);
}


//  --------------------------------------------------------------------------
//  Self test: the bridge alone; the test plays the router and presence.

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

//  A PUBLISH to the always-subscribed "sync" room comes back behind every
//  MESSAGE the bridge sent before it, and after every message the test sent
//  before it was handled: it proves nothing else was emitted, and makes the
//  next pipe query see the effect of everything before.
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

//  Starts a bridge and the test's PUSH into it, and subscribes "sync".
static zactor_t *
s_start (test_t *t, rtws_config_t *config, zsock_t *router, zsock_t **to_bridge_p)
{
    zactor_t *bridge = zactor_new (bridge_actor, config);
    assert (bridge);
    zsock_set_rcvtimeo (bridge, TEST_TIMEOUT);
    //  One PUSH plays both router and presence so the test controls their
    //  interleaving (the real ones race each other, which is fine).
    *to_bridge_p = zsock_new_push (">" RTWS_EP_BRIDGE);
    assert (*to_bridge_p);
    zsock_set_sndtimeo (*to_bridge_p, TEST_TIMEOUT);
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

//  Waits ms on a poller with nothing to read: the test's clock, not a sleep
//  for things to settle.
static void
s_wait (zpoller_t *idle, int ms)
{
    zpoller_wait (idle, ms);
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
    config->presence_ttl = 60;

    //  Play the router: bind the endpoint the bridge pushes MESSAGEs to.
    zsock_t *router = zsock_new_pull ("@" RTWS_EP_ROUTER);
    assert (router);
    zsock_set_rcvtimeo (router, TEST_TIMEOUT);
    zsock_t *to_bridge = NULL;
    zactor_t *bridge = s_start (t, config, router, &to_bridge);

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
    zpoller_t *idle = zpoller_new (NULL);
    assert (idle);
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
    if (verbose)
        printf ("bridge_test: key without KEEP gone after %" PRId64 " ms\n", gone_after);
    s_check (t, gone_after >= 0, "a key without KEEP expires after PRESENCE_TTL");
    s_check (t, gone_after < 0 || gone_after >= 900, "a key without KEEP lives about PRESENCE_TTL");
    s_check (t, erin_stayed, "a key refreshed by KEEP outlives two TTLs");
    s_check (t, s_ask (bridge, "PRESENT", "dave", "r1") == 0, "an expired key stays gone");
    zpoller_destroy (&idle);
    s_stop (&bridge, &to_bridge);

    //  With REDIS_URL set, the memory engine still runs until the Redis one lands.
    free (config->redis_url);
    config->redis_url = strdup ("redis://127.0.0.1:6379");
    bridge = s_start (t, config, router, &to_bridge);
    zsock_send (to_bridge, "ss", "SUBSCRIBE", "a");
    zsock_send (to_bridge, "sss8s", "PUBLISH", "a", "{\"redis\":false}", (uint64_t) 1, "ref");
    s_expect (t, router, "with REDIS_URL set the memory engine loops back",
              "a", "{\"redis\":false}");
    s_stop (&bridge, &to_bridge);

    zsock_set_rcvtimeo (router, 0);
    zmsg_t *stray = zmsg_recv (router);
    s_check (t, stray == NULL, "nothing unexpected left on the router socket");
    zmsg_destroy (&stray);
    zsock_destroy (&router);
    rtws_config_destroy (&config);

    printf ("bridge_test: %s (%d failure%s)\n", t->failures ? "FAILED" : "OK",
            t->failures, t->failures == 1 ? "" : "s");
    return t->failures;
}
