/*  rtws-bench.c - a load generator for WebSocket servers (rtwsd and peers).

    rtws-bench SCENARIO --url ws://host:port/ws/{room} [options]

    Scenarios:
      idle       N connections held for T seconds; with --server-pid, the
                 server's RSS before and after, per connection
      fanout     R rooms x S subscribers, P publishers per room, at one
                 rate or stepped rates: the highest rate with no loss and
                 p99 under --p99-max; rate 0 = closed loop (a window of
                 messages in flight), i.e. as fast as the server goes
      storm      handshakes per second (JWT verified per handshake):
                 connect, upgrade, reset, again
      rtt        system.ping -> system.ack round trips
      multinode  fanout with subscribers spread over two or more URLs
                 (nodes sharing Redis), published by WebSocket or PUBLISH

    The coordinator (this file, main thread) sets the run up, starts the
    worker threads of rtws-bench-ws.c, moves the phase and the fan-out
    step, prints progress on stderr once a second and writes the results
    as JSON. Every publish carries "t=<CLOCK_MONOTONIC ns>;seq=<n>;pub=<k>",
    so a subscriber measures latency against the same clock and counts
    loss, duplicates and reordering per publisher.

    Idle runs larger than one process can hold (a process here may not
    raise RLIMIT_NOFILE past 20,000) are spread over --procs processes,
    which report back over pipes.
*/
#include "rtws-bench.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RB_VERSION  "0.1.0"
#define RB_DRAIN_MAX 30.0      //  seconds a step waits for stragglers at most

static const char *s_usage =
    "usage: rtws-bench SCENARIO --url ws://HOST:PORT/PATH [options]\n"
    "\n"
    "Scenarios: idle, fanout, storm, rtt, multinode (see rtws-bench(1)).\n"
    "{room} in the URL path is replaced by the room name (bench0, bench1...).\n"
    "\n"
    "Common options:\n"
    "  --url URL             server to drive (repeat for multinode)\n"
    "  --threads N           worker threads (default 1)\n"
    "  --duration SECONDS    hold (idle), run (storm, rtt) or step (fanout) time\n"
    "  --json FILE           write the results as JSON\n"
    "  --label TEXT          name of the server under test, kept in the JSON\n"
    "  --server-pid PID      read the server's RSS and CPU time (repeatable)\n"
    "  --sources N           loopback source addresses 127.0.0.2.. (default 4, 0 = none)\n"
    "  --concurrency N       handshakes in flight (default 256)\n"
    "  --connect-timeout S   give up opening connections after S seconds (60)\n"
    "  --quiet               no progress on stderr\n"
    "Token and Origin:\n"
    "  --token JWT           send this token\n"
    "  --jwt-secret SECRET   mint HS* tokens (libjwt) instead\n"
    "  --jwt-key FILE        mint RS*/ES* tokens with this PEM private key\n"
    "  --jwt-alg ALG         algorithm to mint with (default HS256)\n"
    "  --token-mode MODE     reuse (one token) or mint (one per connection)\n"
    "  --token-pool N        distinct tokens minted before the clock (mint)\n"
    "  --token-in WHERE      query (default), cookie or header\n"
    "  --origin ORIGIN       send this Origin header\n"
    "idle, rtt:\n"
    "  --connections N       connections (idle: 1000, rtt: 1)\n"
    "  --procs N             idle: spread over N processes (for > 19,900)\n"
    "  --count N             rtt: pings in all (default 1000)\n"
    "  --interval-us US      rtt: pause between a connection's pings\n"
    "fanout, multinode:\n"
    "  --rooms R             rooms (default 1)\n"
    "  --subscribers S       subscribers per room (default 100)\n"
    "  --publishers P        publishers per room (default 1)\n"
    "  --rate M              messages/s in total; 0 = closed loop (window)\n"
    "  --rates M1,M2,...     stepped rates, one step each (stops at the first failure)\n"
    "  --p99-max MS          a step passes only with p99 under MS milliseconds\n"
    "  --window W            closed loop: messages in flight (default 4)\n"
    "  --messages N          end a step after N messages in all\n"
    "  --text-size B         pad each message text to B bytes\n"
    "  --drain S             end a step after S seconds without deliveries (2)\n"
    "  --keep-going          run every step even after a failure\n"
    "  --publish ws|redis    publish by WebSocket (default) or Redis PUBLISH\n"
    "  --redis URL           redis://[:password@]host[:port][/db]\n"
    "storm:\n"
    "  --count N             stop after N handshakes (default: --duration)\n"
    "  --help, --version\n";

//  The coordinator's state for one run.
typedef struct {
    rb_opts_t *opts;
    rb_run_t run;
    sigset_t signals;           //  SIGINT and SIGTERM, blocked everywhere
    bool interrupted;
    uint64_t t0_ns;             //  start of the scenario
    FILE *json;                 //  the report being written, or NULL
    bool redis_running;
    pthread_t redis_thread;
} s_bench_t;

//  Per-process report of an idle share (sent over a pipe).
typedef struct {
    uint64_t opened, failed, rejected, closed, open_now;
    uint64_t status [4];        //  401, 403, 429, 503
    char error [RB_ERROR_MAX];
} s_share_t;

//  One server process as seen from /proc.
typedef struct {
    long rss_before_kib, rss_after_kib, rss_end_kib;
} s_server_t;

//  --------------------------------------------------------------------------
//  Small helpers

static int s_bad (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static int
s_bad (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "rtws-bench: ");
    vfprintf (stderr, fmt, args);
    fprintf (stderr, "\n(rtws-bench --help lists the options)\n");
    va_end (args);
    return 2;
}

static bool
s_parse_u64 (const char *text, uint64_t *value)
{
    if (!*text)
        return false;
    for (const char *c = text; *c; c++)
        if (!isdigit ((unsigned char) *c))
            return false;
    errno = 0;
    unsigned long long v = strtoull (text, NULL, 10);
    if (errno)
        return false;
    *value = v;
    return true;
}

static bool
s_parse_double (const char *text, double *value)
{
    char *end;
    errno = 0;
    double v = strtod (text, &end);
    if (errno || end == text || *end || !isfinite (v) || v < 0)
        return false;
    *value = v;
    return true;
}

static double
s_seconds (uint64_t from_ns, uint64_t to_ns)
{
    return to_ns > from_ns? (double) (to_ns - from_ns) / 1e9: 0.0;
}

//  VmRSS of pid in KiB, -1 if unreadable.
static long
s_rss_kib (int pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    FILE *file = fopen (path, "r");
    long kib = -1;
    while (file && fgets (line, sizeof line, file))
        if (strncmp (line, "VmRSS:", 6) == 0) {
            kib = atol (line + 6);
            break;
        }
    if (file)
        fclose (file);
    return kib;
}

//  User + system CPU seconds of pid (all threads), -1 if unreadable.
static double
s_cpu_seconds (int pid)
{
    char path [64], buf [1024];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    size_t n = fread (buf, 1, sizeof buf - 1, file);
    fclose (file);
    buf [n] = 0;
    const char *p = strrchr (buf, ')');     //  the name may hold spaces
    unsigned long long utime, stime;
    if (!p || sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                      &utime, &stime) != 2)
        return -1;
    return (double) (utime + stime) / (double) sysconf (_SC_CLK_TCK);
}

static double
s_self_cpu_seconds (void)
{
    struct rusage usage;
    getrusage (RUSAGE_SELF, &usage);
    return (double) usage.ru_utime.tv_sec + (double) usage.ru_utime.tv_usec / 1e6
         + (double) usage.ru_stime.tv_sec + (double) usage.ru_stime.tv_usec / 1e6;
}

//  CPU seconds the whole machine spent busy (all cores), from /proc/stat:
//  what the server and the generator did not use was someone else's load.
static double
s_machine_busy_seconds (void)
{
    FILE *file = fopen ("/proc/stat", "r");
    unsigned long long v [8] = { 0 };
    int n = file? fscanf (file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
                          &v [0], &v [1], &v [2], &v [3], &v [4], &v [5], &v [6], &v [7]): 0;
    if (file)
        fclose (file);
    if (n < 5)
        return -1;
    unsigned long long busy = v [0] + v [1] + v [2] + v [5] + v [6] + v [7];
    return (double) busy / (double) sysconf (_SC_CLK_TCK);
}

