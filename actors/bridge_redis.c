/*  bridge_redis.c - the bridge's Redis engine: several rtwsd nodes behave as
    one server through one Redis (REDIS_URL set).

    Part of the bridge actor (see the vocabulary at the top of bridge.c):
    every function here runs on the bridge thread, and only the bridge
    includes hiredis. The bridge calls us through bridge_engine_t; we answer
    through bridge_deliver (MESSAGE) and bridge_refuse (REFUSED).

    Redis layout (docs/PROTOCOL.md section 4)

      room:{room}                       Pub/Sub channel; the payload is the
                                        exact JSON text clients receive.
      rt:presence:user:{user}:{room}    string "1", PX = the latest expiry in
                                        the node set below (PRESENCE_TTL when
                                        every node has the same setting);
                                        seed-compatible: present exactly while
                                        some node holds a live connection of
                                        user in room.
      rt:presence:nodes:{user}:{room}   sorted set: member = node id (32 hex,
                                        random per bridge start), score = that
                                        node's expiry in ms (Redis TIME); same
                                        PX as the key.

    Both presence keys are only written by two Lua scripts (EVALSHA, loaded
    on every connect), so nodes never race each other between a read and a
    write:
      UP/KEEP  ZADD nodes now+ttl node; ZREMRANGEBYSCORE nodes -inf now;
               PEXPIRE nodes and SET key "1" PX (highest score - now)
      DOWN     ZREM nodes node; ZREMRANGEBYSCORE nodes -inf now;
               none left: DEL key nodes; else PEXPIRE/SET PX as above
    A node that dies without DOWN stays in the set until its score passes
    (at most PRESENCE_TTL), and both keys expire with the last live score,
    so nothing of a SIGKILLed node outlives PRESENCE_TTL. The two keys of a
    pair are not in one Redis Cluster slot (hiredis here has no cluster
    client anyway), and a user id holding ":" makes the seed's key name
    ambiguous; both are the seed's layout, kept as it is.

    Connections. A connection that has SUBSCRIBEd refuses other commands, so
    there are two "links": sub (SUBSCRIBE/UNSUBSCRIBE, reads messages) and
    cmd (PUBLISH, EVALSHA). Both are hiredis async contexts driven by the
    bridge's own zmq_poll: our ev hooks only record whether hiredis wants to
    read or write, poll_fill turns that into raw-fd poll items beside the
    bridge's sockets, poll_handle calls redisAsyncHandleRead/Write. Nothing
    here ever waits: a slow or stopped Redis only delays Redis work (one
    exception: a host name is resolved by hiredis with a blocking
    getaddrinfo when a link connects; an IP address or unix socket is not).
    redisAsyncHandleRead parses and dispatches every complete reply it has
    read before it returns, so nothing stays buffered in the reader between
    two polls. hiredis frees a context inside those calls when the
    connection fails; the ev.cleanup hook tells us, and we act on the loss
    only after the hiredis call has returned.

    A link connects, then sends AUTH (when the URL has a password), SELECT db
    (cmd only: Pub/Sub ignores db numbers), SCRIPT LOAD twice (cmd only) and
    PING, pipelined. It is ready when PING answers; an error reply (bad
    password, db out of range, a loading Redis) is logged and counts as a
    failed connection, as does not being ready within REDIS_CONNECT_TIMEOUT.
    A failed or lost link reconnects after 1 s, 2 s, 4 s, 8 s, then every
    10 s, starting again at 1 s once it was ready. "connected" (STATUS, and
    the STATS the bridge sends the gateway for /readyz) is one place: both
    links ready. Each time it becomes true again after having been true
    counts as one reconnect.

    Rooms. rooms is the set the router asked for (SUBSCRIBE on the first
    local member, UNSUBSCRIBE after the last, in order). The sub link sends
    each change while it is ready and every room in the set when it becomes
    ready, so after any outage Redis again holds exactly the rooms with local
    members. MESSAGEs go to the router only for rooms in the set, so a
    message in flight across an UNSUBSCRIBE is not delivered.

    The hold. SUBSCRIBE travels on sub and PUBLISH on cmd; Redis orders
    commands per connection only, so a member's first PUBLISH could overtake
    its room's SUBSCRIBE and the sender would miss its own message. Each
    PUBLISH therefore waits in the outbox, in order, until every SUBSCRIBE
    sent before it arrived is confirmed (Redis confirms them in order, so
    two counters suffice), and after a sub reconnect until every room is
    subscribed again; a confirmation releases the PUBLISHes held behind it.
    Counting per PUBLISH rather than "none unconfirmed" keeps a steady stream
    of joins from holding all PUBLISHes back. PUBLISHes also wait while
    either link is down: a member's own messages go out only when its node
    can hear them too.

    Outbox. PUBLISHes waiting plus PUBLISHes sent and unanswered are bounded
    by REDIS_OUTBOX_SIZE (the STATUS depth); past it the sender gets REFUSED.
    When cmd is lost, PUBLISHes sent but unanswered go back to the outbox
    front in their order and are sent again after reconnecting: Redis may
    have executed some of them before the loss, so delivery is at-least-once
    for that window only, exactly-once otherwise.

    Presence. pairs holds this node's view of each (user, room): up or down
    (down only until Redis has answered the DOWN). A change queues the pair
    once; at most one script per pair is in flight (a change meanwhile goes
    when it answers), and at most REDIS_OUTBOX_SIZE scripts in all. When cmd
    becomes ready every pair is queued: UP for each local (user, room), DOWN
    for those that went away while Redis could not hear it. A DOWN still
    waiting PRESENCE_TTL after the last moment a script of ours for that
    pair could have run has nothing left to delete and is forgotten, so a
    long outage holds the DOWNs of one PRESENCE_TTL at most.

    Bounds on what comes from outside: payloads over REDIS_PAYLOAD_MAX,
    channels that are not room:{valid room}, and payloads that are not one
    JSON object are dropped, counted and logged at most once per
    REDIS_LOG_INTERVAL (with how many were not logged). Unexpected reply
    shapes are logged the same way and otherwise ignored. hiredis reads a
    whole reply before we see it, so the largest payload it buffers is
    Redis's own (proto-max-bulk-len, and the server drops a subscriber
    whose output passes client-output-buffer-limit pubsub, 32 MB by
    default). Subscription commands unanswered past REDIS_SUB_BACKLOG_MAX
    plus the rooms fail the sub link (a stopped Redis cannot make them pile
    up without end); it reconnects and subscribes the rooms again. The
    password is never logged: logs name Redis as host:port db N.
*/

