/*  presence.c - the presence actor: how many local connections each user has
    in each room, told to the bridge as the rise and fall of (user, room).

    Message vocabulary (docs/ARCHITECTURE.md; pictures are zsock_send pictures;
    "8" is a uint64_t connection id):

    PULL bound at RTWS_EP_PRESENCE (the gateway connects PUSH to it)
      in  (gateway)  CONNECT conn user room    "s8ss" a connection of user opened in room
      in  (gateway)  DISCONNECT conn           "s8"   that connection closed
      in  (gateway)  TOUCH conn                "s8"   client activity on conn (refresh, at
                                                      most 1/s per user+room)
      in  (gateway)  BATCH ...                        several of the above (inproc.h)
    PUSH connected to RTWS_EP_BRIDGE
      out (bridge)   PRESENCE_UP user room     "sss"  first local connection of user in room
      out (bridge)   PRESENCE_KEEP user room   "sss"  still here: every PRESENCE_TTL/2 and on
                                                      activity
      out (bridge)   PRESENCE_DOWN user room   "sss"  last local connection of user in room
                                                      closed
      out (bridge)   BATCH ...                        one flush's messages (see Net changes)
    pipe (owner: rtwsd.c or a test)
      in             $TERM                     "s"    stop and free everything
      in             CONFIG config             "sp"   SIGHUP: the new configuration (owned
                                                      by rtwsd.c) replaces ours; reply "i" 1
      in             COUNT user room           "sss"  reply "i": local connections of user
                                                      in room

    No message carries a pointer ('p'), so nothing changes owner between threads.

    Timing: every max(PRESENCE_TTL * 1000 / 2, 500) ms a KEEP goes out for every
    present (user, room), so the key outlives the gap between two KEEPs. A TOUCH
    adds a KEEP at most once per PRESENCE_TOUCH_INTERVAL per (user, room): that
    caps what a chatty client costs the bridge (and Redis).

    Net changes: CONNECT, DISCONNECT and TOUCH only count and mark the pair;
    what the bridge hears is decided per flush, at most every
    PRESENCE_FLUSH_INTERVAL ms (at once when the last flush is older), from
    where each marked pair stands then: present and not yet announced -> UP,
    announced and gone -> DOWN, announced and touched -> KEEP. So a connection
    that opens and closes between two flushes (a handshake storm, a bot that
    probes) costs the bridge and Redis nothing, and a user who reconnects
    within one (a page reload) is not taken down and up again. The bridge
    hears of a new user at most PRESENCE_FLUSH_INTERVAL ms late.

    $TERM sends no PRESENCE_DOWN: whether the node drains its connections
    (each DISCONNECT then sends DOWN as usual) or just stops (the keys expire
    within PRESENCE_TTL, like a crashed node's) is the owner's decision.

    Flow control: sends to the bridge never block (sndtimeo 0) and are shed
    when PRESENCE_BRIDGE_HWM messages (a BATCH counting as one) are already
    waiting, counted and logged
    once per episode. Every loss repairs itself: a lost UP or KEEP is redone by
    the next periodic KEEP (which sets the key, as UP does), a lost DOWN
    expires within PRESENCE_TTL. Never blocking keeps the gateway -> presence
    path flowing and lets $TERM through even when the bridge is gone.

    Bounds: (user, room) pairs and conns are bounded by the gateway's connection
    limit; user ids longer than RTWS_USER_MAX and room names outside 1 ..
    RTWS_ROOM_MAX bytes (the gateway's to prevent) are logged and dropped.

    Set-up failure: only a second presence actor in one process (the endpoint
    already bound) can make set-up fail, a bug in the owner. The actor logs why
    and returns without signalling; czmq's thread shim signals on our behalf
    when the handler returns, so zactor_new does not hang.

    Runs on its own thread (zactor); every field of presence_t belongs to it.
*/

#include "presence.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "inproc.h"
#include "log.h"
#include "rtws.h"

//  Inbox depth; the gateway waits when it is full.
#define PRESENCE_INBOX_HWM      100000
//  Shortest gap between two flushes to the bridge, ms (see Net changes).
#define PRESENCE_FLUSH_INTERVAL 20
//  Messages the bridge may fall behind before presence sheds them.
#define PRESENCE_BRIDGE_HWM     100000
//  Shortest gap between two TOUCH-driven KEEPs of one (user, room), ms.
#define PRESENCE_TOUCH_INTERVAL 1000
//  Shortest gap between two periodic KEEP sweeps, ms.
#define PRESENCE_MIN_SWEEP      500
//  Inbox messages taken per wake-up before the pipe is looked at again.
#define PRESENCE_DRAIN          256
//  Separates user and room in a pair's key; room names cannot contain it.
#define PRESENCE_KEY_SEP        '\x1f'

