/*  yardstick.c - the least a WebSocket fan-out server can do on this machine.

    yardstick [--host 127.0.0.1] [--port 0] [--queue-bytes 4194304]

    One thread, one epoll set, no checks: it upgrades every request that
    carries a Sec-WebSocket-Key (whatever the path, token or Origin), and
    on each text message from any connection encodes ONE server frame with
    the message's payload and writes that same frame to every open
    connection, sender included, with one send() each. A message that
    contains "system.ping" is answered with a system.ack to its sender
    only (so rtws-bench rtt can measure the floor too). It keeps no rooms,
    users, presence, heartbeats or limits beyond a per-connection output
    bound (a connection over it is dropped and counted).

    rtws-bench fanout run against it, side by side with rtwsd, tells how
    close rtwsd comes to what this machine can do with one service thread;
    see BENCHMARKS.md. It prints "yardstick: listening on HOST:PORT" once
    ready (PORT is the bound one when --port 0), and its counters on
    SIGINT or SIGTERM.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define YS_HEADER_MAX   8192
#define YS_MESSAGE_MAX  (1u << 20)
#define YS_EVENTS       512

enum { YS_HTTP, YS_OPEN };

typedef struct {
    int fd;
    int state;
    size_t slot;                //  index in the open list (YS_OPEN)
    bool want_out;              //  EPOLLOUT registered
    unsigned char *in;          //  unparsed input
    size_t in_len, in_cap;
    unsigned char *out;         //  what the kernel did not take
    size_t out_off, out_len, out_cap;
    void *next_dead;            //  closed: freed after this epoll batch
    void *prev, *next;          //  every live connection, for the exit
} ys_conn_t;

typedef struct {
    int epfd;
    int listen_fd;
    int signal_fd;
    size_t queue_max;           //  bound on a connection's unsent bytes
    ys_conn_t *dead;            //  closed in this batch, freed after it
    ys_conn_t *all;             //  every live connection
    ys_conn_t **open;           //  upgraded connections, dense
    size_t open_count, open_cap;
    unsigned char *frame;       //  the frame being fanned out
    size_t frame_cap;
    unsigned char rbuf [256 << 10];
    uint64_t accepted, upgraded, messages, frames_out, dropped, pings;
} ys_server_t;

static int
s_reserve (unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap? *cap: 1024;
    while (cap2 < need)
        cap2 *= 2;
    unsigned char *grown = realloc (*buf, cap2);
    if (!grown)
        return -1;
    *buf = grown;
    *cap = cap2;
    return 0;
}

static void
s_events (ys_server_t *self, ys_conn_t *conn, bool out)
{
    struct epoll_event ev = { .events = EPOLLIN | (out? EPOLLOUT: 0), .data.ptr = conn };
    epoll_ctl (self->epfd, EPOLL_CTL_MOD, conn->fd, &ev);
    conn->want_out = out;
}

static void
s_close (ys_server_t *self, ys_conn_t *conn)
{
    if (conn->state == YS_OPEN) {
        //  Swap the last open connection into this one's slot
        ys_conn_t *last = self->open [--self->open_count];
        self->open [conn->slot] = last;
        last->slot = conn->slot;
    }
    //  Later events of this epoll batch may still name conn: it is freed
    //  once the batch is done, and fd -1 tells them to skip it.
    close (conn->fd);
    conn->fd = -1;
    conn->state = -1;
    ys_conn_t *prev = conn->prev, *next = conn->next;
    if (prev)
        prev->next = next;
    else
        self->all = next;
    if (next)
        next->prev = prev;
    conn->next_dead = self->dead;
    self->dead = conn;
}

//  Writes after anything pending; -1 when the connection was dropped.
static int
s_write (ys_server_t *self, ys_conn_t *conn, const unsigned char *data, size_t len)
{
    size_t sent = 0;
    if (conn->out_len == conn->out_off) {
        ssize_t n = send (conn->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s_close (self, conn);
            return -1;
        }
        sent = n > 0? (size_t) n: 0;
        if (sent == len)
            return 0;
        conn->out_off = conn->out_len = 0;
    }
    if (conn->out_len - conn->out_off + len - sent > self->queue_max
    ||  s_reserve (&conn->out, &conn->out_cap, conn->out_len + len - sent)) {
        self->dropped++;
        s_close (self, conn);
        return -1;
    }
    memcpy (conn->out + conn->out_len, data + sent, len - sent);
    conn->out_len += len - sent;
    if (!conn->want_out)
        s_events (self, conn, true);
    return 0;
}

static void
s_flush (ys_server_t *self, ys_conn_t *conn)
{
    while (conn->out_off < conn->out_len) {
        ssize_t n = send (conn->fd, conn->out + conn->out_off, conn->out_len - conn->out_off,
                          MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            s_close (self, conn);
            return;
        }
        conn->out_off += (size_t) n;
    }
    conn->out_off = conn->out_len = 0;
    s_events (self, conn, false);
}

//  Encodes an unmasked server frame into self->frame; its length.
static size_t
s_encode (ys_server_t *self, int opcode, const unsigned char *payload, size_t len)
{
    if (s_reserve (&self->frame, &self->frame_cap, len + 10))
        return 0;
    unsigned char *f = self->frame;
    size_t head = 0;
    f [head++] = (unsigned char) (0x80 | opcode);
    if (len < 126)
        f [head++] = (unsigned char) len;
    else
    if (len < 65536) {
        f [head++] = 126;
        f [head++] = (unsigned char) (len >> 8);
        f [head++] = (unsigned char) len;
    }
    else {
        f [head++] = 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            f [head++] = (unsigned char) ((uint64_t) len >> shift);
    }
    memcpy (f + head, payload, len);
    return head + len;
}

//  A text message: an ack for a ping, else one frame to everyone.
static int
s_on_message (ys_server_t *self, ys_conn_t *conn, const unsigned char *data, size_t len)
{
    self->messages++;
    if (memmem (data, len, "\"system.ping\"", 13)) {
        const unsigned char *id = memmem (data, len, "\"id\":\"", 6);
        size_t id_len = 0;
        if (id) {
            id += 6;
            while (id + id_len < data + len && id [id_len] != '"' && id_len < 128)
                id_len++;
        }
        char ack [256];
        int n = snprintf (ack, sizeof ack,
                          "{\"type\":\"system.ack\",\"id\":null,\"version\":1,\"ref\":\"%.*s\"}",
                          (int) id_len, id? (const char *) id: "");
        size_t flen = s_encode (self, 1, (const unsigned char *) ack, (size_t) n);
        self->pings++;
        return flen? s_write (self, conn, self->frame, flen): -1;
    }
    size_t flen = s_encode (self, 1, data, len);
    if (!flen)
        return 0;
    //  Walk from the end: a dropped connection swaps the last one into its slot
    bool sender_alive = true;
    for (size_t i = self->open_count; i-- > 0; ) {
        ys_conn_t *to = self->open [i];
        bool is_sender = to == conn;
        if (s_write (self, to, self->frame, flen) == 0)
            self->frames_out++;
        else
        if (is_sender)
            sender_alive = false;
    }
    return sender_alive? 0: -1;
}

//  Parses client frames from conn->in; -1 when conn was closed.
static int
s_frames (ys_server_t *self, ys_conn_t *conn)
{
    size_t at = 0;
    while (conn->in_len - at >= 6) {
        unsigned char *f = conn->in + at;
        size_t avail = conn->in_len - at;
        int opcode = f [0] & 0x0f;
        uint64_t len = f [1] & 0x7f;
        size_t head = 2;
        if (len == 126) {
            len = ((uint64_t) f [2] << 8) | f [3];
            head = 4;
        }
        else
        if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | f [2 + i];
            head = 10;
        }
        if (len > YS_MESSAGE_MAX || !(f [1] & 0x80)) {
            s_close (self, conn);       //  too big, or not masked: not a client
            return -1;
        }
        if (avail < head + 4 + len)
            break;
        unsigned char *mask = f + head, *payload = f + head + 4;
        for (size_t i = 0; i < len; i++)
            payload [i] ^= mask [i & 3];
        at += head + 4 + (size_t) len;
        if (opcode == 0x1 || opcode == 0x2) {
            if (s_on_message (self, conn, payload, (size_t) len))
                return -1;
        }
        else
        if (opcode == 0x8) {
            size_t flen = s_encode (self, 0x8, payload, len < 2? (size_t) len: 2);
            if (flen)
                send (conn->fd, self->frame, flen, MSG_NOSIGNAL | MSG_DONTWAIT);
            s_close (self, conn);
            return -1;
        }
        else
        if (opcode == 0x9) {
            size_t flen = s_encode (self, 0xA, payload, len < 126? (size_t) len: 125);
            if (flen && s_write (self, conn, self->frame, flen))
                return -1;
        }
        //  continuation frames and pongs: ignored (the bench sends neither)
    }
    conn->in_len -= at;
    memmove (conn->in, conn->in + at, conn->in_len);
    return 0;
}

static int
s_upgrade (ys_server_t *self, ys_conn_t *conn)
{
    conn->in [conn->in_len] = 0;
    char *end = strstr ((char *) conn->in, "\r\n\r\n");
    if (!end)
        return conn->in_len > YS_HEADER_MAX? (s_close (self, conn), -1): 0;
    char *key = NULL;
    for (char *line = strstr ((char *) conn->in, "\r\n"); line && line < end;
         line = strstr (line + 2, "\r\n"))
        if (strncasecmp (line + 2, "Sec-WebSocket-Key:", 18) == 0) {
            key = line + 20;
            while (*key == ' ')
                key++;
            break;
        }
    size_t key_len = key? strcspn (key, "\r\n "): 0;
    if (!key_len || key_len > 64) {
        static const char bad [] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        send (conn->fd, bad, sizeof bad - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        s_close (self, conn);
        return -1;
    }
    char joined [128];
    int n = snprintf (joined, sizeof joined, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
                      (int) key_len, key);
    unsigned char digest [SHA_DIGEST_LENGTH];
    SHA1 ((const unsigned char *) joined, (size_t) n, digest);
    unsigned char accept [64];
    EVP_EncodeBlock (accept, digest, SHA_DIGEST_LENGTH);
    char response [256];
    n = snprintf (response, sizeof response,
                  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    size_t used = (size_t) (end + 4 - (char *) conn->in);
    conn->in_len -= used;
    memmove (conn->in, conn->in + used, conn->in_len);
    if (s_write (self, conn, (const unsigned char *) response, (size_t) n))
        return -1;
    if (self->open_count == self->open_cap) {
        size_t cap = self->open_cap? self->open_cap * 2: 1024;
        ys_conn_t **grown = realloc (self->open, cap * sizeof *grown);
        if (!grown) {
            s_close (self, conn);
            return -1;
        }
        self->open = grown;
        self->open_cap = cap;
    }
    conn->state = YS_OPEN;
    conn->slot = self->open_count;
    self->open [self->open_count++] = conn;
    self->upgraded++;
    return 0;
}

static void
s_readable (ys_server_t *self, ys_conn_t *conn)
{
    ssize_t n = read (conn->fd, self->rbuf, sizeof self->rbuf);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        s_close (self, conn);
        return;
    }
    size_t limit = conn->state == YS_HTTP? YS_HEADER_MAX + 1: YS_MESSAGE_MAX + 16;
    if (conn->in_len + (size_t) n + 1 > limit + sizeof self->rbuf
    ||  s_reserve (&conn->in, &conn->in_cap, conn->in_len + (size_t) n + 1)) {
        s_close (self, conn);
        return;
    }
    memcpy (conn->in + conn->in_len, self->rbuf, (size_t) n);
    conn->in_len += (size_t) n;
    if (conn->state == YS_HTTP && (s_upgrade (self, conn) || conn->state == YS_HTTP))
        return;
    if (s_frames (self, conn) == 0 && conn->in_len == 0) {
        free (conn->in);        //  idle connections hold no input buffer
        conn->in = NULL;
        conn->in_cap = 0;
    }
}

static void
s_accept (ys_server_t *self)
{
    while (true) {
        int fd = accept4 (self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;             //  EAGAIN, or out of descriptors: try later
        int one = 1;
        setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ys_conn_t *conn = calloc (1, sizeof *conn);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = conn };
        if (!conn || epoll_ctl (self->epfd, EPOLL_CTL_ADD, fd, &ev)) {
            free (conn);
            close (fd);
            continue;
        }
        conn->fd = fd;
        conn->next = self->all;
        if (self->all)
            self->all->prev = conn;
        self->all = conn;
        self->accepted++;
    }
}

int
main (int argc, char *argv [])
{
    const char *host = "127.0.0.1";
    long port = 0, queue = 4 << 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv [i], "--host") == 0 && i + 1 < argc)
            host = argv [++i];
        else
        if (strcmp (argv [i], "--port") == 0 && i + 1 < argc)
            port = strtol (argv [++i], NULL, 10);
        else
        if (strcmp (argv [i], "--queue-bytes") == 0 && i + 1 < argc)
            queue = strtol (argv [++i], NULL, 10);
        else {
            fprintf (stderr, "usage: yardstick [--host ADDR] [--port N] [--queue-bytes N]\n");
            return 2;
        }
    }
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit (RLIMIT_NOFILE, &limit);
    }
    ys_server_t *self = calloc (1, sizeof *self);
    if (!self)
        return 1;
    self->queue_max = queue > 0? (size_t) queue: 4u << 20;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    if (inet_pton (AF_INET, host, &addr.sin_addr) != 1) {
        fprintf (stderr, "yardstick: --host wants an IPv4 address\n");
        return 2;
    }
    self->listen_fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt (self->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t addr_len = sizeof addr;
    if (bind (self->listen_fd, (struct sockaddr *) &addr, sizeof addr)
    ||  listen (self->listen_fd, 4096)
    ||  getsockname (self->listen_fd, (struct sockaddr *) &addr, &addr_len)) {
        fprintf (stderr, "yardstick: cannot listen on %s:%ld: %s\n", host, port, strerror (errno));
        return 1;
    }
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    sigprocmask (SIG_BLOCK, &signals, NULL);
    signal (SIGPIPE, SIG_IGN);
    self->signal_fd = signalfd (-1, &signals, SFD_CLOEXEC);
    self->epfd = epoll_create1 (EPOLL_CLOEXEC);
    //  The listening socket and the signalfd are told apart by their data
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &self->listen_fd };
    epoll_ctl (self->epfd, EPOLL_CTL_ADD, self->listen_fd, &ev);
    ev.data.ptr = &self->signal_fd;
    epoll_ctl (self->epfd, EPOLL_CTL_ADD, self->signal_fd, &ev);
    printf ("yardstick: listening on %s:%u\n", host, ntohs (addr.sin_port));
    fflush (stdout);

    struct epoll_event events [YS_EVENTS];
    bool running = true;
    while (running) {
        int n = epoll_wait (self->epfd, events, YS_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            void *ptr = events [i].data.ptr;
            if (ptr == &self->listen_fd) {
                s_accept (self);
                continue;
            }
            if (ptr == &self->signal_fd) {
                running = false;
                break;
            }
            ys_conn_t *conn = ptr;
            if (conn->fd >= 0 && (events [i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                s_readable (self, conn);
            if (conn->fd >= 0 && (events [i].events & EPOLLOUT))
                s_flush (self, conn);
        }
        while (self->dead) {
            ys_conn_t *conn = self->dead;
            self->dead = conn->next_dead;
            free (conn->in);
            free (conn->out);
            free (conn);
        }
    }
    printf ("yardstick: accepted %llu upgraded %llu messages %llu frames out %llu"
            " dropped %llu pings %llu\n", (unsigned long long) self->accepted,
            (unsigned long long) self->upgraded, (unsigned long long) self->messages,
            (unsigned long long) self->frames_out, (unsigned long long) self->dropped,
            (unsigned long long) self->pings);
    while (self->all)
        s_close (self, self->all);
    while (self->dead) {
        ys_conn_t *conn = self->dead;
        self->dead = conn->next_dead;
        free (conn->in);
        free (conn->out);
        free (conn);
    }
    close (self->epfd);
    close (self->signal_fd);
    close (self->listen_fd);
    free (self->open);
    free (self->frame);
    free (self);
    return 0;
}