//  Where the machine's CPU went over a span: "machine_cpu_pct" (100 = one
//  core), and "other_cpu_pct", what neither the server nor rtws-bench used.
typedef struct {
    double machine, server, self;
    uint64_t at_ns;
} s_cpu_mark_t;

static void
s_cpu_mark (const rb_opts_t *opts, s_cpu_mark_t *mark);

static void
s_json_cpu (FILE *out, const rb_opts_t *opts, const s_cpu_mark_t *from)
{
    s_cpu_mark_t to;
    s_cpu_mark (opts, &to);
    double span = s_seconds (from->at_ns, to.at_ns);
    if (!out || span <= 0)
        return;
    double machine = to.machine - from->machine, server = to.server - from->server;
    double self = to.self - from->self, other = machine - server - self;
    fprintf (out, " \"machine_cpu_pct\": %.1f, \"other_cpu_pct\": %.1f,"
             " \"generator_cpu_pct\": %.1f,", 100 * machine / span,
             other > 0? 100 * other / span: 0.0, 100 * self / span);
}

static void
s_json_string (FILE *out, const char *text)
{
    fputc ('"', out);
    for (const unsigned char *c = (const unsigned char *) (text? text: ""); *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf (out, "\\%c", *c);
        else
        if (*c < 0x20)
            fprintf (out, "\\u%04x", *c);
        else
            fputc (*c, out);
    }
    fputc ('"', out);
}

//  Waits up to seconds, 0 early when done() says so; -1 on SIGINT/SIGTERM.
//  Calls progress() once a second.
typedef bool (s_done_fn) (s_bench_t *self);
typedef void (s_progress_fn) (s_bench_t *self);

static int
s_wait (s_bench_t *self, double seconds, s_done_fn *done, s_progress_fn *progress,
        long tick_us)
{
    uint64_t start = rb_now_ns ();
    uint64_t end = start + (uint64_t) (seconds * 1e9);
    uint64_t next_progress = start + 1000000000u;
    while (true) {
        if (done && done (self))
            return 0;
        uint64_t now = rb_now_ns ();
        if (now >= end)
            return 0;
        if (now >= next_progress) {
            if (progress && !self->opts->quiet)
                progress (self);
            next_progress += 1000000000u;
        }
        uint64_t nap_ns = (uint64_t) tick_us * 1000;
        if (end - now < nap_ns)
            nap_ns = end - now;
        struct timespec nap = { (time_t) (nap_ns / 1000000000u), (long) (nap_ns % 1000000000u) };
        if (sigtimedwait (&self->signals, NULL, &nap) > 0) {
            self->interrupted = true;
            fprintf (stderr, "rtws-bench: interrupted, writing what was measured\n");
            return -1;
        }
    }
}

//  --------------------------------------------------------------------------
//  Report pieces

static void
s_json_head (s_bench_t *self)
{
    FILE *out = self->json;
    const rb_opts_t *opts = self->opts;
    if (!out)
        return;
    char cpu [256] = "unknown", line [512];
    FILE *info = fopen ("/proc/cpuinfo", "r");
    while (info && fgets (line, sizeof line, info))
        if (strncmp (line, "model name", 10) == 0) {
            const char *colon = strchr (line, ':');
            if (colon)
                snprintf (cpu, sizeof cpu, "%.*s", (int) strcspn (colon + 2, "\n"), colon + 2);
            break;
        }
    if (info)
        fclose (info);
    struct utsname uts;
    uname (&uts);
    time_t now = time (NULL);
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime (&now));
    fprintf (out, "{\n  \"tool\": \"rtws-bench\", \"version\": \"%s\",\n", RB_VERSION);
    fprintf (out, "  \"scenario\": \"%s\", \"label\": ", opts->scenario_name);
    s_json_string (out, opts->label);
    fprintf (out, ", \"started\": \"%s\",\n  \"machine\": {\"nproc\": %ld, \"cpu\": ",
             stamp, sysconf (_SC_NPROCESSORS_ONLN));
    s_json_string (out, cpu);
    fprintf (out, ", \"kernel\": ");
    s_json_string (out, uts.release);
    fprintf (out, "},\n  \"urls\": [");
    for (size_t i = 0; i < opts->url_count; i++) {
        fprintf (out, "%s", i? ", ": "");
        s_json_string (out, opts->url_text [i]);
    }
    fprintf (out, "],\n  \"options\": {\"threads\": %d, \"procs\": %d, \"duration_s\": %g,"
             " \"sources\": %d, \"concurrency\": %zu, \"connections\": %zu, \"rooms\": %zu,"
             " \"subscribers\": %zu, \"publishers\": %zu, \"window\": %zu, \"messages\": %llu,"
             " \"text_size\": %zu, \"p99_max_ms\": %g, \"publish\": \"%s\", \"token\": \"%s\","
             " \"token_pool\": %zu, \"jwt_alg\": ",
             opts->threads, opts->procs, opts->duration, opts->sources, opts->concurrency,
             opts->connections, opts->rooms, opts->subscribers, opts->publishers,
             opts->window, (unsigned long long) opts->messages, opts->text_size,
             opts->p99_max_ms, opts->publish_redis? "redis": "ws",
             opts->jwt_secret || opts->jwt_key_file?
                 (opts->token_mint? "mint": "reuse"): opts->token? "given": "none",
             opts->token_mint? opts->token_pool: 1);
    s_json_string (out, opts->jwt_secret || opts->jwt_key_file?
                        (opts->jwt_alg? opts->jwt_alg: "HS256"): "");
    fprintf (out, ", \"token_in\": \"%s\", \"origin\": ",
             opts->token_in == RB_IN_QUERY? "query": opts->token_in == RB_IN_COOKIE?
             "cookie": "header");
    s_json_string (out, opts->origin? opts->origin: "");
    fprintf (out, "},\n");
}

static void
s_json_connections (s_bench_t *self, uint64_t target, const rb_stats_t *sum,
                    const char *error, double connect_s)
{
    FILE *out = self->json;
    if (!out)
        return;
    rb_stats_t *s = (rb_stats_t *) sum;
    fprintf (out, "  \"connections\": {\"target\": %llu, \"opened\": %llu, \"failed\": %llu,"
             " \"rejected\": %llu, \"status_401\": %llu, \"status_403\": %llu,"
             " \"status_429\": %llu, \"status_503\": %llu, \"closed_by_server\": %llu,"
             " \"open_at_end\": %llu, \"connect_s\": %.3f, \"first_error\": ",
             (unsigned long long) target, (unsigned long long) rb_get (&s->opened),
             (unsigned long long) rb_get (&s->failed), (unsigned long long) rb_get (&s->rejected),
             (unsigned long long) rb_get (&s->status_401),
             (unsigned long long) rb_get (&s->status_403),
             (unsigned long long) rb_get (&s->status_429),
             (unsigned long long) rb_get (&s->status_503),
             (unsigned long long) rb_get (&s->closed),
             (unsigned long long) rb_get (&s->open_now), connect_s);
    s_json_string (out, error);
    fprintf (out, "},\n");
}

static void
s_json_servers (s_bench_t *self, const s_server_t *servers, uint64_t opened)
{
    FILE *out = self->json;
    const rb_opts_t *opts = self->opts;
    if (!out)
        return;
    fprintf (out, "  \"servers\": [");
    for (size_t i = 0; i < opts->server_pid_count; i++) {
        const s_server_t *srv = &servers [i];
        double per_conn = opened && srv->rss_before_kib >= 0 && srv->rss_after_kib >= 0?
            (double) (srv->rss_after_kib - srv->rss_before_kib) * 1024.0 / (double) opened: 0;
        fprintf (out, "%s{\"pid\": %d, \"rss_before_kib\": %ld, \"rss_after_kib\": %ld,"
                 " \"rss_end_kib\": %ld, \"rss_per_connection_bytes\": %.0f}",
                 i? ", ": "", opts->server_pids [i], srv->rss_before_kib,
                 srv->rss_after_kib, srv->rss_end_kib, per_conn);
    }
    fprintf (out, "],\n");
}

