/*  gateway.c - the gateway actor: WebSocket connections (libwebsockets).

    The only file that includes libwebsockets.h. It accepts connections on
    GET /ws/{room}, runs the handshake checks of docs/PROTOCOL.md section 2
    before the upgrade, turns client frames into router and presence
    messages, writes DELIVERed frames, and keeps heartbeat and idle timers.
    It also serves the operations endpoints (/healthz, /readyz, /metrics)
    on a second listener, and drains the node on request.

    Message vocabulary (pictures are zsock_send pictures):

    Pipe (from rtwsd.c or a test):
        $TERM                   close every client with 1001 at once, then exit
        PORT            -> i    the bound listen port, -1 when listening failed
        ADMIN_PORT      -> i    the bound admin port; 0 when ADMIN_PORT=0 (off),
                                -1 when the admin listener could not listen
        CONFIG config   -> i    SIGHUP: config ("p", a const rtws_config_t *
                                owned by rtwsd.c) replaces ours on both
                                threads; 1 once the service thread uses it
        DRAIN           -> i    stop accepting (handshakes 503, /readyz 503),
                                close every client with 1001 "going away",
                                spread evenly over DRAIN_TIMEOUT seconds,
                                and answer once the last one is gone: i is
                                how many connections the drain closed. Sent
                                once, before $TERM.

    In, PULL bound at RTWS_EP_GATEWAY (from router and bridge):
        DELIVER payload conns   ssb   write payload (a JSON text frame) to
                                      each conn; conns is an array of
                                      rtws_conn_id_t, unknown ids are skipped
        REFUSED conn ref        s8s   the bridge could not take conn's PUBLISH
                                      ref: answer system.error "unavailable"
        KICK conn               s8    the router could not make conn a member
                                      of its room (out of memory): close it
                                      with 1011 "internal error"
        STATS "router" rooms shed
                                ss88  every second: rooms with a local member;
                                      DELIVERs the router shed since start
                                      because our inbox was full
        STATS "bridge" engine connected outbox reconnects not_json too_big bad_channel
                                sssi88888
                                      every second, and at once when
                                      connected changes: engine "memory" or
                                      "redis"; connected 1/0 (memory: 1);
                                      Redis outbox depth; times the node
                                      connected to Redis again after losing
                                      it; payloads from Redis dropped as not
                                      a JSON object, too big, or on a channel
                                      that is not room:{room} (all totals)
                                The latest STATS of each sender is cached for
                                /readyz and /metrics; nothing is answered.

    Out, PUSH to RTWS_EP_ROUTER:
        JOIN conn room          s8s   a connection was upgraded in room
        LEAVE conn room         s8s   that connection closed
        PUBLISH room payload conn ref
                                sss8s a chat.delivery frame for the room;
                                      conn and ref (the message id) name the
                                      sender for a REFUSED answer
        JOINS                   s     JOINs wait on the join socket (below)
    Out, PUSH to RTWS_EP_PRESENCE:
        CONNECT conn user room  s8ss
        DISCONNECT conn         s8
        TOUCH conn              s8    client activity, at most 1/s per conn
    All but PUBLISH travel in batches, one per destination per pass of the
    service loop (inproc.h; s_news_flush).
    Out, PUSH to RTWS_EP_ROUTER_JOIN (with several service threads only):
        JOIN conn room          s8s   sent in the handshake, before the 101,
                                      instead of the JOIN above: the router
                                      reads this socket after each burst of
                                      its inbox and before handling it, so a
                                      message published after the client saw
                                      its 101 (from any thread) finds it. It
                                      does not poll it: a JOINS on the PUSH
                                      above, at the end of the pass, does
        LEAVE conn room         s8s   the upgrade failed after the JOIN
    Out, DEALER to RTWS_EP_AUTH (request/reply, synchronous):
        VERIFY seq token        s8s   -> OK seq user exp | FAIL seq reason 0

    Threads: lws 4.1 blocks in lws_service() and ignores its timeout, and
    Debian builds it with one service thread per context (LWS_MAX_SMP 1).
    So this actor owns GATEWAY_THREADS shards besides its own thread: each
    shard is an lws context with its own service thread, its own listening
    socket on the shared port (SO_REUSEPORT when there are several: the
    kernel spreads new connections over them), its own connections and
    its own sockets to auth, router and presence. A connection id carries
    its shard in its low S_SHARD_BITS bits. The actor thread polls the pipe
    and the PULL socket and forwards each message over an inproc PAIR to
    the shard it concerns - a DELIVER split by the shards of its ids, a
    REFUSED to its connection's shard, STATS to shard 0, which also serves
    the admin vhost - then calls lws_cancel_service(), the one lws call
    that is safe from another thread. The service thread gets
    LWS_CALLBACK_EVENT_WAIT_CANCELLED and drains its PAIR completely
    (wake-ups merge). Every other lws call, every session, and the sockets
    to the siblings belong to their service thread alone; what the shards
    share is the live-connection count (atomic), the per-address map
    (mutex) and each other's metrics (one writer each, relaxed atomics,
    summed by shard 0 for /metrics). Two messages go the other way on a
    PAIR: "DRAINED" i and "CONFIGURED" 1; the actor thread answers DRAIN
    and CONFIG on the pipe once every shard has.

    Vhosts per shard's context (LWS_SERVER_OPTION_EXPLICIT_VHOSTS):
    "public" serves /ws/{room} on the connections its listening socket on
    HOST:PORT accepts ("listener" watches that socket); shard 0 alone has
    "admin" on
    ADMIN_HOST:ADMIN_PORT (not created when ADMIN_PORT is 0) answers plain
    HTTP GET only: /healthz 200 "ok" whenever the service loop runs;
    /readyz 200 "ready" while the node accepts connections and, with the
    Redis engine, the bridge says it is connected, else 503 with the reason
    ("draining", "redis disconnected", "full"); /metrics in the Prometheus
    text format 0.0.4; anything else 404, other methods 405, a WebSocket
    upgrade 404. lws bounds the request line and headers; each answer is
    built into one buffer of at most S_ADMIN_BODY_MAX bytes. The admin
    vhost shares shard 0's service thread, so an answer on the admin port
    proves that thread serves WebSocket connections too (the others are
    not probed).

    Metrics are integers with one writer each, their shard's service
    thread, counted where the event happens (relaxed atomic stores, summed
    by shard 0 for /metrics); the fan-out path pays one increment per frame
    written, plus one histogram bucket for frames that carry a "ts": the
    accept time of a chat.delivery (wall clock, written last by our
    encoder), parsed once per DELIVER, not per recipient. A "ts" from
    another node includes the clock difference between the two.

    Drain: connections open when DRAIN arrives are closed in batches every
    S_DRAIN_TICK_US, so that after k of the DRAIN_TIMEOUT / tick batches
    about k / batches of them are closed (DRAIN_TIMEOUT 0: all at once); the
    last batch also closes anything still open. The drain is over as soon
    as no connection is left. A client that does not answer its close frame
    is dropped after S_CLOSE_GRACE_US, so a drain ends at most
    DRAIN_TIMEOUT + 2 s after it began; an idle node drains at once.

    The handshake asks auth synchronously: FILTER_PROTOCOL_CONNECTION must
    return its verdict before lws answers the upgrade, and lws 4.1 cannot
    park a handshake. The round trip over inproc is a few microseconds;
    JWT verification itself costs the same wherever it runs.

    Fan-out shares one frame buffer (with LWS_PRE headroom) between every
    recipient's queue, reference-counted; nothing is copied per recipient.
    lws_write writes the frame header into the headroom, which is the same
    for every recipient of a server frame, and copies any part the kernel
    did not take, so sharing the buffer is safe on this one thread. When
    several frames wait for one connection (a busy room, a reader a little
    behind), s_write_merged copies them with their headers into one buffer
    and writes it in one send: per delivery, the syscall costs more than
    the copy.
*/

#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include "channel.h"
#include "codec.h"
#include "config.h"
#include "gateway_recv.h"
#include "inproc.h"
#include "log.h"
#include "origin.h"
#include "rtws.h"
#include "token.h"

#define GW "gateway"

//  A server frame shared by every queue that holds it.
typedef struct {
    size_t refs;                //  queues (and the caller) holding it
    size_t len;                 //  payload bytes after the headroom
    double ts;                  //  accept time (Unix s) for the latency
                                //  histogram, 0 = not observed
    unsigned char buf [];       //  LWS_PRE headroom, then the payload
} s_frame_t;

//  A connection's unsent frames: a ring that grows up to its bound.
typedef struct {
    s_frame_t **ring;           //  cap slots, NULL until the first frame
    size_t cap;                 //  slots allocated
    size_t head;                //  index of the oldest frame
    size_t count;               //  frames queued
    size_t bytes;               //  payload bytes queued
} s_queue_t;

//  Per-session data, allocated by lws before FILTER_PROTOCOL_CONNECTION.
typedef struct s_session_t s_session_t;
struct s_session_t {
    rtws_conn_id_t id;          //  0 until the handshake's checks passed
    bool joined;                //  its JOIN went on the join socket (several threads)
    bool counted;               //  holds a place under the caps (s_reserve)
    bool established;           //  ESTABLISHED came: a live connection
    struct lws *wsi;            //  ours, from ESTABLISHED
    s_session_t *wheel_next;    //  the timer wheel slot's list (s_wheel_*)
    s_session_t *wheel_prev;
    s_session_t *fire_next;     //  due in this tick
    int64_t wheel_due;          //  monotonic us this session's timer is due
    bool in_wheel;
    char room [RTWS_ROOM_MAX + 1];
    char user [RTWS_USER_MAX + 1];
    int64_t exp;                //  token expiry, Unix seconds, 0 = none
    s_queue_t out;              //  frames waiting for WRITEABLE
    char *rx;                   //  a message being assembled from fragments
    size_t rx_len;              //  bytes in rx
    size_t rx_cap;              //  bytes allocated for rx
    int64_t last_rx;            //  monotonic us of the last data frame
    int64_t next_ping;          //  monotonic us of the next system.ping
    int64_t last_touch;         //  monotonic us of the last TOUCH sent
    int64_t opened;             //  monotonic us of ESTABLISHED
    int close_code;             //  non-zero: close at the next WRITEABLE
    const char *close_reason;   //  static text sent with close_code
    int64_t kill_at;            //  monotonic us: drop without a close frame
    double tokens;              //  rate limit bucket: frames that may come now
    int64_t refilled;           //  monotonic us the bucket was last filled
    size_t strikes;             //  frames refused in a row by the rate limit
    char peer [48];             //  client address, counted per address
};

//  Session deadlines - heartbeat, idle, token expiry, close grace - on one
//  hashed timer wheel per shard, driven by one lws timer. lws 4.1 keeps
//  its timers in one sorted list per thread, so a timer per session made
//  each arming walk every other session's: at 15,000 connections that was
//  29% of the CPU of connecting (BENCHMARKS.md). Here arming is O(1) and a
//  tick walks one slot. Deadlines are rounded up to S_WHEEL_TICK_US; one
//  due beyond a turn of the wheel stays in its slot until its turn comes.
#define S_WHEEL_TICK_US     (50000LL)
#define S_WHEEL_SLOTS       1024
typedef struct {
    s_session_t *slots [S_WHEEL_SLOTS];
    int64_t tick;               //  last tick processed
    size_t count;               //  sessions in the wheel
    bool armed;                 //  sul is scheduled
    lws_sorted_usec_list_t sul; //  the one lws timer
} s_wheel_t;

//  A connection id -> wsi map (open addressing, linear probing).
typedef struct {
    rtws_conn_id_t key;         //  0 = free slot
    struct lws *wsi;
} s_slot_t;

typedef struct {
    s_slot_t *slots;            //  cap slots
    size_t cap;                 //  a power of two
    size_t count;               //  used slots
} s_connmap_t;

//  Per-request data of the admin listener.
typedef struct {
    char *body;                 //  the answer after LWS_PRE headroom, until written
    size_t len;                 //  its bytes
} s_admin_session_t;

//  Why a handshake was answered without an upgrade.
typedef enum {
    S_REJECT_BAD_ROOM,
    S_REJECT_BAD_ORIGIN,
    S_REJECT_UNAUTHORIZED,
    S_REJECT_SERVER_FULL,
    S_REJECT_PER_IP,
    S_REJECT_URI_TOO_LONG,
    S_REJECT_NOT_FOUND,
    S_REJECT_UNAVAILABLE,       //  draining, stopping, or auth did not answer
    S_REJECTS
} s_reject_t;

static const char *const s_reject_names [S_REJECTS] = {
    "bad_room", "bad_origin", "unauthorized", "server_full",
    "too_many_per_ip", "uri_too_long", "not_found", "unavailable"
};

//  Why a frame did not reach a client (or the room).
typedef enum {
    S_DROP_RATE_LIMITED,        //  a client frame over its token bucket
    S_DROP_SLOW_CONSUMER,       //  frames discarded with a slow consumer
    S_DROP_UNAVAILABLE,         //  a chat.message the router or bridge refused
    S_DROP_CLOSING,             //  a frame for a connection already closing
    S_DROPS
} s_drop_t;

static const char *const s_drop_names [S_DROPS] = {
    "rate_limited", "slow_consumer", "unavailable", "closing"
};

//  Closes by code and reason. A fixed table, so clients cannot grow the
//  label set: their own codes other than 1000 and 1001 count as "other".
//  1006 "abnormal": the connection ended without a close code either side
//  gave (the client vanished, or lws closed it, e.g. for invalid UTF-8).
typedef struct {
    int code;                   //  0 = any other code
    const char *label;          //  the code as the label shows it
    const char *reason;
} s_close_kind_t;

static const char s_client_closed [] = "client closed";

static const s_close_kind_t s_close_kinds [] = {
    { 1000, "1000", "idle timeout" },
    { 1001, "1001", "going away" },
    { 1002, "1002", "unmasked frame" },
    { 1003, "1003", "binary frame" },
    { 1008, "1008", "slow consumer" },
    { 1008, "1008", "rate limited" },
    { 1008, "1008", "token expired" },
    { 1009, "1009", "message too big" },
    { 1011, "1011", "internal error" },
    { 1000, "1000", s_client_closed },
    { 1001, "1001", s_client_closed },
    { 0, "other", s_client_closed },
    { 1006, "1006", "abnormal" },
    { 0, "other", "other" }
};
#define S_CLOSE_KINDS (sizeof s_close_kinds / sizeof s_close_kinds [0])

//  Upper bounds of the delivery latency histogram, seconds.
static const double s_latency_bounds [] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5
};
#define S_LATENCY_BOUNDS (sizeof s_latency_bounds / sizeof s_latency_bounds [0])

//  What /metrics reports of the gateway's own work (service thread only).
typedef struct {
    uint64_t connections;       //  connections upgraded since start
    uint64_t rejections [S_REJECTS];
    uint64_t received;          //  complete client data messages
    uint64_t received_bytes;    //  payload bytes of client data frames
    uint64_t published;         //  chat.messages handed to the router
    uint64_t deliveries;        //  frames written to clients
    uint64_t sent_bytes;        //  payload bytes of those frames
    uint64_t drops [S_DROPS];
    uint64_t closes [S_CLOSE_KINDS];
    uint64_t latency [S_LATENCY_BOUNDS + 1];  //  per bucket, the last is +Inf
    uint64_t latency_sum_ns;    //  nanoseconds, over every observation
    uint64_t latency_count;     //  observations
} s_metrics_t;

//  Counters have one writer, their shard's service thread, and one reader
//  besides it, shard 0 rendering /metrics: relaxed atomic loads and
//  stores, no lock, no read-modify-write instruction.
#define S_COUNT(counter, n) \
    __atomic_store_n (&(counter), __atomic_load_n (&(counter), __ATOMIC_RELAXED) + (n), \
                      __ATOMIC_RELAXED)
#define S_READ(counter)     __atomic_load_n (&(counter), __ATOMIC_RELAXED)

