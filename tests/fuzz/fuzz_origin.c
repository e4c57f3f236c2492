/*  fuzz_origin.c - libFuzzer target for src/origin.c.

    The input is one Origin header value (or ALLOWED_ORIGINS entry), up to
    its first NUL as the gateway would copy it. Properties checked, all of
    which the allow-list's plain string compare depends on:

    - a result is "scheme://host[:port]" in lower case, printable ASCII,
      with a port only when it is 1..65535 and not the scheme's default;
    - normalising is idempotent: a result normalises to itself;
    - case does not matter: the input in lower case gives the same answer;
    - anything over 1024 bytes, "null" or holding a control character, a
      space or a non-ASCII byte is refused.
*/
#include "origin.h"
#include "fuzz_util.h"

static void
s_check_result (const char *input, const char *out)
{
    size_t len = strlen (out);
    FUZZ_CHECK (len <= strlen (input) + 64, "'%s' grew to '%s'", input, out);
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK (out [i] > 0x20 && out [i] < 0x7f && !(out [i] >= 'A' && out [i] <= 'Z'),
                    "'%s' holds byte 0x%02x", out, (unsigned char) out [i]);
    const char *sep = strstr (out, "://");
    FUZZ_CHECK (sep && sep > out, "'%s' has no scheme", out);
    const char *host = sep + 3;
    const char *port = NULL;
    if (*host == '[') {
        const char *close = strchr (host, ']');
        FUZZ_CHECK (close && close > host + 1, "'%s': bad IPv6 literal", out);
        if (close [1])
            port = close + 1;
    }
    else
        port = strchr (host, ':');
    FUZZ_CHECK (!strchr (host, '/') && !strchr (host, '@') && !strchr (host, '?')
             && !strchr (host, '#'), "'%s' holds a path, query or userinfo", out);
    if (port) {
        FUZZ_CHECK (*port == ':' && port [1] >= '1' && port [1] <= '9',
                    "'%s': port without ':' or with a leading zero", out);
        char *end;
        long number = strtol (port + 1, &end, 10);
        FUZZ_CHECK (*end == '\0' && number >= 1 && number <= 65535, "'%s': port", out);
        long fallback = (size_t) (sep - out) == 5 && strncmp (out, "https", 5) == 0 ? 443 : 80;
        FUZZ_CHECK (number != fallback, "'%s' keeps its default port", out);
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *input = fuzz_cstr (data, size);
    size_t len = strlen (input);
    char *out = origin_normalise (input);

    bool must_refuse = len == 0 || len > 1024 || strcmp (input, "null") == 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) input [i] <= 0x20 || (unsigned char) input [i] >= 0x7f)
            must_refuse = true;
    FUZZ_CHECK (!(must_refuse && out), "'%s' accepted as '%s'", input, out);

    if (out) {
        s_check_result (input, out);
        char *again = origin_normalise (out);
        FUZZ_CHECK (again && strcmp (again, out) == 0, "not idempotent: '%s' -> '%s' -> '%s'",
                    input, out, again ? again : "NULL");
        free (again);
    }

    char *lower = fuzz_cstr ((const uint8_t *) input, len);
    for (size_t i = 0; i < len; i++)
        if (lower [i] >= 'A' && lower [i] <= 'Z')
            lower [i] = (char) (lower [i] - 'A' + 'a');
    char *folded = origin_normalise (lower);
    FUZZ_CHECK ((!out && !folded) || (out && folded && strcmp (out, folded) == 0),
                "case matters: '%s' -> '%s', '%s' -> '%s'", input, out ? out : "NULL",
                lower, folded ? folded : "NULL");
    free (folded);
    free (lower);
    free (out);
    free (input);
    return 0;
}