#include "bridge_engine.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "channel.h"
#include "codec.h"
#include "log.h"
#include "rtws.h"

//  Backoff between connection attempts, ms: doubles from MIN up to MAX.
#define REDIS_BACKOFF_MIN       1000
#define REDIS_BACKOFF_MAX       10000
//  Connect plus handshake must be done within this, ms.
#define REDIS_CONNECT_TIMEOUT   5000
//  Largest payload forwarded from Redis (a MESSAGE to the router).
#define REDIS_PAYLOAD_MAX       CHANNEL_PAYLOAD_MAX
//  At most one line per kind of dropped input in this many ms.
#define REDIS_LOG_INTERVAL      10000
//  Timer when nothing is due, ms: the heartbeat of reconnects and sweeps.
#define REDIS_IDLE_TICK         1000
//  Subscription commands unanswered beyond the rooms themselves before the
//  sub link counts as stuck.
#define REDIS_SUB_BACKLOG_MAX   100000
//  Room channels are "room:" + the room name.
#define REDIS_CHANNEL_PREFIX    CHANNEL_PREFIX
#define REDIS_CHANNEL_MAX       (5 + RTWS_ROOM_MAX + 1)
//  Separates user and room in the pairs map; room names cannot contain it.
#define REDIS_PAIR_SEP          '\x1f'
#define REDIS_PAIR_MAX          (RTWS_USER_MAX + 1 + RTWS_ROOM_MAX + 1)
//  Longest presence key: prefix, user, ":", room, NUL.
#define REDIS_KEY_MAX           (32 + RTWS_USER_MAX + 1 + RTWS_ROOM_MAX + 1)

const char bridge_redis_script_up [] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')\n"
    "local left = tonumber(last[2]) - now\n"
    "redis.call('PEXPIRE', KEYS[2], left)\n"
    "redis.call('SET', KEYS[1], '1', 'PX', left)\n"
    "return 1\n";

const char bridge_redis_script_down [] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "if redis.call('ZCARD', KEYS[2]) == 0 then\n"
    "  redis.call('DEL', KEYS[1], KEYS[2])\n"
    "  return 0\n"
    "end\n"
    "local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')\n"
    "local left = tonumber(last[2]) - now\n"
    "redis.call('PEXPIRE', KEYS[2], left)\n"
    "redis.call('SET', KEYS[1], '1', 'PX', left)\n"
    "return 1\n";

typedef struct _redis_t redis_t;

typedef enum {
    LINK_DOWN,                  //  waiting for retry_at
    LINK_CONNECTING,            //  connect and handshake in progress
    LINK_READY                  //  handshake answered
} link_state_t;

//  The handshake's steps, in the order they are sent.
#define LINK_STEPS_MAX  5

//  One connection to Redis and its reconnect state.
typedef struct {
    redis_t *engine;            //  the engine this link belongs to
    const char *role;           //  "sub" or "cmd", for logs
    redisAsyncContext *ac;      //  NULL while down; hiredis may free it (ev.cleanup)
    link_state_t state;
    bool want_read;             //  hiredis asked to be polled for input
    bool want_write;            //  hiredis has output waiting
    bool failed;                //  a reply condemned the link: free it after the
                                //  hiredis call that delivered the reply returns
    const char *steps [LINK_STEPS_MAX];  //  handshake commands sent, for logs
    int steps_sent;             //  handshake commands sent
    int steps_done;             //  handshake replies received
    int64_t retry_at;           //  LINK_DOWN: next attempt (zclock_mono ms)
    int64_t deadline;           //  LINK_CONNECTING: fail if not ready by then
    int backoff;                //  ms to wait after the next failure
    int item;                   //  index in the poll items, -1 when not polled
    char reason [160];          //  why the current connection failed, for the log
} link_t;

//  A log line that may come from outside input: at most one per interval.
typedef struct {
    int64_t next;               //  zclock_mono () before which lines are held back
    uint64_t held;              //  lines held back since the last one written
} ratelog_t;

//  A PUBLISH accepted from the router, waiting or in flight.
typedef struct {
    char channel [REDIS_CHANNEL_MAX];   //  "room:{room}"
    zframe_t *payload;          //  the JSON text, verbatim
    uint64_t after;             //  SUBSCRIBEs sent before it: it waits for them
} pub_t;

//  This node's presence of one user in one room, as Redis must learn it.
typedef struct {
    char *user;
    char *room;
    bool up;                    //  a local connection of user is in room
    bool queued;                //  in the engine's queue, waiting to be sent
    bool inflight;              //  a script for this pair is unanswered
    bool dirty;                 //  changed while the script was in flight
    void *handle;               //  its place in the queue while queued
    int64_t touched;            //  last moment a script of ours for it could
                                //  have run: our entry in Redis is gone
                                //  PRESENCE_TTL after that at the latest
} pair_t;

//  A command sent on the cmd link and not yet answered.
typedef struct {
    pub_t *pub;                 //  a PUBLISH (owned), or NULL
    pair_t *pair;               //  a presence script (pair owned by pairs), or NULL
} cmd_t;

