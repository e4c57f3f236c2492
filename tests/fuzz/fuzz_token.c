/*  fuzz_token.c - libFuzzer target for src/token.c.

    The input is one header or query argument text, up to its first NUL (the
    gateway copies them as C strings). Each input goes through all three
    finders (query argument, Cookie, Authorization), each twice: with a
    buffer of RTWS_TOKEN_MAX + 1 bytes, as the gateway calls them, and with
    a small one sized from the input. Every buffer is allocated at exactly
    its size, so AddressSanitizer sees one byte written past it.

    Properties checked:
    - rc is 1, 0 or -1; with 1 the token is non-empty, NUL-terminated,
      shorter than the buffer, and is the value the source holds: the text
      after "token=", a cookie value (no ';', space or tab) that follows
      "access_token=" in the header, a Bearer credential (no space or tab);
    - the two buffer sizes agree: the same token when it fits both, -1 for
      the small one exactly when it does not fit, 0 for both when absent;
    - with 0 or -1 the buffer is not written past its first byte.
*/
#include <strings.h>

#include "token.h"
#include "fuzz_util.h"

//  The gateway's buffer: the largest token auth will look at, plus NUL.
#define BIG_SIZE (8192 + 1)

typedef int (*finder_t) (const char *, char *, size_t);

static int
s_find (finder_t find, const char *input, size_t size, char **token_p)
{
    char *token = (char *) malloc (size ? size : 1);
    if (!token)
        abort ();
    memset (token, 'X', size ? size : 1);
    int rc = find (input, token, size);
    FUZZ_CHECK (rc == 1 || rc == 0 || rc == -1, "rc %d", rc);
    if (rc == 1) {
        size_t len = strnlen (token, size);
        FUZZ_CHECK (len > 0 && len < size, "token of %zu bytes in a buffer of %zu", len, size);
    }
    else
        //  Nothing was copied: the second byte is still ours
        FUZZ_CHECK (size < 2 || token [1] == 'X', "rc %d but the buffer was written", rc);
    *token_p = token;
    return rc;
}

static void
s_check_value (const char *source, const char *input, const char *token)
{
    if (strcmp (source, "query") == 0)
        FUZZ_CHECK (strncmp (input, "token=", 6) == 0 && strcmp (input + 6, token) == 0,
                    "query token '%s' is not the value of '%s'", token, input);
    else
    if (strcmp (source, "cookie") == 0) {
        FUZZ_CHECK (strcspn (token, "; \t") == strlen (token), "cookie token '%s'", token);
        //  "access_token=<token>" must stand in the header, at the start of a
        //  cookie pair, and be followed by the end of that value
        size_t tlen = strlen (token);
        bool found = false;
        for (const char *at = strstr (input, "access_token="); at && !found;
             at = strstr (at + 1, "access_token=")) {
            bool starts = at == input || at [-1] == ';' || at [-1] == ' ' || at [-1] == '\t';
            const char *value = at + 13;
            found = starts && strncmp (value, token, tlen) == 0
                 && (value [tlen] == '\0' || strchr ("; \t", value [tlen]));
        }
        FUZZ_CHECK (found, "cookie token '%s' not found as a value in '%s'", token, input);
    }
    else {
        FUZZ_CHECK (strcspn (token, " \t") == strlen (token), "bearer token '%s'", token);
        const char *p = input + strspn (input, " \t");
        FUZZ_CHECK (strncasecmp (p, "Bearer ", 7) == 0, "no Bearer scheme in '%s'", input);
        p += 7;
        p += strspn (p, " \t");
        FUZZ_CHECK (strncmp (p, token, strlen (token)) == 0, "bearer token '%s' in '%s'",
                    token, input);
    }
}

static void
s_check (const char *source, finder_t find, const char *input, size_t small)
{
    char *big_token, *small_token;
    int big = s_find (find, input, BIG_SIZE, &big_token);
    int little = s_find (find, input, small, &small_token);
    if (big == 1) {
        s_check_value (source, input, big_token);
        size_t len = strlen (big_token);
        if (len < small)
            FUZZ_CHECK (little == 1 && strcmp (big_token, small_token) == 0,
                        "%s: token '%s' fits %zu bytes but gave rc %d", source, big_token,
                        small, little);
        else
            FUZZ_CHECK (little == -1, "%s: token of %zu bytes in %zu: rc %d", source, len,
                        small, little);
    }
    else
    if (big == 0)
        FUZZ_CHECK (little == 0, "%s: absent with %d bytes, rc %d with %zu", source,
                    BIG_SIZE, little, small);
    else
        //  Only an input longer than the big buffer can hold such a token
        FUZZ_CHECK (little == -1 && strlen (input) >= BIG_SIZE, "%s: rc -1 for %zu bytes",
                    source, strlen (input));
    free (big_token);
    free (small_token);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *input = fuzz_cstr (data, size);
    //  0 .. 63 bytes: both "fits" and "too large" happen for short inputs
    size_t small = fuzz_hash (data, size) % 64;
    s_check ("query", token_from_query_arg, input, small);
    s_check ("cookie", token_from_cookie, input, small);
    s_check ("auth", token_from_authorization, input, small);
    free (input);
    return 0;
}
