/*  rtws-bench-ws.c - the load generator's WebSocket client and workers.

    A hand-rolled RFC 6455 client, just enough to load a server honestly:
    a non-blocking connect (bound first to a loopback source address, so
    one process can pass the ~28k ephemeral ports of one address), the
    HTTP upgrade with the token in the query, a cookie or a header, and
    the Origin; masked client frames; server frames parsed in place from
    one read buffer per worker (unmasking is not needed: servers do not
    mask), fragments assembled, pings answered with pongs, and the
    application's system.ping answered with system.pong so that idle
    connections outlive the server's idle timeout.

    Each worker thread owns its connections and an epoll set (level
    triggered) and runs until the coordinator sets RB_PHASE_STOP. What a
    connection does depends on its role: a subscriber checks the stamp of
    every delivery ("t=<ns>;seq=<n>;pub=<k>") against what it saw before
    and records the latency; a publisher sends chat.message at the paced
    rate (or within a window of messages in flight); a pinger sends
    system.ping and times the system.ack; a storm connection closes with
    a reset as soon as its upgrade is answered and starts again.

    Memory per connection is kept small (a connection holds buffers only
    while it has a partial frame or unsent bytes), so that 20,000
    connections cost the generator little.
*/
#include "rtws-bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RB_RBUF_SIZE    (256u << 10)
#define RB_EVENTS       512
#define RB_BURST        512     //  messages one publisher sends per turn
#define RB_TRACK_WINDOW 64      //  seqs below the newest checked for twins

enum { RB_C_IDLE, RB_C_CONNECTING, RB_C_UPGRADING, RB_C_OPEN, RB_C_DONE };

//  What a subscriber knows about one publisher of its room.
typedef struct {
    uint64_t next;              //  newest seq seen + 1 (0: none yet)
    uint64_t window;            //  bit i: seq next-1-i was seen
} rb_track_t;

struct rb_conn_s {
    rb_worker_t *worker;
    int fd;                     //  -1 when closed
    uint8_t state;
    uint8_t role;               //  rb_role_t
    bool want_out;              //  EPOLLOUT is registered
    bool frag_text;             //  assembling a fragmented message
    bool ping_out;              //  pinger: a system.ping awaits its ack
    uint32_t room;
    uint32_t url;
    uint64_t index;             //  global index: token, source address
    uint64_t pub_id;            //  publisher: room * publishers + j
    uint64_t started_ns;        //  connect() of this attempt
    unsigned char *in;          //  unparsed bytes kept between reads
    size_t in_len, in_cap;
    unsigned char *frag;        //  a fragmented message so far
    size_t frag_len, frag_cap;
    unsigned char *out;         //  bytes the kernel did not take yet
    size_t out_off, out_len, out_cap;
    rb_track_t *track;          //  subscriber: one per publisher of its room
    uint64_t seq;               //  publisher: next seq to send
    uint64_t step_sent;         //  publisher: sent in step step_seen
    int step_seen;
    uint64_t next_ping_ns;      //  pinger: not before this
};

static void s_error (rb_worker_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

uint64_t
rb_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

//  Keeps the first failure a worker saw, for the report.
static void
s_error (rb_worker_t *self, const char *fmt, ...)
{
    if (atomic_load (&self->error_set))
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->error, sizeof self->error, fmt, args);
    va_end (args);
    atomic_store (&self->error_set, 1);
}

static bool
s_claim (_Atomic uint64_t *quota)
{
    uint64_t left = atomic_load_explicit (quota, memory_order_relaxed);
    if (left == UINT64_MAX)
        return true;            //  no quota in force
    while (left > 0)
        if (atomic_compare_exchange_weak (quota, &left, left - 1))
            return true;
    return false;
}

int
rb_url_parse (const char *text, rb_url_t *url, char *error, size_t error_size)
{
    memset (url, 0, sizeof *url);
    if (strncmp (text, "ws://", 5) != 0) {
        snprintf (error, error_size, "'%s' is not a ws:// URL (wss is not supported)", text);
        return -1;
    }
    const char *host = text + 5;
    size_t host_len = strcspn (host, ":/?");
    if (host_len == 0 || host_len >= sizeof url->host) {
        snprintf (error, error_size, "'%s' has no usable host", text);
        return -1;
    }
    memcpy (url->host, host, host_len);
    const char *rest = host + host_len;
    long port = 80;
    if (*rest == ':') {
        char *end;
        port = strtol (rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535 || (*end && *end != '/' && *end != '?')) {
            snprintf (error, error_size, "'%s' has a bad port", text);
            return -1;
        }
        rest = end;
    }
    if (strlen (rest) + 2 > sizeof url->path) {
        snprintf (error, error_size, "'%s': path too long", text);
        return -1;
    }
    snprintf (url->path, sizeof url->path, "%s%s", *rest == '/'? "": "/", rest);
    if (port == 80)
        snprintf (url->hostport, sizeof url->hostport, "%s", url->host);
    else
        snprintf (url->hostport, sizeof url->hostport, "%s:%ld", url->host, port);

    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *found;
    int rc = getaddrinfo (url->host, NULL, &hints, &found);
    if (rc != 0) {
        snprintf (error, error_size, "cannot resolve '%s': %s", url->host, gai_strerror (rc));
        return -1;
    }
    memcpy (&url->addr, found->ai_addr, sizeof url->addr);
    freeaddrinfo (found);
    url->addr.sin_port = htons ((uint16_t) port);
    url->loopback = (ntohl (url->addr.sin_addr.s_addr) >> 24) == 127;
    return 0;
}

