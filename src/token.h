/*  token.h - finding the JWT in a handshake (docs/PROTOCOL.md section 2).

    The first present of: query parameter "token", cookie "access_token",
    header "Authorization: Bearer <jwt>". These functions read one source
    each from text the gateway copied out of the request; they are pure and
    bounded, so they can be table-tested and fuzzed without a socket.

    Each returns 1 and copies the token (NUL-terminated) into token when the
    source holds a non-empty one, 0 when it holds none (the next source is
    tried), and -1 when it holds one of size bytes or more (too large: the
    handshake is refused without parsing it).
*/
#ifndef RTWS_TOKEN_H_INCLUDED
#define RTWS_TOKEN_H_INCLUDED

#include <stddef.h>

//  arg is one url-decoded query argument, "name=value".
int token_from_query_arg (const char *arg, char *token, size_t size);

//  cookies is the Cookie header: "a=b; access_token=...; c=d".
int token_from_cookie (const char *cookies, char *token, size_t size);

//  header is the Authorization header: "Bearer <jwt>" (scheme in any case).
int token_from_authorization (const char *header, char *token, size_t size);

#endif
