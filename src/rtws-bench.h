/*  rtws-bench.h - what the pieces of the rtws-bench load generator share.

    rtws-bench is a separate program: it drives any WebSocket server by URL
    and borrows nothing from rtwsd (so it measures rtws and its peers the
    same way). Its files:

        rtws-bench.c        command line, scenarios, the coordinator thread,
                            progress and the JSON report
        rtws-bench-ws.c     the hand-rolled WebSocket client: connections,
                            the upgrade, frames, one epoll loop per worker
        rtws-bench-hist.c   log-linear latency histograms with exact counts
        rtws-bench-token.c  JWT minting (libjwt) and Redis publishing
                            (hiredis); the house rule on one library per
                            file exempts files named rtws-bench*

    Threads: the coordinator (main) thread owns the run: it starts the
    workers, moves the phase and the step, and reads their counters. Each
    worker thread owns its connections, its epoll set and its histograms
    alone; what the coordinator reads from a worker while it runs is
    published through relaxed atomics written by that worker only.
*/
#ifndef RTWS_BENCH_H_INCLUDED
#define RTWS_BENCH_H_INCLUDED

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RB_URLS_MAX       8         //  --url options
#define RB_PIDS_MAX       8         //  --server-pid options
#define RB_STEPS_MAX      32        //  fan-out rate steps
#define RB_SOURCES_MAX    200       //  loopback source addresses
#define RB_HOST_MAX       256
#define RB_TARGET_MAX     2048      //  request path + query
#define RB_ERROR_MAX      160       //  first error text kept per worker
#define RB_OUT_MAX        (4u << 20)    //  a connection's unsent bytes
#define RB_IN_MAX         (16u << 20)   //  one server message, assembled
#define RB_HEADER_MAX     16384     //  the server's upgrade response
#define RB_TOKEN_MAX      8192

//  --------------------------------------------------------------------------
//  Histogram: log-linear, exact counts. Values are nanoseconds; below 2,048
//  every value has its own bucket, above it each power of two is cut into
//  1,024 buckets, so a reported value is within 0.1% of the true one.

#define RB_HIST_SUB       1024
#define RB_HIST_BUCKETS   (32 * RB_HIST_SUB)    //  values up to 2^41 ns (36 min)

typedef struct {
    _Atomic uint64_t count;     //  values recorded
    _Atomic uint64_t sum;       //  their sum, ns (for the mean)
    _Atomic uint64_t max;       //  exact largest value
    _Atomic uint64_t min;       //  exact smallest value, UINT64_MAX if none
    _Atomic uint64_t *buckets;  //  RB_HIST_BUCKETS counters
} rb_hist_t;

rb_hist_t *rb_hist_new (void);
void rb_hist_destroy (rb_hist_t **self_p);
//  One writer only: the increments are plain loads and stores, atomics so
//  that another thread may read a snapshot.
void rb_hist_record (rb_hist_t *self, uint64_t value_ns);
void rb_hist_merge (rb_hist_t *self, const rb_hist_t *other);
void rb_hist_reset (rb_hist_t *self);
//  The value at percentile (0..100), ns; 0 when empty.
uint64_t rb_hist_percentile (const rb_hist_t *self, double percentile);
//  Writes {"count":..,"min":..,"mean":..,"p50":..,"p90":..,"p99":..,
//  "p999":..,"max":..} in microseconds.
void rb_hist_json (const rb_hist_t *self, FILE *out);
//  Serialises for a pipe between processes; -1 on a short write or read.
int rb_hist_write (const rb_hist_t *self, int fd);
int rb_hist_read_merge (rb_hist_t *self, int fd);

//  --------------------------------------------------------------------------
//  Options, as parsed from the command line.

typedef enum { RB_IDLE, RB_FANOUT, RB_STORM, RB_RTT, RB_MULTINODE } rb_scenario_t;
typedef enum { RB_IN_QUERY, RB_IN_COOKIE, RB_IN_HEADER } rb_token_in_t;

typedef struct {
    char host [RB_HOST_MAX];    //  as written in the URL
    char hostport [RB_HOST_MAX + 8];    //  for the Host header
    char path [RB_TARGET_MAX];  //  path and query, {room} not yet replaced
    struct sockaddr_in addr;    //  resolved destination
    bool loopback;              //  the destination is in 127.0.0.0/8
} rb_url_t;