//  One user present in one room through at least one local connection.
typedef struct {
    char *user;                 //  user id, at most RTWS_USER_MAX bytes
    char *room;                 //  room name, 1 .. RTWS_ROOM_MAX bytes
    size_t conns;               //  local connections, > 0 while in pairs
    bool kept;                  //  a KEEP was sent for this pair
    int64_t last_keep;          //  zclock_mono () when that KEEP was sent
    bool announced;             //  UP sent: the bridge holds the pair
    bool dirty;                 //  in presence_t.dirty, to be looked at by the flush
    bool keep_due;              //  a TOUCH asked for a KEEP
} pair_t;

typedef struct {
    const rtws_config_t *config;    //  read-only, outlives the actor
    zsock_t *pipe;                  //  to our owner, not ours to destroy
    zsock_t *inbox;                 //  PULL bound at RTWS_EP_PRESENCE
    zsock_t *bridge;                //  PUSH connected to RTWS_EP_BRIDGE
    zpoller_t *poller;              //  pipe and inbox
    inproc_batch_t to_bridge;       //  what one flush decided
    zlistx_t *dirty;                //  pairs changed since the last flush (not owned)
    int64_t last_flush;             //  zclock_mono () of the last flush
    zhashx_t *pairs;                //  "user\x1froom" -> pair_t, owns the pairs
    zhashx_t *conns;                //  conn id -> its pair_t (owned by pairs)
    int64_t sweep_interval;         //  ms between periodic KEEP sweeps
    int64_t next_sweep;             //  zclock_mono () of the next sweep
    uint64_t dropped;               //  messages shed in the current overload
    bool terminated;                //  $TERM received
} presence_t;




//  --------------------------------------------------------------------------
//  Pairs

static void
s_pair_destroy (pair_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        pair_t *self = *self_p;
        free (self->user);
        free (self->room);
        free (self);
        *self_p = NULL;
    }
}

static void
s_pair_free (void **item_p)
{
    s_pair_destroy ((pair_t **) item_p);
}

static pair_t *
s_pair_new (const char *user, const char *room)
{
    pair_t *self = (pair_t *) zmalloc (sizeof (pair_t));
    self->user = strdup (user);
    self->room = strdup (room);
    if (!self->user || !self->room)
        s_pair_destroy (&self);
    return self;
}

//  Longest key: user, separator, room, NUL.
#define PRESENCE_KEY_MAX (RTWS_USER_MAX + 1 + RTWS_ROOM_MAX + 1)

//  Writes the pair's key; user and room are already within their bounds.
static void
s_pair_key (char *key, const char *user, const char *room)
{
    snprintf (key, PRESENCE_KEY_MAX, "%s%c%s", user, PRESENCE_KEY_SEP, room);
}

//  True when user and room are within bounds. Room names never hold the
//  separator, so a key splits back into one (user, room) only.
static bool
s_names_ok (const char *user, const char *room)
{
    size_t room_size = strlen (room);
    return strlen (user) <= RTWS_USER_MAX
        && room_size >= 1 && room_size <= RTWS_ROOM_MAX
        && strchr (room, PRESENCE_KEY_SEP) == NULL;
}


//  --------------------------------------------------------------------------
//  Constructor and destructor

static void
    s_presence_destroy (presence_t **self_p);

static presence_t *
s_presence_new (zsock_t *pipe, const rtws_config_t *config)
{
    presence_t *self = (presence_t *) zmalloc (sizeof (presence_t));
    self->config = config;
    self->pipe = pipe;
    self->pairs = zhashx_new ();
    self->conns = inproc_conn_map_new ();
    self->dirty = zlistx_new ();
    if (!self->pairs || !self->conns || !self->dirty) {
        log_error ("presence", "cannot create the presence tables");
        s_presence_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->pairs, s_pair_free);

    self->inbox = inproc_pull_new (RTWS_EP_PRESENCE, PRESENCE_INBOX_HWM, "presence");
    if (!self->inbox) {
        s_presence_destroy (&self);
        return NULL;
    }
    zsock_set_rcvtimeo (self->inbox, 0);    //  drained after each wake-up
    self->bridge = inproc_push_new (RTWS_EP_BRIDGE, PRESENCE_BRIDGE_HWM, 0, "presence");
    self->poller = self->bridge ? zpoller_new (self->pipe, self->inbox, NULL) : NULL;
    if (!self->poller) {
        s_presence_destroy (&self);
        return NULL;
    }
    //  Only $TERM stops the actor; a SIGINT is the owner's to turn into one.
    zpoller_set_nonstop (self->poller, true);

    //  KEEP twice per TTL so one late or lost KEEP does not let the key lapse.
    self->sweep_interval = (int64_t) config->presence_ttl * 1000 / 2;
    if (self->sweep_interval < PRESENCE_MIN_SWEEP)
        self->sweep_interval = PRESENCE_MIN_SWEEP;
    self->next_sweep = zclock_mono () + self->sweep_interval;
    return self;
}