static void
s_rss_all (const rb_opts_t *opts, s_server_t *servers, int which)
{
    for (size_t i = 0; i < opts->server_pid_count; i++) {
        long kib = s_rss_kib (opts->server_pids [i]);
        if (which == 0)
            servers [i].rss_before_kib = kib;
        else
        if (which == 1)
            servers [i].rss_after_kib = kib;
        else
            servers [i].rss_end_kib = kib;
    }
}

static double
s_server_cpu (const rb_opts_t *opts)
{
    double sum = 0;
    for (size_t i = 0; i < opts->server_pid_count; i++) {
        double cpu = s_cpu_seconds (opts->server_pids [i]);
        if (cpu >= 0)
            sum += cpu;
    }
    return sum;
}

static void
s_cpu_mark (const rb_opts_t *opts, s_cpu_mark_t *mark)
{
    mark->machine = s_machine_busy_seconds ();
    mark->server = s_server_cpu (opts);
    mark->self = s_self_cpu_seconds ();
    mark->at_ns = rb_now_ns ();
}

//  --------------------------------------------------------------------------
//  Progress

static void
s_progress (s_bench_t *self)
{
    static const char units [] = " kMG";
    rb_stats_t sum;
    rb_run_stats (&self->run, &sum);
    double t = s_seconds (self->t0_ns, rb_now_ns ());
    char deliv [32];
    double d = (double) rb_get (&sum.delivered);
    int u = 0;
    while (d >= 1000 && u < 3) {
        d /= 1000;
        u++;
    }
    snprintf (deliv, sizeof deliv, "%.2f%c", d, units [u]);
    fprintf (stderr, "[%s %5.0fs] open %llu fail %llu rej %llu closed %llu",
             self->opts->scenario_name, t,
             (unsigned long long) rb_get (&sum.open_now),
             (unsigned long long) rb_get (&sum.failed),
             (unsigned long long) rb_get (&sum.rejected),
             (unsigned long long) rb_get (&sum.closed));
    switch (self->opts->scenario) {
        case RB_FANOUT: case RB_MULTINODE:
            fprintf (stderr, " | step %d pub %llu deliv %s dup %llu",
                     atomic_load (&self->run.step),
                     (unsigned long long) (rb_get (&sum.published)
                                           + rb_get (&self->run.redis_published)),
                     deliv, (unsigned long long) rb_get (&sum.duplicates));
            break;
        case RB_RTT:
            fprintf (stderr, " | pings %llu", (unsigned long long) rb_get (&sum.pings));
            break;
        case RB_STORM:
            fprintf (stderr, " | handshakes %llu (%.0f/s)",
                     (unsigned long long) rb_get (&sum.opened),
                     t > 0? (double) rb_get (&sum.opened) / t: 0.0);
            break;
        default:
            break;
    }
    fputc ('\n', stderr);
}

static bool
s_all_connected (s_bench_t *self)
{
    rb_stats_t sum;
    rb_run_stats (&self->run, &sum);
    uint64_t total = 0;
    for (size_t w = 0; w < self->run.worker_count; w++)
        total += self->run.workers [w].conn_count;
    return rb_get (&sum.opened) + rb_get (&sum.failed) + rb_get (&sum.rejected) >= total;
}

//  --------------------------------------------------------------------------
//  Set-up shared by the scenarios

static int
s_prepare (s_bench_t *self, const rb_conn_spec_t *specs, size_t spec_count)
{
    const rb_opts_t *opts = self->opts;
    rb_run_t *run = &self->run;
    run->source_count = opts->sources > 0? (size_t) opts->sources: 0;
    for (size_t i = 0; i < run->source_count; i++) {
        run->sources [i].sin_family = AF_INET;
        run->sources [i].sin_addr.s_addr = htonl ((127u << 24) + 2u + (uint32_t) i);
    }
    if (opts->jwt_secret || opts->jwt_key_file) {
        size_t count = opts->token_mint? opts->token_pool: 1;
        run->tokens = rb_tokens_mint (opts, count);
        if (!run->tokens)
            return -1;
        run->token_count = count;
    }
    if (rb_run_setup (run, opts, specs, spec_count)) {
        fprintf (stderr, "rtws-bench: out of memory setting up connections\n");
        return -1;
    }
    return 0;
}

static int
s_start (s_bench_t *self)
{
    if (rb_run_start (&self->run)) {
        fprintf (stderr, "rtws-bench: cannot start worker threads\n");
        return -1;
    }
    return 0;
}

static void
s_finish (s_bench_t *self)
{
    if (self->run.workers) {
        rb_run_join (&self->run);
        if (self->redis_running)
            pthread_join (self->redis_thread, NULL);
        self->redis_running = false;
    }
}

//  --------------------------------------------------------------------------
//  idle

//  Runs one share of an idle run in this process (a child of --procs);
//  reports over result_fd, holds until control_fd reaches end of file.
static int
s_idle_child (s_bench_t *self, int result_fd, int control_fd)
{
    rb_conn_spec_t spec = { RB_ROLE_IDLE, self->opts->connections, 0,
                            self->opts->rooms, 0, self->opts->url_count };
    if (s_prepare (self, &spec, 1) || s_start (self))
        return 1;
    s_wait (self, self->opts->connect_timeout, s_all_connected, NULL, 20000);
    s_share_t share = { 0 };
    rb_stats_t sum;
    rb_run_stats (&self->run, &sum);
    share.opened = rb_get (&sum.opened);
    share.failed = rb_get (&sum.failed);
    share.rejected = rb_get (&sum.rejected);
    share.status [0] = rb_get (&sum.status_401);
    share.status [1] = rb_get (&sum.status_403);
    share.status [2] = rb_get (&sum.status_429);
    share.status [3] = rb_get (&sum.status_503);
    snprintf (share.error, sizeof share.error, "%s", rb_run_error (&self->run));
    if (write (result_fd, &share, sizeof share) != (ssize_t) sizeof share)
        return 1;
    char byte;
    while (read (control_fd, &byte, 1) > 0 || errno == EINTR)
        ;
    rb_run_stats (&self->run, &sum);
    share.closed = rb_get (&sum.closed);
    share.open_now = rb_get (&sum.open_now);
    rb_hist_t *handshake = rb_hist_new ();
    for (size_t w = 0; handshake && w < self->run.worker_count; w++)
        rb_hist_merge (handshake, self->run.workers [w].handshake);
    int rc = write (result_fd, &share, sizeof share) == (ssize_t) sizeof share
          && handshake && rb_hist_write (handshake, result_fd) == 0? 0: 1;
    rb_hist_destroy (&handshake);
    s_finish (self);
    return rc;
}

