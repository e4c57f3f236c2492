/*  origin.c - Origin normalisation (docs/PROTOCOL.md section 2, item 2).

    The same function normalises the browser's Origin header and every
    ALLOWED_ORIGINS entry, so an allow-list check is a plain string compare.
    Anything we cannot read with certainty is rejected: a lenient parser
    here would be a way round the allow-list.

    Decisions where the contract is silent:
    - A single trailing "/" is tolerated and dropped. Browsers never send
      one, but people write "https://example.com/" in ALLOWED_ORIGINS and
      expect it to mean the origin. Anything after that "/" is a path and
      rejected.
    - Host characters are the RFC 3986 unreserved set (letters, digits,
      "-", ".", "_", "~"). Browsers serialise internationalised hosts as
      punycode, so non-ASCII bytes, "%" escapes and sub-delimiters are
      refused rather than guessed at.
    - IPv6 literals in brackets are checked with inet_pton and rewritten in
      inet_ntop's canonical form, so "[0:0::1]" and "[::1]" compare equal.
    - The port is read as a number and written without leading zeros
      ("http://a:080" is "http://a"); the default port is dropped exactly as
      the contract says: 443 for https, 80 for every other scheme (so
      wss:443 keeps its port and ws:80 loses it).
*/
#include "origin.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  The contract's bound on the whole text; also bounds every piece below.
#define ORIGIN_MAX 1024

static bool
s_is_alpha (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
s_is_digit (char c)
{
    return c >= '0' && c <= '9';
}

static char
s_lower (char c)
{
    return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
}

static bool
s_is_host_char (char c)
{
    return s_is_alpha (c) || s_is_digit (c) || c == '-' || c == '.' || c == '_' || c == '~';
}

//  Parses the port digits in [start, end); returns 1..65535, or -1 when the
//  text is empty, not all digits, zero or out of range.
static long
s_parse_port (const char *start, const char *end)
{
    if (start == end)
        return -1;
    long port = 0;
    for (const char *p = start; p < end; p++) {
        if (!s_is_digit (*p))
            return -1;
        port = port * 10 + (*p - '0');
        if (port > 65535)
            return -1;          //  checked per digit, so no overflow
    }
    return port > 0 ? port : -1;
}

char *
origin_normalise (const char *origin)
{
    if (!origin)
        return NULL;
    size_t len = strnlen (origin, ORIGIN_MAX + 1);
    if (len == 0 || len > ORIGIN_MAX)
        return NULL;
    //  "null" is what browsers send for opaque origins (sandboxed frames,
    //  file: pages); it names no site, so it can never be allowed.
    if (strcmp (origin, "null") == 0)
        return NULL;

    //  Whitespace, control characters and anything outside ASCII are never
    //  part of a serialised origin; refusing them up front means the
    //  pieces below only ever see printable ASCII.
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) origin [i];
        if (c <= 0x20 || c >= 0x7f)
            return NULL;
    }
    const char *end = origin + len;

    //  Scheme: [A-Za-z][A-Za-z0-9+.-]* followed by "://"
    const char *sep = strstr (origin, "://");
    if (!sep || sep == origin || !s_is_alpha (origin [0]))
        return NULL;
    for (const char *p = origin; p < sep; p++)
        if (!(s_is_alpha (*p) || s_is_digit (*p) || *p == '+' || *p == '-' || *p == '.'))
            return NULL;
    size_t scheme_len = (size_t) (sep - origin);

    //  Authority runs to the end, or to a single trailing "/" which we drop.
    const char *auth = sep + 3;
    const char *auth_end = end;
    if (auth_end > auth && auth_end [-1] == '/')
        auth_end--;
    if (auth == auth_end)
        return NULL;            //  empty host

    char host [ORIGIN_MAX + 1];
    const char *port_start = NULL;
    if (*auth == '[') {
        //  IPv6 literal: everything up to "]" must be an address inet_pton
        //  accepts (no zone ids: a browser never sends one).
        const char *close = memchr (auth, ']', (size_t) (auth_end - auth));
        if (!close || close == auth + 1)
            return NULL;
        size_t addr_len = (size_t) (close - auth - 1);
        if (addr_len >= INET6_ADDRSTRLEN)
            return NULL;
        char addr_text [INET6_ADDRSTRLEN];
        memcpy (addr_text, auth + 1, addr_len);
        addr_text [addr_len] = '\0';
        struct in6_addr addr;
        if (inet_pton (AF_INET6, addr_text, &addr) != 1)
            return NULL;
        char canon [INET6_ADDRSTRLEN];
        if (!inet_ntop (AF_INET6, &addr, canon, sizeof canon))
            return NULL;
        snprintf (host, sizeof host, "[%s]", canon);
        if (close + 1 < auth_end) {
            if (close [1] != ':')
                return NULL;    //  junk after the literal
            port_start = close + 2;
        }
    }
    else {
        const char *p = auth;
        size_t n = 0;
        while (p < auth_end && *p != ':') {
            //  "/", "?", "#" and "@" all land here: path, query, fragment
            //  and userinfo are refused by the same character check.
            if (!s_is_host_char (*p))
                return NULL;
            host [n++] = s_lower (*p++);
        }
        if (n == 0)
            return NULL;
        host [n] = '\0';
        if (p < auth_end)
            port_start = p + 1;
    }

    long port = -1;
    if (port_start) {
        port = s_parse_port (port_start, auth_end);
        if (port < 0)
            return NULL;
    }

    char scheme [ORIGIN_MAX + 1];
    for (size_t i = 0; i < scheme_len; i++)
        scheme [i] = s_lower (origin [i]);
    scheme [scheme_len] = '\0';

    long default_port = strcmp (scheme, "https") == 0 ? 443 : 80;
    if (port == default_port)
        port = -1;

    //  Output is never longer than the input plus the IPv6 canonical form,
    //  which inet_ntop bounds; size for the worst case.
    size_t size = scheme_len + 3 + strlen (host) + 7;
    char *result = malloc (size);
    if (!result)
        return NULL;
    if (port > 0)
        snprintf (result, size, "%s://%s:%ld", scheme, host, port);
    else
        snprintf (result, size, "%s://%s", scheme, host);
    return result;
}