void
rb_room_name (const rb_opts_t *opts, size_t room, char *buf, size_t size)
{
    snprintf (buf, size, "%s%zu", opts->room_prefix, room);
}

size_t
rb_stamp (char *buf, size_t size, uint64_t t_ns, uint64_t seq, size_t pub, size_t pad_to)
{
    int n = snprintf (buf, size, "t=%llu;seq=%llu;pub=%zu",
                      (unsigned long long) t_ns, (unsigned long long) seq, pub);
    size_t len = n > 0? (size_t) n: 0;
    if (len >= size)
        len = size - 1;
    if (pad_to > len) {
        if (pad_to >= size)
            pad_to = size - 1;
        buf [len++] = ';';
        while (len < pad_to)
            buf [len++] = 'x';
        buf [len] = 0;
    }
    return len;
}

uint64_t
rb_due (rb_run_t *run, uint64_t now_ns, size_t publishers)
{
    uint64_t bits = atomic_load (&run->rate_bits);
    double rate;
    memcpy (&rate, &bits, sizeof rate);
    uint64_t start = atomic_load (&run->step_start_ns);
    if (rate <= 0 || publishers == 0 || now_ns < start)
        return 0;
    //  The first message goes at once, then one every publishers/rate s
    return (uint64_t) ((double) (now_ns - start) / 1e9 * rate / (double) publishers) + 1;
}

//  --------------------------------------------------------------------------
//  Buffers

//  Grows *buf to hold need bytes, at most limit; -1 when over the limit.
static int
s_reserve (unsigned char **buf, size_t *cap, size_t need, size_t limit)
{
    if (need <= *cap)
        return 0;
    if (need > limit)
        return -1;
    size_t cap2 = *cap? *cap: 512;
    while (cap2 < need)
        cap2 *= 2;
    if (cap2 > limit)
        cap2 = limit;
    unsigned char *grown = realloc (*buf, cap2);
    if (!grown)
        return -1;
    *buf = grown;
    *cap = cap2;
    return 0;
}

static void
s_set_events (rb_worker_t *self, rb_conn_t *conn, bool out)
{
    struct epoll_event ev = { .events = EPOLLIN | (out? EPOLLOUT: 0), .data.ptr = conn };
    epoll_ctl (self->epfd, EPOLL_CTL_MOD, conn->fd, &ev);
    conn->want_out = out;
}

