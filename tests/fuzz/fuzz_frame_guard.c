/*  fuzz_frame_guard.c - libFuzzer target for src/frame_guard.c: the mask
    check the gateway runs on every client byte before lws parses it.

    Input layout: byte 0 chooses the start (bit 0: an HTTP request first,
    else frames from byte 0) and the reader's buffer size (bits 1-4: 1..16,
    or 4096 when 0); bytes 1-4 are read sizes, cycled (0 counts as 1); the
    rest is the client's stream. In HTTP mode the upgrade comes when the
    stream read so far ends with "\r\n\r\n" for the first time.

    Properties checked:
    - every read writes only inside the buffer it was given (each read goes
      to a heap block of exactly that size) and answers as recv(2) would;
    - what comes out is the stream itself, with at most one byte changed,
      and a changed byte is byte 0 of a frame, rewritten to a reserved
      opcode with FIN kept;
    - frames from byte 0 (no HTTP), read with buffers of 2 bytes or more:
      the stream comes out whole, and the changed byte is exactly the first
      unmasked frame's, found by an oracle written here (none: no change).
*/
#include "frame_guard.h"
#include "fuzz_util.h"

#include <errno.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const uint8_t *cuts;
    size_t next_cut;
} s_client_t;

static ssize_t
s_client_read (void *context, uint8_t *data, size_t size)
{
    s_client_t *client = (s_client_t *) context;
    if (client->pos == client->size)
        return 0;
    size_t n = client->cuts [client->next_cut++ % 4];
    n = n ? n : 1;
    if (n > size)
        n = size;
    if (n > client->size - client->pos)
        n = client->size - client->pos;
    memcpy (data, client->data + client->pos, n);
    client->pos += n;
    return (ssize_t) n;
}

//  Byte 0 of the first unmasked frame of stream, or SIZE_MAX.
static size_t
s_first_unmasked (const uint8_t *s, size_t n)
{
    size_t pos = 0;
    while (n - pos >= 2) {
        uint8_t b1 = s [pos + 1];
        if (!(b1 & 0x80))
            return pos;
        size_t extended = (b1 & 0x7f) == 127 ? 8 : (b1 & 0x7f) == 126 ? 2 : 0;
        if (n - pos < 2 + extended)
            return SIZE_MAX;
        uint64_t length = b1 & 0x7f;
        if (extended) {
            length = 0;
            for (size_t i = 0; i < extended; i++)
                length = (length << 8) | s [pos + 2 + i];
        }
        uint64_t whole = 2 + extended + 4;
        if (length > n || n - pos < whole + length)
            return SIZE_MAX;
        pos += (size_t) (whole + length);
    }
    return SIZE_MAX;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    bool http = data [0] & 1;
    size_t buffer = (data [0] >> 1) & 15;
    buffer = buffer ? buffer : 4096;
    s_client_t client = { data + 5, size - 5, 0, data + 1, 0 };
    const uint8_t *stream = client.data;
    size_t length = client.size;

    uint8_t *out = (uint8_t *) malloc (length + 1);
    FUZZ_CHECK (out, "out of memory");
    frame_guard_t guard;
    frame_guard_reset (&guard, http ? FRAME_GUARD_HTTP : FRAME_GUARD_WS);
    bool upgraded = !http;
    size_t got = 0;
    bool ended = false;
    for (size_t spins = 0; spins < 4 * length + 16 && !ended; spins++) {
        if (!upgraded && got >= 4 && memcmp (out + got - 4, "\r\n\r\n", 4) == 0) {
            frame_guard_upgrade (&guard);
            upgraded = true;
        }
        uint8_t *block = (uint8_t *) malloc (buffer);
        FUZZ_CHECK (block, "out of memory");
        errno = 0;
        ssize_t n = frame_guard_read (&guard, block, buffer, s_client_read, &client);
        FUZZ_CHECK (n >= -1 && n <= (ssize_t) buffer, "read answered %zd for %zu bytes", n, buffer);
        if (n == -1)
            FUZZ_CHECK (errno == EAGAIN, "a read failed with errno %d", errno);
        if (n == 0)
            ended = true;
        if (n > 0) {
            FUZZ_CHECK (got + (size_t) n <= length, "more bytes out than in");
            memcpy (out + got, block, (size_t) n);
            got += (size_t) n;
        }
        free (block);
    }
    FUZZ_CHECK (ended, "the stream never ended");

    size_t changed = SIZE_MAX;
    for (size_t i = 0; i < got; i++)
        if (out [i] != stream [i]) {
            FUZZ_CHECK (changed == SIZE_MAX, "two bytes changed, at %zu and %zu", changed, i);
            changed = i;
            FUZZ_CHECK (out [i] == ((stream [i] & 0x80) | FRAME_GUARD_FAIL_OPCODE),
                        "byte %zu became %#x, not a reserved opcode", i, out [i]);
            FUZZ_CHECK (guard.mode == FRAME_GUARD_FAILED, "a rewrite without failing");
        }
    if (!http && buffer >= 2) {
        //  A byte 0 at the very end waits for its byte 1 and goes with the
        //  end of the stream.
        FUZZ_CHECK (got == length || (got + 1 == length && guard.held),
                    "the stream was cut: %zu of %zu bytes", got, length);
        size_t want = s_first_unmasked (stream, length);
        //  (A frame whose byte 0 already holds the reserved opcode is
        //  "rewritten" to itself: compare with the rewrite, not the change.)
        if (want != SIZE_MAX) {
            FUZZ_CHECK (out [want] == ((stream [want] & 0x80) | FRAME_GUARD_FAIL_OPCODE),
                        "the first unmasked frame, at %zu, was not rewritten", want);
            FUZZ_CHECK (guard.mode == FRAME_GUARD_FAILED, "an unmasked frame passed");
        }
        else
            FUZZ_CHECK (guard.mode == FRAME_GUARD_WS, "a masked stream failed");
        FUZZ_CHECK (changed == SIZE_MAX || changed == want,
                    "changed byte %zu, the first unmasked frame is at %zu", changed, want);
    }
    free (out);
    return 0;
}