static int
s_idle (s_bench_t *self)
{
    rb_opts_t *opts = self->opts;
    s_server_t servers [RB_PIDS_MAX] = { { 0 } };
    s_rss_all (opts, servers, 0);
    size_t procs = (size_t) opts->procs;
    pid_t pids [64];
    int results [64], controls [64];
    size_t started = 0;
    rb_hist_t *handshake = rb_hist_new ();
    s_share_t total = { 0 };
    char first_error [RB_ERROR_MAX] = "";
    int rc = 0;
    fflush (NULL);
    for (; started < procs; started++) {
        int result [2], control [2];
        if (pipe (result) || pipe (control)) {
            fprintf (stderr, "rtws-bench: pipe: %s\n", strerror (errno));
            rc = 1;
            break;
        }
        pid_t pid = fork ();
        if (pid == 0) {
            close (result [0]);
            close (control [1]);
            for (size_t i = 0; i < started; i++) {
                close (results [i]);
                close (controls [i]);
            }
            //  This child's share, and its own indexes (tokens, sources)
            size_t base = opts->connections / procs, extra = opts->connections % procs;
            opts->connections = base + (started < extra);
            opts->quiet = true;
            self->json = NULL;
            self->run.opts = opts;
            int child_rc = s_idle_child (self, result [1], control [0]);
            _exit (child_rc);
        }
        close (result [1]);
        close (control [0]);
        if (pid < 0) {
            fprintf (stderr, "rtws-bench: fork: %s\n", strerror (errno));
            close (result [0]);
            close (control [1]);
            rc = 1;
            break;
        }
        pids [started] = pid;
        results [started] = result [0];
        controls [started] = control [1];
    }
    //  Connect phase: each child reports once it has opened its share
    uint64_t connect_start = rb_now_ns ();
    for (size_t i = 0; i < started; i++) {
        s_share_t share;
        while (true) {
            struct pollfd pfd = { results [i], POLLIN, 0 };
            int ready = poll (&pfd, 1, 1000);
            if (ready > 0)
                break;
            if (!opts->quiet)
                fprintf (stderr, "[idle %5.0fs] connecting: %zu of %zu processes done\n",
                         s_seconds (self->t0_ns, rb_now_ns ()), i, started);
            if (sigtimedwait (&self->signals, NULL, &(struct timespec) { 0, 0 }) > 0) {
                self->interrupted = true;
                break;
            }
        }
        if (self->interrupted)
            break;
        if (read (results [i], &share, sizeof share) != (ssize_t) sizeof share) {
            fprintf (stderr, "rtws-bench: idle process %zu died while connecting\n", i);
            rc = 1;
            continue;
        }
        total.opened += share.opened;
        total.failed += share.failed;
        total.rejected += share.rejected;
        for (int s = 0; s < 4; s++)
            total.status [s] += share.status [s];
        if (!*first_error && *share.error)
            snprintf (first_error, sizeof first_error, "%s", share.error);
    }
    double connect_s = s_seconds (connect_start, rb_now_ns ());
    if (!opts->quiet)
        fprintf (stderr, "[idle] %llu of %zu connections open in %.1f s (%llu failed,"
                 " %llu rejected)\n", (unsigned long long) total.opened, opts->connections,
                 connect_s, (unsigned long long) total.failed,
                 (unsigned long long) total.rejected);
    //  Let the server finish its per-connection work, then measure and hold
    if (!self->interrupted)
        s_wait (self, 1.0, NULL, NULL, 100000);
    s_rss_all (opts, servers, 1);
    uint64_t hold_start = rb_now_ns ();
    while (!self->interrupted && s_seconds (hold_start, rb_now_ns ()) < opts->duration) {
        double left = opts->duration - s_seconds (hold_start, rb_now_ns ());
        s_wait (self, left < 1.0? left: 1.0, NULL, NULL, 100000);
        if (!opts->quiet && opts->server_pid_count)
            fprintf (stderr, "[idle %5.0fs] holding %llu connections, server RSS %ld KiB\n",
                     s_seconds (self->t0_ns, rb_now_ns ()), (unsigned long long) total.opened,
                     s_rss_kib (opts->server_pids [0]));
        else
        if (!opts->quiet)
            fprintf (stderr, "[idle %5.0fs] holding %llu connections\n",
                     s_seconds (self->t0_ns, rb_now_ns ()), (unsigned long long) total.opened);
    }
    s_rss_all (opts, servers, 2);
    for (size_t i = 0; i < started; i++)
        close (controls [i]);
    for (size_t i = 0; i < started; i++) {
        s_share_t share;
        if (read (results [i], &share, sizeof share) == (ssize_t) sizeof share
        &&  handshake && rb_hist_read_merge (handshake, results [i]) == 0) {
            total.closed += share.closed;
            total.open_now += share.open_now;
        }
        else
            rc = 1;
        close (results [i]);
        int status;
        waitpid (pids [i], &status, 0);
        if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
            rc = 1;
    }
    rb_stats_t sum;
    memset (&sum, 0, sizeof sum);
    atomic_store (&sum.opened, total.opened);
    atomic_store (&sum.failed, total.failed);
    atomic_store (&sum.rejected, total.rejected);
    atomic_store (&sum.status_401, total.status [0]);
    atomic_store (&sum.status_403, total.status [1]);
    atomic_store (&sum.status_429, total.status [2]);
    atomic_store (&sum.status_503, total.status [3]);
    atomic_store (&sum.closed, total.closed);
    atomic_store (&sum.open_now, total.open_now);
    s_json_connections (self, opts->connections, &sum, first_error, connect_s);
    s_json_servers (self, servers, total.opened);
    if (self->json) {
        fprintf (self->json, "  \"handshake_latency_us\": ");
        if (handshake)
            rb_hist_json (handshake, self->json);
        fprintf (self->json, ",\n  \"hold_s\": %.3f\n}\n", opts->duration);
    }
    printf ("idle: %llu/%zu connections open (%llu failed, %llu rejected), %llu closed by"
            " the server while held %g s\n", (unsigned long long) total.opened,
            opts->connections, (unsigned long long) total.failed,
            (unsigned long long) total.rejected, (unsigned long long) total.closed,
            opts->duration);
    for (size_t i = 0; i < opts->server_pid_count; i++)
        if (total.opened && servers [i].rss_before_kib >= 0)
            printf ("idle: server pid %d RSS %ld -> %ld KiB: %.0f bytes per connection\n",
                    opts->server_pids [i], servers [i].rss_before_kib,
                    servers [i].rss_after_kib,
                    (double) (servers [i].rss_after_kib - servers [i].rss_before_kib)
                    * 1024.0 / (double) total.opened);
    if (*first_error)
        printf ("idle: first error: %s\n", first_error);
    rb_hist_destroy (&handshake);
    if (total.opened < opts->connections)
        rc = 1;
    return rc;
}

//  --------------------------------------------------------------------------
//  fanout, multinode

typedef struct {
    s_bench_t *bench;
    uint64_t published0, delivered0;
} s_step_ctx_t;

static uint64_t
s_published (s_bench_t *self)
{
    uint64_t n = rb_get (&self->run.redis_published);
    for (size_t w = 0; w < self->run.worker_count; w++)
        n += rb_get (&self->run.workers [w].stats.published);
    return n;
}

static uint64_t
s_delivered (s_bench_t *self)
{
    uint64_t n = 0;
    for (size_t w = 0; w < self->run.worker_count; w++)
        n += rb_get (&self->run.workers [w].stats.delivered);
    return n;
}

static bool
s_quota_spent (s_bench_t *self)
{
    return atomic_load (&self->run.publish_quota) == 0;
}