//  Closes the socket, with a reset when abort is set (no TIME_WAIT left
//  behind by a storm or by the end of a run), and frees its buffers.
static void
s_conn_close (rb_worker_t *self, rb_conn_t *conn, bool abort)
{
    if (conn->fd >= 0) {
        if (abort) {
            struct linger linger = { .l_onoff = 1, .l_linger = 0 };
            setsockopt (conn->fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
        }
        close (conn->fd);       //  also leaves the epoll set
        conn->fd = -1;
    }
    if (conn->state == RB_C_OPEN)
        atomic_fetch_sub_explicit (&self->stats.open_now, 1, memory_order_relaxed);
    else
    if (conn->state == RB_C_CONNECTING || conn->state == RB_C_UPGRADING)
        atomic_fetch_sub_explicit (&self->stats.in_flight, 1, memory_order_relaxed);
    conn->state = RB_C_DONE;
    free (conn->in);
    free (conn->frag);
    free (conn->out);
    conn->in = conn->frag = conn->out = NULL;
    conn->in_len = conn->in_cap = conn->frag_len = conn->frag_cap = 0;
    conn->out_off = conn->out_len = conn->out_cap = 0;
    conn->want_out = conn->frag_text = conn->ping_out = false;
}

//  Writes bytes in order after any that are still pending; 0, or -1 when
//  the pending bytes would pass RB_OUT_MAX (nothing is queued then) or the
//  connection failed (it is closed then).
static int
s_conn_write (rb_worker_t *self, rb_conn_t *conn, const unsigned char *data, size_t len)
{
    size_t pending = conn->out_len - conn->out_off;
    size_t sent = 0;
    if (pending == 0) {
        ssize_t n = send (conn->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s_error (self, "send: %s", strerror (errno));
            if (conn->state == RB_C_OPEN)
                rb_add (&self->stats.closed, 1);
            s_conn_close (self, conn, true);
            return -1;
        }
        sent = n > 0? (size_t) n: 0;
        if (sent == len)
            return 0;
        conn->out_off = conn->out_len = 0;
    }
    else
    if (conn->out_off > 0) {
        memmove (conn->out, conn->out + conn->out_off, pending);
        conn->out_off = 0;
        conn->out_len = pending;
    }
    if (s_reserve (&conn->out, &conn->out_cap, conn->out_len + len - sent, RB_OUT_MAX)) {
        if (sent > 0)           //  half a frame is out: the stream is broken
            s_conn_close (self, conn, true);
        return -1;
    }
    memcpy (conn->out + conn->out_len, data + sent, len - sent);
    conn->out_len += len - sent;
    if (!conn->want_out)
        s_set_events (self, conn, true);
    return 0;
}

static void
s_conn_flush (rb_worker_t *self, rb_conn_t *conn)
{
    while (conn->out_off < conn->out_len) {
        ssize_t n = send (conn->fd, conn->out + conn->out_off,
                          conn->out_len - conn->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            s_error (self, "send: %s", strerror (errno));
            if (conn->state == RB_C_OPEN)
                rb_add (&self->stats.closed, 1);
            s_conn_close (self, conn, true);
            return;
        }
        conn->out_off += (size_t) n;
    }
    conn->out_off = conn->out_len = 0;
    if (conn->want_out)
        s_set_events (self, conn, false);
}

static uint32_t
s_random (rb_worker_t *self)
{
    uint64_t x = self->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    self->rng = x;
    return (uint32_t) (x >> 16);
}

//  Sends one masked frame (FIN set).
static int
s_send_frame (rb_worker_t *self, rb_conn_t *conn, int opcode,
              const void *payload, size_t len)
{
    if (len + 14 > self->wbuf_size)
        return -1;
    unsigned char *frame = self->wbuf;
    size_t head = 0;
    frame [head++] = (unsigned char) (0x80 | opcode);
    if (len < 126)
        frame [head++] = (unsigned char) (0x80 | len);
    else
    if (len < 65536) {
        frame [head++] = 0x80 | 126;
        frame [head++] = (unsigned char) (len >> 8);
        frame [head++] = (unsigned char) len;
    }
    else {
        frame [head++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            frame [head++] = (unsigned char) ((uint64_t) len >> shift);
    }
    uint32_t key = s_random (self);
    unsigned char mask [4];
    memcpy (mask, &key, 4);
    memcpy (frame + head, mask, 4);
    head += 4;
    const unsigned char *src = payload;
    for (size_t i = 0; i < len; i++)
        frame [head + i] = src [i] ^ mask [i & 3];
    return s_conn_write (self, conn, frame, head + len);
}

//  --------------------------------------------------------------------------
//  Opening

//  Builds the upgrade request for conn into buf; its length, 0 if too long.
static size_t
s_request (rb_worker_t *self, rb_conn_t *conn, char *buf, size_t size)
{
    rb_run_t *run = self->run;
    const rb_opts_t *opts = run->opts;
    const rb_url_t *url = &opts->urls [conn->url];
    char room [96], target [RB_TARGET_MAX + 128];
    rb_room_name (opts, conn->room, room, sizeof room);
    const char *mark = strstr (url->path, "{room}");
    if (mark)
        snprintf (target, sizeof target, "%.*s%s%s",
                  (int) (mark - url->path), url->path, room, mark + 6);
    else
        snprintf (target, sizeof target, "%s", url->path);

    const char *token = run->token_count? run->tokens [conn->index % run->token_count]
                                        : opts->token;
    int n;
    if (token && opts->token_in == RB_IN_QUERY)
        n = snprintf (buf, size, "GET %s%stoken=%s HTTP/1.1\r\n",
                      target, strchr (target, '?')? "&": "?", token);
    else
        n = snprintf (buf, size, "GET %s HTTP/1.1\r\n", target);
    size_t len = n > 0? (size_t) n: size;
    #define APPEND(...) do { \
        if (len < size) { \
            int m = snprintf (buf + len, size - len, __VA_ARGS__); \
            len += m > 0? (size_t) m: size; \
        } } while (0)
    APPEND ("Host: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: cnR3cy1iZW5jaC1rZXkhIQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n", url->hostport);
    if (opts->origin)
        APPEND ("Origin: %s\r\n", opts->origin);
    if (token && opts->token_in == RB_IN_COOKIE)
        APPEND ("Cookie: access_token=%s\r\n", token);
    if (token && opts->token_in == RB_IN_HEADER)
        APPEND ("Authorization: Bearer %s\r\n", token);
    APPEND ("\r\n");
    #undef APPEND
    return len < size? len: 0;
}

static void
s_conn_fail (rb_worker_t *self, rb_conn_t *conn)
{
    rb_add (&self->stats.failed, 1);
    s_conn_close (self, conn, true);
}

static void
s_conn_open (rb_worker_t *self, rb_conn_t *conn)
{
    rb_run_t *run = self->run;
    const rb_url_t *url = &run->opts->urls [conn->url];
    conn->started_ns = rb_now_ns ();
    conn->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (conn->fd < 0) {
        s_error (self, "socket: %s", strerror (errno));
        rb_add (&self->stats.failed, 1);
        conn->state = RB_C_DONE;
        return;
    }
    atomic_fetch_add_explicit (&self->stats.in_flight, 1, memory_order_relaxed);
    conn->state = RB_C_CONNECTING;
    int one = 1;
    if (conn->role != RB_ROLE_STORM)    //  a storm sends one request, reads one answer
        setsockopt (conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (run->source_count && url->loopback) {
        //  The port is chosen at connect() for the whole 4-tuple, so each
        //  source address brings its own ~28k ports per destination.
        setsockopt (conn->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        const struct sockaddr_in *source = &run->sources [conn->index % run->source_count];
        if (bind (conn->fd, (const struct sockaddr *) source, sizeof *source)) {
            s_error (self, "bind %s: %s", inet_ntoa (source->sin_addr), strerror (errno));
            s_conn_fail (self, conn);
            return;
        }
    }
    if (connect (conn->fd, (const struct sockaddr *) &url->addr, sizeof url->addr)
    &&  errno != EINPROGRESS) {
        s_error (self, "connect: %s", strerror (errno));
        s_conn_fail (self, conn);
        return;
    }
    //  A storm connection lives for one request and one answer: edge
    //  triggered for both from the start spares an epoll_ctl per handshake
    struct epoll_event ev = { .events = conn->role == RB_ROLE_STORM?
                                        EPOLLOUT | EPOLLIN | EPOLLET: EPOLLOUT,
                              .data.ptr = conn };
    if (epoll_ctl (self->epfd, EPOLL_CTL_ADD, conn->fd, &ev)) {
        s_error (self, "epoll_ctl: %s", strerror (errno));
        s_conn_fail (self, conn);
    }
}

static void
s_on_connected (rb_worker_t *self, rb_conn_t *conn)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt (conn->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        s_error (self, "connect: %s", strerror (err));
        s_conn_fail (self, conn);
        return;
    }
    conn->state = RB_C_UPGRADING;
    if (conn->role != RB_ROLE_STORM)
        s_set_events (self, conn, false);
    size_t n = s_request (self, conn, (char *) self->wbuf, self->wbuf_size);
    if (n == 0) {
        s_error (self, "upgrade request longer than %zu bytes", self->wbuf_size);
        s_conn_fail (self, conn);
        return;
    }
    if (s_conn_write (self, conn, self->wbuf, n)) {
        if (conn->fd >= 0)
            s_conn_fail (self, conn);
        else
            rb_add (&self->stats.failed, 1);    //  closed by the failed send
    }
}

//  Storm: a completed (or failed) handshake makes room for the next one.
static void
s_storm_again (rb_worker_t *self, rb_conn_t *conn)
{
    rb_run_t *run = self->run;
    if (atomic_load (&run->phase) == RB_PHASE_RUN && s_claim (&run->storm_quota)) {
        conn->index += self->run->worker_count * 7919;  //  another token, source
        s_conn_open (self, conn);
    }
}

//  --------------------------------------------------------------------------
//  Receiving

static const char *
s_find (const unsigned char *data, size_t len, const char *needle, size_t needle_len)
{
    return memmem (data, len, needle, needle_len);
}

//  Parses decimal digits at *p (within end); advances *p.
static bool
s_digits (const char **p, const char *end, uint64_t *value)
{
    const char *q = *p;
    uint64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9')
        v = v * 10 + (uint64_t) (*q++ - '0');
    if (q == *p)
        return false;
    *p = q;
    *value = v;
    return true;
}

static void
s_on_delivery (rb_worker_t *self, rb_conn_t *conn, const unsigned char *data,
               size_t len, uint64_t now)
{
    static const char mark [] = "\"text\":\"t=";
    const char *end = (const char *) data + len;
    const char *p = s_find (data, len, mark, sizeof mark - 1);
    uint64_t t, seq, pub;
    if (!p) {
        rb_add (&self->stats.foreign, 1);
        return;
    }
    p += sizeof mark - 1;
    if (!s_digits (&p, end, &t)
    ||  end - p < 5 || memcmp (p, ";seq=", 5) || (p += 5, !s_digits (&p, end, &seq))
    ||  end - p < 5 || memcmp (p, ";pub=", 5) || (p += 5, !s_digits (&p, end, &pub))) {
        rb_add (&self->stats.foreign, 1);
        return;
    }
    rb_run_t *run = self->run;
    size_t per_room = run->opts->publishers;
    if (pub / per_room != conn->room) {
        rb_add (&self->stats.foreign, 1);       //  another room's message
        return;
    }
    rb_track_t *track = &conn->track [pub % per_room];
    if (seq >= track->next) {
        uint64_t shift = seq + 1 - track->next;
        track->window = shift >= 64? 1: (track->window << shift) | 1;
        track->next = seq + 1;  //  a gap (shift > 1) may still fill in late
    }
    else {
        uint64_t behind = track->next - 1 - seq;
        if (behind >= RB_TRACK_WINDOW) {
            rb_add (&self->stats.stale, 1);
            return;
        }
        if (track->window & (UINT64_C (1) << behind)) {
            rb_add (&self->stats.duplicates, 1);
            return;
        }
        track->window |= UINT64_C (1) << behind;
        rb_add (&self->stats.reordered, 1);
    }
    rb_add (&self->stats.delivered, 1);
    int step = atomic_load_explicit (&run->step, memory_order_relaxed);
    if (now > t)
        rb_hist_record (self->latency [step], now - t);
    else
        rb_hist_record (self->latency [step], 0);
}

static void
s_on_ack (rb_worker_t *self, rb_conn_t *conn, const unsigned char *data,
          size_t len, uint64_t now)
{
    static const char mark [] = "\"ref\":\"p";
    const char *p = s_find (data, len, mark, sizeof mark - 1);
    uint64_t sent;
    if (!p)
        return;
    p += sizeof mark - 1;
    if (!s_digits (&p, (const char *) data + len, &sent) || !conn->ping_out)
        return;
    conn->ping_out = false;
    rb_hist_record (self->latency [0], now > sent? now - sent: 0);
    rb_add (&self->stats.pings, 1);
    conn->next_ping_ns = now + self->run->opts->interval_us * 1000;
}

static void
s_on_message (rb_worker_t *self, rb_conn_t *conn, const unsigned char *data,
              size_t len, uint64_t now)
{
    static const char ping [] = "{\"type\":\"system.ping\"";
    static const char pong [] = "{\"type\":\"system.pong\"}";
    rb_add (&self->stats.frames, 1);
    if (len >= sizeof ping - 1 && memcmp (data, ping, sizeof ping - 1) == 0) {
        s_send_frame (self, conn, 1, pong, sizeof pong - 1);
        return;
    }
    if (conn->role == RB_ROLE_SUB)
        s_on_delivery (self, conn, data, len, now);
    else
    if (conn->role == RB_ROLE_PINGER)
        s_on_ack (self, conn, data, len, now);
}

//  The server ended an open connection (close frame, EOF or error).
static void
s_conn_lost (rb_worker_t *self, rb_conn_t *conn, const char *why)
{
    rb_run_t *run = self->run;
    if (conn->state == RB_C_OPEN) {
        if (atomic_load (&run->phase) != RB_PHASE_STOP) {
            rb_add (&self->stats.closed, 1);
            s_error (self, "server closed a connection: %s", why);
        }
    }
    else {
        s_error (self, "connection lost during the upgrade: %s", why);
        rb_add (&self->stats.failed, 1);
    }
    s_conn_close (self, conn, true);
    if (conn->role == RB_ROLE_STORM)
        s_storm_again (self, conn);
}

//  Parses every complete frame in data; returns bytes consumed, or
//  SIZE_MAX when the connection was closed meanwhile.
static size_t
s_frames (rb_worker_t *self, rb_conn_t *conn, const unsigned char *data,
          size_t len, uint64_t now)
{
    size_t at = 0;
    while (len - at >= 2) {
        const unsigned char *f = data + at;
        size_t avail = len - at;
        int opcode = f [0] & 0x0f;
        bool fin = f [0] & 0x80;
        bool masked = f [1] & 0x80;
        uint64_t plen = f [1] & 0x7f;
        size_t head = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = ((uint64_t) f [2] << 8) | f [3];
            head = 4;
        }
        else
        if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | f [2 + i];
            head = 10;
        }
        if (masked)
            head += 4;
        if (plen > RB_IN_MAX) {
            s_conn_lost (self, conn, "server frame over 16 MiB");
            return SIZE_MAX;
        }
        if (avail < head + plen)
            break;
        const unsigned char *payload = f + head;
        at += head + (size_t) plen;
        switch (opcode) {
            case 0x1: case 0x2:
                if (fin) {
                    s_on_message (self, conn, payload, (size_t) plen, now);
                    break;
                }
                conn->frag_len = 0;
                conn->frag_text = true;
                __attribute__ ((fallthrough));  //  keep the first fragment
            case 0x0:
                if (!conn->frag_text)
                    break;      //  a continuation of nothing: ignore it
                if (s_reserve (&conn->frag, &conn->frag_cap,
                               conn->frag_len + (size_t) plen, RB_IN_MAX)) {
                    s_conn_lost (self, conn, "fragmented message over 16 MiB");
                    return SIZE_MAX;
                }
                memcpy (conn->frag + conn->frag_len, payload, (size_t) plen);
                conn->frag_len += (size_t) plen;
                if (fin && opcode == 0x0) {
                    s_on_message (self, conn, conn->frag, conn->frag_len, now);
                    conn->frag_text = false;
                    conn->frag_len = 0;
                }
                break;
            case 0x8: {
                //  Answer the close (code only) and drop the connection
                unsigned char code [2] = { 0x03, 0xe8 };
                if (plen >= 2)
                    memcpy (code, payload, 2);
                char why [48];
                snprintf (why, sizeof why, "close frame %d", (code [0] << 8) | code [1]);
                s_send_frame (self, conn, 0x8, code, 2);
                if (conn->fd >= 0)
                    s_conn_lost (self, conn, why);
                return SIZE_MAX;
            }
            case 0x9:
                s_send_frame (self, conn, 0xA, payload, plen < 126? (size_t) plen: 125);
                if (conn->fd < 0)
                    return SIZE_MAX;
                break;
            default:
                break;          //  pong and reserved opcodes: nothing to do
        }
        if (conn->fd < 0)
            return SIZE_MAX;
    }
    return at;
}