static void
s_presence_destroy (presence_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        presence_t *self = *self_p;
        zpoller_destroy (&self->poller);
        inproc_batch_clear (&self->to_bridge);
        inproc_bound_destroy (&self->inbox, RTWS_EP_PRESENCE);
        zsock_destroy (&self->bridge);
        //  conns and dirty point into pairs, so they go first.
        zlistx_destroy (&self->dirty);
        zhashx_destroy (&self->conns);
        zhashx_destroy (&self->pairs);
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
    log_error ("presence", "malformed %s from a sibling", command);
    assert (false);
}

//  Pops "verb conn" as zsock_send "s8" encodes it ("8" travels as a decimal
//  string). Returns -1 when the conn frame is missing or not a number.
static int
s_pop_conn (zmsg_t *msg, rtws_conn_id_t *conn)
{
    zframe_t *verb = zmsg_pop (msg);
    zframe_destroy (&verb);
    char *text = zmsg_popstr (msg);
    char *end = NULL;
    errno = 0;
    unsigned long long value = text ? strtoull (text, &end, 10) : 0;
    bool ok = text && *text && end && *end == 0 && errno == 0;
    free (text);
    *conn = (rtws_conn_id_t) value;
    return ok ? 0 : -1;
}

//  Counts messages the bridge refused, logging once per episode.
static void
s_presence_sent (presence_t *self, size_t lost)
{
    if (lost == 0) {
        if (self->dropped) {
            log_warn ("presence", "bridge inbox drains again; %" PRIu64 " presence messages "
                      "were dropped (KEEPs and TTLs repair them)", self->dropped);
            self->dropped = 0;
        }
        return;
    }
    if (self->dropped == 0)
        log_error ("presence", "bridge inbox full (%d messages behind): dropping presence "
                   "messages", PRESENCE_BRIDGE_HWM);
    self->dropped += lost;
}

//  Messages for the bridge wait in a batch until the end of the wake-up
//  that produced them (s_presence_flush).
static void
s_presence_send (presence_t *self, const char *verb, pair_t *pair)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, verb);
    zmsg_addstr (msg, pair->user);
    zmsg_addstr (msg, pair->room);
    size_t lost = inproc_batch_add (&self->to_bridge, &msg, self->bridge);
    if (lost)
        s_presence_sent (self, lost);
}

static void s_presence_keep (presence_t *self, pair_t *pair, int64_t now);

//  Marks a pair for the next flush.
static void
s_presence_mark (presence_t *self, pair_t *pair)
{
    if (!pair->dirty) {
        pair->dirty = true;
        zlistx_add_end (self->dirty, pair);
    }
}

//  Tells the bridge the net change of every marked pair (see Net changes),
//  frees the pairs nobody holds any more, and sends it all as one batch.
static void
s_presence_flush (presence_t *self, int64_t now)
{
    pair_t *pair;
    while ((pair = (pair_t *) zlistx_detach (self->dirty, NULL))) {
        pair->dirty = false;
        if (pair->conns > 0) {
            if (!pair->announced) {
                s_presence_send (self, "PRESENCE_UP", pair);
                pair->announced = true;
            }
            else
            if (pair->keep_due)
                s_presence_keep (self, pair, now);
            pair->keep_due = false;
        }
        else {
            //  The user stays present until the last of their local
            //  connections to the room closes: closing one of two tabs
            //  sends nothing.
            if (pair->announced)
                s_presence_send (self, "PRESENCE_DOWN", pair);
            char key [PRESENCE_KEY_MAX];
            s_pair_key (key, pair->user, pair->room);
            zhashx_delete (self->pairs, key);
        }
    }
    if (self->to_bridge.count)
        s_presence_sent (self, inproc_batch_send (&self->to_bridge, self->bridge));
    self->last_flush = now;
}