static int
s_fanout (s_bench_t *self)
{
    rb_opts_t *opts = self->opts;
    rb_run_t *run = &self->run;
    size_t subs = opts->rooms * opts->subscribers;
    size_t pubs = opts->publish_redis? 0: opts->rooms * opts->publishers;
    rb_conn_spec_t specs [2] = {
        { RB_ROLE_SUB, subs, 0, opts->rooms, 0, opts->url_count },
        { RB_ROLE_PUB, pubs, 0, opts->rooms, 0, 1 }
    };
    run->pub_total = opts->rooms * opts->publishers;
    run->subs_per_room = opts->subscribers;
    s_server_t servers [RB_PIDS_MAX] = { { 0 } };
    s_rss_all (opts, servers, 0);
    if (s_prepare (self, specs, 2) || s_start (self))
        return 1;
    uint64_t connect_start = rb_now_ns ();
    s_wait (self, opts->connect_timeout, s_all_connected, s_progress, 10000);
    double connect_s = s_seconds (connect_start, rb_now_ns ());
    rb_stats_t sum;
    rb_run_stats (run, &sum);
    int rc = 0;
    bool connected = rb_get (&sum.opened) == subs + pubs;
    if (!connected) {
        fprintf (stderr, "rtws-bench: only %llu of %zu connections opened: %s\n",
                 (unsigned long long) rb_get (&sum.opened), subs + pubs, rb_run_error (run));
        rc = 1;
    }
    if (connected && opts->publish_redis) {
        if (rb_redis_start (run, &self->redis_thread)) {
            fprintf (stderr, "rtws-bench: %s\n", run->redis_error);
            rc = 1;
            connected = false;
        }
        else
            self->redis_running = true;
    }
    //  Give a Redis-backed server time to SUBSCRIBE for its new rooms
    if (connected && opts->url_count > 1)
        s_wait (self, 0.5, NULL, NULL, 100000);
    s_wait (self, 0.2, NULL, NULL, 100000);
    s_rss_all (opts, servers, 1);
    atomic_store (&run->phase, RB_PHASE_RUN);

    if (self->json) {
        s_json_connections (self, subs + pubs, &sum, rb_run_error (run), connect_s);
        fprintf (self->json, "  \"steps\": [");
    }
    int best = -1;
    double best_rate = -1;
    double best_deliveries = 0, best_p99 = 0;
    size_t steps_run = 0;
    for (size_t i = 0; connected && i < opts->rate_count && !self->interrupted; i++) {
        double rate = opts->rates [i];
        uint64_t bits;
        memcpy (&bits, &rate, sizeof bits);
        atomic_store (&run->rate_bits, bits);
        atomic_store (&run->publish_quota, opts->messages? opts->messages: UINT64_MAX);
        atomic_store (&run->step, (int) i);
        rb_stats_t before;
        rb_run_stats (run, &before);
        uint64_t published0 = s_published (self), delivered0 = s_delivered (self);
        double server_cpu0 = s_server_cpu (opts), self_cpu0 = s_self_cpu_seconds ();
        s_cpu_mark_t cpu_mark;
        s_cpu_mark (opts, &cpu_mark);
        uint64_t start = rb_now_ns ();
        atomic_store (&run->step_start_ns, start);
        atomic_store (&run->publishing, 1);
        if (!opts->quiet)
            fprintf (stderr, "[%s] step %zu: %s%.0f msg/s for %.0f s\n", opts->scenario_name,
                     i, rate > 0? "": "closed loop, window ", rate > 0? rate: (double) opts->window,
                     opts->duration);
        s_wait (self, opts->duration, opts->messages? s_quota_spent: NULL, s_progress, 2000);
        atomic_store (&run->publishing, 0);
        if (opts->messages) {
            //  A worker claims its share of the quota, then counts the
            //  message as published: the last claim may not be counted yet.
            uint64_t settle_end = rb_now_ns () + 1000000000ULL;
            while (s_published (self) - published0 < opts->messages && rb_now_ns () < settle_end
            &&     !self->interrupted) {
                struct timespec nap = { 0, 200000 };
                nanosleep (&nap, NULL);
            }
        }
        uint64_t publish_end = rb_now_ns ();
        //  Drain: until every expected delivery is in, or none has come
        //  for --drain seconds (a server that is behind but still sending
        //  is late, not lossy), and never more than RB_DRAIN_MAX seconds
        uint64_t published = s_published (self) - published0;
        uint64_t expected = published * opts->subscribers;
        uint64_t drain_end = publish_end + (uint64_t) (RB_DRAIN_MAX * 1e9);
        uint64_t quiet_ns = (uint64_t) (opts->drain * 1e9);
        uint64_t last_change = publish_end, last_delivered = s_delivered (self);
        while (rb_now_ns () < drain_end && rb_now_ns () - last_change < quiet_ns
        &&     !self->interrupted) {
            published = s_published (self) - published0;     //  Redis replies in flight
            expected = published * opts->subscribers;
            uint64_t delivered = s_delivered (self);
            if (delivered != last_delivered) {
                last_delivered = delivered;
                last_change = rb_now_ns ();
            }
            if (delivered - delivered0 >= expected)
                break;
            struct timespec nap = { 0, 500000 };
            nanosleep (&nap, NULL);
        }
        uint64_t end = rb_now_ns ();
        uint64_t delivered = s_delivered (self) - delivered0;
        //  Capped: deliveries were still coming when RB_DRAIN_MAX ran out,
        //  so what is missing is late at least as much as it is lost
        bool capped = delivered < expected && end >= drain_end && end - last_change < quiet_ns;
        if (delivered >= expected)
            last_change = end;
        double server_cpu = s_server_cpu (opts) - server_cpu0;
        double self_cpu = s_self_cpu_seconds () - self_cpu0;
        rb_stats_t after;
        rb_run_stats (run, &after);
        rb_hist_t *latency = rb_hist_new ();
        for (size_t w = 0; latency && w < run->worker_count; w++)
            rb_hist_merge (latency, run->workers [w].latency [i]);
        uint64_t lost = expected > delivered? expected - delivered: 0;
        uint64_t dups = rb_get (&after.duplicates) - rb_get (&before.duplicates);
        uint64_t stale = rb_get (&after.stale) - rb_get (&before.stale);
        uint64_t reordered = rb_get (&after.reordered) - rb_get (&before.reordered);
        uint64_t closed = rb_get (&after.closed) - rb_get (&before.closed);
        uint64_t blocked = rb_get (&after.publish_blocked) - rb_get (&before.publish_blocked);
        double publish_s = s_seconds (start, publish_end);
        double delivery_s = s_seconds (start, last_change);
        double p99_ms = latency? (double) rb_hist_percentile (latency, 99.0) / 1e6: 0;
        bool pass = published > 0 && lost == 0 && dups == 0 && stale == 0 && closed == 0
                 && (opts->p99_max_ms <= 0 || p99_ms <= opts->p99_max_ms);
        double deliveries_per_s = delivery_s > 0? (double) delivered / delivery_s: 0;
        double span = s_seconds (start, end);
        if (pass && (rate > best_rate || (rate == best_rate && deliveries_per_s > best_deliveries))) {
            best = (int) i;
            best_rate = rate;
            best_deliveries = deliveries_per_s;
            best_p99 = p99_ms;
        }
        if (self->json) {
            FILE *out = self->json;
            fprintf (out, "%s\n    {\"step\": %zu, \"rate_target\": %g, \"closed_loop\": %s,"
                     " \"published\": %llu, \"publish_s\": %.3f, \"publish_rate\": %.1f,"
                     " \"publish_blocked\": %llu, \"expected\": %llu, \"delivered\": %llu,"
                     " \"lost\": %llu, \"duplicates\": %llu, \"reordered\": %llu,"
                     " \"stale\": %llu, \"closed_by_server\": %llu, \"delivery_s\": %.3f,"
                     " \"drain_capped\": %s, \"deliveries_per_s\": %.1f,\n     \"latency_us\": ",
                     steps_run? ",": "", i, rate, rate > 0? "false": "true",
                     (unsigned long long) published, publish_s,
                     publish_s > 0? (double) published / publish_s: 0,
                     (unsigned long long) blocked, (unsigned long long) expected,
                     (unsigned long long) delivered, (unsigned long long) lost,
                     (unsigned long long) dups, (unsigned long long) reordered,
                     (unsigned long long) stale, (unsigned long long) closed, delivery_s,
                     capped? "true": "false", deliveries_per_s);
            if (latency)
                rb_hist_json (latency, out);
            fprintf (out, ",\n    ");
            s_json_cpu (out, opts, &cpu_mark);
            fprintf (out, " \"server_cpu_s\": %.3f, \"server_cpu_pct\": %.1f,"
                     " \"server_cpu_ns_per_delivery\": %.1f, \"bench_cpu_pct\": %.1f,"
                     " \"pass\": %s}", server_cpu, span > 0? 100 * server_cpu / span: 0,
                     delivered? server_cpu * 1e9 / (double) delivered: 0,
                     span > 0? 100 * self_cpu / span: 0, pass? "true": "false");
        }
        printf ("%s step %zu: %s %.0f msg/s: published %llu, delivered %llu/%llu (%s %llu,"
                " dup %llu), %.0f deliveries/s, p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms,"
                " server CPU %.0f%% -> %s\n", opts->scenario_name, i,
                rate > 0? "rate": "closed loop", rate > 0? rate: publish_s > 0?
                (double) published / publish_s: 0,
                (unsigned long long) published, (unsigned long long) delivered,
                (unsigned long long) expected,
                capped? "still arriving at the drain cap": "lost", (unsigned long long) lost,
                (unsigned long long) dups, deliveries_per_s,
                latency? (double) rb_hist_percentile (latency, 50) / 1e6: 0, p99_ms,
                latency? (double) rb_hist_percentile (latency, 99.9) / 1e6: 0,
                latency? (double) rb_get (&latency->max) / 1e6: 0,
                span > 0? 100 * server_cpu / span: 0, pass? "pass": "FAIL");
        rb_hist_destroy (&latency);
        steps_run++;
        if (!pass) {
            rc = rc? rc: 3;
            if (!opts->keep_going)
                break;
        }
        //  A pause between steps lets the server's queues empty
        if (i + 1 < opts->rate_count)
            s_wait (self, 0.3, NULL, NULL, 100000);
    }
    if (best >= 0 && rc == 3 && opts->rate_count > 1)
        rc = 0;                 //  stepping past the limit is the point of steps
    s_rss_all (opts, servers, 2);
    rb_run_stats (run, &sum);
    s_finish (self);
    if (self->json) {
        fprintf (self->json, "\n  ],\n");
        s_json_servers (self, servers, subs + pubs);
        if (best >= 0)
            fprintf (self->json, "  \"best\": {\"step\": %d, \"rate_target\": %g,"
                     " \"deliveries_per_s\": %.1f, \"p99_ms\": %.3f},\n",
                     best, best_rate, best_deliveries, best_p99);
        else
            fprintf (self->json, "  \"best\": null,\n");
        fprintf (self->json, "  \"foreign_frames\": %llu, \"first_error\": ",
                 (unsigned long long) rb_get (&sum.foreign));
        s_json_string (self->json, rb_run_error (run));
        fprintf (self->json, "\n}\n");
    }
    if (best >= 0)
        printf ("%s: best step %d: %.0f deliveries/s with no loss, p99 %.3f ms\n",
                opts->scenario_name, best, best_deliveries, best_p99);
    else
        printf ("%s: no step passed%s%s\n", opts->scenario_name,
                *rb_run_error (run)? ": ": "", rb_run_error (run));
    return rc;
}