typedef struct {
    rb_scenario_t scenario;
    const char *scenario_name;
    rb_url_t urls [RB_URLS_MAX];
    const char *url_text [RB_URLS_MAX];
    size_t url_count;
    int threads;                //  worker threads
    int procs;                  //  processes (idle only)
    double duration;            //  seconds: hold, run, or per step
    const char *json_path;
    const char *label;
    int server_pids [RB_PIDS_MAX];
    size_t server_pid_count;
    int sources;                //  loopback source addresses, 0 = no bind
    bool sources_set;
    //  Token and Origin
    const char *token;          //  fixed token, or NULL
    rb_token_in_t token_in;
    const char *jwt_secret;     //  mint HS* tokens with it
    const char *jwt_key_file;   //  mint RS*/ES* tokens with it
    const char *jwt_alg;
    bool token_mint;            //  one token per connection (from a pool)
    size_t token_pool;          //  distinct tokens minted before the clock
    const char *user_prefix;
    const char *origin;
    //  Connections
    size_t connections;         //  idle, rtt
    size_t concurrency;         //  handshakes in flight
    double connect_timeout;
    //  Fan-out
    size_t rooms;
    size_t subscribers;         //  per room
    size_t publishers;          //  per room
    double rates [RB_STEPS_MAX];    //  messages/s in total, 0 = closed loop
    size_t rate_count;
    double p99_max_ms;          //  a step passes only under it (0 = any)
    size_t window;              //  closed loop: messages in flight
    uint64_t messages;          //  per step, 0 = until the duration
    bool publish_redis;
    const char *redis_url;
    size_t text_size;           //  pad the text to this many bytes
    double drain;               //  seconds to wait for stragglers
    bool keep_going;            //  step on after a failing step
    const char *room_prefix;
    //  rtt, storm
    uint64_t count;             //  pings or handshakes, 0 = duration
    uint64_t interval_us;       //  between pings of one connection
    bool quiet;
} rb_opts_t;

//  --------------------------------------------------------------------------
//  The run: shared between the coordinator and the workers.

typedef enum {
    RB_ROLE_IDLE,               //  holds the connection, answers pings
    RB_ROLE_SUB,                //  subscriber: tracks seq, records latency
    RB_ROLE_PUB,                //  publisher: sends chat.message
    RB_ROLE_PINGER,             //  sends system.ping, waits for system.ack
    RB_ROLE_STORM               //  handshake, RST, again
} rb_role_t;

typedef enum {
    RB_PHASE_CONNECT,           //  open connections, nothing else
    RB_PHASE_RUN,               //  publish / ping / storm
    RB_PHASE_STOP               //  workers close everything and return
} rb_phase_t;

//  One worker's counters: written by the worker only, read by anyone.
typedef struct {
    _Atomic uint64_t opened;        //  upgrades completed (ever)
    _Atomic uint64_t failed;        //  connections that never opened
    _Atomic uint64_t closed;        //  open connections the server ended
    _Atomic uint64_t open_now;      //  connections open right now
    _Atomic uint64_t in_flight;     //  handshakes under way
    _Atomic uint64_t rejected;      //  non-101 answers
    _Atomic uint64_t status_401, status_403, status_429, status_503;
    _Atomic uint64_t delivered;     //  unique (sub, pub, seq) received
    _Atomic uint64_t duplicates;    //  seen twice (within the window)
    _Atomic uint64_t reordered;     //  arrived after a later seq
    _Atomic uint64_t stale;         //  below the window: late or twice
    _Atomic uint64_t foreign;       //  deliveries with no bench stamp
    _Atomic uint64_t published;     //  chat.message frames sent
    _Atomic uint64_t publish_blocked;   //  not sent: output over its bound
    _Atomic uint64_t pings;         //  system.ack received
    _Atomic uint64_t frames;        //  server frames received
    _Atomic uint64_t bytes_in;
} rb_stats_t;

typedef struct rb_run_s rb_run_t;
typedef struct rb_conn_s rb_conn_t;

