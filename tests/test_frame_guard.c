//  Table test of src/frame_guard.c: the mask check in front of lws's parser.
//
//  Each row is a client stream (frames, masked or not, after an optional
//  HTTP request) and a way to cut it into reads: the bytes that come out of
//  frame_guard_read must be the stream itself, except that the first
//  unmasked frame after the upgrade has its byte 0 turned into a reserved
//  opcode - wherever the reads cut the header.
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame_guard.h"

#define S_STREAM_MAX    (200 * 1024)

typedef struct {
    uint8_t opcode;
    bool fin;
    bool masked;
    size_t length;
} s_frame_t;

typedef struct {
    const char *name;
    const char *http;           //  request before the frames, or NULL: WS from byte 0
    s_frame_t frames [6];       //  up to the first with length SIZE_MAX
    int unmasked;               //  index of the frame to be failed, -1: none
    int verdict;                //  frame_guard_upgrade's answer
    size_t early;               //  frame bytes the client sent before the 101
} s_row_t;

#define END { 0, false, false, SIZE_MAX }

static const s_row_t s_rows [] = {
    { "masked frames of every length form", NULL,
      { { 1, true, true, 0 }, { 1, true, true, 5 }, { 1, true, true, 125 },
        { 1, true, true, 126 }, { 2, true, true, 65535 }, END }, -1, 0, 0 },
    { "a 64-bit length frame", NULL,
      { { 1, true, true, 65536 }, { 9, true, true, 3 }, { 1, true, true, 70000 }, END }, -1, 0, 0 },
    { "fragments and control frames", NULL,
      { { 1, false, true, 10 }, { 9, true, true, 4 }, { 0, false, true, 10 },
        { 10, true, true, 0 }, { 0, true, true, 10 }, END }, -1, 0, 0 },
    { "an unmasked text frame first", NULL,
      { { 1, true, false, 20 }, { 1, true, true, 20 }, END }, 0, 0, 0 },
    { "an unmasked frame after masked ones", NULL,
      { { 1, true, true, 20 }, { 9, true, true, 1 }, { 1, true, false, 20 }, END }, 2, 0, 0 },
    { "an unmasked empty frame", NULL,
      { { 1, true, true, 0 }, { 1, true, false, 0 }, END }, 1, 0, 0 },
    { "an unmasked close frame", NULL,
      { { 1, true, true, 7 }, { 8, true, false, 2 }, END }, 1, 0, 0 },
    { "an unmasked continuation", NULL,
      { { 1, false, true, 7 }, { 0, true, false, 9 }, END }, 1, 0, 0 },
    { "an unmasked 16-bit length frame", NULL,
      { { 1, true, true, 300 }, { 1, true, false, 300 }, END }, 1, 0, 0 },
    { "an unmasked 64-bit length frame", NULL,
      { { 1, true, true, 3 }, { 2, true, false, 66000 }, END }, 1, 0, 0 },
    { "an upgrade, then masked frames", "GET /ws/r HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
      { { 1, true, true, 30 }, { 9, true, true, 0 }, END }, -1, 0, 0 },
    { "an upgrade, then an unmasked frame", "GET /ws/r HTTP/1.1\r\nHost: x\r\n\r\n",
      { { 1, true, true, 30 }, { 1, true, false, 3 }, END }, 1, 0, 0 },
    { "two requests on one connection, then frames",
      "GET /x HTTP/1.1\r\nHost: x\r\n\r\nGET /ws/r HTTP/1.1\r\nHost: x\r\n\r\n",
      { { 1, true, true, 12 }, { 1, true, false, 1 }, END }, 1, 0, 0 },
    //  Frames pipelined before the 101: judged when the upgrade comes.
    { "a masked frame before the 101", "GET /ws/r HTTP/1.1\r\n\r\n",
      { { 1, true, true, 12 }, { 1, true, true, 1 }, END }, -1, 0, 18 },
    { "an unmasked frame before the 101", "GET /ws/r HTTP/1.1\r\n\r\n",
      { { 1, true, true, 12 }, { 1, true, false, 1 }, END }, -1, -1, 21 },
    { "half a masked frame before the 101, an unmasked one after",
      "GET /ws/r HTTP/1.1\r\n\r\n",
      { { 1, true, true, 200 }, { 1, true, false, 1 }, END }, 1, 0, 3 },
    { "a frame header cut by the 101", "GET /ws/r HTTP/1.1\r\n\r\n",
      { { 1, true, true, 5 }, { 1, true, false, 1 }, END }, 1, 0, 1 },
};

//  Appends one frame; masked payload bytes are arbitrary (the guard never
//  unmasks), but never "\r\n\r\n".
static size_t
s_put_frame (uint8_t *out, const s_frame_t *frame)
{
    size_t n = 0;
    out [n++] = (uint8_t) ((frame->fin ? 0x80 : 0) | frame->opcode);
    uint8_t mask = frame->masked ? 0x80 : 0;
    if (frame->length < 126)
        out [n++] = (uint8_t) (mask | frame->length);
    else
    if (frame->length < 65536) {
        out [n++] = mask | 126;
        out [n++] = (uint8_t) (frame->length >> 8);
        out [n++] = (uint8_t) frame->length;
    }
    else {
        out [n++] = mask | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            out [n++] = (uint8_t) ((uint64_t) frame->length >> shift);
    }
    if (frame->masked)
        for (int i = 0; i < 4; i++)
            out [n++] = (uint8_t) (0xA0 + i);
    for (size_t i = 0; i < frame->length; i++)
        out [n++] = (uint8_t) ('a' + i % 26);
    return n;
}