static void
s_presence_keep (presence_t *self, pair_t *pair, int64_t now)
{
    s_presence_send (self, "PRESENCE_KEEP", pair);
    pair->kept = true;
    pair->last_keep = now;
}


//  --------------------------------------------------------------------------
//  Sibling messages, in the order they arrive in a connection's life

static void
s_presence_connect (presence_t *self, zmsg_t *msg)
{
    rtws_conn_id_t conn;
    if (zmsg_size (msg) != 4 || s_pop_conn (msg, &conn)) {
        s_malformed ("CONNECT");
        return;
    }
    char *user = zmsg_popstr (msg);
    char *room = zmsg_popstr (msg);
    if (!user || !room)
        s_malformed ("CONNECT");
    else
    if (!s_names_ok (user, room))
        log_warn ("presence", "CONNECT of conn %" PRIu64 " with a user id of %zu bytes "
                  "or a bad room name (%zu bytes): dropped", conn, strlen (user), strlen (room));
    else
    if (zhashx_lookup (self->conns, &conn))
        //  Ids are never reused, so this is the same CONNECT again.
        log_warn ("presence", "conn %" PRIu64 " connected twice: ignored", conn);
    else {
        char key [PRESENCE_KEY_MAX];
        s_pair_key (key, user, room);
        pair_t *pair = (pair_t *) zhashx_lookup (self->pairs, key);
        if (!pair) {
            pair = s_pair_new (user, room);
            if (!pair)
                log_error ("presence", "out of memory: conn %" PRIu64 " not counted", conn);
            else
                zhashx_insert (self->pairs, key, pair);
        }
        if (pair) {
            pair->conns++;
            zhashx_insert (self->conns, &conn, pair);
            s_presence_mark (self, pair);
        }
    }
    free (user);
    free (room);
}

static void
s_presence_touch (presence_t *self, zmsg_t *msg)
{
    rtws_conn_id_t conn;
    if (zmsg_size (msg) != 2 || s_pop_conn (msg, &conn)) {
        s_malformed ("TOUCH");
        return;
    }
    pair_t *pair = (pair_t *) zhashx_lookup (self->conns, &conn);
    if (!pair) {
        //  A TOUCH may race the DISCONNECT of a conn whose CONNECT we dropped.
        log_debug ("presence", "TOUCH of unknown conn %" PRIu64 ": ignored", conn);
        return;
    }
    int64_t now = zclock_mono ();
    if (!pair->kept || now - pair->last_keep >= PRESENCE_TOUCH_INTERVAL) {
        pair->keep_due = true;
        s_presence_mark (self, pair);
    }
}

static void
s_presence_disconnect (presence_t *self, zmsg_t *msg)
{
    rtws_conn_id_t conn;
    if (zmsg_size (msg) != 2 || s_pop_conn (msg, &conn)) {
        s_malformed ("DISCONNECT");
        return;
    }
    pair_t *pair = (pair_t *) zhashx_lookup (self->conns, &conn);
    if (!pair) {
        log_debug ("presence", "DISCONNECT of unknown conn %" PRIu64 ": ignored", conn);
        return;
    }
    zhashx_delete (self->conns, &conn);
    assert (pair->conns > 0);
    pair->conns--;
    s_presence_mark (self, pair);
}

//  Periodic KEEP of every present (user, room).
static void
s_presence_sweep (presence_t *self, int64_t now)
{
    for (pair_t *pair = (pair_t *) zhashx_first (self->pairs); pair;
         pair = (pair_t *) zhashx_next (self->pairs))
        if (pair->announced && pair->conns > 0)
            s_presence_keep (self, pair, now);
}


//  --------------------------------------------------------------------------
//  The actor loop

static void
s_presence_handle (presence_t *self, zmsg_t *msg)
{
    zframe_t *verb = zmsg_first (msg);
    if (zframe_streq (verb, "CONNECT"))
        s_presence_connect (self, msg);
    else
    if (zframe_streq (verb, "TOUCH"))
        s_presence_touch (self, msg);
    else
    if (zframe_streq (verb, "DISCONNECT"))
        s_presence_disconnect (self, msg);
    else {
        char *text = zframe_strdup (verb);
        log_error ("presence", "unknown command '%.32s' from a sibling", text);
        free (text);
        assert (false);
    }
    zmsg_destroy (&msg);
}

static void
s_presence_take (void *self, zmsg_t *msg)
{
    s_presence_handle ((presence_t *) self, msg);
}

