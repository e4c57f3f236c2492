/*  fuzz_util.h - what the libFuzzer targets in tests/fuzz share.

    Each target checks properties the module promises (docs/PROTOCOL.md and
    the module's header), not only that it does not crash: a property that
    fails calls FUZZ_CHECK, which prints what broke and aborts, so libFuzzer
    keeps the input as a crash. Header-only: each target is one program.
*/
#ifndef RTWS_FUZZ_UTIL_H_INCLUDED
#define RTWS_FUZZ_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...) do { \
    if (!(cond)) { \
        fprintf (stderr, "%s:%d: property broken: %s: ", __FILE__, __LINE__, #cond); \
        fprintf (stderr, __VA_ARGS__); \
        fprintf (stderr, "\n"); \
        abort (); \
    } \
} while (0)

//  A NUL-terminated copy of data [0 .. size), exactly size + 1 bytes, so
//  that AddressSanitizer sees any read past the terminator.
static inline char *
fuzz_cstr (const uint8_t *data, size_t size)
{
    char *text = (char *) malloc (size + 1);
    if (!text)
        abort ();
    if (size)
        memcpy (text, data, size);
    text [size] = '\0';
    return text;
}

//  Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
//  U+10FFFF. Written here, independently of jansson, as the oracle for
//  "a string that is not valid UTF-8".
static inline bool
fuzz_utf8_valid (const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *) text;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s [i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        else
        if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
            cp = c & 0x1f;
        }
        else
        if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            cp = c & 0x0f;
        }
        else
        if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            cp = c & 0x07;
        }
        else
            return false;
        if (len - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((s [i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s [i + k] & 0x3f);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000)
        ||  cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

//  FNV-1a: a cheap, stable way to derive numbers (timestamps, sizes) from
//  the input so that every input means exactly one test.
static inline uint64_t
fuzz_hash (const uint8_t *data, size_t size)
{
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < size; i++) {
        hash ^= data [i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

#endif