struct _redis_t {
    bridge_t *bridge;           //  where MESSAGEs and REFUSEDs go
    rtws_redis_url_t url;       //  where Redis is (holds the password)
    char where [320];           //  the URL without password, for logs
    char node_id [33];          //  random per start: member of the node sets
    char ttl_ms [24];           //  PRESENCE_TTL in ms, as script argument
    int64_t ttl;                //  PRESENCE_TTL in ms
    size_t outbox_max;          //  REDIS_OUTBOX_SIZE
    link_t sub;                 //  SUBSCRIBE/UNSUBSCRIBE, messages in
    link_t cmd;                 //  PUBLISH, presence scripts
    bool was_connected;         //  both links were ready at the last look
    bool ever_connected;        //  both links were ready at some point
    uint64_t reconnects;        //  times both became ready again after a loss
    bool closing;               //  destroy in progress: the links' ends are not news
    zhashx_t *rooms;            //  rooms with a local member; items unused
    uint64_t subs_sent;         //  SUBSCRIBEs sent, over every sub connection
    uint64_t subs_confirmed;    //  of those, confirmed or lost with their connection
    uint64_t subs_floor;        //  subs_sent once this sub connection had every
                                //  room subscribed again: nothing goes out before
    size_t sub_unanswered;      //  SUBSCRIBEs and UNSUBSCRIBEs not yet confirmed
    zlistx_t *outbox;           //  pub_t waiting to be sent, oldest first
    zlistx_t *inflight;         //  cmd_t sent on cmd, oldest first (replies come in order)
    size_t pubs_inflight;       //  PUBLISHes among them
    zhashx_t *pairs;            //  "user\x1froom" -> pair_t (owned)
    zlistx_t *queue;            //  pair_t to send, oldest first (not owned)
    size_t scripts_inflight;    //  presence scripts unanswered
    int64_t next_sweep;         //  zclock_mono () of the next sweep of old DOWNs
    char sha_up [41];           //  SCRIPT LOAD answers on the current cmd link
    char sha_down [41];
    uint64_t non_json;          //  payloads dropped: not one JSON object
    uint64_t bad_channel;       //  messages dropped: channel not room:{valid room}
    uint64_t too_big;           //  payloads dropped: over REDIS_PAYLOAD_MAX
    uint64_t bad_reply;         //  replies of a shape we did not expect
    uint64_t refused;           //  PUBLISHes refused: outbox full
    uint64_t errors;            //  error replies to PUBLISH or a script
    ratelog_t log_non_json, log_bad_channel, log_too_big, log_bad_reply,
              log_refused, log_errors;
};


//  --------------------------------------------------------------------------
//  Small helpers

//  True when a line of this kind may be written now; *held says how many
//  were swallowed since the last.
static bool
s_ratelog (ratelog_t *log, uint64_t *held)
{
    int64_t now = zclock_mono ();
    if (now < log->next) {
        log->held++;
        return false;
    }
    *held = log->held;
    log->held = 0;
    log->next = now + REDIS_LOG_INTERVAL;
    return true;
}

//  Copies text from outside (a channel name, an error reply) into out for
//  a log line: printable ASCII only, cut to fit.
static const char *
s_printable (char *out, size_t size, const char *text, size_t len)
{
    size_t count = len < size - 1 ? len : size - 1;
    for (size_t i = 0; i < count; i++) {
        unsigned char c = (unsigned char) text [i];
        out [i] = c >= 0x20 && c < 0x7f ? (char) c : '?';
    }
    out [count] = '\0';
    return out;
}

static size_t
s_outbox_depth (redis_t *self)
{
    return zlistx_size (self->outbox) + self->pubs_inflight;
}

static void
s_pub_destroy (pub_t **pub_p)
{
    if (*pub_p) {
        zframe_destroy (&(*pub_p)->payload);
        free (*pub_p);
        *pub_p = NULL;
    }
}

static void
s_pub_free (void **item_p)
{
    s_pub_destroy ((pub_t **) item_p);
}

static void
s_cmd_free (void **item_p)
{
    cmd_t *cmd = (cmd_t *) *item_p;
    if (cmd) {
        s_pub_destroy (&cmd->pub);
        free (cmd);
        *item_p = NULL;
    }
}

static void
s_pair_free (void **item_p)
{
    pair_t *pair = (pair_t *) *item_p;
    if (pair) {
        free (pair->user);
        free (pair->room);
        free (pair);
        *item_p = NULL;
    }
}

static void
s_pair_key (char *key, const char *user, const char *room)
{
    snprintf (key, REDIS_PAIR_MAX, "%s%c%s", user, REDIS_PAIR_SEP, room);
}

static bool
s_connected (redis_t *self)
{
    return self->sub.state == LINK_READY && self->cmd.state == LINK_READY;
}

//  Logs the moments the node joins and leaves the cluster as a whole.
static void
s_check_connected (redis_t *self)
{
    bool connected = s_connected (self);
    if (connected && !self->was_connected) {
        log_info ("bridge", "connected to Redis at %s: rooms and presence are shared", self->where);
        if (self->ever_connected)
            self->reconnects++;
        self->ever_connected = true;
    }
    else
    if (!connected && self->was_connected && !self->closing)
        log_warn ("bridge", "not connected to Redis: PUBLISHes wait in the outbox "
                  "(%zu of %zu)", s_outbox_depth (self), self->outbox_max);
    self->was_connected = connected;
}


//  --------------------------------------------------------------------------
//  hiredis event hooks: they only record interest; poll_fill acts on it.

static void
s_ev_add_read (void *privdata)
{
    ((link_t *) privdata)->want_read = true;
}

static void
s_ev_del_read (void *privdata)
{
    ((link_t *) privdata)->want_read = false;
}

static void
s_ev_add_write (void *privdata)
{
    ((link_t *) privdata)->want_write = true;
}

static void
s_ev_del_write (void *privdata)
{
    ((link_t *) privdata)->want_write = false;
}

//  hiredis is freeing the context (inside one of its calls, or ours): keep
//  why, and forget the pointer. The caller acts on the loss afterwards.
static void
s_ev_cleanup (void *privdata)
{
    link_t *link = (link_t *) privdata;
    if (link->ac && link->ac->c.err && !link->reason [0])
        snprintf (link->reason, sizeof link->reason, "%s", link->ac->c.errstr);
    link->ac = NULL;
    link->want_read = false;
    link->want_write = false;
}

static void
s_on_connect (const redisAsyncContext *ac, int status)
{
    link_t *link = (link_t *) ac->data;
    if (status == REDIS_OK)
        log_debug ("bridge", "redis %s link: connected to %s, handshake sent",
                   link->role, link->engine->where);
}


//  --------------------------------------------------------------------------
//  Sending on the cmd link

//  Queues pair to be sent, once; a pair with a script in flight waits for it.
static void
s_pair_changed (redis_t *self, pair_t *pair)
{
    if (pair->inflight)
        pair->dirty = true;
    else
    if (!pair->queued) {
        pair->handle = zlistx_add_end (self->queue, pair);
        pair->queued = true;
    }
}

//  Drops a pair once Redis has heard its DOWN and nothing more is to be said.
static void
s_pair_maybe_forget (redis_t *self, pair_t *pair)
{
    if (!pair->up && !pair->queued && !pair->inflight && !pair->dirty) {
        char key [REDIS_PAIR_MAX];
        s_pair_key (key, pair->user, pair->room);
        zhashx_delete (self->pairs, key);
    }
}

static void s_cmd_reply (redisAsyncContext *ac, void *reply, void *privdata);

