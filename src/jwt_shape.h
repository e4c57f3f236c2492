/*  jwt_shape.h - what auth checks in a JWT before libjwt sees it.

    Rules 1 to 4 at the top of actors/auth.c: the length, the shape (three
    non-empty base64url segments, no padding), the header read with jansson
    (an object without duplicate keys, without "crit", "typ" JWT in any case
    when present, "alg" exactly the configured algorithm) and the payload
    read the same way (an object without duplicate keys).

    Pure: no libjwt (only auth includes jwt.h), no state, bounded by
    RTWS_TOKEN_MAX, safe from any thread. It takes bytes straight from a
    VERIFY frame, so it is fuzzed on its own (tests/fuzz/fuzz_jwt_shape.c).
*/
#ifndef RTWS_JWT_SHAPE_H_INCLUDED
#define RTWS_JWT_SHAPE_H_INCLUDED

#include <jansson.h>
#include <stddef.h>

//  The reasons jwt_shape_check gives, in the order it checks; auth sends
//  them as FAIL reasons.
#define JWT_SHAPE_EMPTY         "empty token"
#define JWT_SHAPE_TOO_LONG      "token too long"
#define JWT_SHAPE_MALFORMED     "malformed token"
#define JWT_SHAPE_BAD_HEADER    "bad header"
#define JWT_SHAPE_ALG_MISMATCH  "alg mismatch"
#define JWT_SHAPE_BAD_PAYLOAD   "bad payload"

//  Checks token [0 .. len) (not NUL-terminated; any bytes) against rules 1
//  to 4 for the algorithm alg (e.g. "HS256"). Returns NULL when it passes,
//  and then, when payload is not NULL, sets *payload to the decoded payload
//  object (the caller owns that reference). Otherwise returns one of the
//  JWT_SHAPE_* reasons (a static string) and sets *payload to NULL. A token
//  that passes holds no NUL byte and at most RTWS_TOKEN_MAX bytes.
const char *jwt_shape_check (const char *token, size_t len, const char *alg,
                             json_t **payload);

#endif