//  Takes what the inbox holds, up to PRESENCE_DRAIN messages (a BATCH is
//  taken apart); the actor loop flushes what they changed.
static void
s_presence_recv_inbox (presence_t *self)
{
    for (int i = 0; i < PRESENCE_DRAIN; i++) {
        zmsg_t *msg = zmsg_recv (self->inbox);
        if (!msg)
            break;              //  Empty (rcvtimeo 0) or interrupted
        inproc_batch_each (&msg, s_presence_take, self);
    }
}

static void
s_presence_recv_pipe (presence_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg)
        return;
    char *command = zmsg_popstr (msg);
    if (command && streq (command, "$TERM"))
        self->terminated = true;
    else
    if (command && streq (command, "COUNT")) {
        char *user = zmsg_popstr (msg);
        char *room = zmsg_popstr (msg);
        pair_t *pair = NULL;
        if (user && room && s_names_ok (user, room)) {
            char key [PRESENCE_KEY_MAX];
            s_pair_key (key, user, room);
            pair = (pair_t *) zhashx_lookup (self->pairs, key);
        }
        zsock_send (self->pipe, "i", pair ? (int) pair->conns : 0);
        free (user);
        free (room);
    }
    else
    if (command && streq (command, "CONFIG")) {
        //  SIGHUP: nothing presence reads may change at run time (rtwsd
        //  keeps PRESENCE_TTL), but the old configuration is about to go.
        self->config = (const rtws_config_t *) inproc_pop_pointer (msg);
        zsock_send (self->pipe, "i", 1);
    }
    else {
        log_error ("presence", "unknown pipe command '%.32s'", command ? command : "");
        assert (false);
    }
    free (command);
    zmsg_destroy (&msg);
}

void
presence_actor (zsock_t *pipe, void *args)
{
    rtws_thread_name ("rtws-presence");
    const rtws_config_t *config = (const rtws_config_t *) args;
    assert (config);
    presence_t *self = s_presence_new (pipe, config);
    if (!self)
        return;                 //  Said why; the zactor shim signals for us
    zsock_signal (pipe, 0);

    while (!self->terminated) {
        int64_t now = zclock_mono ();
        if (now >= self->next_sweep) {
            s_presence_sweep (self, now);
            s_presence_flush (self, now);
            self->next_sweep = now + self->sweep_interval;
        }
        //  Marked pairs go out at once when the last flush is old enough,
        //  else when it is.
        int64_t flush_at = self->last_flush + PRESENCE_FLUSH_INTERVAL;
        if (zlistx_size (self->dirty) && now >= flush_at)
            s_presence_flush (self, now);
        int64_t timeout = self->next_sweep - now;
        if (zlistx_size (self->dirty) && flush_at - now < timeout)
            timeout = flush_at - now;
        void *which = zpoller_wait (self->poller, timeout > INT_MAX ? INT_MAX : (int) timeout);
        if (which == self->pipe)
            s_presence_recv_pipe (self);
        else
        if (which == self->inbox)
            s_presence_recv_inbox (self);
        else
        if (zpoller_terminated (self->poller))
            break;              //  Context terminated under us
    }
    //  The last DISCONNECTs of a drain may still wait behind $TERM (the
    //  poller favours the pipe): their DOWNs are what a drain is for.
    while (self->terminated && (zsock_events (self->inbox) & ZMQ_POLLIN))
        s_presence_recv_inbox (self);
    if (self->terminated)
        s_presence_flush (self, zclock_mono ());
    s_presence_destroy (&self);
}


//  --------------------------------------------------------------------------
//  Self test: the presence actor alone; the test plays the gateway and the
//  bridge.

#define TEST_TIMEOUT 2000       //  ms to wait for any expected message

typedef struct {
    bool verbose;
    int failures;
} test_t;

static void
s_check (test_t *t, bool ok, const char *behaviour)
{
    if (!ok) {
        t->failures++;
        fprintf (stderr, "presence_test: FAIL: %s\n", behaviour);
    }
    else
    if (t->verbose)
        printf ("presence_test: ok: %s\n", behaviour);
}

//  What the bridge side received as a BATCH and has not read yet.
static zmsg_t *s_test_batch = NULL;
//  Batches received, and the messages they held.
static size_t s_test_batches = 0;
static size_t s_test_batched = 0;       //  in the last one

