/*  frame_guard.h - follows a client's byte stream frame by frame, the way
    the WebSocket server parser will read it, to fail unmasked client frames.

    RFC 6455 5.1: a server must close the connection (1002) when a client
    frame is not masked. libwebsockets 4.1.6, Debian 12's, unmasks server-side
    frames without ever looking at the mask bit, and offers no hook before
    its parser. The gateway therefore sees the bytes before lws does (its
    recv(2) wrapper, actors/gateway_recv.c) and runs them through this state
    machine: frame headers are read, payloads skipped, and when a header
    says "not masked" its first byte is rewritten in place to a reserved
    opcode, which lws does fail with 1002. Nothing else is ever changed.

    For that rewrite the first header byte must reach lws together with the
    second one (the mask bit): a read that ends right after a header's first
    byte withholds it, and the next read hands it back first.

    Before the upgrade the stream is HTTP: the guard only notes where each
    request's header ends ("\r\n\r\n") and reads what follows as frames on
    trial, so that frames a client pipelined before the 101 (RFC 6455 4.1
    forbids it) are judged too, once the upgrade is known.

    Pure: no I/O, no threads, no allocation except the table's growth.
    Fuzzed by tests/fuzz/fuzz_frame_guard.c; table tests in
    tests/test_frame_guard.c.
*/
#ifndef RTWS_FRAME_GUARD_H_INCLUDED
#define RTWS_FRAME_GUARD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

//  The opcode an unmasked frame is rewritten to: reserved (RFC 6455 5.2).
#define FRAME_GUARD_FAIL_OPCODE 0x3

typedef enum {
    FRAME_GUARD_OFF = 0,        //  not followed (admin port, unknown fd)
    FRAME_GUARD_HTTP,           //  before the upgrade
    FRAME_GUARD_WS,             //  after the upgrade: frames
    FRAME_GUARD_FAILED          //  an unmasked frame was seen: hands off
} frame_guard_mode_t;

typedef struct {
    uint8_t mode;               //  frame_guard_mode_t
    uint8_t crlf;               //  HTTP: bytes of "\r\n\r\n" just matched
    uint8_t have;               //  header bytes read of the current frame
    uint8_t need;               //  header length once byte 2 is known, else 0
    uint8_t b0;                 //  the current header's first byte
    bool held;                  //  b0 was withheld from the last read
    bool unmasked;              //  HTTP: a frame on trial was unmasked
    bool reported;              //  FAILED: the gateway has been told
    uint64_t length;            //  extended payload length, being read
    uint64_t skip;              //  payload bytes left in the current frame
} frame_guard_t;

//  Starts following a freshly accepted connection (HTTP) or stops (OFF).
void frame_guard_reset (frame_guard_t *self, frame_guard_mode_t mode);

//  The upgrade was accepted: frames from now on. Returns -1 when a frame the
//  client sent before the 101 was unmasked (the connection must be failed
//  with 1002), else 0.
int frame_guard_upgrade (frame_guard_t *self);

//  Reads data [0 .. size), which a read just returned, and may rewrite it in
//  place. When the previous call withheld a byte (self->held), the caller
//  puts that byte back as data [0]; size counts it. Returns how many bytes
//  to hand to the reader (size, or size - 1 when the last byte is withheld;
//  0 means only a withheld byte arrived), or -1 when an unmasked frame
//  cannot be rewritten because its first byte was already handed over: the
//  connection must then be dropped.
ssize_t frame_guard_feed (frame_guard_t *self, uint8_t *data, size_t size);

//  What frame_guard_read reads from: like recv(2) without flags (bytes,
//  0 at the end of the stream, or -1 with errno).
typedef ssize_t (frame_guard_reader_fn) (void *context, uint8_t *data, size_t size);

//  One read through the guard, for a reader that asked for up to size
//  bytes: puts back a withheld byte, reads, feeds, and answers as recv(2)
//  would - bytes, 0 at the end of the stream (also when an unmasked frame
//  cannot be rewritten), or -1 with errno (EAGAIN when only a withheld byte
//  arrived).
ssize_t frame_guard_read (frame_guard_t *self, uint8_t *data, size_t size,
                          frame_guard_reader_fn *reader, void *context);

//  One guard per file descriptor, for one service thread's connections.
typedef struct {
    frame_guard_t *slots;       //  indexed by fd
    size_t size;                //  slots allocated
    size_t limit;               //  fds at or above this are never followed
} frame_guards_t;

//  An empty table that will follow fds below limit (the fd limit).
void frame_guards_init (frame_guards_t *self, size_t limit);
void frame_guards_free (frame_guards_t *self);

//  Resets fd's guard to mode, growing the table when needed. Returns -1
//  when fd cannot be followed (negative, over the limit, out of memory).
int frame_guards_track (frame_guards_t *self, int fd, frame_guard_mode_t mode);

//  fd's guard, or NULL when fd is not followed.
frame_guard_t *frame_guards_find (frame_guards_t *self, int fd);

#endif