//  --------------------------------------------------------------------------
//  rtt

static bool
s_pings_done (s_bench_t *self)
{
    rb_stats_t sum;
    rb_run_stats (&self->run, &sum);
    return self->opts->count && rb_get (&sum.pings) >= self->opts->count;
}

static int
s_rtt (s_bench_t *self)
{
    rb_opts_t *opts = self->opts;
    rb_run_t *run = &self->run;
    rb_conn_spec_t spec = { RB_ROLE_PINGER, opts->connections, 0, opts->rooms, 0,
                            opts->url_count };
    if (s_prepare (self, &spec, 1) || s_start (self))
        return 1;
    s_wait (self, opts->connect_timeout, s_all_connected, s_progress, 10000);
    rb_stats_t sum;
    rb_run_stats (run, &sum);
    atomic_store (&run->ping_quota, opts->count? opts->count: UINT64_MAX);
    s_cpu_mark_t cpu_mark;
    s_cpu_mark (opts, &cpu_mark);
    uint64_t start = rb_now_ns ();
    atomic_store (&run->phase, RB_PHASE_RUN);
    s_wait (self, opts->duration, s_pings_done, s_progress, 1000);
    uint64_t end = rb_now_ns ();
    rb_run_stats (run, &sum);
    s_finish (self);
    rb_hist_t *rtt = rb_hist_new ();
    for (size_t w = 0; rtt && w < run->worker_count; w++)
        rb_hist_merge (rtt, run->workers [w].latency [0]);
    if (!rtt)
        return 1;
    uint64_t pings = rb_get (&sum.pings);
    double span = s_seconds (start, end);
    if (self->json) {
        s_json_connections (self, opts->connections, &sum, rb_run_error (run), 0);
        fprintf (self->json, " ");
        s_json_cpu (self->json, opts, &cpu_mark);
        fprintf (self->json, "\n  \"pings\": %llu, \"run_s\": %.3f, \"pings_per_s\": %.1f,\n"
                 "  \"rtt_us\": ", (unsigned long long) pings, span,
                 span > 0? (double) pings / span: 0);
        rb_hist_json (rtt, self->json);
        fprintf (self->json, "\n}\n");
    }
    printf ("rtt: %llu pings over %zu connections in %.2f s: p50 %.1f p90 %.1f p99 %.1f"
            " p99.9 %.1f max %.1f us\n", (unsigned long long) pings, opts->connections, span,
            (double) rb_hist_percentile (rtt, 50) / 1e3,
            (double) rb_hist_percentile (rtt, 90) / 1e3,
            (double) rb_hist_percentile (rtt, 99) / 1e3,
            (double) rb_hist_percentile (rtt, 99.9) / 1e3, (double) rb_get (&rtt->max) / 1e3);
    int rc = pings == 0 || (opts->count && pings < opts->count)? 1: 0;
    if (rc)
        printf ("rtt: fewer pings answered than asked%s%s\n",
                *rb_run_error (run)? ": ": "", rb_run_error (run));
    rb_hist_destroy (&rtt);
    return rc;
}

//  --------------------------------------------------------------------------
//  storm

static bool
s_storm_done (s_bench_t *self)
{
    rb_stats_t sum;
    rb_run_stats (&self->run, &sum);
    uint64_t attempts = rb_get (&sum.opened) + rb_get (&sum.failed) + rb_get (&sum.rejected);
    return self->opts->count && attempts >= self->opts->count;
}

static int
s_storm (s_bench_t *self)
{
    rb_opts_t *opts = self->opts;
    rb_run_t *run = &self->run;
    rb_conn_spec_t spec = { RB_ROLE_STORM, opts->concurrency, 0, opts->rooms, 0,
                            opts->url_count };
    if (s_prepare (self, &spec, 1))
        return 1;
    double server_cpu0 = s_server_cpu (opts);
    s_cpu_mark_t cpu_mark;
    s_cpu_mark (opts, &cpu_mark);
    atomic_store (&run->storm_quota, opts->count? opts->count: UINT64_MAX);
    atomic_store (&run->phase, RB_PHASE_RUN);
    uint64_t start = rb_now_ns ();
    if (s_start (self))
        return 1;
    s_wait (self, opts->duration, s_storm_done, s_progress, 2000);
    atomic_store (&run->storm_quota, 0);
    uint64_t end = rb_now_ns ();
    rb_stats_t sum;
    rb_run_stats (run, &sum);
    double server_cpu = s_server_cpu (opts) - server_cpu0;
    if (self->json) {
        fprintf (self->json, " ");
        s_json_cpu (self->json, opts, &cpu_mark);
        fprintf (self->json, "\n");
    }
    s_finish (self);
    rb_hist_t *handshake = rb_hist_new ();
    for (size_t w = 0; handshake && w < run->worker_count; w++)
        rb_hist_merge (handshake, run->workers [w].handshake);
    if (!handshake)
        return 1;
    uint64_t ok = rb_get (&sum.opened);
    double span = s_seconds (start, end);
    if (self->json) {
        s_json_connections (self, opts->count, &sum, rb_run_error (run), 0);
        fprintf (self->json, "  \"handshakes\": %llu, \"run_s\": %.3f, \"handshakes_per_s\": %.1f,"
                 " \"server_cpu_pct\": %.1f, \"server_cpu_us_per_handshake\": %.1f,\n"
                 "  \"handshake_latency_us\": ", (unsigned long long) ok, span,
                 span > 0? (double) ok / span: 0, span > 0? 100 * server_cpu / span: 0,
                 ok? server_cpu * 1e6 / (double) ok: 0);
        rb_hist_json (handshake, self->json);
        fprintf (self->json, "\n}\n");
    }
    printf ("storm: %llu handshakes in %.2f s = %.0f/s (%llu rejected, %llu failed);"
            " handshake p50 %.3f p99 %.3f ms\n", (unsigned long long) ok, span,
            span > 0? (double) ok / span: 0, (unsigned long long) rb_get (&sum.rejected),
            (unsigned long long) rb_get (&sum.failed),
            (double) rb_hist_percentile (handshake, 50) / 1e6,
            (double) rb_hist_percentile (handshake, 99) / 1e6);
    if (*rb_run_error (run))
        printf ("storm: first error: %s\n", rb_run_error (run));
    rb_hist_destroy (&handshake);
    return ok == 0? 1: 0;
}

//  --------------------------------------------------------------------------
//  Command line