//  Hands one command to hiredis and remembers it; -1 condemns the link.
static int
s_cmd_send (redis_t *self, cmd_t *cmd, int argc, const char **argv, const size_t *argvlen)
{
    if (redisAsyncCommandArgv (self->cmd.ac, s_cmd_reply, self, argc, argv, argvlen) != REDIS_OK) {
        snprintf (self->cmd.reason, sizeof self->cmd.reason, "cannot queue a command");
        self->cmd.failed = true;
        return -1;
    }
    zlistx_add_end (self->inflight, cmd);
    return 0;
}

static int
s_send_script (redis_t *self, pair_t *pair)
{
    char key [REDIS_KEY_MAX];
    char nodes [REDIS_KEY_MAX];
    snprintf (key, sizeof key, "rt:presence:user:%s:%s", pair->user, pair->room);
    snprintf (nodes, sizeof nodes, "rt:presence:nodes:%s:%s", pair->user, pair->room);
    const char *argv [] = {
        "EVALSHA", pair->up ? self->sha_up : self->sha_down, "2", key, nodes,
        self->node_id, self->ttl_ms
    };
    size_t argvlen [7];
    for (int i = 0; i < 7; i++)
        argvlen [i] = strlen (argv [i]);
    cmd_t *cmd = (cmd_t *) zmalloc (sizeof (cmd_t));
    cmd->pair = pair;
    if (s_cmd_send (self, cmd, 7, argv, argvlen)) {
        free (cmd);
        return -1;
    }
    pair->inflight = true;
    pair->touched = zclock_mono ();
    self->scripts_inflight++;
    return 0;
}

//  True when the PUBLISH may go: the sub link is ready, and every SUBSCRIBE
//  sent before the PUBLISH arrived (and every room's SUBSCRIBE since this
//  sub connection began) is confirmed.
static bool
s_pub_may_go (redis_t *self, pub_t *pub)
{
    return self->sub.state == LINK_READY && !self->sub.failed
        && self->subs_confirmed >= pub->after && self->subs_confirmed >= self->subs_floor;
}

//  Sends what may go now: queued pairs (up to REDIS_OUTBOX_SIZE scripts
//  unanswered), then the outbox in order as far as the hold allows.
//  Pipelined: hiredis writes it all when the socket is next writable.
static void
s_flush (redis_t *self)
{
    if (self->cmd.state != LINK_READY || !self->cmd.ac || self->cmd.failed)
        return;
    pair_t *pair;
    while (self->scripts_inflight < self->outbox_max
       &&  (pair = (pair_t *) zlistx_first (self->queue))) {
        if (s_send_script (self, pair))
            return;
        zlistx_detach (self->queue, NULL);
        pair->queued = false;
        pair->handle = NULL;
    }
    pub_t *pub;
    while ((pub = (pub_t *) zlistx_first (self->outbox)) && s_pub_may_go (self, pub)) {
        const char *argv [] = {
            "PUBLISH", pub->channel, (const char *) zframe_data (pub->payload)
        };
        size_t argvlen [] = { 7, strlen (pub->channel), zframe_size (pub->payload) };
        cmd_t *cmd = (cmd_t *) zmalloc (sizeof (cmd_t));
        cmd->pub = pub;
        if (s_cmd_send (self, cmd, 3, argv, argvlen)) {
            free (cmd);
            return;
        }
        zlistx_detach (self->outbox, NULL);
        self->pubs_inflight++;
    }
}

//  Replies on the cmd link come in the order of the commands, so each
//  belongs to the oldest command in flight.
static void
s_cmd_reply (redisAsyncContext *ac, void *reply, void *privdata)
{
    (void) ac;
    redis_t *self = (redis_t *) privdata;
    if (!reply)
        return;                 //  The link is going; s_link_lost re-queues
    redisReply *r = (redisReply *) reply;
    cmd_t *cmd = (cmd_t *) zlistx_detach (self->inflight, NULL);
    assert (cmd);               //  hiredis calls us once per command we sent
    uint64_t held;
    bool error = r->type == REDIS_REPLY_ERROR;
    if (error) {
        self->errors++;
        char shown [200];
        if (s_ratelog (&self->log_errors, &held))
            log_error ("bridge", "Redis refused a %s: %s (%" PRIu64 " similar not logged)",
                       cmd->pub ? "PUBLISH" : "presence script",
                       s_printable (shown, sizeof shown, r->str, r->len), held);
    }
    else
    if (r->type != REDIS_REPLY_INTEGER) {
        self->bad_reply++;
        if (s_ratelog (&self->log_bad_reply, &held))
            log_warn ("bridge", "unexpected reply type %d to a %s (%" PRIu64 " similar not logged)",
                      r->type, cmd->pub ? "PUBLISH" : "presence script", held);
    }
    if (cmd->pub)
        self->pubs_inflight--;
    else {
        pair_t *pair = cmd->pair;
        pair->inflight = false;
        pair->touched = zclock_mono ();
        self->scripts_inflight--;
        if (error && strncmp (r->str, "NOSCRIPT", 8) == 0) {
            //  The script cache was flushed under us: a new connection
            //  loads the scripts again and re-sends every pair.
            snprintf (self->cmd.reason, sizeof self->cmd.reason, "presence script unloaded");
            self->cmd.failed = true;
            pair->dirty = false;
        }
        else
        if (pair->dirty) {
            pair->dirty = false;
            s_pair_changed (self, pair);
        }
        else
            s_pair_maybe_forget (self, pair);
    }
    s_cmd_free ((void **) &cmd);
}


//  --------------------------------------------------------------------------
//  The sub link: subscriptions and messages

static void s_sub_reply (redisAsyncContext *ac, void *reply, void *privdata);

static int
s_sub_send (redis_t *self, const char *verb, const char *room)
{
    char channel [REDIS_CHANNEL_MAX];
    snprintf (channel, sizeof channel, REDIS_CHANNEL_PREFIX "%s", room);
    const char *argv [] = { verb, channel };
    size_t argvlen [] = { strlen (verb), strlen (channel) };
    if (redisAsyncCommandArgv (self->sub.ac, s_sub_reply, self, 2, argv, argvlen) != REDIS_OK) {
        snprintf (self->sub.reason, sizeof self->sub.reason, "cannot queue %s", verb);
        self->sub.failed = true;
        return -1;
    }
    if (streq (verb, "SUBSCRIBE"))
        self->subs_sent++;
    self->sub_unanswered++;
    if (self->sub_unanswered > REDIS_SUB_BACKLOG_MAX + zhashx_size (self->rooms)) {
        snprintf (self->sub.reason, sizeof self->sub.reason,
                  "%zu subscription commands unanswered", self->sub_unanswered);
        self->sub.failed = true;
    }
    return 0;
}