//  The end of the upgrade response: 101, or a rejection counted by status.
static int
s_on_response (rb_worker_t *self, rb_conn_t *conn, size_t header_len, uint64_t now)
{
    int status = 0;
    if (conn->in_len >= 12 && memcmp (conn->in, "HTTP/1.", 7) == 0)
        status = atoi ((const char *) conn->in + 9);
    rb_stats_t *stats = &self->stats;
    if (status != 101) {
        rb_add (&stats->rejected, 1);
        _Atomic uint64_t *by_status = status == 401? &stats->status_401:
                                      status == 403? &stats->status_403:
                                      status == 429? &stats->status_429:
                                      status == 503? &stats->status_503: NULL;
        if (by_status)
            rb_add (by_status, 1);
        char line [80];
        size_t n = strcspn ((const char *) conn->in, "\r\n");
        snprintf (line, sizeof line, "%.*s", (int) (n < 79? n: 79), conn->in);
        s_error (self, "upgrade refused: %s", line);
        s_conn_close (self, conn, true);
        if (conn->role == RB_ROLE_STORM)
            s_storm_again (self, conn);
        return -1;
    }
    atomic_fetch_sub_explicit (&stats->in_flight, 1, memory_order_relaxed);
    conn->state = RB_C_OPEN;
    rb_add (&stats->opened, 1);
    atomic_fetch_add_explicit (&stats->open_now, 1, memory_order_relaxed);
    rb_hist_record (self->handshake, now - conn->started_ns);
    if (conn->role == RB_ROLE_STORM) {
        s_conn_close (self, conn, true);
        s_storm_again (self, conn);
        return -1;
    }
    conn->in_len -= header_len;
    memmove (conn->in, conn->in + header_len, conn->in_len);
    return 0;
}

