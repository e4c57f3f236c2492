/*  rtws-token.c - mints a JWT that rtwsd accepts, for development and tests.

    rtws-token --sub alice [--exp 3600] [--aud X] [--iss Y]
               [--claim key=value]... [--key FILE]

    It reads the server's own variables, so a token minted in the same
    environment verifies: JWT_ALG (default HS256) and, for HS*, JWT_SECRET
    (default change-me). RS* and ES* sign with the PEM private key named by
    --key or else JWT_PRIVATE_KEY_FILE. PS* is not offered by libjwt 1.10.

    Claims: sub (always a string, "42" stays "42"), iat = now, exp = now +
    --exp seconds (default 3600; 0 = no exp), aud and iss when given, and
    each --claim as a string. A --claim may not name sub, iat, exp, nbf, aud
    or iss: the options own them, and a string exp or nbf would only mint
    a token the server refuses.

    Exit status: 0 with the token and a newline on stdout; 2 for bad
    arguments or environment (usage or the reason on stderr); 1 when
    libjwt cannot sign (for example a key that does not suit JWT_ALG).

    Besides auth.c, this is the only file that includes jwt.h: it is a
    separate program and never runs inside rtwsd.
*/
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jwt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_KEY_MAX   65536   //  the server's bound on key files too
#define TOKEN_CLAIMS_MAX  64    //  --claim options accepted

static const char *s_usage =
    "usage: rtws-token --sub USER [--exp SECONDS] [--aud AUDIENCE] [--iss ISSUER]\n"
    "                  [--claim KEY=VALUE]... [--key PRIVATE_KEY.pem]\n"
    "\n"
    "Prints a JWT for rtwsd, signed like the server verifies it:\n"
    "  JWT_ALG     algorithm (default HS256): HS256/384/512, RS256/384/512, ES256/384/512\n"
    "  JWT_SECRET  HMAC secret for HS* (default change-me)\n"
    "  JWT_PRIVATE_KEY_FILE  PEM private key for RS*/ES* when --key is not given\n"
    "\n"
    "  --sub USER       the user id (kept as a string)\n"
    "  --exp SECONDS    lifetime from now, default 3600; 0 = no exp claim\n"
    "  --aud AUDIENCE   aud claim (must match the server's JWT_AUDIENCE when set)\n"
    "  --iss ISSUER     iss claim (must match the server's JWT_ISSUER when set)\n"
    "  --claim KEY=VAL  extra string claim, repeatable\n"
    "  --key FILE       PEM private key for RS*/ES*\n"
    "  --help           this text\n";

static int
    s_bad_usage (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

//  Says what is wrong, then the usage, on stderr; returns exit status 2.
static int
s_bad_usage (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "rtws-token: ");
    vfprintf (stderr, fmt, args);
    fprintf (stderr, "\n%s", s_usage);
    va_end (args);
    return 2;
}

//  Reads a whole key file, at most TOKEN_KEY_MAX bytes; NULL with a message.
static char *
s_read_key (const char *path, size_t *len_p)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        fprintf (stderr, "rtws-token: cannot open key file '%s': %s\n", path, strerror (errno));
        return NULL;
    }
    char *key = malloc (TOKEN_KEY_MAX + 1);
    size_t len = key? fread (key, 1, TOKEN_KEY_MAX + 1, file): 0;
    bool failed = !key || ferror (file);
    fclose (file);
    if (failed || len == 0 || len > TOKEN_KEY_MAX) {
        fprintf (stderr, "rtws-token: key file '%s' is %s\n", path,
                 failed? "unreadable": len == 0? "empty": "larger than 64 KiB");
        free (key);
        return NULL;
    }
    key [len] = 0;
    *len_p = len;
    return key;
}