//  A message on a channel we subscribed: checked (src/channel.c), then to
//  the router.
static void
s_on_message (redis_t *self, redisReply *channel, redisReply *payload)
{
    uint64_t held;
    if (channel->type != REDIS_REPLY_STRING || payload->type != REDIS_REPLY_STRING) {
        self->bad_reply++;
        if (s_ratelog (&self->log_bad_reply, &held))
            log_warn ("bridge", "Pub/Sub message with reply types %d/%d ignored "
                      "(%" PRIu64 " similar not logged)", channel->type, payload->type, held);
        return;
    }
    //  hiredis ends every string with a NUL, so room is a C string
    const char *room = channel_room (channel->str, channel->len, NULL);
    if (!room) {
        self->bad_channel++;
        if (s_ratelog (&self->log_bad_channel, &held)) {
            char shown [80];
            log_warn ("bridge", "message on channel '%s' (%zu bytes) is not room:{room}: "
                      "dropped (%" PRIu64 " similar not logged)",
                      s_printable (shown, sizeof shown, channel->str, channel->len),
                      channel->len, held);
        }
        return;
    }
    channel_payload_t verdict = channel_payload_check (payload->str, payload->len);
    if (verdict == CHANNEL_PAYLOAD_TOO_BIG) {
        self->too_big++;
        if (s_ratelog (&self->log_too_big, &held))
            log_warn ("bridge", "payload of %zu bytes on %s is over %d: dropped "
                      "(%" PRIu64 " similar not logged)",
                      payload->len, channel->str, REDIS_PAYLOAD_MAX, held);
        return;
    }
    if (!zhashx_lookup (self->rooms, room)) {
        //  In flight across our UNSUBSCRIBE: no local member is left.
        log_debug ("bridge", "message for %s after its last member left: dropped", channel->str);
        return;
    }
    if (verdict == CHANNEL_PAYLOAD_NOT_JSON) {
        self->non_json++;
        if (s_ratelog (&self->log_non_json, &held))
            log_warn ("bridge", "payload on %s is not a JSON object (%zu bytes): dropped "
                      "(%" PRIu64 " so far, %" PRIu64 " not logged)",
                      channel->str, payload->len, self->non_json, held);
        return;
    }
    zframe_t *frame = zframe_new (payload->str, payload->len);
    bridge_deliver (self->bridge, room, &frame);
}

//  Every reply on the sub link after the handshake: confirmations of
//  SUBSCRIBE and UNSUBSCRIBE, and messages.
static void
s_sub_reply (redisAsyncContext *ac, void *reply, void *privdata)
{
    (void) ac;
    redis_t *self = (redis_t *) privdata;
    if (!reply)
        return;                 //  The link is going; s_link_lost resets it
    redisReply *r = (redisReply *) reply;
    const char *kind = r->type == REDIS_REPLY_ARRAY && r->elements == 3
                    && r->element [0]->type == REDIS_REPLY_STRING ? r->element [0]->str : "";
    if (streq (kind, "message"))
        s_on_message (self, r->element [1], r->element [2]);
    else
    if (streq (kind, "subscribe")) {
        if (self->sub_unanswered)
            self->sub_unanswered--;
        //  Releases the PUBLISHes held behind this SUBSCRIBE (s_flush).
        if (self->subs_confirmed < self->subs_sent)
            self->subs_confirmed++;
    }
    else
    if (streq (kind, "unsubscribe")) {
        if (self->sub_unanswered)
            self->sub_unanswered--;
    }
    else {
        uint64_t held;
        char shown [80];
        self->bad_reply++;
        if (s_ratelog (&self->log_bad_reply, &held))
            log_warn ("bridge", "unexpected reply on the sub link (type %d%s%s) ignored "
                      "(%" PRIu64 " similar not logged)", r->type,
                      r->type == REDIS_REPLY_ERROR ? ": " : "",
                      r->type == REDIS_REPLY_ERROR
                      ? s_printable (shown, sizeof shown, r->str, r->len) : "", held);
    }
}


//  --------------------------------------------------------------------------
//  Link life: connect, handshake, ready, lost

//  The link became ready: bring Redis up to date with this node.
static void
s_link_ready (link_t *link)
{
    redis_t *self = link->engine;
    link->state = LINK_READY;
    link->backoff = REDIS_BACKOFF_MIN;
    log_info ("bridge", "redis %s link ready (%s)", link->role, self->where);
    if (link == &self->sub) {
        for (void *item = zhashx_first (self->rooms); item; item = zhashx_next (self->rooms)) {
            const char *room = (const char *) zhashx_cursor (self->rooms);
            if (s_sub_send (self, "SUBSCRIBE", room))
                return;
        }
        self->subs_floor = self->subs_sent;
    }
    else {
        //  Every pair, up or down: Redis may have lost or missed any of them.
        for (pair_t *pair = (pair_t *) zhashx_first (self->pairs); pair;
             pair = (pair_t *) zhashx_next (self->pairs)) {
            pair->dirty = false;
            s_pair_changed (self, pair);
        }
    }
    s_check_connected (self);
}

//  Keeps a 40-hex SCRIPT LOAD answer; false when it is not one.
static bool
s_take_sha (char *sha, redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len != 40)
        return false;
    for (size_t i = 0; i < 40; i++)
        if (!strchr ("0123456789abcdef", r->str [i]))
            return false;
    memcpy (sha, r->str, 40);
    sha [40] = '\0';
    return true;
}

static void
s_handshake_reply (redisAsyncContext *ac, void *reply, void *privdata)
{
    (void) ac;
    link_t *link = (link_t *) privdata;
    redis_t *self = link->engine;
    if (!reply || link->failed)
        return;
    redisReply *r = (redisReply *) reply;
    assert (link->steps_done < link->steps_sent);
    const char *step = link->steps [link->steps_done++];
    if (r->type == REDIS_REPLY_ERROR) {
        //  Redis's own words; they never hold the password.
        char shown [100];
        snprintf (link->reason, sizeof link->reason, "%s refused: %s", step,
                  s_printable (shown, sizeof shown, r->str, r->len));
        link->failed = true;
        return;
    }
    bool shape_ok = true;
    if (streq (step, "SCRIPT LOAD up"))
        shape_ok = s_take_sha (self->sha_up, r);
    else
    if (streq (step, "SCRIPT LOAD down"))
        shape_ok = s_take_sha (self->sha_down, r);
    if (!shape_ok) {
        snprintf (link->reason, sizeof link->reason, "unexpected answer (type %d) to %s",
                  r->type, step);
        link->failed = true;
        return;
    }
    if (link->steps_done == link->steps_sent)
        s_link_ready (link);
}