static int
s_parse (int argc, char *argv [], rb_opts_t *opts)
{
    enum { O_URL = 256, O_THREADS, O_PROCS, O_DURATION, O_JSON, O_LABEL, O_PID, O_SOURCES,
           O_CONCURRENCY, O_CONNECT_TIMEOUT, O_QUIET, O_TOKEN, O_JWT_SECRET, O_JWT_KEY,
           O_JWT_ALG, O_TOKEN_MODE, O_TOKEN_POOL, O_TOKEN_IN, O_ORIGIN, O_CONNECTIONS,
           O_COUNT, O_INTERVAL, O_ROOMS, O_SUBS, O_PUBS, O_RATE, O_RATES, O_P99, O_WINDOW,
           O_MESSAGES, O_TEXT_SIZE, O_DRAIN, O_KEEP_GOING, O_PUBLISH, O_REDIS, O_HELP,
           O_VERSION, O_USER_PREFIX, O_ROOM_PREFIX };
    static const struct option options [] = {
        { "url", required_argument, NULL, O_URL },
        { "threads", required_argument, NULL, O_THREADS },
        { "procs", required_argument, NULL, O_PROCS },
        { "duration", required_argument, NULL, O_DURATION },
        { "json", required_argument, NULL, O_JSON },
        { "label", required_argument, NULL, O_LABEL },
        { "server-pid", required_argument, NULL, O_PID },
        { "sources", required_argument, NULL, O_SOURCES },
        { "concurrency", required_argument, NULL, O_CONCURRENCY },
        { "connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT },
        { "quiet", no_argument, NULL, O_QUIET },
        { "token", required_argument, NULL, O_TOKEN },
        { "jwt-secret", required_argument, NULL, O_JWT_SECRET },
        { "jwt-key", required_argument, NULL, O_JWT_KEY },
        { "jwt-alg", required_argument, NULL, O_JWT_ALG },
        { "token-mode", required_argument, NULL, O_TOKEN_MODE },
        { "token-pool", required_argument, NULL, O_TOKEN_POOL },
        { "token-in", required_argument, NULL, O_TOKEN_IN },
        { "origin", required_argument, NULL, O_ORIGIN },
        { "connections", required_argument, NULL, O_CONNECTIONS },
        { "count", required_argument, NULL, O_COUNT },
        { "interval-us", required_argument, NULL, O_INTERVAL },
        { "rooms", required_argument, NULL, O_ROOMS },
        { "subscribers", required_argument, NULL, O_SUBS },
        { "publishers", required_argument, NULL, O_PUBS },
        { "rate", required_argument, NULL, O_RATE },
        { "rates", required_argument, NULL, O_RATES },
        { "p99-max", required_argument, NULL, O_P99 },
        { "window", required_argument, NULL, O_WINDOW },
        { "messages", required_argument, NULL, O_MESSAGES },
        { "text-size", required_argument, NULL, O_TEXT_SIZE },
        { "drain", required_argument, NULL, O_DRAIN },
        { "keep-going", no_argument, NULL, O_KEEP_GOING },
        { "publish", required_argument, NULL, O_PUBLISH },
        { "redis", required_argument, NULL, O_REDIS },
        { "user-prefix", required_argument, NULL, O_USER_PREFIX },
        { "room-prefix", required_argument, NULL, O_ROOM_PREFIX },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 }
    };
    if (argc >= 2 && (strcmp (argv [1], "--help") == 0 || strcmp (argv [1], "-h") == 0)) {
        fputs (s_usage, stdout);
        return -1;
    }
    if (argc >= 2 && strcmp (argv [1], "--version") == 0) {
        printf ("rtws-bench %s\n", RB_VERSION);
        return -1;
    }
    if (argc < 2 || argv [1][0] == '-')
        return s_bad ("the first argument is the scenario: idle, fanout, storm, rtt or multinode");
    static const struct { const char *name; rb_scenario_t scenario; } scenarios [] = {
        { "idle", RB_IDLE }, { "fanout", RB_FANOUT }, { "storm", RB_STORM },
        { "rtt", RB_RTT }, { "multinode", RB_MULTINODE }
    };
    size_t s = 0;
    while (s < 5 && strcmp (argv [1], scenarios [s].name))
        s++;
    if (s == 5)
        return s_bad ("unknown scenario '%s'", argv [1]);
    opts->scenario = scenarios [s].scenario;
    opts->scenario_name = scenarios [s].name;

    //  Defaults
    opts->threads = 1;
    opts->procs = 1;
    opts->duration = -1;
    opts->sources = 4;
    opts->concurrency = 0;
    opts->connect_timeout = 60;
    opts->token_in = RB_IN_QUERY;
    opts->token_pool = 0;
    opts->user_prefix = "bench";
    opts->room_prefix = "bench";
    opts->connections = opts->scenario == RB_IDLE? 1000: 1;
    opts->rooms = 1;
    opts->subscribers = 100;
    opts->publishers = 1;
    opts->window = 4;
    opts->drain = 2;
    opts->label = "";
    bool count_set = false;

    optind = 2;
    opterr = 0;
    int option;
    uint64_t u;
    double d;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
            case O_URL:
                if (opts->url_count == RB_URLS_MAX)
                    return s_bad ("at most %d --url", RB_URLS_MAX);
                opts->url_text [opts->url_count++] = optarg;
                break;
            case O_THREADS:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 64)
                    return s_bad ("--threads wants 1 to 64");
                opts->threads = (int) u;
                break;
            case O_PROCS:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 64)
                    return s_bad ("--procs wants 1 to 64");
                opts->procs = (int) u;
                break;
            case O_DURATION:
                if (!s_parse_double (optarg, &d) || d <= 0)
                    return s_bad ("--duration wants seconds above 0");
                opts->duration = d;
                break;
            case O_JSON:
                opts->json_path = optarg;
                break;
            case O_LABEL:
                opts->label = optarg;
                break;
            case O_PID:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > INT32_MAX)
                    return s_bad ("--server-pid wants a process id");
                if (opts->server_pid_count == RB_PIDS_MAX)
                    return s_bad ("at most %d --server-pid", RB_PIDS_MAX);
                opts->server_pids [opts->server_pid_count++] = (int) u;
                break;
            case O_SOURCES:
                if (!s_parse_u64 (optarg, &u) || u > RB_SOURCES_MAX)
                    return s_bad ("--sources wants 0 to %d", RB_SOURCES_MAX);
                opts->sources = (int) u;
                break;
            case O_CONCURRENCY:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 100000)
                    return s_bad ("--concurrency wants 1 to 100000");
                opts->concurrency = (size_t) u;
                break;
            case O_CONNECT_TIMEOUT:
                if (!s_parse_double (optarg, &d) || d <= 0)
                    return s_bad ("--connect-timeout wants seconds above 0");
                opts->connect_timeout = d;
                break;
            case O_QUIET:
                opts->quiet = true;
                break;
            case O_TOKEN:
                if (strlen (optarg) >= RB_TOKEN_MAX)
                    return s_bad ("--token is longer than %d bytes", RB_TOKEN_MAX);
                opts->token = optarg;
                break;
            case O_JWT_SECRET:
                opts->jwt_secret = optarg;
                break;
            case O_JWT_KEY:
                opts->jwt_key_file = optarg;
                break;
            case O_JWT_ALG:
                opts->jwt_alg = optarg;
                break;
            case O_TOKEN_MODE:
                if (strcmp (optarg, "mint") && strcmp (optarg, "reuse"))
                    return s_bad ("--token-mode is mint or reuse");
                opts->token_mint = strcmp (optarg, "mint") == 0;
                break;
            case O_TOKEN_POOL:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 1000000)
                    return s_bad ("--token-pool wants 1 to 1000000");
                opts->token_pool = (size_t) u;
                break;
            case O_TOKEN_IN:
                if (strcmp (optarg, "query") == 0)
                    opts->token_in = RB_IN_QUERY;
                else
                if (strcmp (optarg, "cookie") == 0)
                    opts->token_in = RB_IN_COOKIE;
                else
                if (strcmp (optarg, "header") == 0)
                    opts->token_in = RB_IN_HEADER;
                else
                    return s_bad ("--token-in is query, cookie or header");
                break;
            case O_ORIGIN:
                opts->origin = optarg;
                break;
            case O_CONNECTIONS:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 10000000)
                    return s_bad ("--connections wants 1 to 10000000");
                opts->connections = (size_t) u;
                break;
            case O_COUNT:
                if (!s_parse_u64 (optarg, &u) || u < 1)
                    return s_bad ("--count wants a positive number");
                opts->count = u;
                count_set = true;
                break;
            case O_INTERVAL:
                if (!s_parse_u64 (optarg, &u) || u > 60000000)
                    return s_bad ("--interval-us wants 0 to 60000000");
                opts->interval_us = u;
                break;
            case O_ROOMS:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 100000)
                    return s_bad ("--rooms wants 1 to 100000");
                opts->rooms = (size_t) u;
                break;
            case O_SUBS:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 10000000)
                    return s_bad ("--subscribers wants a positive number");
                opts->subscribers = (size_t) u;
                break;
            case O_PUBS:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 10000)
                    return s_bad ("--publishers wants 1 to 10000");
                opts->publishers = (size_t) u;
                break;
            case O_RATE:
                if (!s_parse_double (optarg, &d))
                    return s_bad ("--rate wants messages per second, 0 or more");
                opts->rates [0] = d;
                opts->rate_count = 1;
                break;
            case O_RATES: {
                opts->rate_count = 0;
                char *copy = strdup (optarg), *save = NULL;
                for (char *item = strtok_r (copy, ",", &save); item;
                     item = strtok_r (NULL, ",", &save)) {
                    if (opts->rate_count == RB_STEPS_MAX || !s_parse_double (item, &d)) {
                        free (copy);
                        return s_bad ("--rates wants up to %d rates, comma-separated",
                                      RB_STEPS_MAX);
                    }
                    opts->rates [opts->rate_count++] = d;
                }
                free (copy);
                if (opts->rate_count == 0)
                    return s_bad ("--rates is empty");
                break;
            }
            case O_P99:
                if (!s_parse_double (optarg, &d))
                    return s_bad ("--p99-max wants milliseconds");
                opts->p99_max_ms = d;
                break;
            case O_WINDOW:
                if (!s_parse_u64 (optarg, &u) || u < 1 || u > 1000000)
                    return s_bad ("--window wants 1 to 1000000");
                opts->window = (size_t) u;
                break;
            case O_MESSAGES:
                if (!s_parse_u64 (optarg, &u) || u < 1)
                    return s_bad ("--messages wants a positive number");
                opts->messages = u;
                break;
            case O_TEXT_SIZE:
                if (!s_parse_u64 (optarg, &u) || u > 60000)
                    return s_bad ("--text-size wants 0 to 60000");
                opts->text_size = (size_t) u;
                break;
            case O_DRAIN:
                if (!s_parse_double (optarg, &d))
                    return s_bad ("--drain wants seconds");
                opts->drain = d;
                break;
            case O_KEEP_GOING:
                opts->keep_going = true;
                break;
            case O_PUBLISH:
                if (strcmp (optarg, "ws") && strcmp (optarg, "redis"))
                    return s_bad ("--publish is ws or redis");
                opts->publish_redis = strcmp (optarg, "redis") == 0;
                break;
            case O_REDIS:
                opts->redis_url = optarg;
                break;
            case O_USER_PREFIX:
                opts->user_prefix = optarg;
                break;
            case O_ROOM_PREFIX:
                if (strlen (optarg) > 48)
                    return s_bad ("--room-prefix is at most 48 characters");
                opts->room_prefix = optarg;
                break;
            case O_HELP:
                fputs (s_usage, stdout);
                return -1;
            case O_VERSION:
                printf ("rtws-bench %s\n", RB_VERSION);
                return -1;
            default:
                return s_bad ("unknown or incomplete option '%s'", argv [optind - 1]);
        }
    }
    if (optind < argc)
        return s_bad ("unexpected argument '%s'", argv [optind]);
    if (opts->url_count == 0)
        return s_bad ("--url is required");
    char error [256];
    for (size_t i = 0; i < opts->url_count; i++)
        if (rb_url_parse (opts->url_text [i], &opts->urls [i], error, sizeof error))
            return s_bad ("%s", error);
    if (opts->rooms > 1)
        for (size_t i = 0; i < opts->url_count; i++)
            if (!strstr (opts->urls [i].path, "{room}"))
                return s_bad ("--rooms %zu needs {room} in every --url path", opts->rooms);
    if (opts->scenario == RB_MULTINODE && opts->url_count < 2)
        return s_bad ("multinode wants two or more --url (nodes sharing Redis)");
    if (opts->publish_redis && !opts->redis_url)
        return s_bad ("--publish redis needs --redis URL");
    if (opts->token && (opts->jwt_secret || opts->jwt_key_file))
        return s_bad ("give --token or --jwt-secret/--jwt-key, not both");
    if (opts->procs > 1 && opts->scenario != RB_IDLE)
        return s_bad ("--procs is for idle only; other scenarios hold one process's sockets");
    if (opts->duration < 0)
        opts->duration = opts->scenario == RB_IDLE? 10: opts->scenario == RB_RTT? 60: 5;
    if (opts->scenario == RB_RTT && !count_set)
        opts->count = 1000;
    if (opts->concurrency == 0)
        opts->concurrency = opts->scenario == RB_STORM? 64: 256;
    if (opts->token_pool == 0)
        opts->token_pool = opts->scenario == RB_STORM? 10000
                         : opts->connections < 10000? opts->connections: 10000;
    if (opts->rate_count == 0) {
        opts->rates [0] = 100;
        opts->rate_count = 1;
    }
    //  A connection holds one fd; leave room for the process's own
    struct rlimit limit;
    getrlimit (RLIMIT_NOFILE, &limit);
    size_t sockets = opts->scenario == RB_IDLE?
        (opts->connections + (size_t) opts->procs - 1) / (size_t) opts->procs:
        opts->scenario == RB_RTT? opts->connections:
        opts->scenario == RB_STORM? opts->concurrency:
        opts->rooms * (opts->subscribers + opts->publishers);
    if (sockets + 64 > limit.rlim_cur)
        return s_bad ("%zu sockets in one process pass the open-file limit %llu%s", sockets,
                      (unsigned long long) limit.rlim_cur,
                      opts->scenario == RB_IDLE? ": raise --procs": "");
    return 0;
}