//  The latest STATS of router and bridge (shard 0's service thread only).
typedef struct {
    uint64_t rooms;             //  router: rooms with a local member
    uint64_t router_shed;       //  router: DELIVERs shed, total
    bool bridge_heard;          //  a bridge STATS arrived
    bool connected;             //  bridge: connected (memory: always)
    uint64_t outbox;            //  bridge: Redis outbox depth
    uint64_t reconnects;        //  bridge: reconnections to Redis
    uint64_t not_json;          //  bridge: payloads dropped, by reason
    uint64_t too_big;
    uint64_t bad_channel;
} s_stats_t;

typedef struct gateway_t gateway_t;

//  A connection id carries its shard in the low bits, so that a DELIVER
//  or REFUSED finds the service thread that owns the connection.
#define S_SHARD_BITS        6
#define S_SHARDS_MAX        (1 << S_SHARD_BITS)
#define S_SHARD_OF(id)      ((size_t) ((id) & (S_SHARDS_MAX - 1)))

//  What the shards share: the list is written by the actor thread before
//  any service thread starts (s_actor_new), then only the atomic count and
//  the mutex-guarded map change (s_reserve, s_release).
typedef struct {
    size_t connections;         //  connections holding a place, every shard (atomic)
    pthread_mutex_t peers_lock; //  guards per_peer
    zhashx_t *per_peer;         //  client address -> live connections (as a
                                //  pointer-sized count), when capped
    gateway_t *shards [S_SHARDS_MAX];  //  for /metrics: every shard's counters
    size_t count;               //  shards running
} s_shared_t;

//  One shard: an lws context and the service thread that runs it, with
//  the connections the kernel handed to its listening socket.
struct gateway_t {
    const rtws_config_t *config;  //  read-only, owned by rtwsd.c
    s_shared_t *shared;         //  owned by the actor
    size_t shard;               //  index, 0 .. GATEWAY_THREADS - 1
    struct lws_context *context;  //  NULL when set-up failed
    struct lws_vhost *vhost;    //  "public": /ws/{room}, fed by s_listen_callback
    struct lws_vhost *listener; //  "listener": the listening socket, as a raw fd
    struct lws_vhost *admin;    //  "admin" (shard 0): /healthz /readyz /metrics, or NULL
    int admin_port;             //  bound admin port, 0 = off, -1 = failed
    bool redis;                 //  the bridge runs the Redis engine
    int64_t started;            //  wall clock Unix s at start-up
    pthread_t service;          //  the lws service thread
    bool service_started;
    zsock_t *pair_in;           //  actor thread: forwards to the service thread
    //  Everything below belongs to the service thread once it runs.
    zsock_t *pair_out;          //  messages from (and DRAINED to) the actor thread
    zsock_t *router;            //  PUSH to RTWS_EP_ROUTER
    zsock_t *presence;          //  PUSH to RTWS_EP_PRESENCE
    zsock_t *auth;              //  DEALER to RTWS_EP_AUTH
    zsock_t *joins;             //  PUSH to RTWS_EP_ROUTER_JOIN, with several shards
    inproc_batch_t to_router;   //  connection news for the router, sent per pass
    inproc_batch_t to_presence; //  connection news for presence, sent per pass
    bool joins_sent;            //  a JOIN went on the join socket in this pass
    uint64_t auth_seq;          //  last VERIFY sequence number
    rtws_conn_id_t next_id;     //  last connection number handed out
    s_connmap_t conns;          //  live (ESTABLISHED) connections of this shard
    int spare_fd;               //  held open to shed a connection at EMFILE
    struct lws *listening;      //  the raw wsi watching our listening socket
    lws_sorted_usec_list_t accept_sul;  //  resumes accepting after a pause
    bool stopping;              //  $TERM seen: refuse, close, then exit
    bool done;                  //  the service loop may end
    bool draining;              //  DRAIN seen: refuse, close in batches
    int64_t drain_start;        //  monotonic us of DRAIN
    size_t drain_total;         //  connections open when DRAIN came
    size_t drain_closed;        //  connections the drain has closed so far
    bool drain_reported;        //  DRAINED was sent: the drain is over
    lws_sorted_usec_list_t drain_sul;  //  the next batch
    s_wheel_t wheel;            //  session deadlines
    unsigned char *merge;       //  LWS_PRE + S_MERGE_MAX: frames merged for one write
    s_metrics_t metrics;        //  counted here, rendered by /metrics
    s_stats_t stats;            //  cached STATS of router and bridge
    frame_guards_t guards;      //  per fd: the mask check (gateway_recv.c)
};

//  How long a client gets to answer our close frame before it is dropped.
#define S_CLOSE_GRACE_US    (2 * 1000000LL)
//  How long the handshake waits for auth before answering 503.
#define S_AUTH_TIMEOUT_MS   2000
//  Frames written to one connection per WRITEABLE, so one busy connection
//  cannot hold the service thread while others wait.
#define S_WRITES_PER_ROUND  64
//  Activity refreshes presence at most this often per connection.
#define S_TOUCH_EVERY_US    (1000000LL)
//  A drain closes one batch of connections this often.
#define S_DRAIN_TICK_US     (100000LL)
//  How long a shard stops accepting when it is out of fds and has no spare.
#define S_ACCEPT_PAUSE_US   (100000LL)
//  Largest write that merges several queued frames (s_write_merged).
#define S_MERGE_MAX         (64 * 1024)
//  Connections one shard accepts per wake-up before it serves the others.
#define S_ACCEPT_BATCH      32
//  Largest admin answer (the metrics text is far smaller: its label sets
//  are fixed).
#define S_ADMIN_BODY_MAX    (64 * 1024)

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

//  --------------------------------------------------------------------------
//  Connection map

static size_t
s_connmap_hash (rtws_conn_id_t key, size_t cap)
{
    return (size_t) ((key * 0x9E3779B97F4A7C15ULL) >> 17) & (cap - 1);
}

static void
s_connmap_put (s_connmap_t *map, rtws_conn_id_t key, struct lws *wsi);

static void
s_connmap_grow (s_connmap_t *map)
{
    s_slot_t *old = map->slots;
    size_t old_cap = map->cap;
    map->cap = old_cap ? old_cap * 2 : 1024;
    map->slots = calloc (map->cap, sizeof (s_slot_t));
    assert (map->slots);
    map->count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old [i].key)
            s_connmap_put (map, old [i].key, old [i].wsi);
    free (old);
}

static void
s_connmap_put (s_connmap_t *map, rtws_conn_id_t key, struct lws *wsi)
{
    if ((map->count + 1) * 10 > map->cap * 7)
        s_connmap_grow (map);
    size_t i = s_connmap_hash (key, map->cap);
    while (map->slots [i].key)
        i = (i + 1) & (map->cap - 1);
    map->slots [i].key = key;
    map->slots [i].wsi = wsi;
    map->count++;
}

static struct lws *
s_connmap_get (s_connmap_t *map, rtws_conn_id_t key)
{
    if (!map->cap)
        return NULL;
    size_t i = s_connmap_hash (key, map->cap);
    while (map->slots [i].key) {
        if (map->slots [i].key == key)
            return map->slots [i].wsi;
        i = (i + 1) & (map->cap - 1);
    }
    return NULL;
}

//  Backward-shift deletion keeps probe chains intact without tombstones.
static void
s_connmap_remove (s_connmap_t *map, rtws_conn_id_t key)
{
    if (!map->cap)
        return;
    size_t mask = map->cap - 1;
    size_t i = s_connmap_hash (key, map->cap);
    while (map->slots [i].key && map->slots [i].key != key)
        i = (i + 1) & mask;
    if (!map->slots [i].key)
        return;
    map->slots [i].key = 0;
    map->count--;
    size_t j = i;
    while (true) {
        j = (j + 1) & mask;
        if (!map->slots [j].key)
            break;
        size_t home = s_connmap_hash (map->slots [j].key, map->cap);
        //  Move j back to i unless its home lies cyclically in (i, j].
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            map->slots [i] = map->slots [j];
            map->slots [j].key = 0;
            i = j;
        }
    }
}

//  --------------------------------------------------------------------------
//  Frames and queues

static s_frame_t *
s_frame_new (const char *data, size_t len)
{
    s_frame_t *frame = malloc (sizeof (s_frame_t) + LWS_PRE + len);
    if (!frame)
        return NULL;
    frame->refs = 0;
    frame->len = len;
    frame->ts = 0;
    memcpy (frame->buf + LWS_PRE, data, len);
    return frame;
}

static void
s_frame_unref (s_frame_t *frame)
{
    assert (frame->refs > 0);
    if (--frame->refs == 0)
        free (frame);
}

//  Returns 0, or -1 when the queue is at its bound (the frame is not taken).
static int
s_queue_push (s_queue_t *queue, s_frame_t *frame, const rtws_config_t *config)
{
    if (queue->count >= config->max_queue_messages
    ||  queue->bytes + frame->len > config->max_queue_bytes)
        return -1;
    if (queue->count == queue->cap) {
        size_t cap = queue->cap ? queue->cap * 2 : 8;
        if (cap > config->max_queue_messages)
            cap = config->max_queue_messages;
        s_frame_t **ring = malloc (cap * sizeof (s_frame_t *));
        if (!ring)
            return -1;
        for (size_t i = 0; i < queue->count; i++)
            ring [i] = queue->ring [(queue->head + i) % queue->cap];
        free (queue->ring);
        queue->ring = ring;
        queue->cap = cap;
        queue->head = 0;
    }
    queue->ring [(queue->head + queue->count) % queue->cap] = frame;
    queue->count++;
    queue->bytes += frame->len;
    frame->refs++;
    return 0;
}

static s_frame_t *
s_queue_pop (s_queue_t *queue)
{
    if (!queue->count)
        return NULL;
    s_frame_t *frame = queue->ring [queue->head];
    queue->head = (queue->head + 1) % queue->cap;
    queue->count--;
    queue->bytes -= frame->len;
    return frame;
}

//  The oldest frame, left in the queue; NULL when empty.
static s_frame_t *
s_queue_peek (const s_queue_t *queue)
{
    return queue->count ? queue->ring [queue->head] : NULL;
}

static void
s_queue_clear (s_queue_t *queue)
{
    s_frame_t *frame;
    while ((frame = s_queue_pop (queue)))
        s_frame_unref (frame);
    free (queue->ring);
    memset (queue, 0, sizeof *queue);
}

//  --------------------------------------------------------------------------
//  Delivery latency (service thread)

//  The accept time a payload carries: the number after its last "ts": key
//  (our encoder writes ts last, as seconds with a fraction), or 0 when it
//  has none (a backend's publish). Parsed by hand: locale-free, bounded.
static double
s_payload_ts (const char *data, size_t len)
{
    static const char key [] = "\"ts\":";
    size_t klen = sizeof key - 1;
    if (len <= klen)
        return 0;
    size_t at = len - klen;
    while (memcmp (data + at, key, klen) != 0) {
        if (at == 0)
            return 0;
        at--;
    }
    const char *p = data + at + klen;
    const char *end = data + len;
    double seconds = 0;
    int digits = 0;
    for (; p < end && *p >= '0' && *p <= '9' && digits < 16; p++, digits++)
        seconds = seconds * 10 + (*p - '0');
    if (digits == 0)
        return 0;
    if (p < end && *p == '.') {
        double scale = 0.1;
        for (p++; p < end && *p >= '0' && *p <= '9' && scale > 1e-10; p++, scale /= 10)
            seconds += (*p - '0') * scale;
    }
    return seconds;
}

//  One observation: one bucket, the sum and the count.
static void
s_latency_observe (s_metrics_t *metrics, double seconds)
{
    if (seconds < 0)
        seconds = 0;            //  the accepting node's clock runs ahead of ours
    size_t bucket = 0;
    while (bucket < S_LATENCY_BOUNDS && seconds > s_latency_bounds [bucket])
        bucket++;
    S_COUNT (metrics->latency [bucket], 1);
    S_COUNT (metrics->latency_sum_ns, (uint64_t) (seconds * 1e9));
    S_COUNT (metrics->latency_count, 1);
}

//  --------------------------------------------------------------------------
//  Sessions: closing and sending (service thread)

//  Asks for a close with code and reason at the next WRITEABLE; a client
//  that stops reading cannot get one, so it is dropped after a grace time.
static void s_wheel_put (gateway_t *self, s_session_t *session, int64_t due);
static void s_wheel_remove (gateway_t *self, s_session_t *session);

static void
s_session_close (struct lws *wsi, s_session_t *session, int code, const char *reason)
{
    if (session->close_code)
        return;
    session->close_code = code;
    session->close_reason = reason;
    session->kill_at = s_now_us () + S_CLOSE_GRACE_US;
    if (session->established)
        s_wheel_put ((gateway_t *) lws_context_user (lws_get_context (wsi)), session,
                     session->kill_at);
    lws_callback_on_writable (wsi);
}