//  Parses --exp: plain decimal digits, and now + value must fit a long.
static int
s_parse_exp (const char *text, long now, long *exp_p)
{
    if (!*text)
        return -1;
    for (const char *c = text; *c; c++)
        if (!isdigit ((unsigned char) *c))
            return -1;
    errno = 0;
    unsigned long long value = strtoull (text, NULL, 10);
    if (errno || value > (unsigned long long) (LONG_MAX - now))
        return -1;
    *exp_p = (long) value;
    return 0;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "sub",   required_argument, NULL, 's' },
        { "exp",   required_argument, NULL, 'e' },
        { "aud",   required_argument, NULL, 'a' },
        { "iss",   required_argument, NULL, 'i' },
        { "claim", required_argument, NULL, 'c' },
        { "key",   required_argument, NULL, 'k' },
        { "help",  no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    static const char *reserved [] = { "sub", "iat", "exp", "nbf", "aud", "iss" };
    long now = (long) time (NULL);
    const char *sub = NULL, *aud = NULL, *iss = NULL, *key_file = NULL;
    const char *claims [TOKEN_CLAIMS_MAX];
    size_t claim_count = 0;
    long lifetime = 3600;

    int option;
    opterr = 0;                 //  we print our own message, then the usage
    while ((option = getopt_long (argc, argv, "h", options, NULL)) != -1) {
        switch (option) {
            case 's':
                if (!*optarg)
                    return s_bad_usage ("--sub needs a non-empty user id");
                sub = optarg;
                break;
            case 'e':
                if (s_parse_exp (optarg, now, &lifetime))
                    return s_bad_usage ("--exp wants whole seconds, 0 or more, not '%s'", optarg);
                break;
            case 'a':
                aud = optarg;
                break;
            case 'i':
                iss = optarg;
                break;
            case 'c': {
                const char *equals = strchr (optarg, '=');
                if (!equals || equals == optarg)
                    return s_bad_usage ("--claim wants KEY=VALUE, not '%s'", optarg);
                for (size_t i = 0; i < sizeof reserved / sizeof reserved [0]; i++)
                    if (strlen (reserved [i]) == (size_t) (equals - optarg)
                    &&  strncmp (optarg, reserved [i], (size_t) (equals - optarg)) == 0)
                        return s_bad_usage ("--claim cannot set '%s': sub, iat, exp, aud and"
                                            " iss have their own options, nbf is not offered",
                                            reserved [i]);
                if (claim_count == TOKEN_CLAIMS_MAX)
                    return s_bad_usage ("at most %d --claim options", TOKEN_CLAIMS_MAX);
                claims [claim_count++] = optarg;
                break;
            }
            case 'k':
                key_file = optarg;
                break;
            case 'h':
                fputs (s_usage, stdout);
                return 0;
            default:
                return s_bad_usage ("unknown or incomplete option '%s'", argv [optind - 1]);
        }
    }
    if (optind < argc)
        return s_bad_usage ("unexpected argument '%s'", argv [optind]);
    if (!sub)
        return s_bad_usage ("--sub is required");

    //  The algorithm, matched without regard to case like the server does
    const char *alg_env = getenv ("JWT_ALG");
    if (alg_env && !*alg_env) {
        fprintf (stderr, "rtws-token: JWT_ALG is empty\n");
        return 2;
    }
    char alg_name [16] = "HS256";
    if (alg_env) {
        size_t len = strlen (alg_env);
        if (len >= sizeof alg_name)
            len = sizeof alg_name - 1;
        for (size_t i = 0; i < len; i++)
            alg_name [i] = (char) toupper ((unsigned char) alg_env [i]);
        alg_name [len] = 0;
    }
    jwt_alg_t alg = jwt_str_alg (alg_name);
    if (alg == JWT_ALG_INVAL || alg == JWT_ALG_NONE) {
        fprintf (stderr, "rtws-token: JWT_ALG='%s' is not one of HS256 HS384 HS512 RS256"
                 " RS384 RS512 ES256 ES384 ES512 (libjwt 1.10 has no PS*; none is refused)\n",
                 alg_name);
        return 2;
    }

    //  The signing key: the secret for HS*, a PEM private key otherwise
    char *key = NULL;
    size_t key_len = 0;
    if (alg_name [0] == 'H') {
        const char *secret = getenv ("JWT_SECRET");
        if (!secret)
            secret = "change-me";
        if (!*secret) {
            fprintf (stderr, "rtws-token: JWT_SECRET is empty\n");
            return 2;
        }
        key = strdup (secret);
        key_len = strlen (secret);
    }
    else {
        if (!key_file || !*key_file)
            key_file = getenv ("JWT_PRIVATE_KEY_FILE");
        if (!key_file || !*key_file) {
            fprintf (stderr, "rtws-token: JWT_ALG=%s needs --key or JWT_PRIVATE_KEY_FILE"
                     " (a PEM private key)\n", alg_name);
            return 2;
        }
        key = s_read_key (key_file, &key_len);
        if (!key)
            return 2;
    }
    if (!key || key_len > INT_MAX) {
        free (key);
        fprintf (stderr, "rtws-token: unusable key\n");
        return 2;
    }

    jwt_t *jwt = NULL;
    int rc = jwt_new (&jwt);
    if (rc == 0)
        rc = jwt_add_grant (jwt, "sub", sub);
    if (rc == 0)
        rc = jwt_add_grant_int (jwt, "iat", now);
    if (rc == 0 && lifetime > 0)
        rc = jwt_add_grant_int (jwt, "exp", now + lifetime);
    if (rc == 0 && aud)
        rc = jwt_add_grant (jwt, "aud", aud);
    if (rc == 0 && iss)
        rc = jwt_add_grant (jwt, "iss", iss);
    for (size_t i = 0; rc == 0 && i < claim_count; i++) {
        const char *equals = strchr (claims [i], '=');
        char *name = strndup (claims [i], (size_t) (equals - claims [i]));
        rc = name? jwt_add_grant (jwt, name, equals + 1): ENOMEM;
        if (rc == EEXIST) {
            free (key);
            jwt_free (jwt);
            int status = s_bad_usage ("--claim '%s' given twice", name);
            free (name);
            return status;
        }
        free (name);
    }
    if (rc == 0)
        rc = jwt_set_alg (jwt, alg, (const unsigned char *) key, (int) key_len);
    char *token = rc == 0? jwt_encode_str (jwt): NULL;
    //  Secrets do not linger in freed memory
    explicit_bzero (key, key_len);
    free (key);
    jwt_free (jwt);
    if (!token) {
        fprintf (stderr, "rtws-token: libjwt could not sign with JWT_ALG=%s%s: %s\n", alg_name,
                 alg_name [0] == 'H'? "": " (does the key suit the algorithm?)",
                 strerror (rc? rc: errno? errno: EINVAL));
        return 1;
    }
    printf ("%s\n", token);
    free (token);
    return fflush (stdout) == 0? 0: 1;
}