//  The next message presence sent the bridge, a BATCH taken apart.
static zmsg_t *
s_test_next (zsock_t *sock)
{
    zmsg_t *msg = s_test_batch ? inproc_batch_next (s_test_batch) : NULL;
    if (msg)
        return msg;
    zmsg_destroy (&s_test_batch);
    msg = zmsg_recv (sock);
    if (msg && inproc_batch_is (msg)) {
        s_test_batch = msg;
        msg = inproc_batch_next (s_test_batch);
        s_test_batches++;
        s_test_batched = 1;
        //  Count what is left: a count frame, then that many frames
        for (zframe_t *frame = zmsg_first (s_test_batch); frame; s_test_batched++) {
            size_t frames = zframe_size (frame) == 1 ? *zframe_data (frame) : 0;
            assert (frames);
            for (size_t i = 0; i <= frames; i++)
                frame = zmsg_next (s_test_batch);
        }
    }
    return msg;
}

//  Receives the next message on sock and checks it is exactly verb user
//  room. A timeout is a failure.
static void
s_expect (test_t *t, zsock_t *sock, const char *behaviour,
          const char *verb, const char *user, const char *room)
{
    char *got_verb = NULL, *got_user = NULL, *got_room = NULL;
    zmsg_t *msg = s_test_next (sock);
    bool ok = msg && zmsg_size (msg) == 3;
    if (ok) {
        got_verb = zmsg_popstr (msg);
        got_user = zmsg_popstr (msg);
        got_room = zmsg_popstr (msg);
        ok = streq (got_verb, verb) && streq (got_user, user) && streq (got_room, room);
    }
    if (!ok)
        fprintf (stderr, "presence_test: got %s %s %s, want %s %s %s\n",
                 got_verb ? got_verb : msg ? "a malformed message" : "nothing (timeout)",
                 got_user ? got_user : "", got_room ? got_room : "", verb, user, room);
    s_check (t, ok, behaviour);
    free (got_verb);
    free (got_user);
    free (got_room);
    zmsg_destroy (&msg);
}

//  Returns COUNT user room, or -1 when the actor does not answer in time.
static int
s_count (zactor_t *presence, const char *user, const char *room)
{
    int count = -1;
    zsock_send (presence, "sss", "COUNT", user, room);
    if (zsock_recv (presence, "i", &count) == -1)
        return -1;
    return count;
}

//  The CONNECT of a fresh user comes back as an UP behind everything the
//  actor sent before it: receiving it proves nothing else was emitted, and
//  that every earlier message was handled. Its conn never disconnects.
static void
s_probe (test_t *t, zsock_t *to_presence, zsock_t *bridge, rtws_conn_id_t *next_conn,
         const char *behaviour)
{
    char user [32];
    snprintf (user, sizeof user, "probe-%" PRIu64, *next_conn);
    zsock_send (to_presence, "s8ss", "CONNECT", (*next_conn)++, user, "probes");
    s_expect (t, bridge, behaviour, "PRESENCE_UP", user, "probes");
}

static void
s_stop (zactor_t **actor_p)
{
    //  A blocking pipe again, so zactor_destroy waits for the thread to end.
    zsock_set_rcvtimeo (*actor_p, -1);
    zactor_destroy (actor_p);
}