static void
s_consume (rb_worker_t *self, rb_conn_t *conn, const unsigned char *data,
           size_t len, uint64_t now)
{
    if (conn->state == RB_C_UPGRADING || conn->in_len > 0) {
        size_t limit = conn->state == RB_C_UPGRADING? RB_HEADER_MAX + RB_RBUF_SIZE
                                                    : RB_IN_MAX + 16;
        if (s_reserve (&conn->in, &conn->in_cap, conn->in_len + len + 1, limit)) {
            s_conn_lost (self, conn, "server sent too much at once");
            return;
        }
        memcpy (conn->in + conn->in_len, data, len);
        conn->in_len += len;
        conn->in [conn->in_len] = 0;
        if (conn->state == RB_C_UPGRADING) {
            const char *end = s_find (conn->in, conn->in_len, "\r\n\r\n", 4);
            if (!end) {
                if (conn->in_len > RB_HEADER_MAX)
                    s_conn_lost (self, conn, "upgrade response too long");
                return;
            }
            if (s_on_response (self, conn, (size_t) ((const unsigned char *) end + 4 - conn->in), now))
                return;
        }
        size_t used = s_frames (self, conn, conn->in, conn->in_len, now);
        if (used == SIZE_MAX)
            return;
        conn->in_len -= used;
        if (conn->in_len == 0) {
            free (conn->in);    //  idle connections keep no buffer
            conn->in = NULL;
            conn->in_cap = 0;
        }
        else
            memmove (conn->in, conn->in + used, conn->in_len);
        return;
    }
    size_t used = s_frames (self, conn, data, len, now);
    if (used == SIZE_MAX || used == len)
        return;
    if (s_reserve (&conn->in, &conn->in_cap, len - used + 1, RB_IN_MAX + 16)) {
        s_conn_lost (self, conn, "out of memory");
        return;
    }
    memcpy (conn->in, data + used, len - used);
    conn->in_len = len - used;
}