//  The stream of a row, the offset of its first frame, and the offset of
//  byte 0 of the frame to be failed (SIZE_MAX: none).
static size_t
s_build (const s_row_t *row, uint8_t *out, size_t *frames_at, size_t *fail_at)
{
    size_t n = 0;
    if (row->http) {
        memcpy (out, row->http, strlen (row->http));
        n = strlen (row->http);
    }
    *frames_at = n;
    *fail_at = SIZE_MAX;
    for (int i = 0; i < 6 && row->frames [i].length != SIZE_MAX; i++) {
        if (i == row->unmasked)
            *fail_at = n;
        n += s_put_frame (out + n, &row->frames [i]);
    }
    return n;
}

//  The client side: hands out the stream in reads no longer than its cuts.
typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const size_t *cuts;         //  read sizes, cycled; a read also stops at
    size_t cut_count;           //  the upgrade point
    size_t next_cut;
    size_t stop_at;             //  no read crosses this offset
} s_client_t;

static ssize_t
s_client_read (void *context, uint8_t *data, size_t size)
{
    s_client_t *client = (s_client_t *) context;
    if (client->pos == client->size)
        return 0;
    size_t n = client->cuts [client->next_cut++ % client->cut_count];
    if (n > size)
        n = size;
    if (n > client->size - client->pos)
        n = client->size - client->pos;
    if (client->pos < client->stop_at && client->pos + n > client->stop_at)
        n = client->stop_at - client->pos;
    memcpy (data, client->data + client->pos, n);
    client->pos += n;
    return (ssize_t) n;
}

static int s_failed;
static int s_checks;

static void
s_check (bool ok, const char *what, const char *row, const char *how)
{
    s_checks++;
    if (!ok) {
        s_failed++;
        printf ("not ok - %s: %s (%s)\n", row, what, how);
    }
}

//  Reads a row's stream through the guard with the given cuts and reader
//  buffer size; checks what comes out.
static void
s_run (const s_row_t *row, const size_t *cuts, size_t cut_count, size_t buffer, const char *how)
{
    static uint8_t stream [S_STREAM_MAX];
    static uint8_t got [S_STREAM_MAX + 16];
    size_t frames_at, fail_at;
    size_t size = s_build (row, stream, &frames_at, &fail_at);

    frame_guard_t guard;
    frame_guard_reset (&guard, row->http ? FRAME_GUARD_HTTP : FRAME_GUARD_WS);
    //  lws reads the request and answers it before it reads a frame: the
    //  upgrade comes at the end of the request (a client that pipelined a
    //  frame has it read in HTTP mode when the cut crosses it).
    size_t upgrade_at = frames_at + row->early;
    s_client_t client = { stream, size, 0, cuts, cut_count, 0, row->http ? upgrade_at : 0 };
    size_t out = 0;
    bool upgraded = !row->http;
    int verdict = 0;
    bool ended = false;
    for (int spins = 0; spins < 1000000 && !ended; spins++) {
        if (!upgraded && client.pos >= upgrade_at) {
            verdict = frame_guard_upgrade (&guard);
            upgraded = true;
        }
        ssize_t n = frame_guard_read (&guard, got + out, buffer, s_client_read, &client);
        if (n == 0)
            ended = true;
        else
        if (n < 0)
            s_check (errno == EAGAIN, "a read with only a withheld byte says EAGAIN", row->name, how);
        else
            out += (size_t) n;
    }
    s_check (ended, "the stream ends", row->name, how);
    s_check (verdict == row->verdict, "the upgrade's verdict", row->name, how);
    if (verdict < 0) {
        s_check (guard.mode == FRAME_GUARD_FAILED, "a failed upgrade stops the guard", row->name, how);
        s_check (out == size && memcmp (got, stream, size) == 0,
                 "frames read before the upgrade are never rewritten", row->name, how);
        return;
    }
    if (fail_at == SIZE_MAX) {
        s_check (out == size && memcmp (got, stream, size) == 0,
                 "a stream of masked frames comes out unchanged", row->name, how);
        s_check (guard.mode == FRAME_GUARD_WS, "the guard still follows frames", row->name, how);
        return;
    }
    s_check (guard.mode == FRAME_GUARD_FAILED, "the guard has failed the connection", row->name, how);
    s_check (out > fail_at && memcmp (got, stream, fail_at) == 0,
             "everything before the unmasked frame comes out unchanged", row->name, how);
    if (buffer >= 2) {
        uint8_t want = (uint8_t) ((stream [fail_at] & 0x80) | FRAME_GUARD_FAIL_OPCODE);
        s_check (out > fail_at && got [fail_at] == want,
                 "the unmasked frame's byte 0 carries a reserved opcode", row->name, how);
    }
    else {
        //  One-byte reads: byte 0 went out alone, so the stream is cut
        //  right after it instead.
        s_check (out == fail_at + 1, "one-byte reads end the stream at the unmasked frame",
                 row->name, how);
    }
}

