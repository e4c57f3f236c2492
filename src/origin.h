/*  origin.h - Origin normalisation (docs/PROTOCOL.md section 2).

    "scheme://host[:port]" with scheme and host lower-cased and the port
    dropped when it is the scheme's default (443 for https, 80 otherwise).
    Pure functions, no state, safe from any thread.
*/
#ifndef RTWS_ORIGIN_H_INCLUDED
#define RTWS_ORIGIN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Returns the normalised origin (caller frees), or NULL when the text is
//  not a usable origin: "null", missing scheme or host, bad port, a path,
//  query, fragment or userinfo, control characters, or longer than 1024.
char *origin_normalise (const char *origin);

#endif