static void
s_on_readable (rb_worker_t *self, rb_conn_t *conn)
{
    while (conn->fd >= 0) {
        ssize_t n = read (conn->fd, self->rbuf, self->rbuf_size);
        if (n > 0) {
            rb_add (&self->stats.bytes_in, (uint64_t) n);
            s_consume (self, conn, self->rbuf, (size_t) n, rb_now_ns ());
            if ((size_t) n < self->rbuf_size)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        s_conn_lost (self, conn, n == 0? "end of stream": strerror (errno));
        return;
    }
}

//  --------------------------------------------------------------------------
//  Sending

static void
s_publish_one (rb_worker_t *self, rb_conn_t *pub)
{
    const rb_opts_t *opts = self->run->opts;
    char text [RB_IN_MAX < 70000? RB_IN_MAX: 70000];
    size_t text_len = rb_stamp (text, sizeof text, rb_now_ns (), pub->seq,
                                (size_t) pub->pub_id, opts->text_size);
    //  The JSON goes after the frame header room in wbuf's upper half
    char *json = (char *) self->wbuf + self->wbuf_size / 2;
    int n = snprintf (json, self->wbuf_size / 2,
                      "{\"type\":\"chat.message\",\"text\":\"%.*s\",\"id\":\"p%llu-%llu\"}",
                      (int) text_len, text, (unsigned long long) pub->pub_id,
                      (unsigned long long) pub->seq);
    if (n <= 0 || (size_t) n >= self->wbuf_size / 2 - 16) {
        rb_add (&self->stats.publish_blocked, 1);
        return;
    }
    //  Mask into the lower half: s_send_frame reads json, writes the frame
    unsigned char *payload = (unsigned char *) json;
    if (s_send_frame (self, pub, 1, payload, (size_t) n) == 0) {
        pub->seq++;
        pub->step_sent++;
        rb_add (&self->stats.published, 1);
    }
    else
        rb_add (&self->stats.publish_blocked, 1);
}

static void
s_publish (rb_worker_t *self, uint64_t now)
{
    rb_run_t *run = self->run;
    int step = atomic_load (&run->step);
    uint64_t bits = atomic_load (&run->rate_bits);
    double rate;
    memcpy (&rate, &bits, sizeof rate);
    uint64_t allowed = UINT64_MAX;  //  closed loop: messages that may go now
    if (rate <= 0) {
        uint64_t published = rb_get (&run->redis_published), delivered = 0;
        for (size_t w = 0; w < run->worker_count; w++) {
            published += rb_get (&run->workers [w].stats.published);
            delivered += rb_get (&run->workers [w].stats.delivered);
        }
        uint64_t expected = published * run->subs_per_room;
        uint64_t in_flight = expected > delivered? expected - delivered: 0;
        uint64_t window = run->opts->window * run->subs_per_room;
        allowed = in_flight >= window? 0: (window - in_flight + run->subs_per_room - 1)
                                           / run->subs_per_room;
    }
    for (size_t i = 0; i < self->pub_count && allowed > 0; i++) {
        rb_conn_t *pub = self->pubs [i];
        if (pub->state != RB_C_OPEN || pub->role != RB_ROLE_PUB)
            continue;
        if (pub->step_seen != step) {
            pub->step_seen = step;
            pub->step_sent = 0;
        }
        uint64_t due = rate > 0? rb_due (run, now, run->pub_total): pub->step_sent + allowed;
        for (int burst = 0; burst < RB_BURST && pub->step_sent < due && allowed > 0; burst++) {
            if (pub->out_len - pub->out_off > 65536)
                break;          //  the server is not reading: do not pile up
            if (!s_claim (&run->publish_quota))
                return;
            s_publish_one (self, pub);
            if (pub->state != RB_C_OPEN)
                break;
            if (rate <= 0)
                allowed--;
        }
    }
}

static void
s_ping (rb_worker_t *self, uint64_t now)
{
    rb_run_t *run = self->run;
    for (size_t i = 0; i < self->pub_count; i++) {
        rb_conn_t *conn = self->pubs [i];
        if (conn->role != RB_ROLE_PINGER || conn->state != RB_C_OPEN
        ||  conn->ping_out || now < conn->next_ping_ns)
            continue;
        if (!s_claim (&run->ping_quota))
            return;
        char json [96];
        uint64_t sent = rb_now_ns ();
        int n = snprintf (json, sizeof json, "{\"type\":\"system.ping\",\"id\":\"p%llu\"}",
                          (unsigned long long) sent);
        conn->ping_out = true;
        s_send_frame (self, conn, 1, json, (size_t) n);
    }
}

//  --------------------------------------------------------------------------
//  The worker loop

static void
s_open_more (rb_worker_t *self)
{
    rb_run_t *run = self->run;
    size_t limit = run->opts->concurrency / run->worker_count;
    if (limit == 0)
        limit = 1;
    while (self->next_open < self->conn_count
    &&     rb_get (&self->stats.in_flight) < limit) {
        rb_conn_t *conn = &self->conns [self->next_open++];
        if (conn->role == RB_ROLE_STORM && !s_claim (&run->storm_quota))
            continue;
        s_conn_open (self, conn);
    }
}

static void *
s_worker (void *arg)
{
    rb_worker_t *self = arg;
    rb_run_t *run = self->run;
    struct epoll_event events [RB_EVENTS];
    while (true) {
        int phase = atomic_load (&run->phase);
        if (phase == RB_PHASE_STOP)
            break;
        s_open_more (self);
        int timeout = 20;
        if (phase == RB_PHASE_RUN && self->pub_count) {
            uint64_t now = rb_now_ns ();
            if (atomic_load (&run->publishing))
                s_publish (self, now);
            s_ping (self, now);
            timeout = 1;
        }
        if (rb_get (&self->stats.in_flight) > 0 && timeout > 5)
            timeout = 5;
        int n = epoll_wait (self->epfd, events, RB_EVENTS, timeout);
        for (int i = 0; i < n; i++) {
            rb_conn_t *conn = events [i].data.ptr;
            uint32_t ev = events [i].events;
            if (conn->fd < 0)
                continue;       //  closed by an earlier event of this batch
            if (conn->state == RB_C_CONNECTING) {
                s_on_connected (self, conn);
                if (conn->state == RB_C_DONE && conn->role == RB_ROLE_STORM)
                    s_storm_again (self, conn);
                continue;
            }
            if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
                s_on_readable (self, conn);
            if (conn->fd >= 0 && (ev & EPOLLOUT) && conn->out_len > conn->out_off)
                s_conn_flush (self, conn);
        }
    }
    for (size_t i = 0; i < self->conn_count; i++)
        if (self->conns [i].fd >= 0)
            s_conn_close (self, &self->conns [i], true);
    return NULL;
}

//  --------------------------------------------------------------------------
//  Set-up and tear-down

int
rb_run_setup (rb_run_t *run, const rb_opts_t *opts,
              const rb_conn_spec_t *specs, size_t spec_count)
{
    run->opts = opts;
    run->worker_count = (size_t) opts->threads;
    run->workers = calloc (run->worker_count, sizeof run->workers [0]);
    if (!run->workers)
        return -1;
    atomic_init (&run->publish_quota, UINT64_MAX);
    atomic_init (&run->ping_quota, UINT64_MAX);
    atomic_init (&run->storm_quota, UINT64_MAX);

    //  Round robin over the workers, in spec order
    size_t total = 0;
    for (size_t s = 0; s < spec_count; s++)
        total += specs [s].count;
    for (size_t w = 0; w < run->worker_count; w++) {
        rb_worker_t *worker = &run->workers [w];
        worker->id = (int) w;
        worker->run = run;
        worker->epfd = -1;
        size_t mine = total / run->worker_count + (w < total % run->worker_count);
        worker->conns = calloc (mine? mine: 1, sizeof worker->conns [0]);
        worker->pubs = calloc (mine? mine: 1, sizeof worker->pubs [0]);
        if (!worker->conns || !worker->pubs)
            return -1;
    }
    size_t index = 0;
    for (size_t s = 0; s < spec_count; s++) {
        const rb_conn_spec_t *spec = &specs [s];
        for (size_t k = 0; k < spec->count; k++, index++) {
            rb_worker_t *worker = &run->workers [index % run->worker_count];
            rb_conn_t *conn = &worker->conns [worker->conn_count++];
            conn->worker = worker;
            conn->fd = -1;
            conn->role = (uint8_t) spec->role;
            conn->index = index;
            size_t rooms = spec->rooms? spec->rooms: 1, urls = spec->urls? spec->urls: 1;
            conn->room = (uint32_t) (spec->room + k % rooms);
            conn->url = (uint32_t) (spec->url + (k / rooms) % urls);
            conn->step_seen = -1;
            if (spec->role == RB_ROLE_PUB)
                conn->pub_id = (uint64_t) conn->room * opts->publishers + k / rooms;
            if (spec->role == RB_ROLE_SUB) {
                conn->track = calloc (opts->publishers, sizeof conn->track [0]);
                if (!conn->track)
                    return -1;
            }
            if (spec->role == RB_ROLE_PUB || spec->role == RB_ROLE_PINGER)
                worker->pubs [worker->pub_count++] = conn;
        }
    }
    return 0;
}

int
rb_run_start (rb_run_t *run)
{
    const rb_opts_t *opts = run->opts;
    size_t steps = opts->rate_count? opts->rate_count: 1;
    for (size_t w = 0; w < run->worker_count; w++) {
        rb_worker_t *worker = &run->workers [w];
        worker->epfd = epoll_create1 (EPOLL_CLOEXEC);
        worker->rbuf_size = RB_RBUF_SIZE;
        worker->rbuf = malloc (worker->rbuf_size);
        worker->wbuf_size = 2 * (opts->text_size + RB_TARGET_MAX + RB_TOKEN_MAX + 1024);
        worker->wbuf = malloc (worker->wbuf_size);
        worker->handshake = rb_hist_new ();
        worker->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t) w << 32) ^ rb_now_ns ();
        if (worker->epfd < 0 || !worker->rbuf || !worker->wbuf || !worker->handshake)
            return -1;
        for (size_t s = 0; s < steps; s++)
            if (!(worker->latency [s] = rb_hist_new ()))
                return -1;
    }
    for (size_t w = 0; w < run->worker_count; w++)
        if (pthread_create (&run->workers [w].thread, NULL, s_worker, &run->workers [w])) {
            for (size_t v = 0; v < w; v++)
                pthread_join (run->workers [v].thread, NULL);
            return -1;
        }
    return 0;
}