int
presence_test (bool verbose)
{
    test_t test = { verbose, 0 };
    test_t *t = &test;
    if (verbose)
        rtws_log_set_level (RTWS_LOG_DEBUG);
    else
        rtws_log_set_level (RTWS_LOG_ERROR);

    rtws_config_t *config = rtws_config_new ();
    assert (config);
    //  Long enough that no periodic KEEP falls inside the ordered checks.
    config->presence_ttl = 60;

    //  Play the bridge: bind the endpoint presence pushes to.
    zsock_t *bridge = zsock_new_pull ("@" RTWS_EP_BRIDGE);
    assert (bridge);
    zsock_set_rcvtimeo (bridge, TEST_TIMEOUT);

    zactor_t *presence = zactor_new (presence_actor, config);
    assert (presence);
    zsock_set_rcvtimeo (presence, TEST_TIMEOUT);
    zsock_t *gateway = zsock_new_push (">" RTWS_EP_PRESENCE);
    assert (gateway);
    zsock_set_sndtimeo (gateway, TEST_TIMEOUT);
    rtws_conn_id_t probe_conn = 1000;

    //  Two tabs of one user in one room: one UP.
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 1, "alice", "r1");
    s_expect (t, bridge, "first connection of alice in r1 sends UP", "PRESENCE_UP", "alice", "r1");
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 2, "alice", "r1");
    s_probe (t, gateway, bridge, &probe_conn, "second connection of alice in r1 sends no UP");
    s_check (t, s_count (presence, "alice", "r1") == 2, "COUNT alice r1 is 2 with two tabs");

    //  Closing one tab keeps the user present; closing the last sends DOWN.
    zsock_send (gateway, "s8", "DISCONNECT", (uint64_t) 1);
    s_probe (t, gateway, bridge, &probe_conn, "closing one of two tabs sends no DOWN");
    s_check (t, s_count (presence, "alice", "r1") == 1, "COUNT alice r1 is 1 after one tab closed");
    zsock_send (gateway, "s8", "DISCONNECT", (uint64_t) 2);
    s_expect (t, bridge, "closing the last tab sends DOWN", "PRESENCE_DOWN", "alice", "r1");
    s_check (t, s_count (presence, "alice", "r1") == 0, "COUNT alice r1 is 0 after the last tab");
    zsock_send (gateway, "s8", "DISCONNECT", (uint64_t) 2);
    s_probe (t, gateway, bridge, &probe_conn, "a second DISCONNECT of a conn sends nothing");

    //  Rooms are independent.
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 5, "alice", "r2");
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 6, "alice", "r3");
    s_expect (t, bridge, "alice in r2 sends UP r2", "PRESENCE_UP", "alice", "r2");
    s_expect (t, bridge, "alice in r3 sends UP r3", "PRESENCE_UP", "alice", "r3");
    zsock_send (gateway, "s8", "DISCONNECT", (uint64_t) 5);
    s_expect (t, bridge, "leaving r2 sends DOWN r2", "PRESENCE_DOWN", "alice", "r2");
    s_probe (t, gateway, bridge, &probe_conn, "leaving r2 sends nothing for r3");
    s_check (t, s_count (presence, "alice", "r3") == 1, "alice stays in r3 after leaving r2");
    s_check (t, s_count (presence, "alice", "r2") == 0, "alice is gone from r2");

    //  The same user id in two rooms is two pairs, and two users in one room too.
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 7, "bob", "r3");
    s_expect (t, bridge, "bob in r3 sends UP", "PRESENCE_UP", "bob", "r3");
    s_check (t, s_count (presence, "bob", "r3") == 1, "bob and alice are counted apart");

    //  TOUCH sends KEEP, at most once per second per (user, room).
    zsock_send (gateway, "s8", "TOUCH", (uint64_t) 6);
    zsock_send (gateway, "s8", "TOUCH", (uint64_t) 6);
    s_expect (t, bridge, "TOUCH sends KEEP", "PRESENCE_KEEP", "alice", "r3");
    s_probe (t, gateway, bridge, &probe_conn, "a second TOUCH within a second sends no KEEP");
    zsock_send (gateway, "s8", "TOUCH", (uint64_t) 7);
    s_expect (t, bridge, "the rate limit is per (user, room)", "PRESENCE_KEEP", "bob", "r3");

    //  Unknown conns are ignored.
    zsock_send (gateway, "s8", "TOUCH", (uint64_t) 999);
    zsock_send (gateway, "s8", "DISCONNECT", (uint64_t) 999);
    s_probe (t, gateway, bridge, &probe_conn, "TOUCH and DISCONNECT of unknown conns send nothing");

    //  Names out of bounds are dropped, not asserted.
    char long_user [RTWS_USER_MAX + 2];
    memset (long_user, 'u', sizeof long_user - 1);
    long_user [sizeof long_user - 1] = 0;
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 8, long_user, "r1");
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 9, "carol", "");
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 10, "carol", "a\x1f" "b");
    zsock_send (gateway, "s8", "TOUCH", (uint64_t) 8);
    s_probe (t, gateway, bridge, &probe_conn, "a too-long user or a bad room is dropped");
    long_user [RTWS_USER_MAX] = 0;
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 8, long_user, "r1");
    s_expect (t, bridge, "a user id of exactly RTWS_USER_MAX bytes is accepted",
              "PRESENCE_UP", long_user, "r1");

    //  A duplicate CONNECT does not count the conn twice.
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 7, "bob", "r3");
    s_probe (t, gateway, bridge, &probe_conn, "a duplicate CONNECT sends nothing");
    s_check (t, s_count (presence, "bob", "r3") == 1, "a duplicate CONNECT is not counted");

    //  A BATCH from the gateway is handled message by message, in order,
    //  and what it causes reaches the bridge as one BATCH of net changes:
    //  a connection that opened and closed within it is never announced.
    inproc_batch_t news = { NULL, 0, NULL };
    const char *users [] = { "erin", "frank", "grace" };
    for (int i = 0; i < 3; i++) {
        zmsg_t *msg = zmsg_new ();
        zmsg_addstr (msg, "CONNECT");
        zmsg_addstrf (msg, "%d", 20 + i);
        zmsg_addstr (msg, users [i]);
        zmsg_addstr (msg, "rb");
        s_check (t, inproc_batch_add (&news, &msg, gateway) == 0 && !msg,
                 "a message joins a batch");
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, "DISCONNECT");
    zmsg_addstr (msg, "21");
    inproc_batch_add (&news, &msg, gateway);
    s_check (t, news.count == 4, "the batch holds four messages");
    s_check (t, inproc_batch_send (&news, gateway) == 0 && news.count == 0,
             "a batch is sent whole");
    size_t batches = s_test_batches;
    s_expect (t, bridge, "a batch's first CONNECT sends UP", "PRESENCE_UP", "erin", "rb");
    s_check (t, s_test_batches == batches + 1 && s_test_batched == 2,
             "what one batch caused reaches the bridge as one batch of two");
    s_expect (t, bridge, "a batch's third CONNECT sends UP", "PRESENCE_UP", "grace", "rb");
    s_probe (t, gateway, bridge, &probe_conn,
             "a connection opened and closed within one flush sends neither UP nor DOWN");
    s_check (t, s_count (presence, "grace", "rb") == 1, "a batch's CONNECT is counted");
    s_check (t, s_count (presence, "frank", "rb") == 0, "a batch's DISCONNECT is counted");

    //  A reconnect within one flush (a page reload) keeps the user present:
    //  no DOWN, no second UP. One batch, so one flush holds both.
    msg = zmsg_new ();
    zmsg_addstr (msg, "DISCONNECT");
    zmsg_addstr (msg, "22");
    inproc_batch_add (&news, &msg, gateway);
    msg = zmsg_new ();
    zmsg_addstr (msg, "CONNECT");
    zmsg_addstr (msg, "23");
    zmsg_addstr (msg, "grace");
    zmsg_addstr (msg, "rb");
    inproc_batch_add (&news, &msg, gateway);
    inproc_batch_send (&news, gateway);
    s_probe (t, gateway, bridge, &probe_conn, "a reconnect within one flush sends nothing");
    s_check (t, s_count (presence, "grace", "rb") == 1, "the reconnected user is counted once");
    zsock_send (gateway, "s8", "DISCONNECT", (uint64_t) 23);
    s_expect (t, bridge, "the reconnected user's last close sends DOWN", "PRESENCE_DOWN",
              "grace", "rb");

    //  $TERM sends no DOWN for the pairs still present.
    s_stop (&presence);
    zsock_destroy (&gateway);
    zsock_set_rcvtimeo (bridge, 0);
    zmsg_t *stray = zmsg_recv (bridge);
    s_check (t, stray == NULL, "$TERM sends no DOWN and nothing unexpected is left");
    zmsg_destroy (&stray);
    zsock_set_rcvtimeo (bridge, TEST_TIMEOUT);

    //  With PRESENCE_TTL=1, a KEEP for every present pair every 500 ms.
    config->presence_ttl = 1;
    presence = zactor_new (presence_actor, config);
    assert (presence);
    zsock_set_rcvtimeo (presence, TEST_TIMEOUT);
    gateway = zsock_new_push (">" RTWS_EP_PRESENCE);
    assert (gateway);
    zsock_set_sndtimeo (gateway, TEST_TIMEOUT);
    zsock_send (gateway, "s8ss", "CONNECT", (uint64_t) 1, "dave", "r9");
    s_expect (t, bridge, "restarted actor binds its endpoint again", "PRESENCE_UP", "dave", "r9");
    int64_t start = zclock_mono ();
    s_expect (t, bridge, "periodic KEEP arrives with PRESENCE_TTL=1",
              "PRESENCE_KEEP", "dave", "r9");
    int64_t first = zclock_mono ();
    s_expect (t, bridge, "periodic KEEP repeats", "PRESENCE_KEEP", "dave", "r9");
    int64_t second = zclock_mono ();
    if (verbose)
        printf ("presence_test: periodic KEEPs after %" PRId64 " and %" PRId64 " ms\n",
                first - start, second - first);
    //  Lower bound only: an upper bound would be a timing test under load.
    s_check (t, second - first >= 400, "periodic KEEPs are about 500 ms apart, not a burst");

    s_stop (&presence);
    zsock_destroy (&gateway);
    zsock_destroy (&bridge);
    zmsg_destroy (&s_test_batch);
    rtws_config_destroy (&config);

    printf ("presence_test: %s (%d failure%s)\n", t->failures ? "FAILED" : "OK",
            t->failures, t->failures == 1 ? "" : "s");
    return t->failures;
}
