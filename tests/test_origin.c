/*  test_origin.c - origin_normalise, one row per case.

    Each row is an Origin text and what origin_normalise must return for it
    (NULL = refused). The rows follow docs/PROTOCOL.md section 2 item 2 and
    the decisions written at the top of src/origin.c.
*/
#include "origin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *input;
    const char *expected;       //  NULL: must be refused
    const char *why;            //  the behaviour this row protects
} row_t;

static const row_t s_rows [] = {
    //  accepted as they are
    { "https://example.com", "https://example.com", "plain https origin" },
    { "http://localhost:8080", "http://localhost:8080", "non-default port kept" },
    { "http://127.0.0.1:3000", "http://127.0.0.1:3000", "IPv4 host" },
    { "chrome-extension://abcdef", "chrome-extension://abcdef", "scheme with '-'" },
    { "git+ssh.x://host", "git+ssh.x://host", "scheme with '+' and '.'" },
    { "http://a_b~c.example", "http://a_b~c.example", "unreserved host characters" },

    //  case folding
    { "HTTPS://EXAMPLE.COM", "https://example.com", "scheme and host lower-cased" },
    { "Http://Example.Com:8443", "http://example.com:8443", "mixed case folded, port kept" },

    //  default ports: 443 only for https, 80 for every other scheme
    { "https://example.com:443", "https://example.com", "https drops 443" },
    { "http://example.com:80", "http://example.com", "http drops 80" },
    { "https://example.com:80", "https://example.com:80", "https keeps 80" },
    { "http://example.com:443", "http://example.com:443", "http keeps 443" },
    { "wss://example.com:443", "wss://example.com:443", "wss keeps 443 (only https drops it)" },
    { "ws://example.com:80", "ws://example.com", "ws drops 80 (80 for everything else)" },
    { "ftp://example.com:80", "ftp://example.com", "any other scheme drops 80" },
    { "http://example.com:080", "http://example.com", "leading zeros read as decimal 80" },
    { "http://example.com:08080", "http://example.com:8080", "leading zeros dropped" },
    { "http://example.com:65535", "http://example.com:65535", "highest port" },
    { "http://example.com:1", "http://example.com:1", "lowest port" },

    //  IPv6 literals
    { "http://[::1]:8080", "http://[::1]:8080", "IPv6 loopback with port" },
    { "http://[::1]", "http://[::1]", "IPv6 without port" },
    { "https://[::1]:443", "https://[::1]", "IPv6 default port dropped" },
    { "http://[2001:DB8::A]", "http://[2001:db8::a]", "IPv6 hex lower-cased" },
    { "http://[0:0:0:0:0:0:0:1]", "http://[::1]", "IPv6 canonical form" },
    { "http://[::ffff:1.2.3.4]", "http://[::ffff:1.2.3.4]", "IPv4-mapped IPv6" },
    { "http://[::1", NULL, "IPv6 without ']'" },
    { "http://[]", NULL, "empty IPv6 literal" },
    { "http://[::g]", NULL, "IPv6 with a non-hex digit" },
    { "http://[::1]x", NULL, "junk after IPv6 literal" },
    { "http://[::1]:", NULL, "IPv6 with empty port" },
    { "http://[fe80::1%25eth0]", NULL, "IPv6 zone id" },
    { "http://::1", NULL, "unbracketed IPv6" },
    { "http://[0000:0000:0000:0000:0000:0000:0000:0000:0000:1]", NULL,
      "bracketed text longer than any IPv6 address" },

    //  a single trailing slash is tolerated and dropped
    { "https://example.com/", "https://example.com", "one trailing slash dropped" },
    { "https://example.com:8443/", "https://example.com:8443", "trailing slash after port" },
    { "http://[::1]/", "http://[::1]", "trailing slash after IPv6" },
    { "https://example.com//", NULL, "two trailing slashes are a path" },
    { "https://example.com/path", NULL, "path" },
    { "https://example.com:8443/path", NULL, "path after port" },

    //  "null" and missing pieces
    { "null", NULL, "opaque origin" },
    { "", NULL, "empty" },
    { "example.com", NULL, "no scheme" },
    { "https:example.com", NULL, "no '//'" },
    { "https:/example.com", NULL, "one slash" },
    { "://example.com", NULL, "empty scheme" },
    { "https://", NULL, "empty host" },
    { "https:///", NULL, "empty host with slash" },
    { "https://:443", NULL, "port without host" },
    { "1http://example.com", NULL, "scheme starting with a digit" },
    { "ht_tp://example.com", NULL, "'_' in scheme" },
    { "-http://example.com", NULL, "scheme starting with '-'" },

    //  bad ports
    { "http://example.com:", NULL, "empty port" },
    { "http://example.com:0", NULL, "port 0" },
    { "http://example.com:65536", NULL, "port above 65535" },
    { "http://example.com:99999999999999999999", NULL, "port overflowing a long" },
    { "http://example.com:8o", NULL, "non-numeric port" },
    { "http://example.com:-80", NULL, "negative port" },
    { "http://example.com:+80", NULL, "signed port" },
    { "http://example.com:80:80", NULL, "two ports" },

    //  query, fragment, userinfo, odd characters
    { "https://example.com?x=1", NULL, "query" },
    { "https://example.com/?x=1", NULL, "query after slash" },
    { "https://example.com#top", NULL, "fragment" },
    { "https://user@example.com", NULL, "userinfo" },
    { "https://user:pw@example.com", NULL, "userinfo with password" },
    { "https://example.com@evil.com", NULL, "userinfo trick" },
    { "https://exa%6Dple.com", NULL, "percent escape" },
    { "https://exa mple.com", NULL, "space in host" },
    { " https://example.com", NULL, "leading space" },
    { "https://example.com ", NULL, "trailing space" },
    { "https://example.com\t", NULL, "tab" },
    { "https://example.com\r\n", NULL, "CRLF (header injection)" },
    { "https://exa\x01mple.com", NULL, "control character" },
    { "https://ex\x7f" "ample.com", NULL, "DEL" },
    { "https://b\xc3\xbc" "cher.de", NULL, "non-ASCII host (browsers send punycode)" },
    { "https://xn--bcher-kva.de", "https://xn--bcher-kva.de", "punycode host" },
    { "https://exa,mple.com", NULL, "comma in host" },
    { "https://example.com\\", NULL, "backslash" },
};

