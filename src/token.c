/*  token.c - finding the JWT in the query, a cookie or Authorization.

    Decisions where the contract is silent: an empty value counts as absent
    (the next source is tried); a cookie value ends at the first space or
    tab; only the first access_token cookie counts; "Bearer" is matched in
    any case and may be followed by several spaces.
*/
#include "token.h"

#include <string.h>
#include <strings.h>

//  Copies value[0..len) into token. Returns 1, 0 when empty, -1 when too big.
static int
s_copy (const char *value, size_t len, char *token, size_t size)
{
    if (len == 0)
        return 0;
    if (len >= size)
        return -1;
    memcpy (token, value, len);
    token [len] = 0;
    return 1;
}

int
token_from_query_arg (const char *arg, char *token, size_t size)
{
    if (strncmp (arg, "token=", 6) != 0)
        return 0;
    return s_copy (arg + 6, strlen (arg + 6), token, size);
}

int
token_from_cookie (const char *cookies, char *token, size_t size)
{
    const char *p = cookies;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        size_t pair = strcspn (p, ";");
        if (pair >= 13 && strncmp (p, "access_token=", 13) == 0) {
            const char *value = p + 13;
            size_t vlen = strcspn (value, "; \t");
            return s_copy (value, vlen, token, size);
        }
        p += pair;
    }
    return 0;
}

int
token_from_authorization (const char *header, char *token, size_t size)
{
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp (header, "Bearer ", 7) != 0)
        return 0;
    const char *value = header + 7;
    while (*value == ' ' || *value == '\t')
        value++;
    return s_copy (value, strcspn (value, " \t"), token, size);
}
