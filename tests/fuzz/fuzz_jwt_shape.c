/*  fuzz_jwt_shape.c - libFuzzer target for src/jwt_shape.c, the checks auth
    makes before libjwt sees a token (rules 1 to 4 in actors/auth.c).

    The input is the VERIFY frame's token bytes, any bytes (seeds: real
    tokens in tests/fuzz/corpus/jwt_shape). Each input is checked for three
    configured algorithms. Properties:

    - the reason is NULL or one of the six documented ones, and *payload is
      set exactly when the reason is NULL;
    - the algorithm only decides "alg mismatch": for two algorithms the
      verdicts are equal, or one is "alg mismatch";
    - a token that passes has at most RTWS_TOKEN_MAX bytes, no NUL, exactly
      two dots and three non-empty base64url segments, which is what libjwt
      is then handed as a C string; its header and payload decode (by a
      decoder written here) to text without a NUL byte, so libjwt, which
      reads them as C strings, reads exactly what was checked;
    - the payload object is the same whether or not the caller asks for it
      (no reference leaks either way: LeakSanitizer runs at exit).
*/
#include "jwt_shape.h"
#include "rtws.h"
#include "fuzz_util.h"

static const char *s_algs [] = { "HS256", "RS256", "ES512" };

static bool
s_known (const char *reason)
{
    return !reason
        || strcmp (reason, JWT_SHAPE_EMPTY) == 0 || strcmp (reason, JWT_SHAPE_TOO_LONG) == 0
        || strcmp (reason, JWT_SHAPE_MALFORMED) == 0 || strcmp (reason, JWT_SHAPE_BAD_HEADER) == 0
        || strcmp (reason, JWT_SHAPE_ALG_MISMATCH) == 0
        || strcmp (reason, JWT_SHAPE_BAD_PAYLOAD) == 0;
}

//  Base64url without padding, decoded independently of src/jwt_shape.c.
//  Returns the decoded length; out holds at least len * 3 / 4 + 1 bytes.
static size_t
s_decode (const char *text, size_t len, unsigned char *out)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        const char *at = memchr (alphabet, text [i], 64);
        FUZZ_CHECK (at, "not base64url");
        acc = (acc << 6) | (uint32_t) (at - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out [n++] = (unsigned char) (acc >> bits);
        }
    }
    return n;
}

static void
s_check_segment (const char *what, const char *text, size_t len)
{
    unsigned char *decoded = (unsigned char *) malloc (len * 3 / 4 + 1);
    if (!decoded)
        abort ();
    size_t n = s_decode (text, len, decoded);
    FUZZ_CHECK (!memchr (decoded, 0, n), "the %s holds a NUL byte: libjwt reads less", what);
    free (decoded);
}

static void
s_check_passed (const char *token, size_t size)
{
    FUZZ_CHECK (size > 0 && size <= RTWS_TOKEN_MAX, "passed with %zu bytes", size);
    FUZZ_CHECK (!memchr (token, 0, size), "passed with a NUL byte");
    size_t dots = 0, segment = 0;
    for (size_t i = 0; i < size; i++) {
        char c = token [i];
        if (c == '.') {
            FUZZ_CHECK (segment > 0, "empty segment before byte %zu", i);
            dots++;
            segment = 0;
        }
        else {
            FUZZ_CHECK ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                     || (c >= '0' && c <= '9') || c == '-' || c == '_',
                        "byte 0x%02x is not base64url", (unsigned char) c);
            segment++;
        }
    }
    FUZZ_CHECK (dots == 2 && segment > 0, "%zu dots, last segment %zu bytes", dots, segment);
    const char *first = memchr (token, '.', size);
    const char *second = memchr (first + 1, '.', size - (size_t) (first + 1 - token));
    s_check_segment ("header", token, (size_t) (first - token));
    s_check_segment ("payload", first + 1, (size_t) (second - first - 1));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    //  An exact-size copy: a read past the token is an ASan report
    char *token = (char *) malloc (size ? size : 1);
    if (!token)
        abort ();
    if (size)
        memcpy (token, data, size);

    const char *reasons [3];
    for (size_t a = 0; a < 3; a++) {
        json_t *payload = (json_t *) 1;
        const char *reason = jwt_shape_check (token, size, s_algs [a], &payload);
        reasons [a] = reason;
        FUZZ_CHECK (s_known (reason), "unknown reason '%s'", reason);
        FUZZ_CHECK ((reason == NULL) == (payload != NULL), "reason %s with payload %p",
                    reason ? reason : "NULL", (void *) payload);
        const char *again = jwt_shape_check (token, size, s_algs [a], NULL);
        FUZZ_CHECK (again == reason, "verdict depends on asking for the payload");
        if (!reason) {
            FUZZ_CHECK (json_is_object (payload), "payload is not an object");
            s_check_passed (token, size);
            json_decref (payload);
        }
    }
    for (size_t a = 0; a < 3; a++)
        for (size_t b = a + 1; b < 3; b++)
            FUZZ_CHECK (reasons [a] == reasons [b]
                     || reasons [a] == NULL || reasons [b] == NULL
                     || strcmp (reasons [a], JWT_SHAPE_ALG_MISMATCH) == 0
                     || strcmp (reasons [b], JWT_SHAPE_ALG_MISMATCH) == 0,
                        "%s says '%s', %s says '%s'", s_algs [a], reasons [a] ? reasons [a] : "ok",
                        s_algs [b], reasons [b] ? reasons [b] : "ok");
    //  Two algorithms cannot both pass one token
    for (size_t a = 0; a < 3; a++)
        for (size_t b = a + 1; b < 3; b++)
            FUZZ_CHECK (reasons [a] || reasons [b], "%s and %s both pass", s_algs [a], s_algs [b]);
    free (token);
    return 0;
}