//  Queues one handshake command; false when hiredis would not take it.
static bool
s_handshake_step (link_t *link, const char *step, int argc, const char **argv)
{
    size_t argvlen [4];
    for (int i = 0; i < argc; i++)
        argvlen [i] = strlen (argv [i]);
    assert (link->steps_sent < LINK_STEPS_MAX);
    if (redisAsyncCommandArgv (link->ac, s_handshake_reply, link, argc, argv, argvlen) != REDIS_OK)
        return false;
    link->steps [link->steps_sent++] = step;
    return true;
}

//  The link is gone (hiredis freed the context, or we did): schedule the
//  next attempt, and take back what was in flight.
static void
s_link_lost (link_t *link)
{
    redis_t *self = link->engine;
    assert (!link->ac);
    bool was_ready = link->state == LINK_READY;
    link->state = LINK_DOWN;
    link->failed = false;
    link->item = -1;
    if (link == &self->sub) {
        //  Those confirmations will never come; s_link_ready subscribes
        //  every room again and sets the floor behind them.
        self->subs_confirmed = self->subs_sent;
        self->sub_unanswered = 0;
    }
    else {
        //  PUBLISHes back to the outbox front in their order (newest first,
        //  each to the front); presence is re-sent in full when the link
        //  is ready again.
        cmd_t *cmd;
        while ((cmd = (cmd_t *) zlistx_last (self->inflight))) {
            zlistx_detach_cur (self->inflight);
            if (cmd->pub) {
                zlistx_add_start (self->outbox, cmd->pub);
                cmd->pub = NULL;
                self->pubs_inflight--;
            }
            else {
                cmd->pair->inflight = false;
                cmd->pair->dirty = false;
                cmd->pair->touched = zclock_mono ();
                self->scripts_inflight--;
            }
            s_cmd_free ((void **) &cmd);
        }
        assert (self->pubs_inflight == 0 && self->scripts_inflight == 0);
    }
    const char *reason = link->reason [0] ? link->reason : "connection closed";
    if (was_ready)
        log_warn ("bridge", "redis %s link to %s lost (%s); reconnecting in %d ms",
                  link->role, self->where, reason, link->backoff);
    else
        log_warn ("bridge", "redis %s link: cannot connect to %s (%s); next attempt in %d ms",
                  link->role, self->where, reason, link->backoff);
    link->retry_at = zclock_mono () + link->backoff;
    link->backoff = link->backoff * 2 > REDIS_BACKOFF_MAX ? REDIS_BACKOFF_MAX : link->backoff * 2;
    s_check_connected (self);
}

//  Frees the context when a reply condemned it, and handles a loss that
//  hiredis reported through ev.cleanup. Call after every hiredis call.
static void
s_link_settle (link_t *link)
{
    if (link->ac && link->failed)
        redisAsyncFree (link->ac);      //  calls back with NULL replies, then cleanup
    if (!link->ac && link->state != LINK_DOWN)
        s_link_lost (link);
}

static void
s_link_connect (link_t *link)
{
    redis_t *self = link->engine;
    link->reason [0] = '\0';
    link->failed = false;
    link->steps_sent = 0;
    link->steps_done = 0;
    link->state = LINK_CONNECTING;
    link->deadline = zclock_mono () + REDIS_CONNECT_TIMEOUT;

    redisAsyncContext *ac = self->url.unix_path
                          ? redisAsyncConnectUnix (self->url.unix_path)
                          : redisAsyncConnect (self->url.host, self->url.port);
    if (!ac || ac->err || (!self->url.unix_path && redisEnableKeepAlive (&ac->c) != REDIS_OK)) {
        snprintf (link->reason, sizeof link->reason, "%s", ac ? ac->c.errstr : "out of memory");
        if (ac)
            redisAsyncFree (ac);
        s_link_lost (link);
        return;
    }
    ac->data = link;
    ac->ev.data = link;
    ac->ev.addRead = s_ev_add_read;
    ac->ev.delRead = s_ev_del_read;
    ac->ev.addWrite = s_ev_add_write;
    ac->ev.delWrite = s_ev_del_write;
    ac->ev.cleanup = s_ev_cleanup;
    link->ac = ac;
    redisAsyncSetConnectCallback (ac, s_on_connect);

    //  Pipelined: Redis answers in order, and the first error ends the link.
    char db [16];
    snprintf (db, sizeof db, "%d", self->url.db);
    bool ok = true;
    if (self->url.password)
        ok = s_handshake_step (link, "AUTH", 2, (const char *[]) { "AUTH", self->url.password });
    if (ok && link == &self->cmd) {
        ok = s_handshake_step (link, "SELECT", 2, (const char *[]) { "SELECT", db })
          && s_handshake_step (link, "SCRIPT LOAD up", 3,
                               (const char *[]) { "SCRIPT", "LOAD", bridge_redis_script_up })
          && s_handshake_step (link, "SCRIPT LOAD down", 3,
                               (const char *[]) { "SCRIPT", "LOAD", bridge_redis_script_down });
    }
    if (ok)
        ok = s_handshake_step (link, "PING", 1, (const char *[]) { "PING" });
    if (!ok) {
        snprintf (link->reason, sizeof link->reason, "cannot queue the handshake");
        link->failed = true;
        s_link_settle (link);
    }
}


//  --------------------------------------------------------------------------
//  Constructor and destructor

static void
s_redis_destroy (void **self_p)
{
    assert (self_p);
    if (*self_p) {
        redis_t *self = (redis_t *) *self_p;
        self->closing = true;
        //  Freeing a context calls our callbacks with NULL replies (they
        //  ignore them) and the cleanup hook; links are still valid here.
        if (self->sub.ac)
            redisAsyncFree (self->sub.ac);
        if (self->cmd.ac)
            redisAsyncFree (self->cmd.ac);
        uint64_t left = self->outbox ? s_outbox_depth (self) : 0;
        if (left)
            log_warn ("bridge", "stopping with %" PRIu64 " PUBLISHes not confirmed by Redis", left);
        zlistx_destroy (&self->inflight);
        zlistx_destroy (&self->outbox);
        zlistx_destroy (&self->queue);
        zhashx_destroy (&self->pairs);
        zhashx_destroy (&self->rooms);
        rtws_redis_url_clear (&self->url);
        free (self);
        *self_p = NULL;
    }
}