void
rb_run_join (rb_run_t *run)
{
    atomic_store (&run->phase, RB_PHASE_STOP);
    for (size_t w = 0; w < run->worker_count; w++)
        pthread_join (run->workers [w].thread, NULL);
}

void
rb_run_teardown (rb_run_t *run)
{
    for (size_t w = 0; run->workers && w < run->worker_count; w++) {
        rb_worker_t *worker = &run->workers [w];
        for (size_t i = 0; i < worker->conn_count; i++) {
            if (worker->conns [i].fd >= 0)
                close (worker->conns [i].fd);
            free (worker->conns [i].in);
            free (worker->conns [i].frag);
            free (worker->conns [i].out);
            free (worker->conns [i].track);
        }
        free (worker->conns);
        free (worker->pubs);
        free (worker->rbuf);
        free (worker->wbuf);
        if (worker->epfd >= 0)
            close (worker->epfd);
        rb_hist_destroy (&worker->handshake);
        for (size_t s = 0; s < RB_STEPS_MAX; s++)
            rb_hist_destroy (&worker->latency [s]);
    }
    free (run->workers);
    run->workers = NULL;
}

void
rb_run_stats (rb_run_t *run, rb_stats_t *sum)
{
    memset (sum, 0, sizeof *sum);
    size_t fields = sizeof (rb_stats_t) / sizeof (_Atomic uint64_t);
    _Atomic uint64_t *to = (_Atomic uint64_t *) sum;
    for (size_t w = 0; w < run->worker_count; w++) {
        _Atomic uint64_t *from = (_Atomic uint64_t *) &run->workers [w].stats;
        for (size_t f = 0; f < fields; f++)
            rb_add (&to [f], rb_get (&from [f]));
    }
}

const char *
rb_run_error (rb_run_t *run)
{
    for (size_t w = 0; w < run->worker_count; w++)
        if (atomic_load (&run->workers [w].error_set))
            return run->workers [w].error;
    if (atomic_load (&run->redis_failed))
        return run->redis_error;
    return "";
}