#define ROWS (sizeof s_rows / sizeof s_rows [0])

//  Builds "scheme://" + host of n 'a's so that the whole text is len bytes.
static char *
s_long_origin (size_t len)
{
    const char *prefix = "http://";
    char *text = malloc (len + 1);
    if (!text)
        abort ();
    memcpy (text, prefix, strlen (prefix));
    memset (text + strlen (prefix), 'a', len - strlen (prefix));
    text [len] = '\0';
    return text;
}

static int
s_check (const char *name, const char *input, const char *expected, const char *why)
{
    char *got = origin_normalise (input);
    int failed = (expected == NULL) != (got == NULL)
              || (expected && strcmp (expected, got) != 0);
    if (failed)
        printf ("FAIL %s: %s: origin_normalise (\"%s\") = %s%s%s, expected %s%s%s\n",
                name, why, input,
                got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
                expected ? "\"" : "", expected ? expected : "NULL", expected ? "\"" : "");
    free (got);
    return failed;
}

int
main (void)
{
    size_t rows = 0;
    size_t failed = 0;
    for (size_t i = 0; i < ROWS; i++) {
        char name [32];
        snprintf (name, sizeof name, "row %zu", i + 1);
        rows++;
        failed += s_check (name, s_rows [i].input, s_rows [i].expected, s_rows [i].why);
    }

    //  The 1024-byte bound: exactly at it passes, one past it fails.
    char *at_limit = s_long_origin (1024);
    char *past_limit = s_long_origin (1025);
    rows++;
    failed += s_check ("length 1024", at_limit, at_limit, "longest accepted origin");
    rows++;
    failed += s_check ("length 1025", past_limit, NULL, "longer than 1024 refused");
    free (at_limit);
    free (past_limit);

    rows++;
    if (origin_normalise (NULL) != NULL) {
        printf ("FAIL NULL input: must be refused\n");
        failed++;
    }

    //  Normalising is idempotent: the allow-list stores normalised entries
    //  and compares them with normalised Origin headers.
    for (size_t i = 0; i < ROWS; i++) {
        if (!s_rows [i].expected)
            continue;
        char name [32];
        snprintf (name, sizeof name, "idempotent %zu", i + 1);
        rows++;
        failed += s_check (name, s_rows [i].expected, s_rows [i].expected,
                           "a normalised origin normalises to itself");
    }

    printf ("test_origin: %zu rows, %zu failed\n", rows, failed);
    return failed ? 1 : 0;
}