static void
s_link_init (link_t *link, redis_t *self, const char *role)
{
    link->engine = self;
    link->role = role;
    link->state = LINK_DOWN;
    link->backoff = REDIS_BACKOFF_MIN;
    link->retry_at = zclock_mono ();    //  the first attempt is now
    link->item = -1;
}

static void *
s_redis_create (bridge_t *bridge, const rtws_config_t *config)
{
    redis_t *self = (redis_t *) zmalloc (sizeof (redis_t));
    self->bridge = bridge;
    if (rtws_redis_url_parse (config->redis_url, &self->url)) {
        //  config.c validated it: only memory can be short here.
        log_error ("bridge", "cannot read REDIS_URL");
        void *state = self;
        s_redis_destroy (&state);
        return NULL;
    }
    if (self->url.unix_path)
        snprintf (self->where, sizeof self->where, "unix:%s", self->url.unix_path);
    else
    if (strchr (self->url.host, ':'))
        snprintf (self->where, sizeof self->where, "[%s]:%d db %d",
                  self->url.host, self->url.port, self->url.db);
    else
        snprintf (self->where, sizeof self->where, "%s:%d db %d",
                  self->url.host, self->url.port, self->url.db);
    codec_new_id (self->node_id);
    self->ttl = (int64_t) config->presence_ttl * 1000;
    snprintf (self->ttl_ms, sizeof self->ttl_ms, "%" PRId64, self->ttl);
    self->next_sweep = zclock_mono () + REDIS_IDLE_TICK;
    self->outbox_max = config->redis_outbox_size;
    self->rooms = zhashx_new ();
    self->outbox = zlistx_new ();
    self->inflight = zlistx_new ();
    self->pairs = zhashx_new ();
    self->queue = zlistx_new ();
    if (!self->rooms || !self->outbox || !self->inflight || !self->pairs || !self->queue) {
        void *state = self;
        s_redis_destroy (&state);
        return NULL;
    }
    zlistx_set_destructor (self->outbox, s_pub_free);
    zlistx_set_destructor (self->inflight, s_cmd_free);
    zhashx_set_destructor (self->pairs, s_pair_free);
    s_link_init (&self->sub, self, "sub");
    s_link_init (&self->cmd, self, "cmd");
    log_info ("bridge", "Redis engine: node %s, Redis at %s, outbox %zu",
              self->node_id, self->where, self->outbox_max);
    return self;
}


//  --------------------------------------------------------------------------
//  Engine calls

static void
s_redis_subscribe (void *state, const char *room)
{
    redis_t *self = (redis_t *) state;
    if (zhashx_insert (self->rooms, room, self) == -1) {
        log_debug ("bridge", "SUBSCRIBE %s again: already subscribed", room);
        return;
    }
    //  Not ready: the room is subscribed with all others when it is.
    if (self->sub.state == LINK_READY && !self->sub.failed)
        s_sub_send (self, "SUBSCRIBE", room);
}

static void
s_redis_unsubscribe (void *state, const char *room)
{
    redis_t *self = (redis_t *) state;
    if (!zhashx_lookup (self->rooms, room)) {
        log_debug ("bridge", "UNSUBSCRIBE %s: not subscribed", room);
        return;
    }
    zhashx_delete (self->rooms, room);
    if (self->sub.state == LINK_READY && !self->sub.failed)
        s_sub_send (self, "UNSUBSCRIBE", room);
}

static void
s_redis_publish (void *state, const char *room, zframe_t **payload_p,
                 uint64_t conn, const char *ref)
{
    redis_t *self = (redis_t *) state;
    if (s_outbox_depth (self) >= self->outbox_max) {
        self->refused++;
        uint64_t held;
        if (s_ratelog (&self->log_refused, &held))
            log_warn ("bridge", "outbox full (%zu PUBLISHes wait for Redis): refusing "
                      "(%" PRIu64 " refused so far)", self->outbox_max, self->refused);
        bridge_refuse (self->bridge, conn, ref);
        zframe_destroy (payload_p);
        return;
    }
    pub_t *pub = (pub_t *) zmalloc (sizeof (pub_t));
    snprintf (pub->channel, sizeof pub->channel, REDIS_CHANNEL_PREFIX "%s", room);
    pub->payload = *payload_p;
    *payload_p = NULL;
    pub->after = self->subs_sent;
    zlistx_add_end (self->outbox, pub);
}

static pair_t *
s_pair (redis_t *self, const char *user, const char *room, bool create)
{
    char key [REDIS_PAIR_MAX];
    s_pair_key (key, user, room);
    pair_t *pair = (pair_t *) zhashx_lookup (self->pairs, key);
    if (!pair && create) {
        pair = (pair_t *) zmalloc (sizeof (pair_t));
        pair->user = strdup (user);
        pair->room = strdup (room);
        assert (pair->user && pair->room);
        pair->touched = zclock_mono ();
        zhashx_insert (self->pairs, key, pair);
    }
    return pair;
}

//  UP and KEEP run the same script: a KEEP after a lost UP (or after the
//  key expired) brings the key back.
static void
s_redis_presence_up (void *state, const char *user, const char *room)
{
    redis_t *self = (redis_t *) state;
    pair_t *pair = s_pair (self, user, room, true);
    pair->up = true;
    s_pair_changed (self, pair);
}

static void
s_redis_presence_down (void *state, const char *user, const char *room)
{
    redis_t *self = (redis_t *) state;
    //  A DOWN for a pair we do not know still goes out: its UP may have
    //  reached Redis through a link that dropped before we heard back.
    pair_t *pair = s_pair (self, user, room, true);
    pair->up = false;
    s_pair_changed (self, pair);
}

static bool
s_redis_present (void *state, const char *user, const char *room)
{
    redis_t *self = (redis_t *) state;
    pair_t *pair = s_pair (self, user, room, false);
    return pair && pair->up;
}

static bool
s_redis_subscribed (void *state, const char *room)
{
    redis_t *self = (redis_t *) state;
    return zhashx_lookup (self->rooms, room) != NULL;
}

