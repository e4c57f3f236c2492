/*  jwt_shape.c - the JWT checks that come before the signature.

    Moved out of actors/auth.c unchanged so that they can be fuzzed without
    an actor or libjwt; auth.c documents the rules and calls
    jwt_shape_check first. libjwt 1.10 trusts its own reading of header and
    payload, so every decision that must not depend on that reading is made
    here, on the exact segment text the signature will cover.
*/
#include "jwt_shape.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rtws.h"

//  --------------------------------------------------------------------------
//  Base64url without padding, as JWS uses it.

static int
s_b64url_value (char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

//  Returns the decoded bytes (caller frees), NUL-terminated for convenience,
//  or NULL when src is not base64url. A length of 4n+1 cannot be produced by
//  any encoder.

static unsigned char *
s_b64url_decode (const char *src, size_t len, size_t *out_len)
{
    if (len % 4 == 1)
        return NULL;
    unsigned char *out = (unsigned char *) malloc (len / 4 * 3 + 3);
    assert (out);
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int value = s_b64url_value (src [i]);
        if (value < 0) {
            free (out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t) value;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out [n++] = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    out [n] = 0;
    *out_len = n;
    return out;
}

//  Decodes one segment as a JSON object. Duplicate keys are refused: libjwt
//  keeps the last one, and a token must not mean two things. So is a raw
//  NUL byte: libjwt reads the segment as a C string, cut at the NUL, and
//  jansson 2.14 skips a NUL that follows a number or true/false/null, so
//  "{...,"x":1<NUL>}" would be an object to us and something else to libjwt.

static json_t *
s_segment_object (const char *segment, size_t len)
{
    size_t size;
    unsigned char *text = s_b64url_decode (segment, len, &size);
    if (!text)
        return NULL;
    if (memchr (text, '\0', size)) {
        free (text);
        return NULL;
    }
    json_error_t error;
    json_t *json = json_loadb ((const char *) text, size, JSON_REJECT_DUPLICATES, &error);
    free (text);
    if (json && !json_is_object (json)) {
        json_decref (json);
        json = NULL;
    }
    return json;
}


//  --------------------------------------------------------------------------

const char *
jwt_shape_check (const char *data, size_t size, const char *alg, json_t **payload_p)
{
    assert (alg);
    if (payload_p)
        *payload_p = NULL;
    //  Rule 1: the length, before anything is decoded
    if (size == 0)
        return JWT_SHAPE_EMPTY;
    if (size > RTWS_TOKEN_MAX)
        return JWT_SHAPE_TOO_LONG;

    //  Rule 2: find the two dots; everything else must be base64url
    size_t dot [2];
    size_t dots = 0;
    for (size_t i = 0; i < size; i++) {
        if (data [i] == '.') {
            if (dots == 2)
                return JWT_SHAPE_MALFORMED;
            dot [dots++] = i;
        }
        else
        if (s_b64url_value (data [i]) < 0)
            return JWT_SHAPE_MALFORMED;
    }
    if (dots != 2 || dot [0] == 0 || dot [1] == dot [0] + 1 || dot [1] == size - 1
    ||  (size - dot [1] - 1) % 4 == 1)
        return JWT_SHAPE_MALFORMED;

    //  Rule 3: our own reading of the header
    json_t *header = s_segment_object (data, dot [0]);
    json_t *typ = header? json_object_get (header, "typ"): NULL;
    if (!header || json_object_get (header, "crit")
    ||  (typ && !(json_is_string (typ) && strcasecmp (json_string_value (typ), "JWT") == 0))
    ||  !json_is_string (json_object_get (header, "alg"))) {
        json_decref (header);
        return JWT_SHAPE_BAD_HEADER;
    }
    bool alg_ok = strcmp (json_string_value (json_object_get (header, "alg")), alg) == 0;
    json_decref (header);
    if (!alg_ok)
        return JWT_SHAPE_ALG_MISMATCH;

    //  Rule 4: our own reading of the payload, which the signature
    //  (checked after us) authenticates
    json_t *payload = s_segment_object (data + dot [0] + 1, dot [1] - dot [0] - 1);
    if (!payload)
        return JWT_SHAPE_BAD_PAYLOAD;
    if (payload_p)
        *payload_p = payload;
    else
        json_decref (payload);
    return NULL;
}
