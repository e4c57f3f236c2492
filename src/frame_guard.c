/*  frame_guard.c - the mask check libwebsockets 4.1.6 does not make.

    A frame header is 2 to 14 bytes: byte 0 holds FIN, RSV and the opcode;
    byte 1 the mask bit and a 7-bit length (126: a 16-bit length follows,
    127: a 64-bit one); then the 4-byte masking key when masked. The guard
    reads headers byte by byte and skips payloads in one step, so a large
    frame costs one subtraction per read.

    The only byte ever changed is byte 0 of an unmasked frame, and after
    that the guard stops (FAILED): lws fails the connection on the reserved
    opcode and reads nothing more that matters.
*/
#include "frame_guard.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void
frame_guard_reset (frame_guard_t *self, frame_guard_mode_t mode)
{
    assert (self);
    memset (self, 0, sizeof *self);
    self->mode = (uint8_t) mode;
}

//  Reads one header byte c of the current frame. Returns false when that
//  byte is byte 1 of an unmasked frame.
static bool
s_header_byte (frame_guard_t *self, uint8_t c)
{
    bool masked = true;
    if (self->have == 0)
        self->b0 = c;
    else
    if (self->have == 1) {
        masked = (c & 0x80) != 0;
        uint8_t len7 = c & 0x7f;
        uint8_t extended = len7 == 127 ? 8 : len7 == 126 ? 2 : 0;
        self->need = (uint8_t) (2 + extended + (masked ? 4 : 0));
        self->length = extended ? 0 : len7;
    }
    else
    if (self->have < self->need - ((self->need - 2) & 4)) {
        //  An extended length byte (they come before the masking key;
        //  need - 2 holds 4 exactly when a key follows: 2 + 0/2/8).
        self->length = (self->length << 8) | c;
    }
    self->have++;
    if (self->have >= 2 && self->have == self->need) {
        self->skip = self->length;
        self->have = 0;
        self->need = 0;
    }
    return masked;
}

//  Before the upgrade: finds the end of each request's header and reads
//  what follows it as frames on trial, rewriting nothing.
static void
s_feed_http (frame_guard_t *self, const uint8_t *data, size_t size)
{
    static const char terminator [] = "\r\n\r\n";
    for (size_t i = 0; i < size; i++) {
        uint8_t c = data [i];
        if (self->skip)
            self->skip--;
        else
        if (!s_header_byte (self, c))
            self->unmasked = true;
        if (c == (uint8_t) terminator [self->crlf])
            self->crlf++;
        else
            self->crlf = c == '\r' ? 1 : 0;
        if (self->crlf == 4) {
            //  A request's header ended: whatever follows may be frames.
            self->crlf = 0;
            self->have = 0;
            self->need = 0;
            self->skip = 0;
            self->length = 0;
            self->unmasked = false;
        }
    }
}

int
frame_guard_upgrade (frame_guard_t *self)
{
    assert (self);
    if (self->mode != FRAME_GUARD_HTTP)
        return 0;
    if (self->unmasked) {
        self->mode = FRAME_GUARD_FAILED;
        return -1;
    }
    self->mode = FRAME_GUARD_WS;
    return 0;
}

ssize_t
frame_guard_feed (frame_guard_t *self, uint8_t *data, size_t size)
{
    assert (self);
    assert (data || size == 0);
    if (self->mode == FRAME_GUARD_HTTP) {
        s_feed_http (self, data, size);
        return (ssize_t) size;
    }
    if (self->mode != FRAME_GUARD_WS || size == 0)
        return (ssize_t) size;

    //  Where this frame's byte 0 is in data, if it is.
    size_t b0_at = SIZE_MAX;
    size_t i = 0;
    if (self->held) {
        assert (self->have == 1);
        self->held = false;
        b0_at = 0;
        i = 1;
    }
    while (i < size) {
        if (self->skip) {
            size_t left = size - i;
            size_t step = self->skip < left ? (size_t) self->skip : left;
            self->skip -= step;
            i += step;
            continue;
        }
        if (self->have == 0)
            b0_at = i;
        if (!s_header_byte (self, data [i])) {
            self->mode = FRAME_GUARD_FAILED;
            if (b0_at == SIZE_MAX)
                return -1;
            data [b0_at] = (uint8_t) ((self->b0 & 0x80) | FRAME_GUARD_FAIL_OPCODE);
            return (ssize_t) size;
        }
        i++;
    }
    //  A header's byte 0 ends the read: keep it until byte 1 arrives, so
    //  that it can still be rewritten.
    if (self->have == 1 && b0_at == size - 1) {
        self->held = true;
        return (ssize_t) (size - 1);
    }
    return (ssize_t) size;
}

ssize_t
frame_guard_read (frame_guard_t *self, uint8_t *data, size_t size,
                  frame_guard_reader_fn *reader, void *context)
{
    assert (self);
    assert (reader);
    if (self->mode != FRAME_GUARD_HTTP && self->mode != FRAME_GUARD_WS)
        return reader (context, data, size);
    if (size == 0)
        return 0;
    size_t held = self->held ? 1 : 0;
    if (held && size < 2) {
        //  No room to read byte 1 with it: hand byte 0 over alone (it can
        //  no longer be rewritten; an unmasked frame then ends the stream).
        data [0] = self->b0;
        self->held = false;
        return 1;
    }
    if (held)
        data [0] = self->b0;
    ssize_t got = reader (context, data + held, size - held);
    if (got < 0)
        return got;             //  errno from the read; a held byte stays held
    if (got == 0)
        return 0;               //  end of stream: a lone byte 0 is no frame
    ssize_t give = frame_guard_feed (self, data, (size_t) got + held);
    if (give < 0)
        return 0;               //  unmasked, not rewritable: end the stream
    if (give == 0) {
        errno = EAGAIN;         //  only a withheld byte: nothing to read yet
        return -1;
    }
    return give;
}

void
frame_guards_init (frame_guards_t *self, size_t limit)
{
    assert (self);
    memset (self, 0, sizeof *self);
    self->limit = limit;
}

void
frame_guards_free (frame_guards_t *self)
{
    assert (self);
    free (self->slots);
    self->slots = NULL;
    self->size = 0;
}

int
frame_guards_track (frame_guards_t *self, int fd, frame_guard_mode_t mode)
{
    assert (self);
    if (fd < 0 || (size_t) fd >= self->limit)
        return -1;
    if ((size_t) fd >= self->size) {
        if (mode == FRAME_GUARD_OFF)
            return 0;           //  never followed, nothing to clear
        size_t size = self->size ? self->size : 1024;
        while (size <= (size_t) fd)
            size *= 2;
        if (size > self->limit)
            size = self->limit;
        frame_guard_t *slots = (frame_guard_t *) realloc (self->slots, size * sizeof *slots);
        if (!slots)
            return -1;
        memset (slots + self->size, 0, (size - self->size) * sizeof *slots);
        self->slots = slots;
        self->size = size;
    }
    frame_guard_reset (&self->slots [fd], mode);
    return 0;
}

frame_guard_t *
frame_guards_find (frame_guards_t *self, int fd)
{
    assert (self);
    if (fd < 0 || (size_t) fd >= self->size || self->slots [fd].mode == FRAME_GUARD_OFF)
        return NULL;
    return &self->slots [fd];
}