typedef struct {
    int id;
    rb_run_t *run;
    pthread_t thread;
    int epfd;
    rb_conn_t *conns;           //  the connections this worker owns
    size_t conn_count;
    size_t next_open;           //  index of the next connection to open
    rb_conn_t **pubs;           //  publisher connections among them
    size_t pub_count;
    unsigned char *rbuf;        //  read buffer shared by its connections
    size_t rbuf_size;
    unsigned char *wbuf;        //  frame building scratch
    size_t wbuf_size;
    uint64_t rng;               //  xorshift state for mask keys
    rb_stats_t stats;
    rb_hist_t *latency [RB_STEPS_MAX];  //  per step
    rb_hist_t *handshake;       //  connect() to 101
    char error [RB_ERROR_MAX];  //  the first failure, for the report
    _Atomic int error_set;
} rb_worker_t;

struct rb_run_s {
    const rb_opts_t *opts;
    char **tokens;              //  token pool (NULL: opts->token or none)
    size_t token_count;
    struct sockaddr_in sources [RB_SOURCES_MAX];
    size_t source_count;
    rb_worker_t *workers;
    size_t worker_count;
    size_t pub_total;           //  publishers over all rooms
    size_t subs_per_room;
    _Atomic int phase;          //  rb_phase_t
    _Atomic int step;           //  fan-out step, indexes the histograms
    _Atomic int publishing;     //  publishers may send
    _Atomic uint64_t step_start_ns;
    _Atomic uint64_t rate_bits;     //  current total rate (double bits)
    _Atomic uint64_t publish_quota; //  messages left in this step, or ~0
    _Atomic uint64_t ping_quota;    //  rtt: pings left to send
    _Atomic uint64_t storm_quota;   //  storm: handshakes left to start
    _Atomic uint64_t redis_published;   //  by the Redis publisher thread
    char redis_error [RB_ERROR_MAX];
    _Atomic int redis_failed;
};

//  --------------------------------------------------------------------------
//  rtws-bench-ws.c

//  Parses ws://host[:port]/path; 0, or -1 with why in error.
int rb_url_parse (const char *text, rb_url_t *url, char *error, size_t error_size);
//  Builds workers and their connections. Each spec says how many
//  connections of a role go in which room and on which URL.
typedef struct {
    rb_role_t role;
    size_t count;
    size_t room;                //  first room, rooms cycle if rooms > 1
    size_t rooms;               //  spread over this many rooms
    size_t url;                 //  first URL; URLs cycle if urls > 1
    size_t urls;
} rb_conn_spec_t;
int rb_run_setup (rb_run_t *run, const rb_opts_t *opts,
                  const rb_conn_spec_t *specs, size_t spec_count);
int rb_run_start (rb_run_t *run);
void rb_run_join (rb_run_t *run);
void rb_run_teardown (rb_run_t *run);
//  Sums every worker's counters into *sum.
void rb_run_stats (rb_run_t *run, rb_stats_t *sum);
//  The first failure any worker recorded, or "".
const char *rb_run_error (rb_run_t *run);
uint64_t rb_now_ns (void);
//  Reads a relaxed counter; increments one that only the caller writes.
static inline uint64_t rb_get (_Atomic uint64_t *counter)
{
    return atomic_load_explicit (counter, memory_order_relaxed);
}
static inline void rb_add (_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit (counter,
        atomic_load_explicit (counter, memory_order_relaxed) + n, memory_order_relaxed);
}

//  --------------------------------------------------------------------------
//  rtws-bench-token.c

//  Mints count tokens (sub = prefix + index); NULL with a message on stderr.
char **rb_tokens_mint (const rb_opts_t *opts, size_t count);
void rb_tokens_free (char ***tokens_p, size_t count);
//  The Redis publisher thread: PUBLISH room:{room} with chat.delivery JSON
//  paced like the WebSocket publishers; runs until the phase is STOP.
int rb_redis_start (rb_run_t *run, pthread_t *thread);
//  Formats a publish payload text "t=<ns>;seq=<n>;pub=<k>" padded to size.
size_t rb_stamp (char *buf, size_t size, uint64_t t_ns, uint64_t seq,
                 size_t pub, size_t pad_to);
//  The room name of room index i (prefix + i).
void rb_room_name (const rb_opts_t *opts, size_t room, char *buf, size_t size);
//  How many messages a publisher should have sent by now in this step.
uint64_t rb_due (rb_run_t *run, uint64_t now_ns, size_t publishers);

#endif