static void
s_redis_status (void *state, bridge_status_t *status)
{
    redis_t *self = (redis_t *) state;
    status->connected = s_connected (self);
    status->outbox = s_outbox_depth (self);
    status->non_json = self->non_json;
    status->too_big = self->too_big;
    status->bad_channel = self->bad_channel;
    status->reconnects = self->reconnects;
}

static int64_t
s_redis_next_timer (void *state)
{
    redis_t *self = (redis_t *) state;
    int64_t next = zclock_mono () + REDIS_IDLE_TICK;
    link_t *links [] = { &self->sub, &self->cmd };
    for (int i = 0; i < 2; i++) {
        if (links [i]->state == LINK_DOWN && links [i]->retry_at < next)
            next = links [i]->retry_at;
        if (links [i]->state == LINK_CONNECTING && links [i]->deadline < next)
            next = links [i]->deadline;
    }
    return next;
}

//  While Redis cannot hear us, DOWNs wait as pairs, and users come and go.
//  A DOWN whose entry in Redis has surely expired (PRESENCE_TTL after the
//  last moment a script of ours for that pair could have run) has nothing
//  left to delete: it goes, so an outage of any length holds at most the
//  DOWNs of one PRESENCE_TTL.
static void
s_sweep (redis_t *self, int64_t now)
{
    if (self->cmd.state == LINK_READY && self->scripts_inflight < self->outbox_max)
        return;                 //  DOWNs flow; each pair goes when Redis answers
    zlistx_t *stale = zlistx_new ();
    assert (stale);
    for (pair_t *pair = (pair_t *) zhashx_first (self->pairs); pair;
         pair = (pair_t *) zhashx_next (self->pairs))
        if (!pair->up && !pair->inflight && now - pair->touched > self->ttl)
            zlistx_add_end (stale, pair);
    for (pair_t *pair = (pair_t *) zlistx_first (stale); pair;
         pair = (pair_t *) zlistx_next (stale)) {
        if (pair->queued)
            zlistx_delete (self->queue, pair->handle);
        pair->queued = false;
        pair->handle = NULL;
        s_pair_maybe_forget (self, pair);
    }
    if (zlistx_size (stale))
        log_debug ("bridge", "%zu DOWNs older than PRESENCE_TTL forgotten", zlistx_size (stale));
    zlistx_destroy (&stale);
}

static void
s_redis_timer (void *state, int64_t now)
{
    redis_t *self = (redis_t *) state;
    if (now >= self->next_sweep) {
        s_sweep (self, now);
        self->next_sweep = now + REDIS_IDLE_TICK;
    }
    link_t *links [] = { &self->sub, &self->cmd };
    for (int i = 0; i < 2; i++) {
        link_t *link = links [i];
        if (link->state == LINK_DOWN && now >= link->retry_at)
            s_link_connect (link);
        else
        if (link->state == LINK_CONNECTING && now >= link->deadline) {
            snprintf (link->reason, sizeof link->reason,
                      "not ready within %d ms", REDIS_CONNECT_TIMEOUT);
            link->failed = true;
            s_link_settle (link);
        }
    }
    s_flush (self);
}

static size_t
s_redis_poll_fill (void *state, zmq_pollitem_t *items, size_t max)
{
    redis_t *self = (redis_t *) state;
    size_t count = 0;
    link_t *links [] = { &self->sub, &self->cmd };
    for (int i = 0; i < 2; i++) {
        link_t *link = links [i];
        link->item = -1;
        if (!link->ac || (!link->want_read && !link->want_write) || count == max)
            continue;
        items [count].socket = NULL;
        items [count].fd = link->ac->c.fd;
        items [count].events = (short) ((link->want_read ? ZMQ_POLLIN : 0)
                                      | (link->want_write ? ZMQ_POLLOUT : 0));
        items [count].revents = 0;
        link->item = (int) count++;
    }
    return count;
}

static void
s_redis_poll_handle (void *state, zmq_pollitem_t *items, size_t count)
{
    redis_t *self = (redis_t *) state;
    link_t *links [] = { &self->sub, &self->cmd };
    for (int i = 0; i < 2; i++) {
        link_t *link = links [i];
        if (link->item < 0 || (size_t) link->item >= count || !link->ac)
            continue;
        short revents = items [link->item].revents;
        //  An error or hang-up is read as such by hiredis: it frees the
        //  context and our cleanup hook records why.
        if (revents & (ZMQ_POLLIN | ZMQ_POLLERR))
            redisAsyncHandleRead (link->ac);
        if (link->ac && !link->failed && (revents & ZMQ_POLLOUT))
            redisAsyncHandleWrite (link->ac);
        s_link_settle (link);
    }
    s_redis_timer (self, zclock_mono ());
}

//  After a batch of sibling messages: queue what they produced, then write
//  it now rather than after one more trip through zmq_poll.
static void
s_redis_flush (void *state)
{
    redis_t *self = (redis_t *) state;
    s_flush (self);
    link_t *links [] = { &self->sub, &self->cmd };
    for (int i = 0; i < 2; i++) {
        link_t *link = links [i];
        if (link->ac && link->state == LINK_READY && link->want_write && !link->failed)
            redisAsyncHandleWrite (link->ac);
        s_link_settle (link);
    }
}

static bool
s_redis_busy (void *state)
{
    redis_t *self = (redis_t *) state;
    if (self->cmd.state != LINK_READY)
        return false;           //  Nothing more can reach Redis before we stop
    return zlistx_size (self->inflight) || zlistx_size (self->queue)
        || (zlistx_size (self->outbox) && self->sub.state == LINK_READY);
}

const bridge_engine_t bridge_redis_engine = {
    .name = "redis",
    .create = s_redis_create,
    .destroy = s_redis_destroy,
    .subscribe = s_redis_subscribe,
    .unsubscribe = s_redis_unsubscribe,
    .publish = s_redis_publish,
    .presence_up = s_redis_presence_up,
    .presence_keep = s_redis_presence_up,
    .presence_down = s_redis_presence_down,
    .present = s_redis_present,
    .subscribed = s_redis_subscribed,
    .status = s_redis_status,
    .next_timer = s_redis_next_timer,
    .timer = s_redis_timer,
    .poll_fill = s_redis_poll_fill,
    .poll_handle = s_redis_poll_handle,
    .flush = s_redis_flush,
    .busy = s_redis_busy
};