//  Queues one frame for a session; over its bound the client is a slow
//  consumer and is closed (docs/PROTOCOL.md section 5).
static void
s_session_send (gateway_t *self, struct lws *wsi, s_session_t *session, s_frame_t *frame)
{
    if (session->close_code) {
        S_COUNT (self->metrics.drops [S_DROP_CLOSING], 1);
        return;
    }
    if (s_queue_push (&session->out, frame, self->config) == 0)
        lws_callback_on_writable (wsi);
    else {
        log_warn (GW, "conn %" PRIu64 " user=%s room=%s: slow consumer, %zu frames / %zu bytes unsent",
                  session->id, session->user, session->room,
                  session->out.count, session->out.bytes);
        S_COUNT (self->metrics.drops [S_DROP_SLOW_CONSUMER], session->out.count + 1);
        s_queue_clear (&session->out);
        s_session_close (wsi, session, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow consumer");
    }
}

//  Sends a frame we just encoded (text is freed here) to one session.
static void
s_session_send_text (gateway_t *self, struct lws *wsi, s_session_t *session, char *text)
{
    if (!text)
        return;
    size_t len = strlen (text);
    s_frame_t *frame = s_frame_new (text, len);
    free (text);
    if (!frame)
        return;
    frame->refs = 1;            //  held by us until queued
    s_session_send (self, wsi, session, frame);
    s_frame_unref (frame);
}

//  Arms the session timer for its next deadline: heartbeat, idle, expiry.
static void
s_session_schedule (gateway_t *self, struct lws *wsi, s_session_t *session, int64_t now)
{
    int64_t next = session->next_ping;
    int64_t idle_at = session->last_rx + (int64_t) self->config->idle_timeout * 1000000LL;
    if (idle_at < next)
        next = idle_at;
    if (session->exp > 0) {
        //  At most a day ahead: exp is the token's (up to INT64_MAX), and
        //  s_timer checks it again whenever the session's timer fires.
        int64_t left = session->exp - (int64_t) time (NULL);
        if (left > 86400)
            left = 86400;
        int64_t left_us = left * 1000000LL;
        if (now + left_us < next)
            next = now + left_us;
    }
    (void) wsi;
    s_wheel_put (self, session, next);
}

//  --------------------------------------------------------------------------
//  Handshake (service thread, inside FILTER_PROTOCOL_CONNECTION)

//  Writes a plain HTTP/1.1 answer; the caller then returns non-zero so
//  lws drops the connection without upgrading (FIELD-NOTES: a bare
//  non-zero return sends nothing, and lws_return_http_status writes 1.0).
static int
s_reject (struct lws *wsi, int status, const char *reason, const char *body)
{
    unsigned char buf [LWS_PRE + 512];
    char *text = (char *) buf + LWS_PRE;
    int n = snprintf (text, 512,
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: %zu\r\n"
                      "Connection: close\r\n"
                      "\r\n%s\n",
                      status, reason, strlen (body) + 1, body);
    lws_write (wsi, buf + LWS_PRE, (size_t) n, LWS_WRITE_HTTP_HEADERS);
    return -1;
}

//  s_reject, counted by reason for /metrics.
static int
s_refuse (gateway_t *self, struct lws *wsi, s_reject_t why, int status, const char *reason,
          const char *body)
{
    S_COUNT (self->metrics.rejections [why], 1);
    return s_reject (wsi, status, reason, body);
}

//  Finds the token: query "token", cookie "access_token", then
//  "Authorization: Bearer" (token.c reads each source). Returns 1 when
//  found (copied into token), 0 when absent, -1 when present but too large.
static int
s_find_token (struct lws *wsi, char *token, size_t size)
{
    //  Query: lws splits the arguments into url-decoded fragments; one
    //  longer than the token bound plus "token=" cannot be a usable token.
    char arg [RTWS_TOKEN_MAX + 8];
    for (int index = 0; ; index++) {
        int flen = lws_hdr_fragment_length (wsi, WSI_TOKEN_HTTP_URI_ARGS, index);
        if (flen <= 0)
            break;
        int rc;
        if ((size_t) flen >= sizeof arg) {
            char head [7];
            lws_hdr_copy_fragment (wsi, head, sizeof head, WSI_TOKEN_HTTP_URI_ARGS, index);
            rc = strncmp (head, "token=", 6) == 0 ? -1 : 0;
        }
        else
        if (lws_hdr_copy_fragment (wsi, arg, sizeof arg, WSI_TOKEN_HTTP_URI_ARGS, index) < 0)
            rc = 0;
        else
            rc = token_from_query_arg (arg, token, size);
        if (rc)
            return rc;
    }
    //  Headers: lws caps their total size (max_http_header_data), so a
    //  buffer of that size holds any of them.
    char header [RTWS_HEADER_MAX];
    if (lws_hdr_total_length (wsi, WSI_TOKEN_HTTP_COOKIE) > 0
    &&  lws_hdr_copy (wsi, header, sizeof header, WSI_TOKEN_HTTP_COOKIE) > 0) {
        int rc = token_from_cookie (header, token, size);
        if (rc)
            return rc;
    }
    if (lws_hdr_total_length (wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0
    &&  lws_hdr_copy (wsi, header, sizeof header, WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
        int rc = token_from_authorization (header, token, size);
        if (rc)
            return rc;
    }
    return 0;
}

//  Asks auth for a verdict. Returns 0 with user and exp set, -1 for an
//  invalid token, -2 when auth did not answer in time.
static int
s_verify (gateway_t *self, const char *token, char *user, size_t user_size, int64_t *exp)
{
    uint64_t seq = ++self->auth_seq;
    if (zsock_send (self->auth, "s8s", "VERIFY", seq, token) == -1)
        return -2;
    int64_t deadline = s_now_us () + S_AUTH_TIMEOUT_MS * 1000LL;
    while (true) {
        int64_t left = (deadline - s_now_us ()) / 1000;
        if (left <= 0)
            return -2;
        zsock_set_rcvtimeo (self->auth, (int) left);
        char *verdict = NULL, *text = NULL;
        uint64_t rseq = 0, rexp = 0;
        if (zsock_recv (self->auth, "s8s8", &verdict, &rseq, &text, &rexp) == -1)
            return -2;
        int rc = 1;
        if (rseq == seq && verdict && text) {
            if (streq (verdict, "OK")) {
                snprintf (user, user_size, "%s", text);
                *exp = (int64_t) rexp;
                rc = 0;
            }
            else {
                log_debug (GW, "token refused: %s", text);
                rc = -1;
            }
        }
        //  A reply for an older request (timed out earlier) is skipped.
        zstr_free (&verdict);
        zstr_free (&text);
        if (rc != 1)
            return rc;
    }
}

//  Takes a place under MAX_CONNECTIONS and MAX_CONNECTIONS_PER_IP for a
//  handshake, before its checks and its 101: counted then, not at
//  ESTABLISHED, so that no other thread's handshake can slip in between a
//  client's 101 and its count. Returns 0, or the reason it is refused.
static int
s_reserve (gateway_t *self, s_session_t *session)
{
    s_shared_t *shared = self->shared;
    size_t open = __atomic_load_n (&shared->connections, __ATOMIC_RELAXED);
    do {
        if (open >= self->config->max_connections)
            return S_REJECT_SERVER_FULL;
    } while (!__atomic_compare_exchange_n (&shared->connections, &open, open + 1, false,
                                           __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    if (shared->per_peer) {
        pthread_mutex_lock (&shared->peers_lock);
        size_t count = (size_t) (uintptr_t) zhashx_lookup (shared->per_peer, session->peer);
        bool full = count >= self->config->max_connections_per_ip;
        if (!full)
            zhashx_update (shared->per_peer, session->peer, (void *) (uintptr_t) (count + 1));
        pthread_mutex_unlock (&shared->peers_lock);
        if (full) {
            __atomic_sub_fetch (&shared->connections, 1, __ATOMIC_RELAXED);
            return S_REJECT_PER_IP;
        }
    }
    session->counted = true;
    return 0;
}

//  Gives back what s_reserve took.
static void
s_release (gateway_t *self, s_session_t *session)
{
    if (!session->counted)
        return;
    session->counted = false;
    s_shared_t *shared = self->shared;
    __atomic_sub_fetch (&shared->connections, 1, __ATOMIC_RELAXED);
    if (shared->per_peer) {
        pthread_mutex_lock (&shared->peers_lock);
        size_t count = (size_t) (uintptr_t) zhashx_lookup (shared->per_peer, session->peer);
        if (count > 1)
            zhashx_update (shared->per_peer, session->peer, (void *) (uintptr_t) (count - 1));
        else
            zhashx_delete (shared->per_peer, session->peer);
        pthread_mutex_unlock (&shared->peers_lock);
    }
}


static int
s_filter_checks (gateway_t *self, struct lws *wsi, s_session_t *session);

static int
s_filter (gateway_t *self, struct lws *wsi, s_session_t *session)
{
    char *peer = session->peer;
    lws_get_peer_simple (wsi, peer, sizeof session->peer);
    if (self->stopping || self->draining)
        return s_refuse (self, wsi, S_REJECT_UNAVAILABLE, 503, "Service Unavailable",
                         "shutting down");

    //  0. Capacity, before any work: the node's and this address's share.
    //  The place is taken now, for the checks and then the connection, and
    //  given back when a check refuses it.
    int full = s_reserve (self, session);
    if (full == S_REJECT_SERVER_FULL) {
        log_warn (GW, "refused %s: MAX_CONNECTIONS (%zu) reached", peer,
                  self->config->max_connections);
        return s_refuse (self, wsi, S_REJECT_SERVER_FULL, 503, "Service Unavailable",
                         "server full");
    }
    if (full == S_REJECT_PER_IP) {
        log_warn (GW, "refused %s: MAX_CONNECTIONS_PER_IP (%zu) reached", peer,
                  self->config->max_connections_per_ip);
        return s_refuse (self, wsi, S_REJECT_PER_IP, 429, "Too Many Requests",
                         "too many connections");
    }
    int rc = s_filter_checks (self, wsi, session);
    if (rc != 0)
        s_release (self, session);
    return rc;
}

//  Steps 1 to 4 of the handshake, after its place is taken.
static int
s_filter_checks (gateway_t *self, struct lws *wsi, s_session_t *session)
{
    const char *peer = session->peer;

    //  1. Room from the path: /ws/{room}
    char uri [256];
    if (lws_hdr_total_length (wsi, WSI_TOKEN_GET_URI) >= (int) sizeof uri) {
        log_info (GW, "refused %s: URI too long", peer);
        return s_refuse (self, wsi, S_REJECT_URI_TOO_LONG, 414, "URI Too Long", "uri too long");
    }
    int ulen = lws_hdr_copy (wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    if (ulen < 0 || strncmp (uri, "/ws/", 4) != 0) {
        if (ulen >= 0 && strncmp (uri, "/ws/", 4) != 0 && strcmp (uri, "/ws") != 0)
            return s_refuse (self, wsi, S_REJECT_NOT_FOUND, 404, "Not Found", "not found");
        log_info (GW, "refused %s: bad room", peer);
        return s_refuse (self, wsi, S_REJECT_BAD_ROOM, 400, "Bad Request", "bad room");
    }
    const char *room = uri + 4;
    if (!channel_room_valid (room, strlen (room))) {
        log_info (GW, "refused %s: bad room", peer);
        return s_refuse (self, wsi, S_REJECT_BAD_ROOM, 400, "Bad Request", "bad room");
    }

    //  2. Origin against the allow-list, both normalised.
    if (self->config->allowed_origins_count > 0) {
        char origin [1100];
        char *normal = NULL;
        if (lws_hdr_copy (wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0)
            normal = origin_normalise (origin);
        bool allowed = normal && rtws_config_origin_allowed (self->config, normal);
        free (normal);
        if (!allowed) {
            log_info (GW, "refused %s room=%s: bad origin", peer, room);
            return s_refuse (self, wsi, S_REJECT_BAD_ORIGIN, 403, "Forbidden", "bad origin");
        }
    }

    //  3. Token, verified by auth.
    char token [RTWS_TOKEN_MAX + 1];
    int found = s_find_token (wsi, token, sizeof token);
    if (found != 1) {
        log_info (GW, "refused %s room=%s: %s", peer, room,
                  found == 0 ? "no token" : "token too large");
        return s_refuse (self, wsi, S_REJECT_UNAUTHORIZED, 401, "Unauthorized", "unauthorized");
    }
    int verdict = s_verify (self, token, session->user, sizeof session->user, &session->exp);
    if (verdict == -2) {
        log_error (GW, "refused %s room=%s: auth did not answer", peer, room);
        return s_refuse (self, wsi, S_REJECT_UNAVAILABLE, 503, "Service Unavailable",
                         "auth unavailable");
    }
    if (verdict != 0) {
        log_info (GW, "refused %s room=%s: invalid token", peer, room);
        return s_refuse (self, wsi, S_REJECT_UNAUTHORIZED, 401, "Unauthorized", "unauthorized");
    }
    snprintf (session->room, sizeof session->room, "%s", room);
    //  4. With several service threads, the JOIN leaves before the 101 (see
    //  the vocabulary); the router's queue full (it stopped reading) is 503.
    session->id = (++self->next_id << S_SHARD_BITS) | self->shard;
    if (self->joins) {
        if (zsock_send (self->joins, "s8s", "JOIN", session->id, session->room) == -1) {
            log_error (GW, "refused %s room=%s: the router's join queue is full", peer, room);
            session->id = 0;
            return s_refuse (self, wsi, S_REJECT_UNAVAILABLE, 503, "Service Unavailable",
                             "router unavailable");
        }
        session->joined = true;
        self->joins_sent = true;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Connection news for router and presence (service thread)
//
//  JOIN (one shard), LEAVE, CONNECT, DISCONNECT and TOUCH are batched and
//  sent once per pass of the service loop (s_news_flush): a pass that
//  serves thirty handshakes then wakes router and presence once each,
//  not sixty times. Order is kept: a PUBLISH flushes the router's batch
//  before it goes, and a drain sends both before it reports DRAINED.

static void
s_news_lost (gateway_t *self, size_t lost, const char *to)
{
    if (lost)
        log_error (GW, "%s queue full: a batch of %zu messages (JOIN, LEAVE, CONNECT, "
                   "DISCONNECT, TOUCH, JOINS) lost", to, lost);
}

static void
s_news (gateway_t *self, bool to_router, const char *verb, rtws_conn_id_t id,
        const char *user, const char *room)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, verb);
    zmsg_addstrf (msg, "%" PRIu64, id);
    if (user)
        zmsg_addstr (msg, user);
    if (room)
        zmsg_addstr (msg, room);
    if (to_router)
        s_news_lost (self, inproc_batch_add (&self->to_router, &msg, self->router), "router");
    else
        s_news_lost (self, inproc_batch_add (&self->to_presence, &msg, self->presence),
                     "presence");
}

static void
s_news_flush (gateway_t *self)
{
    if (self->joins_sent) {
        //  The router does not poll the join socket: this makes it read it.
        self->joins_sent = false;
        zmsg_t *nudge = zmsg_new ();
        zmsg_addstr (nudge, "JOINS");
        s_news_lost (self, inproc_batch_add (&self->to_router, &nudge, self->router), "router");
    }
    s_news_lost (self, inproc_batch_send (&self->to_router, self->router), "router");
    s_news_lost (self, inproc_batch_send (&self->to_presence, self->presence), "presence");
}


//  --------------------------------------------------------------------------
//  Established connections (service thread)

static void
s_established (gateway_t *self, struct lws *wsi, s_session_t *session)
{
    int64_t now = s_now_us ();
    session->wsi = wsi;
    session->established = true;
    session->opened = now;
    session->last_rx = now;
    session->last_touch = now;
    session->next_ping = now + (int64_t) self->config->heartbeat_interval * 1000000LL;
    s_connmap_put (&self->conns, session->id, wsi);
    session->tokens = (double) self->config->rate_burst;
    session->refilled = now;
    if (!session->joined)
        s_news (self, true, "JOIN", session->id, NULL, session->room);
    s_news (self, false, "CONNECT", session->id, session->user, session->room);
    log_info (GW, "open conn=%" PRIu64 " user=%s room=%s peer=%s",
              session->id, session->user, session->room, session->peer);
    S_COUNT (self->metrics.connections, 1);
    s_session_schedule (self, wsi, session, now);
    //  Frames sent before the 101 (RFC 6455 4.1 forbids it) are in lws's
    //  buffer already: an unmasked one fails the connection here.
    frame_guard_t *guard = frame_guards_find (&self->guards, lws_get_socket_fd (wsi));
    if (guard && frame_guard_upgrade (guard) < 0)
        s_session_close (wsi, session, LWS_CLOSE_STATUS_PROTOCOL_ERR, "unmasked frame");
    else
    //  Its handshake passed before the drain began: it goes with the drain.
    if (self->draining)
        s_session_close (wsi, session, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
}

//  Which row of s_close_kinds a closed session counts in.
static size_t
s_close_kind (const s_session_t *session)
{
    int code = session->close_code;
    const char *reason = session->close_reason;
    if (!code || !reason)
        code = 1006, reason = "abnormal";
    for (size_t i = 0; i < S_CLOSE_KINDS; i++) {
        const s_close_kind_t *kind = &s_close_kinds [i];
        if ((kind->code == code || kind->code == 0) && streq (kind->reason, reason))
            return i;
    }
    return S_CLOSE_KINDS - 1;
}

static void s_drain_check (gateway_t *self);

static void
s_closed (gateway_t *self, struct lws *wsi, s_session_t *session)
{
    //  An unmasked frame was rewritten to fail in lws (gateway_recv.c):
    //  lws sent the 1002; the log and /metrics say why.
    int fd = lws_get_socket_fd (wsi);
    frame_guard_t *guard = frame_guards_find (&self->guards, fd);
    if (guard && guard->mode == FRAME_GUARD_FAILED && !session->close_code) {
        session->close_code = LWS_CLOSE_STATUS_PROTOCOL_ERR;
        session->close_reason = "unmasked frame";
    }
    frame_guards_track (&self->guards, fd, FRAME_GUARD_OFF);
    s_wheel_remove (self, session);
    if (session->established) {
        s_connmap_remove (&self->conns, session->id);
        s_release (self, session);
        s_news (self, true, "LEAVE", session->id, NULL, session->room);
        s_news (self, false, "DISCONNECT", session->id, NULL, NULL);
        log_info (GW, "close conn=%" PRIu64 " user=%s room=%s peer=%s code=%d reason=\"%s\" duration=%.3fs",
                  session->id, session->user, session->room, session->peer, session->close_code,
                  session->close_reason ? session->close_reason : "",
                  (double) (s_now_us () - session->opened) / 1e6);
        S_COUNT (self->metrics.closes [s_close_kind (session)], 1);
        session->id = 0;
        session->joined = false;
        session->established = false;
    }
    s_queue_clear (&session->out);
    free (session->rx);
    session->rx = NULL;
    session->rx_len = 0;
    session->rx_cap = 0;
    if (self->stopping && self->conns.count == 0)
        self->done = true;
    else
    if (self->draining)
        s_drain_check (self);
}

//  Token bucket: RATE_LIMIT frames per second, RATE_BURST deep. Returns
//  true and takes a token when the frame may pass.
static bool
s_rate_allows (gateway_t *self, s_session_t *session)
{
    if (self->config->rate_limit == 0)
        return true;
    int64_t now = s_now_us ();
    session->tokens += (double) (now - session->refilled) * (double) self->config->rate_limit / 1e6;
    if (session->tokens > (double) self->config->rate_burst)
        session->tokens = (double) self->config->rate_burst;
    session->refilled = now;
    if (session->tokens < 1.0)
        return false;
    session->tokens -= 1.0;
    return true;
}

//  Handles one complete text message from the client.
static void
s_message (gateway_t *self, struct lws *wsi, s_session_t *session, const char *data, size_t len)
{
    codec_in_t in;
    codec_kind_t kind = codec_parse (data, len, session->room, &in);
    size_t olen = 0;
    char id [33];
    S_COUNT (self->metrics.received, 1);
    if (!s_rate_allows (self, session)) {
        S_COUNT (self->metrics.drops [S_DROP_RATE_LIMITED], 1);
        //  Over the bucket: the frame is dropped and the client told; one
        //  who keeps going for a whole burst more is closed.
        if (++session->strikes >= self->config->rate_burst) {
            log_warn (GW, "conn %" PRIu64 " user=%s: rate limited, closing", session->id,
                      session->user);
            s_session_close (wsi, session, LWS_CLOSE_STATUS_POLICY_VIOLATION, "rate limited");
        }
        else
            s_session_send_text (self, wsi, session, codec_system_error ("rate_limited", in.id, NULL));
        codec_in_clear (&in);
        return;
    }
    session->strikes = 0;
    switch (kind) {
        case CODEC_IN_CHAT: {
            if (!in.id)
                codec_new_id (id);
            char *payload = codec_chat_delivery (session->room, session->user, in.text,
                                                 in.id ? in.id : id, codec_now (), &olen);
            if (payload)
                s_news_lost (self, inproc_batch_send (&self->to_router, self->router), "router");
            if (payload && zsock_send (self->router, "sss8s", "PUBLISH", session->room, payload,
                                       session->id, in.id ? in.id : id) == -1) {
                log_error (GW, "conn %" PRIu64 ": router queue full, message refused", session->id);
                S_COUNT (self->metrics.drops [S_DROP_UNAVAILABLE], 1);
                s_session_send_text (self, wsi, session,
                                     codec_system_error ("unavailable", in.id ? in.id : id, NULL));
            }
            else
            if (payload)
                S_COUNT (self->metrics.published, 1);
            free (payload);
            break;
        }
        case CODEC_IN_PING:
            if (!in.id)
                codec_new_id (id);
            s_session_send_text (self, wsi, session, codec_system_ack (in.id ? in.id : id, NULL));
            break;
        case CODEC_IN_ACTIVITY:
            break;
        case CODEC_IN_REFRESH: {
            char user [RTWS_USER_MAX + 1];
            int64_t exp = 0;
            if (s_verify (self, in.token, user, sizeof user, &exp) == 0 && streq (user, session->user)) {
                session->exp = exp;
                s_session_send_text (self, wsi, session, codec_auth_ok (exp, NULL));
                s_session_schedule (self, wsi, session, s_now_us ());
            }
            else
                s_session_send_text (self, wsi, session,
                                     codec_system_error ("bad_token", NULL, NULL));
            break;
        }
        case CODEC_IN_ERROR:
            log_debug (GW, "conn %" PRIu64 ": %s", session->id, in.error);
            s_session_send_text (self, wsi, session, codec_system_error (in.error, in.id, NULL));
            break;
    }
    codec_in_clear (&in);
}

//  Returns -1 when lws must close the connection (the close reason is set).
static int
s_receive (gateway_t *self, struct lws *wsi, s_session_t *session, const char *in, size_t len)
{
    if (session->close_code)
        return 0;                       //  closing: input is discarded
    S_COUNT (self->metrics.received_bytes, len);
    if (lws_frame_is_binary (wsi)) {
        static const char reason [] = "binary frames are not supported";
        lws_close_reason (wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                          (unsigned char *) reason, sizeof reason - 1);
        session->close_code = 1003;
        session->close_reason = "binary frame";
        return -1;
    }
    size_t remaining = lws_remaining_packet_payload (wsi);
    bool first = lws_is_first_fragment (wsi);
    bool last = lws_is_final_fragment (wsi) && remaining == 0;
    if (first && session->rx_len) {
        //  A new message while one was being assembled cannot happen with
        //  a conforming client; lws enforces the framing.
        session->rx_len = 0;
    }
    if (session->rx_len + len + remaining > self->config->max_message_size) {
        static const char reason [] = "message too big";
        lws_close_reason (wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                          (unsigned char *) reason, sizeof reason - 1);
        session->close_code = 1009;
        session->close_reason = reason;
        log_info (GW, "conn %" PRIu64 ": message over %zu bytes", session->id,
                  self->config->max_message_size);
        return -1;
    }
    int64_t now = s_now_us ();
    session->last_rx = now;
    if (now - session->last_touch >= S_TOUCH_EVERY_US) {
        session->last_touch = now;
        s_news (self, false, "TOUCH", session->id, NULL, NULL);
    }
    if (first && last) {
        //  The common case: a whole message in one callback, no copy.
        s_message (self, wsi, session, in, len);
        return 0;
    }
    //  Grown to what this frame announces (lws knows its length), never
    //  past MAX_MESSAGE_SIZE: checked above.
    size_t need = session->rx_len + len + remaining;
    if (need > session->rx_cap) {
        char *rx = realloc (session->rx, need);
        if (!rx)
            return -1;
        session->rx = rx;
        session->rx_cap = need;
    }
    memcpy (session->rx + session->rx_len, in, len);
    session->rx_len += len;
    if (last) {
        s_message (self, wsi, session, session->rx, session->rx_len);
        free (session->rx);
        session->rx = NULL;
        session->rx_len = 0;
        session->rx_cap = 0;
    }
    return 0;
}

//  One frame written: the counters and, for a chat.delivery, its latency.
static void
s_count_delivery (gateway_t *self, size_t len, double ts, double *now)
{
    S_COUNT (self->metrics.deliveries, 1);
    S_COUNT (self->metrics.sent_bytes, len);
    if (ts > 0) {
        if (*now == 0)
            *now = codec_now ();
        s_latency_observe (&self->metrics, *now - ts);
    }
}

//  Several frames wait for one connection (a busy room, a reader a little
//  behind): their headers and payloads go out in one write, one send(2)
//  instead of one each. lws_write's RAW mode sends the bytes as they are,
//  so the headers are ours: FIN + text, unmasked (a server's), the RFC 6455
//  length forms. Not with permessage-deflate, whose frames lws compresses.
//  Returns the frames written, 0 when the first one does not fit (the
//  caller writes it alone), -1 when the write failed.
static int
s_write_merged (gateway_t *self, struct lws *wsi, s_session_t *session, int most, double *now)
{
    unsigned char *out = self->merge + LWS_PRE;
    size_t used = 0;
    int frames = 0;
    size_t lens [S_WRITES_PER_ROUND];
    double stamps [S_WRITES_PER_ROUND];
    while (frames < most && frames < S_WRITES_PER_ROUND) {
        s_frame_t *frame = s_queue_peek (&session->out);
        if (!frame)
            break;
        size_t len = frame->len;
        size_t head = len < 126 ? 2 : len < 65536 ? 4 : 10;
        if (used + head + len > S_MERGE_MAX)
            break;
        out [used++] = 0x81;
        if (len < 126)
            out [used++] = (unsigned char) len;
        else
        if (len < 65536) {
            out [used++] = 126;
            out [used++] = (unsigned char) (len >> 8);
            out [used++] = (unsigned char) len;
        }
        else {
            out [used++] = 127;
            for (int shift = 56; shift >= 0; shift -= 8)
                out [used++] = (unsigned char) ((uint64_t) len >> shift);
        }
        memcpy (out + used, frame->buf + LWS_PRE, len);
        used += len;
        lens [frames] = len;
        stamps [frames] = frame->ts;
        frames++;
        s_frame_unref (s_queue_pop (&session->out));
    }
    if (frames == 0)
        return 0;
    if (lws_write (wsi, out, used, LWS_WRITE_RAW) < (int) used)
        return -1;
    for (int i = 0; i < frames; i++)
        s_count_delivery (self, lens [i], stamps [i], now);
    return frames;
}

static int
s_writeable (gateway_t *self, struct lws *wsi, s_session_t *session)
{
    if (session->close_code) {
        size_t rlen = strlen (session->close_reason);
        lws_close_reason (wsi, (enum lws_close_status) session->close_code,
                          (unsigned char *) session->close_reason, rlen);
        return -1;
    }
    //  Write while the socket takes it: one poll round per burst, not per
    //  frame. lws keeps what the kernel refused and reports the pipe choked
    //  until it is flushed, so no frame is written over a partial one.
    double now = 0;             //  wall clock, read once per round when needed
    for (int written = 0; written < S_WRITES_PER_ROUND; ) {
        int n = 0;
        if (session->out.count > 1 && !self->config->permessage_deflate)
            n = s_write_merged (self, wsi, session, S_WRITES_PER_ROUND - written, &now);
        if (n == 0) {
            s_frame_t *frame = s_queue_pop (&session->out);
            if (!frame)
                return 0;
            size_t len = frame->len;
            n = lws_write (wsi, frame->buf + LWS_PRE, len, LWS_WRITE_TEXT);
            double ts = frame->ts;
            s_frame_unref (frame);
            n = n < (int) len ? -1 : 1;
            if (n == 1)
                s_count_delivery (self, len, ts, &now);
        }
        if (n < 0)
            return -1;
        written += n;
        //  lws_send_pipe_choked polls the socket: a syscall, worth paying
        //  only when another frame waits.
        if (!session->out.count || lws_send_pipe_choked (wsi))
            break;
    }
    if (session->out.count)
        lws_callback_on_writable (wsi);
    return 0;
}

static int
s_timer (gateway_t *self, struct lws *wsi, s_session_t *session)
{
    int64_t now = s_now_us ();
    if (session->close_code) {
        if (now >= session->kill_at)
            return -1;          //  never answered: drop without a close frame
        s_wheel_put (self, session, session->kill_at);
        return 0;
    }
    if (now >= session->last_rx + (int64_t) self->config->idle_timeout * 1000000LL) {
        s_session_close (wsi, session, LWS_CLOSE_STATUS_NORMAL, "idle timeout");
        return 0;
    }
    if (session->exp > 0 && (int64_t) time (NULL) >= session->exp) {
        s_session_close (wsi, session, LWS_CLOSE_STATUS_POLICY_VIOLATION, "token expired");
        return 0;
    }
    if (now >= session->next_ping) {
        s_session_send_text (self, wsi, session, codec_system_ping (codec_now (), NULL));
        session->next_ping += (int64_t) self->config->heartbeat_interval * 1000000LL;
        if (session->next_ping <= now)
            session->next_ping = now + (int64_t) self->config->heartbeat_interval * 1000000LL;
    }
    s_session_schedule (self, wsi, session, now);
    return 0;
}

//  Takes session out of the wheel, if it is in.
static void
s_wheel_remove (gateway_t *self, s_session_t *session)
{
    if (!session->in_wheel)
        return;
    s_wheel_t *wheel = &self->wheel;
    if (session->wheel_prev)
        session->wheel_prev->wheel_next = session->wheel_next;
    else {
        //  The head of its slot, which its due time names (s_wheel_put).
        size_t slot = (size_t) ((session->wheel_due + S_WHEEL_TICK_US - 1) / S_WHEEL_TICK_US
                                % S_WHEEL_SLOTS);
        assert (wheel->slots [slot] == session);
        wheel->slots [slot] = session->wheel_next;
    }
    if (session->wheel_next)
        session->wheel_next->wheel_prev = session->wheel_prev;
    session->wheel_next = session->wheel_prev = NULL;
    session->in_wheel = false;
    wheel->count--;
}

static void s_wheel_tick (lws_sorted_usec_list_t *sul);

//  (Re)arms session's one timer for the monotonic time due.
static void
s_wheel_put (gateway_t *self, s_session_t *session, int64_t due)
{
    s_wheel_t *wheel = &self->wheel;
    s_wheel_remove (self, session);
    if (!wheel->tick)
        wheel->tick = s_now_us () / S_WHEEL_TICK_US - 1;
    int64_t tick = (due + S_WHEEL_TICK_US - 1) / S_WHEEL_TICK_US;
    if (tick <= wheel->tick) {
        //  Already due: the next tick takes it. The due time is kept in
        //  the next tick's range, so that s_wheel_remove finds its slot.
        tick = wheel->tick + 1;
        due = tick * S_WHEEL_TICK_US;
    }
    size_t slot = (size_t) (tick % S_WHEEL_SLOTS);
    session->wheel_due = due;
    session->wheel_prev = NULL;
    session->wheel_next = wheel->slots [slot];
    if (session->wheel_next)
        session->wheel_next->wheel_prev = session;
    wheel->slots [slot] = session;
    session->in_wheel = true;
    wheel->count++;
    if (!wheel->armed) {
        wheel->armed = true;
        lws_sul_schedule (self->context, 0, &wheel->sul, s_wheel_tick, S_WHEEL_TICK_US);
    }
}

//  Every tick while sessions wait: the slots of the ticks passed since the
//  last one, each session due in them fired once (s_timer, which re-arms
//  it or closes it).
static void
s_wheel_tick (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = (gateway_t *) ((char *) sul - offsetof (gateway_t, wheel.sul));
    s_wheel_t *wheel = &self->wheel;
    wheel->armed = false;
    int64_t now = s_now_us ();
    int64_t now_tick = now / S_WHEEL_TICK_US;
    int64_t ticks = now_tick - wheel->tick;
    if (ticks > S_WHEEL_SLOTS)
        ticks = S_WHEEL_SLOTS;  //  a long stall: every slot once
    s_session_t *fire = NULL;
    for (int64_t t = now_tick - ticks + 1; t <= now_tick; t++) {
        s_session_t *session = wheel->slots [t % S_WHEEL_SLOTS];
        while (session) {
            s_session_t *next = session->wheel_next;
            if (session->wheel_due <= now) {
                s_wheel_remove (self, session);
                session->fire_next = fire;
                fire = session;
            }
            session = next;
        }
    }
    wheel->tick = now_tick;
    //  Fired after the walk: s_timer re-arms into the slots just walked.
    while (fire) {
        s_session_t *session = fire;
        fire = session->fire_next;
        session->fire_next = NULL;
        if (s_timer (self, session->wsi, session) < 0)
            lws_set_timeout (session->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    if (wheel->count && !wheel->armed) {
        wheel->armed = true;
        lws_sul_schedule (self->context, 0, &wheel->sul, s_wheel_tick, S_WHEEL_TICK_US);
    }
}

//  --------------------------------------------------------------------------
//  Messages from the actor thread (service thread)

static void
s_deliver (gateway_t *self, zmsg_t *msg)
{
    zframe_t *payload = zmsg_pop (msg);
    zframe_t *ids = zmsg_pop (msg);
    assert (payload && ids);
    assert (zframe_size (ids) % sizeof (rtws_conn_id_t) == 0);
    s_frame_t *frame = s_frame_new ((const char *) zframe_data (payload), zframe_size (payload));
    if (frame) {
        frame->refs = 1;
        frame->ts = s_payload_ts ((const char *) zframe_data (payload), zframe_size (payload));
        size_t count = zframe_size (ids) / sizeof (rtws_conn_id_t);
        const unsigned char *data = zframe_data (ids);
        for (size_t i = 0; i < count; i++) {
            rtws_conn_id_t id;
            memcpy (&id, data + i * sizeof id, sizeof id);
            struct lws *wsi = s_connmap_get (&self->conns, id);
            if (wsi)
                s_session_send (self, wsi, (s_session_t *) lws_wsi_user (wsi), frame);
        }
        s_frame_unref (frame);
    }
    zframe_destroy (&payload);
    zframe_destroy (&ids);
}

//  The bridge could not take a PUBLISH (Redis outbox full): the sender
//  learns it; nothing is dropped silently (docs/PROTOCOL.md section 5).
static void
s_refused (gateway_t *self, zmsg_t *msg)
{
    //  czmq's "8" picture travels as decimal text, not 8 binary bytes.
    char *conn = zmsg_popstr (msg);
    char *ref = zmsg_popstr (msg);
    assert (conn && ref);
    S_COUNT (self->metrics.drops [S_DROP_UNAVAILABLE], 1);
    rtws_conn_id_t id = strtoull (conn, NULL, 10);
    struct lws *wsi = id ? s_connmap_get (&self->conns, id) : NULL;
    if (wsi)
        s_session_send_text (self, wsi, (s_session_t *) lws_wsi_user (wsi),
                             codec_system_error ("unavailable", ref, NULL));
    zstr_free (&conn);
    zstr_free (&ref);
}

//  KICK conn from the router: it could not take conn's JOIN (out of
//  memory), so the client, which has its 101, would hear nothing.
static void
s_kick (gateway_t *self, zmsg_t *msg)
{
    char *conn = zmsg_popstr (msg);
    assert (conn);
    rtws_conn_id_t id = strtoull (conn, NULL, 10);
    struct lws *wsi = id ? s_connmap_get (&self->conns, id) : NULL;
    log_error (GW, "conn %s: the router could not make it a member of its room%s", conn,
               wsi ? ": closed" : "");
    if (wsi)
        s_session_close (wsi, (s_session_t *) lws_wsi_user (wsi),
                         LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "internal error");
    zstr_free (&conn);
}

//  Pops a number sent with picture "i" or "8" (decimal text). A missing
//  frame is a sibling's programming error.
static uint64_t
s_pop_number (zmsg_t *msg)
{
    char *text = zmsg_popstr (msg);
    assert (text);
    uint64_t value = strtoull (text, NULL, 10);
    zstr_free (&text);
    return value;
}

//  STATS from router or bridge: the latest values replace the cache.
static void
s_stats (gateway_t *self, zmsg_t *msg)
{
    char *source = zmsg_popstr (msg);
    if (source && streq (source, "router") && zmsg_size (msg) == 2) {
        self->stats.rooms = s_pop_number (msg);
        self->stats.router_shed = s_pop_number (msg);
    }
    else
    if (source && streq (source, "bridge") && zmsg_size (msg) == 7) {
        char *engine = zmsg_popstr (msg);
        assert (engine);
        //  The engine follows from REDIS_URL; the bridge confirms it.
        if (self->redis != streq (engine, "redis"))
            log_warn (GW, "the bridge runs the %s engine", engine);
        zstr_free (&engine);
        bool connected = s_pop_number (msg) != 0;
        if (self->stats.bridge_heard && connected != self->stats.connected)
            log_info (GW, "bridge %s: /readyz answers %s", connected ? "connected" : "disconnected",
                      connected ? "200" : "503");
        self->stats.bridge_heard = true;
        self->stats.connected = connected;
        self->stats.outbox = s_pop_number (msg);
        self->stats.reconnects = s_pop_number (msg);
        self->stats.not_json = s_pop_number (msg);
        self->stats.too_big = s_pop_number (msg);
        self->stats.bad_channel = s_pop_number (msg);
    }
    else {
        log_error (GW, "malformed STATS from %s", source ? source : "(null)");
        assert (false);
    }
    zstr_free (&source);
}

//  --------------------------------------------------------------------------
//  Drain and stop (service thread)

//  Tells the actor thread once the drain is over: every connection is gone
//  (closed by a batch, or by the client first). No new one can come: the
//  handshakes are refused, and one already past its checks is closed on
//  arrival (s_established), or by $TERM.
static void
s_drain_check (gateway_t *self)
{
    if (self->draining && !self->drain_reported && self->conns.count == 0) {
        self->drain_reported = true;
        lws_sul_cancel (&self->drain_sul);
        s_news_flush (self);
        log_info (GW, "drained: %zu connections closed in %.1f s", self->drain_closed,
                  (double) (s_now_us () - self->drain_start) / 1e6);
        zsock_send (self->pair_out, "si", "DRAINED",
                    self->drain_closed > INT_MAX ? INT_MAX : (int) self->drain_closed);
    }
}

//  Closes up to count connections not closing yet, with 1001.
static size_t
s_drain_close (gateway_t *self, size_t count)
{
    size_t closed = 0;
    for (size_t i = 0; i < self->conns.cap && closed < count; i++) {
        if (!self->conns.slots [i].key)
            continue;
        struct lws *wsi = self->conns.slots [i].wsi;
        s_session_t *session = (s_session_t *) lws_wsi_user (wsi);
        if (!session->close_code) {
            s_session_close (wsi, session, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
            closed++;
        }
    }
    return closed;
}

static void s_drain_tick (gateway_t *self);

static void
s_drain_timer (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = (gateway_t *) ((char *) sul - offsetof (gateway_t, drain_sul));
    s_drain_tick (self);
}

//  One batch: after batch k of n, k/n of the connections open at DRAIN are
//  closed (rounded up, so a few connections go early rather than late);
//  the last batch closes whatever is still open.
static void
s_drain_tick (gateway_t *self)
{
    if (self->stopping || self->drain_reported)
        return;
    int64_t batches = (int64_t) self->config->drain_timeout * 1000000LL / S_DRAIN_TICK_US;
    if (batches < 1)
        batches = 1;
    int64_t batch = (s_now_us () - self->drain_start) / S_DRAIN_TICK_US + 1;
    size_t target = (size_t) (((uint64_t) self->drain_total * (uint64_t) batch
                               + (uint64_t) batches - 1) / (uint64_t) batches);
    if (batch >= batches || target >= self->drain_total)
        //  The last batch: whatever is still open.
        self->drain_closed += s_drain_close (self, SIZE_MAX);
    else {
        if (target > self->drain_closed)
            self->drain_closed += s_drain_close (self, target - self->drain_closed);
        int64_t next = self->drain_start + batch * S_DRAIN_TICK_US - s_now_us ();
        lws_sul_schedule (self->context, 0, &self->drain_sul, s_drain_timer, next > 0 ? next : 1);
    }
    s_drain_check (self);
}

//  DRAIN: refuse new connections from now on (s_filter, /readyz) and close
//  the open ones in batches over DRAIN_TIMEOUT.
static void
s_drain_start (gateway_t *self)
{
    if (self->draining || self->stopping)
        return;
    self->draining = true;
    self->drain_start = s_now_us ();
    self->drain_total = self->conns.count;
    log_info (GW, "draining: closing %zu connections with 1001 over %d s",
              self->drain_total, self->config->drain_timeout);
    s_drain_tick (self);
}

static void
s_stop (gateway_t *self)
{
    if (self->stopping)
        return;
    self->stopping = true;
    lws_sul_cancel (&self->drain_sul);
    log_info (GW, "stopping: closing %zu connections with 1001", self->conns.count);
    for (size_t i = 0; i < self->conns.cap; i++)
        if (self->conns.slots [i].key) {
            struct lws *wsi = self->conns.slots [i].wsi;
            s_session_close (wsi, (s_session_t *) lws_wsi_user (wsi),
                             LWS_CLOSE_STATUS_GOINGAWAY, "going away");
        }
    if (self->conns.count == 0)
        self->done = true;
}

//  Takes everything the actor thread forwarded; wake-ups merge, so one
//  EVENT_WAIT_CANCELLED may stand for many messages.
static void
s_take_forwarded (gateway_t *self)
{
    while (zsock_events (self->pair_out) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (self->pair_out);
        if (!msg)
            break;
        char *command = zmsg_popstr (msg);
        if (command && streq (command, "DELIVER"))
            s_deliver (self, msg);
        else
        if (command && streq (command, "REFUSED"))
            s_refused (self, msg);
        else
        if (command && streq (command, "KICK"))
            s_kick (self, msg);
        else
        if (command && streq (command, "STATS"))
            s_stats (self, msg);
        else
        if (command && streq (command, "DRAIN"))
            s_drain_start (self);
        else
        if (command && streq (command, "CONFIG")) {
            //  SIGHUP: from now on every check reads the new configuration;
            //  the actor thread waits for this answer before rtwsd frees the
            //  old one.
            self->config = (const rtws_config_t *) inproc_pop_pointer (msg);
            zsock_send (self->pair_out, "si", "CONFIGURED", 1);
        }
        else
        if (command && streq (command, "$TERM"))
            s_stop (self);
        else {
            log_error (GW, "unknown message on the gateway socket: %s", command ? command : "(null)");
            assert (false);
        }
        zstr_free (&command);
        zmsg_destroy (&msg);
    }
}

static int
s_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    gateway_t *self = (gateway_t *) lws_context_user (lws_get_context (wsi));
    s_session_t *session = (s_session_t *) user;
    switch (reason) {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            if (self)
                s_take_forwarded (self);
            return 0;
        case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
            //  Accepted on the public port: follow its bytes from the first.
            if (self)
                frame_guards_track (&self->guards, lws_get_socket_fd (wsi), FRAME_GUARD_HTTP);
            return 0;
        case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
            return s_filter (self, wsi, session);
        case LWS_CALLBACK_ESTABLISHED:
            s_established (self, wsi, session);
            return 0;
        case LWS_CALLBACK_RECEIVE:
            return s_receive (self, wsi, session, (const char *) in, len);
        case LWS_CALLBACK_SERVER_WRITEABLE:
            return s_writeable (self, wsi, session);
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if (session && !session->close_code) {
                const unsigned char *code = (const unsigned char *) in;
                //  1005: the client's close frame carried no code.
                session->close_code = len >= 2 ? (code [0] << 8) | code [1] : 1005;
                session->close_reason = s_client_closed;
            }
            return 0;
        case LWS_CALLBACK_CLOSED:
            s_closed (self, wsi, session);
            return 0;
        case LWS_CALLBACK_WSI_DESTROY:
            //  Counted and its JOIN sent, then the upgrade failed: no CLOSED will come.
            if (self && session && !session->established)
                s_release (self, session);
            if (self && session && session->joined && !session->established) {
                if (zsock_send (self->joins, "s8s", "LEAVE", session->id, session->room) == -1)
                    log_error (GW, "conn %" PRIu64 ": the LEAVE undoing its JOIN could not be queued",
                               session->id);
                self->joins_sent = true;    //  the pass ends with JOINS
                session->joined = false;
            }
            return 0;
        case LWS_CALLBACK_CLOSED_HTTP:
            if (self)
                frame_guards_track (&self->guards, lws_get_socket_fd (wsi), FRAME_GUARD_OFF);
            return lws_callback_http_dummy (wsi, reason, user, in, len);
        case LWS_CALLBACK_HTTP:
            //  Plain HTTP on the public port: nothing to serve here.
            if (lws_return_http_status (wsi, HTTP_STATUS_NOT_FOUND, NULL))
                return -1;
            return lws_http_transaction_completed (wsi) ? -1 : 0;
        default:
            return lws_callback_http_dummy (wsi, reason, user, in, len);
    }
}

//  --------------------------------------------------------------------------
//  Admin listener: /healthz, /readyz, /metrics (service thread)

//  A bounded text buffer with LWS_PRE headroom; full once an append did not
//  fit (the text is then incomplete and must not be sent).
typedef struct {
    char *data;                 //  LWS_PRE headroom, then the text
    size_t len;                 //  text bytes
    bool full;                  //  an append did not fit
} s_text_t;

static void
s_text_add (s_text_t *text, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_text_add (s_text_t *text, const char *format, ...)
{
    if (text->full)
        return;
    size_t room = S_ADMIN_BODY_MAX - text->len;
    va_list args;
    va_start (args, format);
    int n = vsnprintf (text->data + LWS_PRE + text->len, room, format, args);
    va_end (args);
    if (n < 0 || (size_t) n >= room)
        text->full = true;
    else
        text->len += (size_t) n;
}

static void
s_metric_head (s_text_t *text, const char *name, const char *type, const char *help)
{
    s_text_add (text, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
s_metric (s_text_t *text, const char *name, const char *type, const char *help, uint64_t value)
{
    s_metric_head (text, name, type, help);
    s_text_add (text, "%s %" PRIu64 "\n", name, value);
}

//  NULL while the node should get new connections, else why not.
static const char *
s_unready (gateway_t *self)
{
    if (self->draining || self->stopping)
        return "draining";
    if (self->redis && !(self->stats.bridge_heard && self->stats.connected))
        return "redis disconnected";
    if (__atomic_load_n (&self->shared->connections, __ATOMIC_RELAXED)
        >= self->config->max_connections)
        return "full";
    return NULL;
}

//  The Prometheus text format, version 0.0.4.
static void
s_metrics_render (gateway_t *self, s_text_t *text)
{
    //  Every shard's counters, summed.
    s_metrics_t sum;
    memset (&sum, 0, sizeof sum);
    for (size_t k = 0; k < self->shared->count; k++) {
        const s_metrics_t *one = &self->shared->shards [k]->metrics;
        sum.connections += S_READ (one->connections);
        sum.received += S_READ (one->received);
        sum.received_bytes += S_READ (one->received_bytes);
        sum.published += S_READ (one->published);
        sum.deliveries += S_READ (one->deliveries);
        sum.sent_bytes += S_READ (one->sent_bytes);
        for (size_t i = 0; i < S_REJECTS; i++)
            sum.rejections [i] += S_READ (one->rejections [i]);
        for (size_t i = 0; i < S_DROPS; i++)
            sum.drops [i] += S_READ (one->drops [i]);
        for (size_t i = 0; i < S_CLOSE_KINDS; i++)
            sum.closes [i] += S_READ (one->closes [i]);
        for (size_t i = 0; i <= S_LATENCY_BOUNDS; i++)
            sum.latency [i] += S_READ (one->latency [i]);
        sum.latency_sum_ns += S_READ (one->latency_sum_ns);
        sum.latency_count += S_READ (one->latency_count);
    }
    const s_metrics_t *m = &sum;
    s_metric (text, "rtws_connections", "gauge", "Open WebSocket connections.",
              __atomic_load_n (&self->shared->connections, __ATOMIC_RELAXED));
    s_metric (text, "rtws_connections_total", "counter",
              "WebSocket connections upgraded since start.", m->connections);
    s_metric_head (text, "rtws_handshake_rejections_total", "counter",
                   "Handshakes answered without an upgrade, by reason.");
    for (size_t i = 0; i < S_REJECTS; i++)
        s_text_add (text, "rtws_handshake_rejections_total{reason=\"%s\"} %" PRIu64 "\n",
                    s_reject_names [i], m->rejections [i]);
    s_metric (text, "rtws_rooms", "gauge",
              "Rooms with at least one connection on this node (router).", self->stats.rooms);
    s_metric (text, "rtws_messages_received_total", "counter",
              "Data messages received from clients.", m->received);
    s_metric (text, "rtws_messages_published_total", "counter",
              "chat.message frames published to their room.", m->published);
    s_metric (text, "rtws_deliveries_total", "counter",
              "Frames written to clients.", m->deliveries);
    s_metric (text, "rtws_received_bytes_total", "counter",
              "Payload bytes of data frames received from clients.", m->received_bytes);
    s_metric (text, "rtws_sent_bytes_total", "counter",
              "Payload bytes of frames written to clients.", m->sent_bytes);
    s_metric_head (text, "rtws_drops_total", "counter",
                   "Frames that did not reach a client or the room, by reason.");
    for (size_t i = 0; i < S_DROPS; i++)
        s_text_add (text, "rtws_drops_total{reason=\"%s\"} %" PRIu64 "\n",
                    s_drop_names [i], m->drops [i]);
    s_metric (text, "rtws_router_shed_delivers_total", "counter",
              "DELIVER batches the router shed because the gateway fell behind.",
              self->stats.router_shed);
    s_metric_head (text, "rtws_closes_total", "counter",
                   "Connections closed, by close code and reason.");
    for (size_t i = 0; i < S_CLOSE_KINDS; i++)
        s_text_add (text, "rtws_closes_total{code=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                    s_close_kinds [i].label, s_close_kinds [i].reason, m->closes [i]);
    s_metric_head (text, "rtws_delivery_latency_seconds", "histogram",
                   "From accepting a chat.message to writing it to a recipient, per recipient.");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < S_LATENCY_BOUNDS; i++) {
        cumulative += m->latency [i];
        s_text_add (text, "rtws_delivery_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                    s_latency_bounds [i], cumulative);
    }
    cumulative += m->latency [S_LATENCY_BOUNDS];
    s_text_add (text, "rtws_delivery_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                "rtws_delivery_latency_seconds_sum %.9f\n"
                "rtws_delivery_latency_seconds_count %" PRIu64 "\n",
                cumulative, (double) m->latency_sum_ns / 1e9, m->latency_count);
    s_metric (text, "rtws_draining", "gauge",
              "1 from DRAIN (SIGTERM) until exit.", self->draining || self->stopping);
    s_metric (text, "rtws_start_time_seconds", "gauge",
              "Start time, Unix seconds.", (uint64_t) self->started);
    s_metric_head (text, "rtws_engine_info", "gauge",
                   "The engine rooms and presence run on: memory (one node) or redis.");
    s_text_add (text, "rtws_engine_info{engine=\"%s\"} 1\n", self->redis ? "redis" : "memory");
    if (!self->redis)
        return;                 //  the rtws_redis_* family exists with Redis only
    s_metric (text, "rtws_redis_connected", "gauge",
              "1 while both Redis links are up (bridge).",
              self->stats.bridge_heard && self->stats.connected);
    s_metric (text, "rtws_redis_reconnects_total", "counter",
              "Times the node connected to Redis again after losing it.", self->stats.reconnects);
    s_metric (text, "rtws_redis_outbox_depth", "gauge",
              "PUBLISHes waiting for Redis or unanswered.", self->stats.outbox);
    s_metric_head (text, "rtws_redis_dropped_payloads_total", "counter",
                   "Messages from Redis not forwarded, by reason.");
    s_text_add (text, "rtws_redis_dropped_payloads_total{reason=\"not_json\"} %" PRIu64 "\n"
                "rtws_redis_dropped_payloads_total{reason=\"too_big\"} %" PRIu64 "\n"
                "rtws_redis_dropped_payloads_total{reason=\"bad_channel\"} %" PRIu64 "\n",
                self->stats.not_json, self->stats.too_big, self->stats.bad_channel);
}

//  Answers one request: the head now, the body at the next writeable.
static int
s_admin_http (gateway_t *self, struct lws *wsi, s_admin_session_t *session, const char *path)
{
    s_text_t text = { malloc (LWS_PRE + S_ADMIN_BODY_MAX), 0, false };
    if (!text.data)
        return -1;
    unsigned int status = HTTP_STATUS_OK;
    const char *type = "text/plain; charset=utf-8";
    bool get = lws_hdr_total_length (wsi, WSI_TOKEN_GET_URI) > 0;
    if (!get) {
        status = HTTP_STATUS_METHOD_NOT_ALLOWED;
        s_text_add (&text, "method not allowed\n");
    }
    else
    if (streq (path, "/healthz"))
        s_text_add (&text, "ok\n");
    else
    if (streq (path, "/readyz")) {
        const char *why = s_unready (self);
        status = why ? HTTP_STATUS_SERVICE_UNAVAILABLE : HTTP_STATUS_OK;
        s_text_add (&text, "%s\n", why ? why : "ready");
    }
    else
    if (streq (path, "/metrics")) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        s_metrics_render (self, &text);
    }
    else {
        status = HTTP_STATUS_NOT_FOUND;
        s_text_add (&text, "not found\n");
    }
    if (text.full) {
        log_error (GW, "admin answer to %s over %d bytes", path, S_ADMIN_BODY_MAX);
        text.len = 0;
        text.full = false;
        status = HTTP_STATUS_INTERNAL_SERVER_ERROR;
        type = "text/plain; charset=utf-8";
        s_text_add (&text, "answer too large\n");
    }
    unsigned char head [LWS_PRE + 512];
    unsigned char *start = head + LWS_PRE;
    unsigned char *p = start;
    unsigned char *end = head + sizeof head - 1;
    if (lws_add_http_common_headers (wsi, status, type, text.len, &p, end)
    ||  (!get && lws_add_http_header_by_name (wsi, (const unsigned char *) "allow:",
                                              (const unsigned char *) "GET", 3, &p, end))
    ||  lws_add_http_header_by_name (wsi, (const unsigned char *) "cache-control:",
                                     (const unsigned char *) "no-store", 8, &p, end)
    ||  lws_finalize_write_http_header (wsi, start, &p, end)) {
        free (text.data);
        return -1;
    }
    session->body = text.data;
    session->len = text.len;
    lws_callback_on_writable (wsi);
    return 0;
}

static int
s_admin_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    gateway_t *self = (gateway_t *) lws_context_user (lws_get_context (wsi));
    s_admin_session_t *session = (s_admin_session_t *) user;
    switch (reason) {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            return 0;           //  the public vhost's protocol takes the PAIR
        case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
            //  The fd may have been a public connection's: forget its guard.
            if (self)
                frame_guards_track (&self->guards, lws_get_socket_fd (wsi), FRAME_GUARD_OFF);
            return 0;
        case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
            //  No WebSocket here.
            return s_reject (wsi, 404, "Not Found", "not found");
        case LWS_CALLBACK_HTTP:
            if (!session || session->body)
                return -1;      //  one request at a time per connection
            return s_admin_http (self, wsi, session, in ? (const char *) in : "");
        case LWS_CALLBACK_HTTP_WRITEABLE: {
            if (!session || !session->body)
                return 0;
            //  lws keeps whatever the kernel does not take now.
            int n = lws_write (wsi, (unsigned char *) session->body + LWS_PRE, session->len,
                               LWS_WRITE_HTTP_FINAL);
            free (session->body);
            session->body = NULL;
            if (n < 0)
                return -1;
            return lws_http_transaction_completed (wsi) ? -1 : 0;
        }
        case LWS_CALLBACK_CLOSED_HTTP:
        case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
            if (session) {
                free (session->body);
                session->body = NULL;
            }
            return 0;
        default:
            return lws_callback_http_dummy (wsi, reason, user, in, len);
    }
}

//  --------------------------------------------------------------------------
//  Threads

static void *
s_service_thread (void *args)
{
    gateway_t *self = (gateway_t *) args;
    char name [16];
    snprintf (name, sizeof name, "rtws-service-%u", (unsigned) self->shard);
    rtws_thread_name (name);
    gateway_recv_attach (&self->guards);
    while (!self->done) {
        int rc = lws_service (self->context, 0);
        s_news_flush (self);
        if (rc < 0)
            break;
    }
    s_news_flush (self);
    gateway_recv_attach (NULL);
    OPENSSL_thread_stop ();
    return NULL;
}

static void
s_lws_log (int level, const char *line)
{
    //  lws lines end with a newline; ours add one.
    size_t len = strlen (line);
    while (len && (line [len - 1] == '\n' || line [len - 1] == '\r'))
        len--;
    rtws_log (level == LLL_ERR ? RTWS_LOG_ERROR : level == LLL_WARN ? RTWS_LOG_WARN : RTWS_LOG_DEBUG,
              "lws", "%.*s", (int) len, line);
}

//  --------------------------------------------------------------------------
//  The listening socket (service thread)

//  lws 4.1 as Debian builds it (LWS_MAX_SMP 1) runs one service thread per
//  context and never shares a listening port between contexts. So the
//  actor opens the listening sockets itself - one per shard, joined by
//  SO_REUSEPORT when there are several, so that the kernel spreads new
//  connections over the shards - and each shard watches its own as a raw
//  file descriptor in its lws loop, accepting and handing each connection
//  to its public vhost (lws_adopt_socket_vhost), the path lws's own
//  listener takes.
//  After an accept pause: the spare fd again, and the socket watched again.
static void
s_accept_resume (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = (gateway_t *) ((char *) sul - offsetof (gateway_t, accept_sul));
    if (self->spare_fd < 0)
        self->spare_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (self->listening)
        lws_rx_flow_control (self->listening, 1);
}

static int
s_listen_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    (void) user;
    (void) in;
    (void) len;
    gateway_t *self = (gateway_t *) lws_context_user (lws_get_context (wsi));
    if (reason != LWS_CALLBACK_RAW_RX_FILE || !self)
        return 0;
    int listen_fd = lws_get_socket_fd (wsi);
    for (int i = 0; i < S_ACCEPT_BATCH; i++) {
        int fd = accept4 (listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            //  On failure lws closes fd.
            if (!lws_adopt_socket_vhost (self->vhost, fd))
                log_warn (GW, "could not take a new connection (lws refused it)");
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE) {
            //  Out of fds: the connection would stay in the backlog and
            //  wake us again at once. Take it with the spare fd and close
            //  it, so the client learns now and the loop does not spin;
            //  without a spare, stop watching the socket for a while.
            if (self->spare_fd >= 0) {
                close (self->spare_fd);
                fd = accept4 (listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0)
                    close (fd);
                self->spare_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
                log_warn (GW, "out of file descriptors: a new connection was closed");
            }
            if (self->spare_fd < 0) {
                lws_rx_flow_control (wsi, 0);
                lws_sul_schedule (self->context, 0, &self->accept_sul, s_accept_resume,
                                  S_ACCEPT_PAUSE_US);
                log_warn (GW, "out of file descriptors: not accepting for %d ms",
                          (int) (S_ACCEPT_PAUSE_US / 1000));
            }
        }
        break;                  //  EAGAIN: the backlog is empty
    }
    return 0;
}

static const struct lws_protocols s_protocols [] = {
    //  rx_buffer_size: lws gives each connection a receive buffer of this
    //  size (4 KiB by default); client frames are small, and a longer one
    //  arrives in several RECEIVE callbacks that s_receive reassembles, so
    //  1 KiB keeps idle connections lean.
    { "rtws", s_callback, sizeof (s_session_t), 1024, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

static const struct lws_protocols s_admin_protocols [] = {
    { "rtws-admin", s_admin_callback, sizeof (s_admin_session_t), 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

//  Its own vhost, so that no client can ask for it as a subprotocol.
static const struct lws_protocols s_listener_protocols [] = {
    { "rtws-listen", s_listen_callback, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

//  lws wants no interface for "any address".
static const char *
s_iface (const char *host)
{
    return host && strcmp (host, "0.0.0.0") != 0 ? host : NULL;
}

static const struct lws_extension s_extensions [] = {
    { "permessage-deflate", lws_extension_callback_pm_deflate,
      "permessage-deflate; client_no_context_takeover; client_max_window_bits" },
    { NULL, NULL, NULL }
};

//  Opens one socket bound to host:port (port 0: any free one), not yet
//  listening (gateway_new listens once the admin port does), non-blocking.
//  shared: joins a SO_REUSEPORT group. Returns the fd, or -1 with errno and
//  a log line.
static int
s_listen_open (const char *host, int port, bool shared)
{
    struct addrinfo hints, *found = NULL;
    memset (&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char service [16];
    snprintf (service, sizeof service, "%d", port);
    int rc = getaddrinfo (host && *host ? host : NULL, service, &hints, &found);
    if (rc != 0 || !found) {
        log_error (GW, "cannot listen on %s:%d: %s", host, port, gai_strerror (rc));
        errno = EINVAL;
        return -1;
    }
    int fd = socket (found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                     found->ai_protocol);
    int on = 1;
    int saved = 0;
    if (fd < 0
    ||  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0
    ||  (shared && setsockopt (fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    ||  bind (fd, found->ai_addr, found->ai_addrlen) != 0) {
        saved = errno;
        log_error (GW, "cannot listen on %s:%d: %s", host, port, strerror (saved));
        if (fd >= 0)
            close (fd);
        fd = -1;
    }
    freeaddrinfo (found);
    if (fd < 0)
        errno = saved;
    return fd;
}

//  The port a listening socket is bound to, or -1.
static int
s_listen_port (int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname (fd, (struct sockaddr *) &addr, &len) != 0)
        return -1;
    if (addr.ss_family == AF_INET)
        return ntohs (((struct sockaddr_in *) &addr)->sin_port);
    if (addr.ss_family == AF_INET6)
        return ntohs (((struct sockaddr_in6 *) &addr)->sin6_port);
    return -1;
}

static void gateway_destroy (gateway_t **self_p);

//  One shard: its lws context (the admin vhost too, for shard 0), its
//  sockets to the siblings, and its service thread, watching listen_fd,
//  which it owns from now on (closed with the context). Returns NULL when
//  anything failed (listen_fd closed, said why).
static gateway_t *
gateway_new (const rtws_config_t *config, s_shared_t *shared, size_t shard, size_t threads,
             int listen_fd)
{
    gateway_t *self = (gateway_t *) zmalloc (sizeof (gateway_t));
    assert (self);
    self->config = config;
    self->shared = shared;
    self->shard = shard;
    self->redis = config->redis_url && *config->redis_url;
    self->started = (int64_t) time (NULL);
    self->spare_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    self->merge = (unsigned char *) malloc (LWS_PRE + S_MERGE_MAX);
    assert (self->merge);
    //  The guard table never outgrows the fds this process may open.
    struct rlimit files;
    size_t fd_limit = getrlimit (RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                    ? (size_t) files.rlim_cur : (size_t) 1 << 20;
    frame_guards_init (&self->guards, fd_limit);

    //  A PAIR per shard; the name only has to be unique.
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://rtws-gateway-%p", (void *) self);
    self->pair_in = zsock_new_pair (NULL);
    int rc = zsock_bind (self->pair_in, "%s", endpoint);
    assert (rc == 0);
    self->pair_out = zsock_new_pair (endpoint);
    assert (self->pair_in && self->pair_out);
    //  As deep as the PULL the actor thread forwards from.
    zsock_set_sndhwm (self->pair_in, 100000);
    zsock_set_rcvhwm (self->pair_out, 100000);

    //  The service thread never blocks on a sibling: a full queue fails
    //  the send (sndtimeo 0) and the client is told, instead of freezing
    //  every connection behind one busy actor.
    self->router = zsock_new_push (RTWS_EP_ROUTER);
    self->presence = zsock_new_push (RTWS_EP_PRESENCE);
    self->auth = zsock_new_dealer (RTWS_EP_AUTH);
    assert (self->router && self->presence && self->auth);
    zsock_set_sndhwm (self->router, 100000);
    zsock_set_sndhwm (self->presence, 100000);
    zsock_set_sndtimeo (self->router, 0);
    zsock_set_sndtimeo (self->presence, 0);
    zsock_set_sndtimeo (self->auth, 0);
    if (threads > 1) {
        self->joins = zsock_new_push (RTWS_EP_ROUTER_JOIN);
        assert (self->joins);
        zsock_set_sndhwm (self->joins, 100000);
        zsock_set_sndtimeo (self->joins, 0);
    }

    //  One context per shard: shard 0's also holds the admin vhost. The
    //  context holds what the vhosts share (the header bounds, the
    //  handshake deadline, IPv6).
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.user = self;
    info.gid = (gid_t) -1;
    info.uid = (uid_t) -1;
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS
                 | LWS_SERVER_OPTION_VALIDATE_UTF8
                 | LWS_SERVER_OPTION_DISABLE_IPV6;
    if ((config->host && strchr (config->host, ':'))
    ||  (config->admin_port > 0 && config->admin_host && strchr (config->admin_host, ':')))
        info.options &= ~(uint64_t) LWS_SERVER_OPTION_DISABLE_IPV6;
    //  Long JWTs live in headers and the query: give them room, bounded.
    info.max_http_header_data = (unsigned short) RTWS_HEADER_MAX;
    info.max_http_header_pool = 256;
    //  A handshake that does not complete in time is dropped (slowloris).
    info.timeout_secs = (unsigned int) config->handshake_timeout;
    info.timeout_secs_ah_idle = (unsigned int) config->handshake_timeout;
    self->context = lws_create_context (&info);
    if (!self->context) {
        log_error (GW, "cannot create the libwebsockets context");
        close (listen_fd);
        gateway_destroy (&self);
        return NULL;
    }
    //  The admin vhost first: a probe or test may ask both ports at once.
    if (shard == 0 && config->admin_port > 0) {
        info.vhost_name = "admin";
        info.port = config->admin_port;
        info.iface = s_iface (config->admin_host);
        info.protocols = s_admin_protocols;
        self->admin = lws_create_vhost (self->context, &info);
        if (!self->admin) {
            log_error (GW, "cannot listen on %s:%d (ADMIN_HOST:ADMIN_PORT)",
                       config->admin_host, config->admin_port);
            self->admin_port = -1;
            close (listen_fd);
            return self;        //  the owner reads admin_port and gives up
        }
        self->admin_port = lws_get_vhost_listen_port (self->admin);
    }
    //  Now the WebSocket port: once it accepts, so does the admin port.
    if (listen (listen_fd, SOMAXCONN) != 0) {
        log_error (GW, "cannot listen on %s:%d: %s", config->host, config->port, strerror (errno));
        close (listen_fd);
        gateway_destroy (&self);
        return NULL;
    }
    info.vhost_name = "public";
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.iface = NULL;
    info.protocols = s_protocols;
    if (config->permessage_deflate)
        info.extensions = s_extensions;
    self->vhost = lws_create_vhost (self->context, &info);
    info.vhost_name = "listener";
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = s_listener_protocols;
    info.extensions = NULL;
    self->listener = self->vhost ? lws_create_vhost (self->context, &info) : NULL;
    lws_sock_file_fd_type desc;
    desc.filefd = listen_fd;
    if (self->listener)
        self->listening = lws_adopt_descriptor_vhost (self->listener, LWS_ADOPT_RAW_FILE_DESC,
                                                      desc, "rtws-listen", NULL);
    if (!self->listening) {
        log_error (GW, "cannot watch the listening socket");
        close (listen_fd);
        gateway_destroy (&self);
        return NULL;
    }
    return self;
}

//  Starts a shard's service thread, once every shard is in the shared
//  list (shard 0's /metrics reads it). Returns 0 or -1.
static int
s_shard_start (gateway_t *self)
{
    if (pthread_create (&self->service, NULL, s_service_thread, self) != 0) {
        log_error (GW, "cannot start an lws service thread");
        return -1;
    }
    self->service_started = true;
    return 0;
}

//  Asks a shard's service thread to close every client with 1001 and end;
//  gateway_destroy waits for it.
static void
s_shard_stop (gateway_t *self)
{
    if (self->service_started) {
        zstr_send (self->pair_in, "$TERM");
        lws_cancel_service (self->context);
    }
}

static void
gateway_destroy (gateway_t **self_p)
{
    assert (self_p);
    gateway_t *self = *self_p;
    if (!self)
        return;
    if (self->service_started) {
        s_shard_stop (self);
        pthread_join (self->service, NULL);
    }
    //  The service thread is gone: nothing else touches the timer list.
    lws_sul_cancel (&self->drain_sul);
    lws_sul_cancel (&self->wheel.sul);
    lws_sul_cancel (&self->accept_sul);
    if (self->context)
        lws_context_destroy (self->context);
    //  Closes the context ran (a service loop that ended on an error) queued
    //  LEAVEs and DISCONNECTs: they still go.
    s_news_flush (self);
    free (self->conns.slots);
    free (self->merge);
    frame_guards_free (&self->guards);
    if (self->spare_fd >= 0)
        close (self->spare_fd);
    zsock_destroy (&self->auth);
    zsock_destroy (&self->joins);
    inproc_batch_clear (&self->to_presence);
    inproc_batch_clear (&self->to_router);
    zsock_destroy (&self->presence);
    zsock_destroy (&self->router);
    zsock_destroy (&self->pair_out);
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://rtws-gateway-%p", (void *) self);
    inproc_bound_destroy (&self->pair_in, endpoint);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  The actor thread: one owner, GATEWAY_THREADS shards

typedef struct {
    const rtws_config_t *config;  //  owned by rtwsd.c
    zsock_t *pipe;              //  our owner
    zsock_t *pull;              //  DELIVER, REFUSED, STATS from router and bridge
    s_shared_t shared;          //  the shards' common state and list
    int port;                   //  bound port, -1 when listening failed
    int admin_port;             //  shard 0's admin port, 0 = off, -1 = failed
    bool drain_asked;           //  DRAIN waits for every shard's DRAINED
    size_t drain_answers;
    int drain_sum;
    size_t config_answers;      //  CONFIGURED answers still awaited
} s_actor_t;

//  The CPUs this process may use: those in its affinity mask (taskset,
//  systemd's CPUAffinity=, a container's cpuset), fewer when a cgroup v2
//  CPU quota (docker --cpus, systemd's CPUQuota=) allows less, rounded up.
static long
s_usable_cpus (void)
{
    long cpus = sysconf (_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity (0, sizeof set, &set) == 0 && CPU_COUNT (&set) > 0)
        cpus = CPU_COUNT (&set);
    FILE *file = fopen ("/sys/fs/cgroup/cpu.max", "r");
    if (file) {
        char quota [32] = "";
        long long period = 0;
        if (fscanf (file, "%31s %lld", quota, &period) == 2 && period > 0
        &&  strcmp (quota, "max") != 0) {
            long long limit = (atoll (quota) + period - 1) / period;
            if (limit >= 1 && limit < cpus)
                cpus = (long) limit;
        }
        fclose (file);
    }
    return cpus;
}

static size_t
s_threads (const rtws_config_t *config)
{
    if (config->gateway_threads > 0)
        return (size_t) config->gateway_threads;
    long cpus = s_usable_cpus ();
    return cpus < 1 ? 1 : cpus > S_SHARDS_MAX ? S_SHARDS_MAX : (size_t) cpus;
}

static s_actor_t *
s_actor_new (zsock_t *pipe, const rtws_config_t *config)
{
    s_actor_t *self = (s_actor_t *) zmalloc (sizeof (s_actor_t));
    assert (self);
    self->config = config;
    self->pipe = pipe;
    self->port = -1;
    pthread_mutex_init (&self->shared.peers_lock, NULL);
    if (config->max_connections_per_ip > 0) {
        self->shared.per_peer = zhashx_new ();
        assert (self->shared.per_peer);
    }
    self->pull = zsock_new (ZMQ_PULL);
    assert (self->pull);
    zsock_set_rcvhwm (self->pull, 100000);
    int rc = zsock_bind (self->pull, RTWS_EP_GATEWAY);
    assert (rc == 0);

    int lws_level = LLL_ERR;
    if (rtws_log_level () >= RTWS_LOG_DEBUG)
        lws_level |= LLL_WARN;
    lws_set_log_level (lws_level, s_lws_log);

    //  Every listening socket before any shard: a port that is taken fails
    //  the start, and with PORT=0 the first socket picks the port the
    //  others join. A socket without SO_REUSEPORT is tried first, so that
    //  a port another process holds (even in a SO_REUSEPORT group of its
    //  own user) is refused rather than shared.
    size_t threads = s_threads (config);
    int fds [S_SHARDS_MAX];
    size_t opened = 0;
    int port = config->port;
    if (threads > 1 && port != 0) {
        int probe = s_listen_open (config->host, port, false);
        if (probe < 0)
            return self;
        close (probe);
    }
    for (opened = 0; opened < threads; opened++) {
        fds [opened] = s_listen_open (config->host, port, threads > 1);
        if (fds [opened] < 0)
            break;
        port = s_listen_port (fds [opened]);
    }
    if (opened < threads || port < 0) {
        while (opened > 0)
            close (fds [--opened]);
        return self;
    }
    for (size_t k = 0; k < threads; k++) {
        gateway_t *shard = gateway_new (config, &self->shared, k, threads, fds [k]);
        if (shard)
            self->shared.shards [self->shared.count++] = shard;
        if (!shard || (k == 0 && shard->admin_port < 0)) {
            if (k == 0)
                self->admin_port = shard ? -1 : 0;
            for (size_t j = k + 1; j < threads; j++)
                close (fds [j]);
            return self;        //  PORT says -1, ADMIN_PORT why
        }
    }
    for (size_t k = 0; k < threads; k++)
        if (s_shard_start (self->shared.shards [k]) != 0)
            return self;        //  PORT says -1; the shards stop with the actor
    self->port = port;
    self->admin_port = self->shared.shards [0]->admin_port;
    log_info (GW, "listening on %s:%d with %zu service thread%s", config->host, port, threads,
              threads > 1 ? "s" : "");
    if (!gateway_recv_active ())
        log_warn (GW, "recv(2) is not the gateway's: unmasked client frames are not failed");
    return self;
}

static void
s_actor_destroy (s_actor_t **self_p)
{
    assert (self_p);
    s_actor_t *self = *self_p;
    if (!self)
        return;
    //  Every shard closes its clients at the same time, then each is joined.
    for (size_t k = 0; k < self->shared.count; k++)
        s_shard_stop (self->shared.shards [k]);
    for (size_t k = 0; k < self->shared.count; k++)
        gateway_destroy (&self->shared.shards [k]);
    self->shared.count = 0;
    zhashx_destroy (&self->shared.per_peer);
    pthread_mutex_destroy (&self->shared.peers_lock);
    //  Unbound first, so a gateway started right after can bind it again.
    inproc_bound_destroy (&self->pull, RTWS_EP_GATEWAY);
    free (self);
    *self_p = NULL;
}

//  Messages handed to a shard before it is woken: a shard only reads its
//  PAIR when woken, and a PAIR that fills would block the actor thread.
#define S_WAKE_EVERY        256

//  One more message is on shard k's PAIR: wake it every S_WAKE_EVERY.
static void
s_handed (s_actor_t *self, size_t k, size_t *pending)
{
    if (++pending [k] >= S_WAKE_EVERY) {
        lws_cancel_service (self->shared.shards [k]->context);
        pending [k] = 0;
    }
}

//  Splits a DELIVER by shard: each gets the payload and its own ids.
static void
s_split_deliver (s_actor_t *self, zmsg_t **msg_p, size_t *pending)
{
    zmsg_t *msg = *msg_p;
    zframe_t *verb = zmsg_pop (msg);
    zframe_t *payload = zmsg_pop (msg);
    zframe_t *ids = zmsg_pop (msg);
    assert (verb && payload && ids);
    assert (zframe_size (ids) % sizeof (rtws_conn_id_t) == 0);
    size_t count = zframe_size (ids) / sizeof (rtws_conn_id_t);
    const rtws_conn_id_t *all = (const rtws_conn_id_t *) zframe_data (ids);
    size_t per [S_SHARDS_MAX] = { 0 };
    for (size_t i = 0; i < count; i++) {
        rtws_conn_id_t id;
        memcpy (&id, all + i, sizeof id);
        per [S_SHARD_OF (id)]++;
    }
    for (size_t k = 0; k < self->shared.count; k++) {
        if (!per [k])
            continue;
        zframe_t *mine = zframe_new (NULL, per [k] * sizeof (rtws_conn_id_t));
        unsigned char *out = zframe_data (mine);
        for (size_t i = 0; i < count; i++) {
            rtws_conn_id_t id;
            memcpy (&id, all + i, sizeof id);
            if (S_SHARD_OF (id) == k) {
                memcpy (out, &id, sizeof id);
                out += sizeof id;
            }
        }
        zframe_t *copy = zframe_dup (payload);
        zmsg_t *part = zmsg_new ();
        zmsg_addstr (part, "DELIVER");
        zmsg_append (part, &copy);
        zmsg_append (part, &mine);
        zmsg_send (&part, self->shared.shards [k]->pair_in);
        s_handed (self, k, pending);
    }
    zframe_destroy (&verb);
    zframe_destroy (&payload);
    zframe_destroy (&ids);
    zmsg_destroy (msg_p);
}

//  Moves every message waiting on the PULL to the shard it concerns, and
//  wakes each shard that got some: every S_WAKE_EVERY and at the end. A
//  DELIVER is split by shard when there are several.
static void
s_forward (s_actor_t *self)
{
    size_t pending [S_SHARDS_MAX] = { 0 };
    int moved = 0;
    while (moved < 4096 && (zsock_events (self->pull) & ZMQ_POLLIN)) {
        zmsg_t *msg = zmsg_recv (self->pull);
        if (!msg)
            break;
        moved++;
        if (self->shared.count == 0) {
            zmsg_destroy (&msg);
            continue;
        }
        size_t shard = 0;
        zframe_t *verb = zmsg_first (msg);
        if (self->shared.count > 1 && zframe_streq (verb, "DELIVER")) {
            s_split_deliver (self, &msg, pending);
            continue;
        }
        if (zframe_streq (verb, "REFUSED") || zframe_streq (verb, "KICK")) {
            //  czmq's "8" picture travels as decimal text.
            zframe_t *conn = zmsg_next (msg);
            char *text = conn ? zframe_strdup (conn) : NULL;
            shard = text ? S_SHARD_OF (strtoull (text, NULL, 10)) : 0;
            zstr_free (&text);
            if (shard >= self->shared.count)
                shard = 0;
        }
        //  STATS: shard 0 serves /readyz and /metrics.
        zmsg_send (&msg, self->shared.shards [shard]->pair_in);
        s_handed (self, shard, pending);
    }
    for (size_t k = 0; k < self->shared.count; k++)
        if (pending [k])
            lws_cancel_service (self->shared.shards [k]->context);
}

//  DRAIN from the owner: handed to every shard, answered with the sum once
//  every shard said DRAINED; with no shard there is nothing to drain.
static void
s_drain_ask (s_actor_t *self)
{
    if (self->drain_asked)
        return;
    if (self->shared.count == 0) {
        zsock_send (self->pipe, "i", 0);
        return;
    }
    self->drain_asked = true;
    self->drain_answers = 0;
    self->drain_sum = 0;
    for (size_t k = 0; k < self->shared.count; k++) {
        zstr_send (self->shared.shards [k]->pair_in, "DRAIN");
        lws_cancel_service (self->shared.shards [k]->context);
    }
}

//  CONFIG from the owner (SIGHUP): handed to every shard, which swaps its
//  pointer and answers CONFIGURED; the owner may free the old
//  configuration once all have answered.
static void
s_config_ask (s_actor_t *self, zmsg_t *msg)
{
    const rtws_config_t *config = (const rtws_config_t *) inproc_pop_pointer (msg);
    self->config = config;
    if (self->shared.count == 0) {
        zsock_send (self->pipe, "i", 1);
        return;
    }
    self->config_answers = self->shared.count;
    for (size_t k = 0; k < self->shared.count; k++) {
        zmsg_t *forward = zmsg_new ();
        zmsg_addstr (forward, "CONFIG");
        zmsg_addmem (forward, &config, sizeof config);
        zmsg_send (&forward, self->shared.shards [k]->pair_in);
        lws_cancel_service (self->shared.shards [k]->context);
    }
}

//  DRAINED or CONFIGURED from a shard: counted towards the answer on the pipe.
static void
s_answer (s_actor_t *self, gateway_t *shard)
{
    char *verb = NULL;
    int value = 0;
    if (zsock_recv (shard->pair_in, "si", &verb, &value) == 0) {
        if (verb && streq (verb, "CONFIGURED")) {
            if (self->config_answers && --self->config_answers == 0)
                zsock_send (self->pipe, "i", 1);
        }
        else {
            assert (verb && streq (verb, "DRAINED"));
            if (self->drain_asked) {
                self->drain_sum = value > INT_MAX - self->drain_sum ? INT_MAX
                                                                      : self->drain_sum + value;
                if (++self->drain_answers == self->shared.count) {
                    zsock_send (self->pipe, "i", self->drain_sum);
                    self->drain_asked = false;
                }
            }
        }
    }
    zstr_free (&verb);
}

void
gateway_actor (zsock_t *pipe, void *args)
{
    rtws_thread_name ("rtws-gateway");
    const rtws_config_t *config = (const rtws_config_t *) args;
    s_actor_t *self = s_actor_new (pipe, config);
    zpoller_t *poller = zpoller_new (pipe, self->pull, NULL);
    assert (poller);
    for (size_t k = 0; k < self->shared.count; k++)
        zpoller_add (poller, self->shared.shards [k]->pair_in);
    zpoller_set_nonstop (poller, true);
    zsock_signal (pipe, 0);

    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == self->pull) {
            s_forward (self);
            continue;
        }
        if (which != pipe) {
            for (size_t k = 0; k < self->shared.count; k++)
                if (which == self->shared.shards [k]->pair_in)
                    s_answer (self, self->shared.shards [k]);
            continue;
        }
        zmsg_t *msg = zmsg_recv (pipe);
        if (!msg)
            break;
        char *command = zmsg_popstr (msg);
        bool term = command && streq (command, "$TERM");
        if (command && streq (command, "PORT"))
            zsock_send (pipe, "i", self->port);
        else
        if (command && streq (command, "ADMIN_PORT"))
            zsock_send (pipe, "i", self->admin_port);
        else
        if (command && streq (command, "DRAIN"))
            s_drain_ask (self);
        else
        if (command && streq (command, "CONFIG"))
            s_config_ask (self, msg);
        else
        if (!term) {
            log_error (GW, "unknown command: %s", command ? command : "(null)");
            assert (false);
        }
        zstr_free (&command);
        zmsg_destroy (&msg);
        if (term)
            break;
    }
    zpoller_destroy (&poller);
    s_actor_destroy (&self);
    OPENSSL_thread_stop ();
}

//  --------------------------------------------------------------------------
//  Self test: the gateway alone, its siblings played by the test, a raw
//  WebSocket client on loopback. The end-to-end tests in tests/e2e cover
//  the full contract with an independent client.

static int
s_test_connect (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t) port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) != 0) {
        close (fd);
        return -1;
    }
    struct timeval tv = { 3, 0 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

//  Reads the HTTP status code of the answer to a handshake.
static int
s_test_handshake (int port, const char *path)
{
    int fd = s_test_connect (port);
    if (fd < 0)
        return -1;
    char request [512];
    int n = snprintf (request, sizeof request,
                      "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n", path);
    if (write (fd, request, (size_t) n) != n) {
        close (fd);
        return -1;
    }
    char reply [1024];
    ssize_t got = read (fd, reply, sizeof reply - 1);
    int status = -1;
    if (got > 12) {
        reply [got] = 0;
        if (strncmp (reply, "HTTP/1.1 ", 9) == 0)
            status = atoi (reply + 9);
    }
    close (fd);
    return status;
}

//  A plain HTTP GET: returns the status and copies the body (NUL-ended,
//  cut at size) into body; -1 when nothing came back.
static int
s_test_http (int port, const char *path, char *body, size_t size)
{
    int fd = s_test_connect (port);
    if (fd < 0)
        return -1;
    char request [256];
    int n = snprintf (request, sizeof request,
                      "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (write (fd, request, (size_t) n) != n) {
        close (fd);
        return -1;
    }
    char reply [S_ADMIN_BODY_MAX + 1024];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof reply - 1 && (r = read (fd, reply + got, sizeof reply - 1 - got)) > 0)
        got += (size_t) r;
    close (fd);
    reply [got] = 0;
    int status = strncmp (reply, "HTTP/1.1 ", 9) == 0 ? atoi (reply + 9) : -1;
    const char *start = strstr (reply, "\r\n\r\n");
    snprintf (body, size, "%s", start ? start + 4 : "");
    return status;
}

//  GETs /metrics until it holds line (a whole line), for up to 2 s: the
//  admin port and the inproc sockets race each other.
static bool
s_test_metrics_line (int port, const char *line)
{
    char body [S_ADMIN_BODY_MAX];
    char want [256];
    snprintf (want, sizeof want, "\n%s\n", line);
    int64_t deadline = zclock_mono () + 2000;
    while (zclock_mono () < deadline) {
        body [0] = '\n';
        if (s_test_http (port, "/metrics", body + 1, sizeof body - 1) == 200
        &&  strstr (body, want))
            return true;
        zclock_sleep (20);      //  polling with a deadline
    }
    printf ("gateway_test: /metrics lacks \"%s\"\n", line);
    return false;
}

//  A loopback port nobody listens on right now.
static int
s_test_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0
    &&  getsockname (fd, (struct sockaddr *) &addr, &len) == 0)
        port = ntohs (addr.sin_port);
    if (fd >= 0)
        close (fd);
    return port;
}

//  Upgrades a client at /ws/lobby with token "abc", playing auth (OK for
//  alice) and the router's join socket: the JOIN must be queued before the
//  101 is written, so it is there as soon as the client reads the 101.
//  Returns the client's fd and sets *conn, or -1 (failures counted).
static int
s_test_upgrade (int port, zsock_t *auth, zsock_t *joins, zsock_t *router, uint64_t *conn,
                int *failures)
{
    int fd = s_test_connect (port);
    const char *request =
        "GET /ws/lobby?token=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    if (fd < 0 || write (fd, request, strlen (request)) != (ssize_t) strlen (request)) {
        printf ("FAIL gateway: cannot connect\n");
        (*failures)++;
        if (fd >= 0)
            close (fd);
        return -1;
    }
    zmsg_t *verify = zmsg_recv (auth);
    if (!verify || zmsg_size (verify) != 4) {
        printf ("FAIL gateway: no VERIFY request reached auth\n");
        (*failures)++;
        zmsg_destroy (&verify);
        close (fd);
        return -1;
    }
    zframe_t *identity = zmsg_pop (verify);
    char *verb = zmsg_popstr (verify);
    zframe_t *seq = zmsg_pop (verify);
    char *token = zmsg_popstr (verify);
    if (!streq (verb, "VERIFY") || !streq (token, "abc")) {
        printf ("FAIL gateway: VERIFY carried %s %s\n", verb, token);
        (*failures)++;
    }
    zmsg_t *reply = zmsg_new ();
    zmsg_append (reply, &identity);
    zmsg_addstr (reply, "OK");
    zmsg_append (reply, &seq);
    zmsg_addstr (reply, "alice");
    uint64_t no_exp = 0;
    zmsg_addmem (reply, &no_exp, sizeof no_exp);
    zmsg_send (&reply, auth);
    zstr_free (&verb);
    zstr_free (&token);
    zmsg_destroy (&verify);

    char answer [512];
    ssize_t got = read (fd, answer, sizeof answer - 1);
    if (got < 12 || strncmp (answer, "HTTP/1.1 101", 12) != 0) {
        printf ("FAIL gateway: valid token not upgraded\n");
        (*failures)++;
    }
    //  Already queued: no waiting for it.
    zsock_set_rcvtimeo (joins, 0);
    zmsg_t *join = zmsg_recv (joins);
    zsock_set_rcvtimeo (joins, 3000);
    char *verb2 = join ? zmsg_popstr (join) : NULL;
    char *conn_text = join ? zmsg_popstr (join) : NULL;
    char *room = join ? zmsg_popstr (join) : NULL;
    *conn = conn_text ? strtoull (conn_text, NULL, 10) : 0;
    if (!verb2 || !streq (verb2, "JOIN") || !room || !streq (room, "lobby") || *conn == 0) {
        printf ("FAIL gateway: the JOIN of the new connection was not queued before its 101\n");
        (*failures)++;
    }
    zstr_free (&conn_text);
    zmsg_destroy (&join);
    zstr_free (&verb2);
    zstr_free (&room);
    //  The router does not poll the join socket: the pass ends with JOINS.
    char *nudge = zstr_recv (router);
    if (!nudge || !streq (nudge, "JOINS")) {
        printf ("FAIL gateway: the pass that sent a JOIN did not end with JOINS\n");
        (*failures)++;
    }
    zstr_free (&nudge);
    return fd;
}

int
gateway_test (bool verbose)
{
    int failures = 0;
    rtws_config_t *config = rtws_config_new ();
    assert (config);
    config->port = 0;              //  any free port
    config->admin_port = s_test_free_port ();
    free (config->admin_host);
    config->admin_host = strdup ("127.0.0.1");
    //  Two service threads: the handshake then sends the router its JOIN
    //  before its 101 (the one-thread path is the end-to-end tests' too).
    config->gateway_threads = 2;
    if (!verbose)
        rtws_log_set_level (RTWS_LOG_WARN);

    //  The test plays auth (ROUTER), the router (PULL, and PULL for the
    //  JOIN before the 101) and presence (PULL).
    zsock_t *auth = zsock_new_router (RTWS_EP_AUTH);
    zsock_t *router = zsock_new_pull (RTWS_EP_ROUTER);
    zsock_t *joins = zsock_new_pull (RTWS_EP_ROUTER_JOIN);
    zsock_t *presence = zsock_new_pull (RTWS_EP_PRESENCE);
    assert (auth && router && joins && presence);
    zsock_set_rcvtimeo (joins, 3000);
    zsock_set_rcvtimeo (auth, 3000);
    zsock_set_rcvtimeo (router, 3000);
    zsock_set_rcvtimeo (presence, 3000);

    zactor_t *gateway = zactor_new (gateway_actor, config);
    assert (gateway);
    zsock_send (gateway, "s", "PORT");
    int port = -1;
    zsock_recv (gateway, "i", &port);
    if (port <= 0) {
        printf ("FAIL gateway: no listen port\n");
        failures++;
        goto done;
    }

    //  Bad room: answered 400 before any auth request.
    int status = s_test_handshake (port, "/ws/bad.room");
    if (status != 400) {
        printf ("FAIL gateway: bad room answered %d, want 400\n", status);
        failures++;
    }
    //  No token: 401 without asking auth.
    status = s_test_handshake (port, "/ws/lobby");
    if (status != 401) {
        printf ("FAIL gateway: missing token answered %d, want 401\n", status);
        failures++;
    }

    //  A token: the gateway asks auth; the test answers OK, so the upgrade
    //  proceeds, and its JOIN is on the join socket by the time the 101 is.
    uint64_t conn = 0;
    int fd = s_test_upgrade (port, auth, joins, router, &conn, &failures);
    if (fd < 0)
        goto done;

    //  DELIVER from the router reaches the client as one text frame.
    zsock_t *deliver = zsock_new_push (RTWS_EP_GATEWAY);
    const char *payload = "{\"type\":\"chat.delivery\"}";
    zsock_send (deliver, "ssb", "DELIVER", payload, &conn, sizeof conn);
    unsigned char frame [256];
    ssize_t got = read (fd, frame, sizeof frame);
    if (got != (ssize_t) (2 + strlen (payload)) || frame [0] != 0x81
    ||  memcmp (frame + 2, payload, strlen (payload)) != 0) {
        printf ("FAIL gateway: DELIVER not written as one text frame (%zd bytes)\n", got);
        failures++;
    }

    //  The admin listener.
    int admin = -1;
    zsock_send (gateway, "s", "ADMIN_PORT");
    zsock_recv (gateway, "i", &admin);
    char body [S_ADMIN_BODY_MAX];
    if (admin != config->admin_port) {
        printf ("FAIL gateway: ADMIN_PORT answered %d, want %d\n", admin, config->admin_port);
        failures++;
    }
    if (s_test_http (admin, "/healthz", body, sizeof body) != 200 || !streq (body, "ok\n")) {
        printf ("FAIL gateway: /healthz is not 200 ok\n");
        failures++;
    }
    if (s_test_http (admin, "/readyz", body, sizeof body) != 200 || !streq (body, "ready\n")) {
        printf ("FAIL gateway: /readyz (memory engine, serving) is not 200 ready\n");
        failures++;
    }
    if (s_test_http (admin, "/nothing", body, sizeof body) != 404) {
        printf ("FAIL gateway: an unknown admin path is not 404\n");
        failures++;
    }
    if (s_test_handshake (admin, "/ws/lobby") != 404) {
        printf ("FAIL gateway: a WebSocket upgrade on the admin port is not refused 404\n");
        failures++;
    }
    zsock_send (deliver, "ss88", "STATS", "router", (uint64_t) 5, (uint64_t) 2);
    if (!s_test_metrics_line (admin, "rtws_connections 1")
    ||  !s_test_metrics_line (admin, "rtws_connections_total 1")
    ||  !s_test_metrics_line (admin, "rtws_handshake_rejections_total{reason=\"bad_room\"} 1")
    ||  !s_test_metrics_line (admin, "rtws_handshake_rejections_total{reason=\"unauthorized\"} 1")
    ||  !s_test_metrics_line (admin, "rtws_deliveries_total 1")
    ||  !s_test_metrics_line (admin, "rtws_rooms 5")
    ||  !s_test_metrics_line (admin, "rtws_router_shed_delivers_total 2")) {
        printf ("FAIL gateway: /metrics does not count what happened\n");
        failures++;
    }

    //  DRAIN: the client gets 1001; once it answered, DRAIN is answered
    //  with the one connection it closed; afterwards nothing new gets in.
    zsock_send (gateway, "s", "DRAIN");
    got = read (fd, frame, sizeof frame);
    if (got < 4 || frame [0] != 0x88 || ((frame [2] << 8) | frame [3]) != 1001) {
        printf ("FAIL gateway: DRAIN did not send the client a 1001 close\n");
        failures++;
    }
    //  Our close answer, masked with a zero key.
    const unsigned char answer_close [] = { 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9 };
    if (write (fd, answer_close, sizeof answer_close) != (ssize_t) sizeof answer_close) {
        printf ("FAIL gateway: cannot answer the close\n");
        failures++;
    }
    int closed = -1;
    zsock_set_rcvtimeo (gateway, 3000);
    if (zsock_recv (gateway, "i", &closed) != 0 || closed != 1) {
        printf ("FAIL gateway: DRAIN answered %d, want 1 connection closed\n", closed);
        failures++;
    }
    zsock_set_rcvtimeo (gateway, -1);
    if (s_test_http (admin, "/readyz", body, sizeof body) != 503 || !streq (body, "draining\n")) {
        printf ("FAIL gateway: /readyz after DRAIN is not 503 draining\n");
        failures++;
    }
    if (s_test_handshake (port, "/ws/lobby?token=abc") != 503) {
        printf ("FAIL gateway: a handshake after DRAIN is not 503\n");
        failures++;
    }
    if (!s_test_metrics_line (admin, "rtws_closes_total{code=\"1001\",reason=\"going away\"} 1")
    ||  !s_test_metrics_line (admin, "rtws_handshake_rejections_total{reason=\"unavailable\"} 1")) {
        printf ("FAIL gateway: /metrics does not count the drain\n");
        failures++;
    }
    close (fd);
    //  The closed connection sends LEAVE.
    char *verb3 = NULL, *room3 = NULL;
    uint64_t conn3 = 0;
    if (zsock_recv (router, "s8s", &verb3, &conn3, &room3) != 0
    ||  !streq (verb3, "LEAVE") || conn3 != conn) {
        printf ("FAIL gateway: no LEAVE after the client went away\n");
        failures++;
    }
    zstr_free (&verb3);
    zstr_free (&room3);
    zsock_destroy (&deliver);
    zactor_destroy (&gateway);

    //  KICK from the router (it could not take a JOIN): the client, which
    //  has its 101, is closed with 1011; a KICK of an unknown conn is
    //  ignored.
    gateway = zactor_new (gateway_actor, config);
    assert (gateway);
    zsock_send (gateway, "s", "PORT");
    zsock_recv (gateway, "i", &port);
    fd = port > 0 ? s_test_upgrade (port, auth, joins, router, &conn, &failures) : -1;
    if (fd >= 0) {
        deliver = zsock_new_push (RTWS_EP_GATEWAY);
        zsock_send (deliver, "s8", "KICK", (uint64_t) 999999);
        zsock_send (deliver, "s8", "KICK", conn);
        got = read (fd, frame, sizeof frame);
        if (got < 4 || frame [0] != 0x88 || ((frame [2] << 8) | frame [3]) != 1011) {
            printf ("FAIL gateway: KICK did not close the client with 1011\n");
            failures++;
        }
        close (fd);
        zsock_destroy (&deliver);
    }

done:
    zactor_destroy (&gateway);
    zsock_destroy (&presence);
    zsock_destroy (&router);
    zsock_destroy (&joins);
    zsock_destroy (&auth);
    rtws_config_destroy (&config);
    if (verbose)
        printf ("gateway_test: %d failures\n", failures);
    return failures;
}
