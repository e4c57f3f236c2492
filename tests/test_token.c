//  Table test of src/token.c: where the handshake finds its JWT.
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "token.h"

typedef int (*finder_t) (const char *, char *, size_t);

typedef struct {
    const char *source;         //  "query", "cookie" or "auth"
    const char *input;
    size_t size;                //  token buffer size
    int rc;                     //  1 found, 0 absent, -1 too large
    const char *token;          //  expected when rc == 1
} row_t;

static const row_t s_rows [] = {
    //  Query argument, one url-decoded "name=value"
    { "query", "token=abc.def.ghi", 64, 1, "abc.def.ghi" },
    { "query", "token=", 64, 0, NULL },                     //  empty = absent
    { "query", "tokens=abc", 64, 0, NULL },
    { "query", "xtoken=abc", 64, 0, NULL },
    { "query", "Token=abc", 64, 0, NULL },                  //  names are case-sensitive
    { "query", "token", 64, 0, NULL },
    { "query", "token=0123456789", 10, -1, NULL },          //  10 bytes do not fit 10
    { "query", "token=012345678", 10, 1, "012345678" },     //  9 bytes + NUL fit
    //  Cookie header
    { "cookie", "access_token=abc", 64, 1, "abc" },
    { "cookie", "a=1; access_token=abc; b=2", 64, 1, "abc" },
    { "cookie", "a=1;access_token=abc", 64, 1, "abc" },
    { "cookie", "  access_token=abc  ", 64, 1, "abc" },
    { "cookie", "my_access_token=abc", 64, 0, NULL },
    { "cookie", "access_token=; b=2", 64, 0, NULL },
    { "cookie", "a=access_token=abc", 64, 0, NULL },
    { "cookie", "access_token=first; access_token=second", 64, 1, "first" },
    { "cookie", "", 64, 0, NULL },
    { "cookie", ";;;", 64, 0, NULL },
    { "cookie", "access_token=0123456789", 10, -1, NULL },
    //  Authorization header
    { "auth", "Bearer abc", 64, 1, "abc" },
    { "auth", "bearer abc", 64, 1, "abc" },
    { "auth", "BEARER   abc  ", 64, 1, "abc" },
    { "auth", "  Bearer abc", 64, 1, "abc" },
    { "auth", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", 64, 0, NULL },
    { "auth", "Bearer", 64, 0, NULL },
    { "auth", "Bearer ", 64, 0, NULL },
    { "auth", "Bearerabc", 64, 0, NULL },
    { "auth", "Bearer 0123456789", 10, -1, NULL },
};

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1;
    size_t count = sizeof s_rows / sizeof s_rows [0];
    int failed = 0;
    for (size_t i = 0; i < count; i++) {
        const row_t *row = &s_rows [i];
        finder_t find =
            strcmp (row->source, "query") == 0 ? token_from_query_arg
          : strcmp (row->source, "cookie") == 0 ? token_from_cookie
          : token_from_authorization;
        char token [64];
        memset (token, 'X', sizeof token);
        int rc = find (row->input, token, row->size);
        bool ok = rc == row->rc && (rc != 1 || strcmp (token, row->token) == 0);
        if (!ok) {
            printf ("FAIL %s \"%s\" (size %zu): rc %d, want %d%s%s\n", row->source, row->input,
                    row->size, rc, row->rc, rc == 1 ? ", token " : "", rc == 1 ? token : "");
            failed++;
        }
        else
        if (verbose)
            printf ("ok   %s \"%s\"\n", row->source, row->input);
    }
    printf ("test_token: %zu rows, %d failed\n", count, failed);
    return failed ? 1 : 0;
}