static void
s_table (void)
{
    size_t count = sizeof s_rows / sizeof s_rows [0];
    char how [64];
    for (size_t r = 0; r < count; r++) {
        const s_row_t *row = &s_rows [r];
        size_t whole [] = { S_STREAM_MAX };
        s_run (row, whole, 1, 4096, "one read");
        size_t ones [] = { 1 };
        s_run (row, ones, 1, 4096, "one byte per read");
        s_run (row, whole, 1, 1, "a one-byte reader buffer");
        size_t odd [] = { 3, 1, 7, 2, 13, 1, 1, 40, 5 };
        s_run (row, odd, sizeof odd / sizeof odd [0], 4096, "mixed reads");
        s_run (row, odd, sizeof odd / sizeof odd [0], 5, "mixed reads, small buffer");
        //  Every place for the first cut up to the first 40 bytes of frames.
        static uint8_t scratch [S_STREAM_MAX];
        size_t frames_at, fail_at;
        s_build (row, scratch, &frames_at, &fail_at);
        size_t last = (fail_at == SIZE_MAX ? frames_at : fail_at) + 40;
        for (size_t cut = 1; cut < last; cut++) {
            size_t two [] = { cut, S_STREAM_MAX };
            snprintf (how, sizeof how, "cut at %zu", cut);
            s_run (row, two, 2, 4096, how);
        }
    }
}

//  The fd table: bounded, grows on demand, forgets on OFF.
static void
s_table_of_fds (void)
{
    frame_guards_t guards;
    frame_guards_init (&guards, 5000);
    s_check (frame_guards_find (&guards, 7) == NULL, "an unknown fd is not followed", "fds", "");
    s_check (frame_guards_track (&guards, 7, FRAME_GUARD_OFF) == 0 && guards.size == 0,
             "forgetting an fd never seen allocates nothing", "fds", "");
    s_check (frame_guards_track (&guards, 7, FRAME_GUARD_HTTP) == 0, "an fd is followed", "fds", "");
    s_check (frame_guards_find (&guards, 7) && frame_guards_find (&guards, 7)->mode == FRAME_GUARD_HTTP,
             "a followed fd is found in HTTP mode", "fds", "");
    s_check (frame_guards_track (&guards, 4999, FRAME_GUARD_HTTP) == 0 && guards.size == 5000,
             "the table grows to the limit, not past it", "fds", "");
    s_check (frame_guards_find (&guards, 7) != NULL, "growing keeps the fds already followed",
             "fds", "");
    s_check (frame_guards_track (&guards, 5000, FRAME_GUARD_HTTP) == -1
          && frame_guards_track (&guards, -1, FRAME_GUARD_HTTP) == -1,
             "fds outside [0, limit) are refused", "fds", "");
    s_check (frame_guards_find (&guards, 5000) == NULL && frame_guards_find (&guards, -1) == NULL,
             "fds outside the table are not found", "fds", "");
    frame_guards_track (&guards, 7, FRAME_GUARD_OFF);
    s_check (frame_guards_find (&guards, 7) == NULL, "a closed fd is forgotten", "fds", "");
    frame_guards_free (&guards);
    frame_guards_free (&guards);
    s_check (guards.slots == NULL, "freeing twice is harmless", "fds", "");
}

//  A stream that is not followed, or has failed, is passed as it is.
static void
s_hands_off (void)
{
    uint8_t stream [] = { 0x81, 0x05, 'h', 'e', 'l', 'l', 'o', 0x81, 0x00 };
    size_t cuts [] = { sizeof stream };
    uint8_t got [32];
    for (int mode = FRAME_GUARD_OFF; mode <= FRAME_GUARD_FAILED; mode += 3) {
        frame_guard_t guard;
        frame_guard_reset (&guard, (frame_guard_mode_t) mode);
        s_client_t client = { stream, sizeof stream, 0, cuts, 1, 0, 0 };
        ssize_t n = frame_guard_read (&guard, got, sizeof got, s_client_read, &client);
        s_check (n == (ssize_t) sizeof stream && memcmp (got, stream, sizeof stream) == 0,
                 "an unfollowed or failed stream passes unchanged",
                 mode == FRAME_GUARD_OFF ? "off" : "failed", "");
    }
    frame_guard_t guard;
    frame_guard_reset (&guard, FRAME_GUARD_WS);
    s_check (frame_guard_upgrade (&guard) == 0 && guard.mode == FRAME_GUARD_WS,
             "an upgrade of a stream already in frames changes nothing", "ws", "");
}

int
main (int argc, char *argv [])
{
    (void) argc;
    (void) argv;
    s_table ();
    s_table_of_fds ();
    s_hands_off ();
    printf ("%d checks, %d failed\n", s_checks, s_failed);
    return s_failed ? 1 : 0;
}