int
main (int argc, char *argv [])
{
    //  Sockets are many: take every file descriptor the hard limit allows
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit (RLIMIT_NOFILE, &limit);
    }
    signal (SIGPIPE, SIG_IGN);

    rb_opts_t opts;
    memset (&opts, 0, sizeof opts);
    int rc = s_parse (argc, argv, &opts);
    if (rc)
        return rc < 0? 0: rc;

    s_bench_t bench;
    memset (&bench, 0, sizeof bench);
    bench.opts = &opts;
    //  Blocked in every thread (inherited), taken by the coordinator alone
    sigemptyset (&bench.signals);
    sigaddset (&bench.signals, SIGINT);
    sigaddset (&bench.signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &bench.signals, NULL);

    if (opts.json_path) {
        bench.json = fopen (opts.json_path, "w");
        if (!bench.json) {
            fprintf (stderr, "rtws-bench: cannot write '%s': %s\n", opts.json_path,
                     strerror (errno));
            return 2;
        }
    }
    bench.t0_ns = rb_now_ns ();
    s_json_head (&bench);
    switch (opts.scenario) {
        case RB_IDLE:
            rc = s_idle (&bench);
            break;
        case RB_FANOUT: case RB_MULTINODE:
            rc = s_fanout (&bench);
            break;
        case RB_STORM:
            rc = s_storm (&bench);
            break;
        case RB_RTT:
            rc = s_rtt (&bench);
            break;
    }
    s_finish (&bench);
    rb_run_teardown (&bench.run);
    rb_tokens_free (&bench.run.tokens, bench.run.token_count);
    if (bench.json && fclose (bench.json)) {
        fprintf (stderr, "rtws-bench: writing '%s' failed\n", opts.json_path);
        rc = rc? rc: 1;
    }
    return bench.interrupted && rc == 0? 130: rc;
}
