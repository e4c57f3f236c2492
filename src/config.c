/*  config.c - rtwsd configuration: defaults, environment, validation.

    docs/PROTOCOL.md section 1 is the specification: every value is checked,
    an invalid one is reported in one line naming the variable and its value,
    and nothing is silently defaulted. This file never logs; it hands the
    line back and rtwsd.c decides what to do with it (exit status 2).

    Decisions where the contract is silent:
    - Numbers are plain decimal digits (leading zeros allowed, no sign, no
      spaces, no unit suffix) and every one has an upper bound: PORT 65535,
      the three intervals 86400 s, MAX_MESSAGE_SIZE 16 MiB, MAX_QUEUE_BYTES
      1 GiB, MAX_QUEUE_MESSAGES 1048576.
    - Enumerated values (JWT_ALG, LOG_LEVEL, PERMESSAGE_DEFLATE) are matched
      without regard to case and stored in their canonical spelling:
      LOG_LEVEL=INFO is too common to refuse. JWT_ALG=none is refused in
      any spelling with its own explanation.
    - Values are quoted in error lines with control characters escaped and
      cut after 64 bytes, so the line stays one line. JWT_SECRET is never
      echoed (only its length), and a REDIS_URL password is masked.
    - REDIS_URL accepts exactly the contract's shapes: redis:// with an
      optional ":password@" (no user name), a host name or bracketed IPv6
      literal, an optional port and an optional "/db" that must hold
      digits ("redis://h/" is refused), or unix:// with an absolute path
      short enough for sun_path. It is checked on set and again by
      rtws_config_check, which the header promises.
    - rtws_redis_url_parse hands the password over exactly as written:
      no %-decoding, so a password holding "@" is written as is (the last
      "@" ends it) and one holding "%" is taken literally. A unix:// URL
      carries no password or db (the contract's shape); db 0 is used.
    - REDIS_OUTBOX_SIZE (default 10000, 1..1000000) bounds what the Redis
      engine holds for Redis: PUBLISHes waiting plus commands sent and not
      yet answered.
    - ALLOWED_ORIGINS holds at most 256 entries; "*" is refused with a hint
      that an empty list already means "any Origin".
    - JWT_PUBLIC_KEY_FILE must be a regular file of at most 64 KiB that
      contains "-----BEGIN " and no NUL byte: a wrong path or a swapped
      file is then caught at start-up, not at the first handshake.
*/
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "origin.h"

#define CONFIG_KEY_MAX      65536   //  JWT_PUBLIC_KEY_FILE contents
#define CONFIG_SECRET_MAX   65536   //  JWT_SECRET
#define CONFIG_TEXT_MAX     1024    //  JWT_AUDIENCE, JWT_ISSUER
#define CONFIG_PATH_MAX     4096    //  JWT_PUBLIC_KEY_FILE path
#define CONFIG_HOST_MAX     255     //  HOST
#define CONFIG_URL_MAX      2048    //  REDIS_URL
#define CONFIG_ORIGINS_MAX  256     //  ALLOWED_ORIGINS entries
#define CONFIG_SHOW_MAX     64      //  bytes of a value quoted in an error
#define CONFIG_LINE_MAX     (CONFIG_SECRET_MAX + 256)   //  a config file line
#define CONFIG_ERR_MAX      512     //  an error line

//  How a variable's text becomes a field.
typedef enum {
    S_HOST,         //  required text, no spaces or control characters
    S_SECRET,       //  required text, taken verbatim, never echoed
    S_TEXT,         //  optional text, no control characters
    S_INT,          //  int 1..max
    S_SIZE,         //  size_t 1..max
    S_SIZE0,        //  size_t 0..max, 0 = off
    S_INT0,         //  int 0..max
    S_FORMAT,       //  one of s_formats
    S_ALG,          //  one of s_algs
    S_LEVEL,        //  one of s_levels
    S_BOOL,         //  0/1 true/false yes/no on/off
    S_ORIGINS,      //  comma-separated origins
    S_REDIS         //  optional Redis URL
} s_kind_t;

typedef struct {
    const char *name;       //  environment variable
    s_kind_t kind;
    size_t offset;          //  of the field in rtws_config_t
    long long max;          //  S_INT/S_SIZE: largest value; texts: longest
    const char *expected;   //  the end of the error line
} s_var_t;

#define S_FIELD(f) offsetof (rtws_config_t, f)

//  Every variable rtwsd reads, in the order rtws_config_load_env reads them.
static const s_var_t s_vars [] = {
    { "HOST", S_HOST, S_FIELD (host), CONFIG_HOST_MAX,
      "expected a listen address without spaces, at most 255 bytes" },
    { "PORT", S_INT, S_FIELD (port), 65535,
      "expected a port number 1..65535" },
    { "JWT_SECRET", S_SECRET, S_FIELD (jwt_secret), CONFIG_SECRET_MAX,
      "expected a non-empty secret of at most 65536 bytes" },
    { "JWT_ALG", S_ALG, S_FIELD (jwt_alg), 0,
      "expected one of HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384 ES512"
      " (PS* is not supported by libjwt 1.10)" },
    { "JWT_PUBLIC_KEY_FILE", S_TEXT, S_FIELD (jwt_public_key_file), CONFIG_PATH_MAX,
      "expected a file path without control characters, at most 4096 bytes" },
    { "JWT_AUDIENCE", S_TEXT, S_FIELD (jwt_audience), CONFIG_TEXT_MAX,
      "expected text without control characters, at most 1024 bytes" },
    { "JWT_ISSUER", S_TEXT, S_FIELD (jwt_issuer), CONFIG_TEXT_MAX,
      "expected text without control characters, at most 1024 bytes" },
    { "REDIS_URL", S_REDIS, S_FIELD (redis_url), CONFIG_URL_MAX,
      "expected redis://[:password@]host[:port][/db] or unix:///path" },
    { "REDIS_OUTBOX_SIZE", S_SIZE, S_FIELD (redis_outbox_size), 1000000,
      "expected a positive integer of messages, at most 1000000" },
    { "ALLOWED_ORIGINS", S_ORIGINS, S_FIELD (allowed_origins), CONFIG_ORIGINS_MAX,
      "expected comma-separated scheme://host[:port]" },
    { "PRESENCE_TTL", S_INT, S_FIELD (presence_ttl), 86400,
      "expected a positive integer of seconds, at most 86400" },
    { "HEARTBEAT_INTERVAL", S_INT, S_FIELD (heartbeat_interval), 86400,
      "expected a positive integer of seconds, at most 86400" },
    { "IDLE_TIMEOUT", S_INT, S_FIELD (idle_timeout), 86400,
      "expected a positive integer of seconds, at most 86400" },
    { "MAX_MESSAGE_SIZE", S_SIZE, S_FIELD (max_message_size), 16777216,
      "expected a positive integer of bytes, at most 16777216" },
    { "MAX_QUEUE_BYTES", S_SIZE, S_FIELD (max_queue_bytes), 1073741824,
      "expected a positive integer of bytes, at most 1073741824" },
    { "MAX_QUEUE_MESSAGES", S_SIZE, S_FIELD (max_queue_messages), 1048576,
      "expected a positive integer of messages, at most 1048576" },
    { "LOG_LEVEL", S_LEVEL, S_FIELD (log_level), 0,
      "expected one of error warn info debug" },
    { "PERMESSAGE_DEFLATE", S_BOOL, S_FIELD (permessage_deflate), 0,
      "expected 0/1, true/false, yes/no or on/off" },
    { "RATE_LIMIT", S_SIZE0, S_FIELD (rate_limit), 1000000,
      "expected messages per second per connection, 0 (off) to 1000000" },
    { "RATE_BURST", S_SIZE, S_FIELD (rate_burst), 1000000,
      "expected a positive integer of messages, at most 1000000" },
    { "MAX_CONNECTIONS", S_SIZE, S_FIELD (max_connections), 10000000,
      "expected a positive integer of connections, at most 10000000" },
    { "MAX_CONNECTIONS_PER_IP", S_SIZE0, S_FIELD (max_connections_per_ip), 10000000,
      "expected connections per client address, 0 (off) to 10000000" },
    { "HANDSHAKE_TIMEOUT", S_INT, S_FIELD (handshake_timeout), 300,
      "expected a positive integer of seconds, at most 300" },
    { "ADMIN_HOST", S_HOST, S_FIELD (admin_host), CONFIG_HOST_MAX,
      "expected a listen address without spaces, at most 255 bytes" },
    { "ADMIN_PORT", S_INT0, S_FIELD (admin_port), 65535,
      "expected a port number 1..65535, or 0 to turn the admin listener off" },
    { "DRAIN_TIMEOUT", S_INT0, S_FIELD (drain_timeout), 3600,
      "expected seconds, 0 (close at once) to 3600" },
    { "LOG_FORMAT", S_FORMAT, S_FIELD (log_format), 0,
      "expected text or json" },
    { "GATEWAY_THREADS", S_INT0, S_FIELD (gateway_threads), 64,
      "expected 1..64 WebSocket service threads, or 0 for one per CPU core" },
};
#define S_VARS_COUNT (sizeof s_vars / sizeof s_vars [0])

static const char *s_algs [] = {
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
    "ES256", "ES384", "ES512"
    //  No PS256/384/512: Debian 12's libjwt 1.10 cannot verify them, and a
    //  setting the auth actor would refuse must fail here, at start-up.
};

static const char *s_levels [] = { "error", "warn", "info", "debug" };

static const char *s_formats [] = { "text", "json" };

static const char *s_true [] = { "1", "true", "yes", "on" };
static const char *s_false [] = { "0", "false", "no", "off" };

#define S_COUNT(a) (sizeof (a) / sizeof (a) [0])


rtws_config_t *
rtws_config_new (void)
{
    rtws_config_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->host = strdup ("127.0.0.1");
    self->jwt_secret = strdup ("change-me");
    self->jwt_alg = strdup ("HS256");
    self->log_level = strdup ("info");
    self->admin_host = strdup ("127.0.0.1");
    self->log_format = strdup ("text");
    if (!self->host || !self->jwt_secret || !self->jwt_alg || !self->log_level) {
        rtws_config_destroy (&self);
        return NULL;
    }
    self->port = 8000;
    self->presence_ttl = 60;
    self->heartbeat_interval = 25;
    self->idle_timeout = 70;
    self->max_message_size = 65536;
    self->max_queue_bytes = 1048576;
    self->max_queue_messages = 4096;
    self->redis_outbox_size = 10000;
    self->rate_limit = 50;
    self->rate_burst = 100;
    self->max_connections = 100000;
    self->max_connections_per_ip = 0;
    self->handshake_timeout = 5;
    self->admin_port = 9100;
    self->drain_timeout = 10;
    self->permessage_deflate = false;
    return self;
}

static void
s_origins_free (char **origins, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free (origins [i]);
    free (origins);
}

void
rtws_config_destroy (rtws_config_t **self_p)
{
    assert (self_p);
    rtws_config_t *self = *self_p;
    if (!self)
        return;
    free (self->host);
    free (self->jwt_secret);
    free (self->jwt_alg);
    free (self->jwt_public_key_file);
    free (self->jwt_public_key);
    free (self->jwt_audience);
    free (self->jwt_issuer);
    free (self->redis_url);
    s_origins_free (self->allowed_origins, self->allowed_origins_count);
    free (self->log_level);
    free (self->admin_host);
    free (self->log_format);
    free (self);
    *self_p = NULL;
}

//  Writes value into buf as it appears between the quotes of an error line:
//  '"', '\' and control bytes escaped, cut after CONFIG_SHOW_MAX bytes.
static void
s_show (const char *value, char *buf, size_t size)
{
    size_t out = 0;
    size_t i = 0;
    for (; value [i] && i < CONFIG_SHOW_MAX; i++) {
        unsigned char c = (unsigned char) value [i];
        char piece [8];
        if (c == '"' || c == '\\')
            snprintf (piece, sizeof piece, "\\%c", c);
        else
        if (c < 0x20 || c == 0x7f)
            snprintf (piece, sizeof piece, "\\x%02x", c);
        else {
            piece [0] = (char) c;
            piece [1] = '\0';
        }
        size_t n = strlen (piece);
        if (out + n + 4 > size)     //  room for "..." and NUL
            break;
        memcpy (buf + out, piece, n);
        out += n;
    }
    if (value [i] && out + 4 <= size) {
        memcpy (buf + out, "...", 3);
        out += 3;
    }
    buf [out] = '\0';
}

//  Masks the password of a URL: "redis://:pw@h" shows as "redis://:***@h".
static void
s_mask_url (const char *url, char *buf, size_t size)
{
    const char *auth = strstr (url, "://");
    const char *at = auth ? strrchr (auth, '@') : NULL;
    if (!at)
        snprintf (buf, size, "%s", url);
    else
        snprintf (buf, size, "%.*s***%s", (int) (auth + 3 - url), url, at);
}

//  Formats the one error line: invalid NAME="value": detail.
static int
s_fail (char *err, size_t errlen, const s_var_t *var, const char *value,
        const char *fmt, ...) __attribute__ ((format (printf, 5, 6)));

static int
s_fail (char *err, size_t errlen, const s_var_t *var, const char *value,
        const char *fmt, ...)
{
    if (!err || errlen == 0)
        return -1;
    char shown [CONFIG_SHOW_MAX * 4 + 8];
    if (var->kind == S_SECRET && *value)
        snprintf (shown, sizeof shown, "<%zu bytes hidden>", strlen (value));
    else
    if (var->kind == S_REDIS) {
        char masked [CONFIG_URL_MAX + 8];
        s_mask_url (value, masked, sizeof masked);
        s_show (masked, shown, sizeof shown);
    }
    else
        s_show (value, shown, sizeof shown);

    char detail [512];
    va_list args;
    va_start (args, fmt);
    vsnprintf (detail, sizeof detail, fmt, args);
    va_end (args);
    snprintf (err, errlen, "invalid %s=\"%s\": %s", var->name, shown, detail);
    return -1;
}

static int
s_out_of_memory (char *err, size_t errlen, const s_var_t *var)
{
    if (err && errlen)
        snprintf (err, errlen, "cannot store %s: out of memory", var->name);
    return -1;
}

static bool
s_has_control (const char *value)
{
    for (const unsigned char *p = (const unsigned char *) value; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

//  Strict decimal: digits only, 1..max. strtoll alone would take a sign,
//  leading spaces and trailing junk.
static int
s_parse_number (const char *value, long long max, long long *out)
{
    if (*value < '0' || *value > '9')
        return -1;
    errno = 0;
    char *end;
    long long number = strtoll (value, &end, 10);
    if (errno == ERANGE || *end != '\0' || number < 1 || number > max)
        return -1;
    *out = number;
    return 0;
}

//  Finds value in names ignoring case; returns the index or -1.
static int
s_lookup (const char *value, const char **names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strcasecmp (value, names [i]) == 0)
            return (int) i;
    return -1;
}

//  Host names and IPv4 in Redis URLs: letters, digits, "-", ".", "_".
static bool
s_is_host_name (const char *start, size_t len)
{
    if (len == 0 || len > CONFIG_HOST_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = start [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

//  Reads digits in [start, end) as a number 0..max; -1 when not that.
static long long
s_digits (const char *start, const char *end, long long max)
{
    if (start == end)
        return -1;
    long long number = 0;
    for (const char *p = start; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        number = number * 10 + (*p - '0');
        if (number > max)
            return -1;
    }
    return number;
}

//  True when url has one of the shapes in the contract (see top of file).
static bool
s_redis_url_ok (const char *url)
{
    size_t len = strnlen (url, CONFIG_URL_MAX + 1);
    if (len == 0 || len > CONFIG_URL_MAX || s_has_control (url))
        return false;

    if (strncmp (url, "unix://", 7) == 0) {
        const char *path = url + 7;
        //  sun_path holds the path and its NUL
        return path [0] == '/' && path [1] != '\0'
            && strlen (path) < sizeof ((struct sockaddr_un *) 0)->sun_path;
    }
    if (strncmp (url, "redis://", 8) != 0)
        return false;

    const char *p = url + 8;
    const char *end = url + len;
    const char *at = strrchr (p, '@');
    if (at) {
        //  only ":password@": a user name needs Redis 6 ACLs, which the
        //  contract does not promise
        if (p [0] != ':' || at == p + 1)
            return false;
        p = at + 1;
    }
    else
    if (p [0] == ':')
        return false;           //  ":password" without "@host"

    const char *host_end;
    if (*p == '[') {
        const char *close = strchr (p, ']');
        if (!close || close - p - 1 >= INET6_ADDRSTRLEN)
            return false;
        char addr_text [INET6_ADDRSTRLEN];
        memcpy (addr_text, p + 1, (size_t) (close - p - 1));
        addr_text [close - p - 1] = '\0';
        struct in6_addr addr;
        if (inet_pton (AF_INET6, addr_text, &addr) != 1)
            return false;
        host_end = close + 1;
    }
    else {
        host_end = p + strcspn (p, ":/");
        if (!s_is_host_name (p, (size_t) (host_end - p)))
            return false;
    }
    p = host_end;
    if (*p == ':') {
        const char *port_end = p + 1 + strcspn (p + 1, "/");
        if (s_digits (p + 1, port_end, 65535) < 1)
            return false;
        p = port_end;
    }
    if (*p == '/') {
        if (s_digits (p + 1, end, INT_MAX) < 0)
            return false;
        p = end;
    }
    return p == end;
}

//  Splits ALLOWED_ORIGINS into normalised entries. On success replaces the
//  config's list; on failure leaves it alone.
static int
s_set_origins (rtws_config_t *self, const s_var_t *var, const char *value,
               char *err, size_t errlen)
{
    char **list = calloc (CONFIG_ORIGINS_MAX, sizeof *list);
    if (!list)
        return s_out_of_memory (err, errlen, var);
    size_t count = 0;
    const char *p = value;
    while (true) {
        const char *comma = strchr (p, ',');
        const char *stop = comma ? comma : p + strlen (p);
        const char *start = p;
        while (start < stop && (*start == ' ' || *start == '\t'))
            start++;
        const char *finish = stop;
        while (finish > start && (finish [-1] == ' ' || finish [-1] == '\t'))
            finish--;
        if (finish > start) {
            char *entry = strndup (start, (size_t) (finish - start));
            if (!entry) {
                s_origins_free (list, count);
                return s_out_of_memory (err, errlen, var);
            }
            char *origin = origin_normalise (entry);
            if (!origin || count == CONFIG_ORIGINS_MAX) {
                char shown [CONFIG_SHOW_MAX * 4 + 8];
                s_show (entry, shown, sizeof shown);
                int rc;
                if (origin)
                    rc = s_fail (err, errlen, var, value,
                                 "more than %d entries", CONFIG_ORIGINS_MAX);
                else
                if (strcmp (entry, "*") == 0)
                    rc = s_fail (err, errlen, var, value,
                                 "entry \"*\" is not an origin (leave ALLOWED_ORIGINS"
                                 " empty to accept any Origin)");
                else
                    rc = s_fail (err, errlen, var, value,
                                 "entry \"%s\" is not an origin: expected"
                                 " scheme://host[:port]", shown);
                free (origin);
                free (entry);
                s_origins_free (list, count);
                return rc;
            }
            free (entry);
            list [count++] = origin;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    s_origins_free (self->allowed_origins, self->allowed_origins_count);
    if (count == 0) {
        free (list);
        list = NULL;
    }
    self->allowed_origins = list;
    self->allowed_origins_count = count;
    return 0;
}

//  Replaces a string field with a copy of value (NULL clears it).
static int
s_store (char **field, const char *value, const s_var_t *var, char *err, size_t errlen)
{
    char *copy = NULL;
    if (value) {
        copy = strdup (value);
        if (!copy)
            return s_out_of_memory (err, errlen, var);
    }
    free (*field);
    *field = copy;
    return 0;
}

int
rtws_config_set (rtws_config_t *self, const char *name, const char *value,
                 char *err, size_t errlen)
{
    assert (self);
    assert (name);
    const s_var_t *var = NULL;
    for (size_t i = 0; i < S_VARS_COUNT; i++)
        if (strcmp (name, s_vars [i].name) == 0)
            var = &s_vars [i];
    if (!var)
        return 0;
    if (!value)
        value = "";

    void *field = (char *) self + var->offset;
    size_t len = strlen (value);
    bool optional = var->kind == S_TEXT || var->kind == S_ORIGINS || var->kind == S_REDIS;
    if (len == 0) {
        if (!optional)
            return s_fail (err, errlen, var, value, "%s", var->expected);
        if (var->kind == S_ORIGINS)
            return s_set_origins (self, var, value, err, errlen);
        return s_store ((char **) field, NULL, var, err, errlen);
    }

    switch (var->kind) {
        case S_HOST:
            if (len > (size_t) var->max || strpbrk (value, " \t") || s_has_control (value))
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, value, var, err, errlen);

        case S_SECRET:
            //  taken verbatim: any byte may be part of a secret
            if (len > (size_t) var->max)
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, value, var, err, errlen);

        case S_TEXT:
            if (len > (size_t) var->max || s_has_control (value))
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, value, var, err, errlen);

        case S_SIZE0:
        case S_INT0:
            if (strcmp (value, "0") == 0) {
                if (var->kind == S_INT0)
                    *(int *) field = 0;
                else
                    *(size_t *) field = 0;
                return 0;
            }
            __attribute__ ((fallthrough));  //  any other value: a positive number
        case S_INT:
        case S_SIZE: {
            long long number;
            if (s_parse_number (value, var->max, &number))
                return s_fail (err, errlen, var, value, "%s", var->expected);
            if (var->kind == S_INT || var->kind == S_INT0)
                *(int *) field = (int) number;
            else
                *(size_t *) field = (size_t) number;
            return 0;
        }
        case S_ALG: {
            if (strcasecmp (value, "none") == 0)
                return s_fail (err, errlen, var, value,
                               "unsigned tokens are never accepted; %s", var->expected);
            int index = s_lookup (value, s_algs, S_COUNT (s_algs));
            if (index < 0)
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, s_algs [index], var, err, errlen);
        }
        case S_FORMAT: {
            int index = s_lookup (value, s_formats, S_COUNT (s_formats));
            if (index < 0)
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, s_formats [index], var, err, errlen);
        }
        case S_LEVEL: {
            int index = s_lookup (value, s_levels, S_COUNT (s_levels));
            if (index < 0)
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, s_levels [index], var, err, errlen);
        }
        case S_BOOL:
            if (s_lookup (value, s_true, S_COUNT (s_true)) >= 0)
                *(bool *) field = true;
            else
            if (s_lookup (value, s_false, S_COUNT (s_false)) >= 0)
                *(bool *) field = false;
            else
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return 0;

        case S_ORIGINS:
            return s_set_origins (self, var, value, err, errlen);

        case S_REDIS:
            if (!s_redis_url_ok (value))
                return s_fail (err, errlen, var, value, "%s", var->expected);
            return s_store ((char **) field, value, var, err, errlen);
    }
    assert (false);
    return -1;
}

int
rtws_config_load_env (rtws_config_t *self, char *err, size_t errlen)
{
    assert (self);
    //  getenv is safe here: rtwsd calls this before any thread starts.
    for (size_t i = 0; i < S_VARS_COUNT; i++) {
        const char *value = getenv (s_vars [i].name);
        if (value && rtws_config_set (self, s_vars [i].name, value, err, errlen))
            return -1;
    }
    return rtws_config_check (self, err, errlen);
}

//  Strips blanks at both ends of [*start, *end).
static void
s_trim (const char **start, const char **end)
{
    while (*start < *end && (**start == ' ' || **start == '\t'))
        (*start)++;
    while (*end > *start && ((*end) [-1] == ' ' || (*end) [-1] == '\t' || (*end) [-1] == '\r'))
        (*end)--;
}

int
rtws_config_load_file (rtws_config_t *self, const char *path, char *err, size_t errlen)
{
    assert (self);
    FILE *file = fopen (path, "r");
    if (!file) {
        snprintf (err, errlen, "cannot read config file %s: %s", path, strerror (errno));
        return -1;
    }
    //  One line at a time into a fixed buffer: a line longer than any value
    //  we accept (a 64 KiB secret plus its name) is an error, not a realloc.
    char *line = malloc (CONFIG_LINE_MAX + 2);
    if (!line) {
        fclose (file);
        snprintf (err, errlen, "cannot read config file %s: out of memory", path);
        return -1;
    }
    int rc = 0;
    size_t number = 0;
    while (rc == 0 && fgets (line, CONFIG_LINE_MAX + 2, file)) {
        number++;
        size_t len = strlen (line);
        if (len > CONFIG_LINE_MAX && line [len - 1] != '\n') {
            snprintf (err, errlen, "%s:%zu: line longer than %d bytes", path, number,
                      CONFIG_LINE_MAX);
            rc = -1;
            break;
        }
        if (len && line [len - 1] == '\n')
            line [--len] = 0;
        const char *start = line, *end = line + len;
        s_trim (&start, &end);
        if (start == end || *start == '#')
            continue;
        if (end - start > 7 && strncmp (start, "export ", 7) == 0)
            start += 7;
        const char *equals = memchr (start, '=', (size_t) (end - start));
        if (!equals) {
            snprintf (err, errlen, "%s:%zu: expected NAME=value", path, number);
            rc = -1;
            break;
        }
        const char *name_end = equals, *value = equals + 1, *value_end = end;
        const char *name_start = start;
        s_trim (&name_start, &name_end);
        s_trim (&value, &value_end);
        //  Quotes as a shell or Docker's env_file would write them.
        if (value_end - value >= 2 && (*value == '"' || *value == '\'')
        &&  value_end [-1] == *value) {
            value++;
            value_end--;
        }
        char name [64];
        size_t name_len = (size_t) (name_end - name_start);
        const s_var_t *var = NULL;
        if (name_len < sizeof name) {
            memcpy (name, name_start, name_len);
            name [name_len] = 0;
            for (size_t i = 0; i < S_VARS_COUNT; i++)
                if (strcmp (name, s_vars [i].name) == 0)
                    var = &s_vars [i];
        }
        if (!var) {
            //  A misspelt name would otherwise be a silent default.
            snprintf (err, errlen, "%s:%zu: unknown variable '%.*s'", path, number,
                      (int) (name_len > 64 ? 64 : name_len), name_start);
            rc = -1;
            break;
        }
        char *text = strndup (value, (size_t) (value_end - value));
        char why [CONFIG_ERR_MAX];
        if (!text || rtws_config_set (self, var->name, text, why, sizeof why)) {
            snprintf (err, errlen, "%s:%zu: %s", path, number, text ? why : "out of memory");
            rc = -1;
        }
        free (text);
    }
    if (rc == 0 && ferror (file)) {
        snprintf (err, errlen, "cannot read config file %s: %s", path, strerror (errno));
        rc = -1;
    }
    free (line);
    fclose (file);
    return rc;
}

size_t
rtws_config_count (void)
{
    return S_VARS_COUNT;
}

const char *
rtws_config_name (size_t index)
{
    return index < S_VARS_COUNT ? s_vars [index].name : NULL;
}

int
rtws_config_value (const rtws_config_t *self, const char *name, char *buf, size_t size)
{
    assert (self && buf && size);
    const s_var_t *var = NULL;
    for (size_t i = 0; i < S_VARS_COUNT; i++)
        if (strcmp (name, s_vars [i].name) == 0)
            var = &s_vars [i];
    if (!var)
        return -1;
    const void *field = (const char *) self + var->offset;
    size_t at = 0;
    buf [0] = 0;
    switch (var->kind) {
        case S_ORIGINS:
            for (size_t j = 0; j < self->allowed_origins_count && at < size; j++)
                at += (size_t) snprintf (buf + at, size - at, "%s%s", j ? "," : "",
                                         self->allowed_origins [j]);
            break;
        case S_INT:
        case S_INT0:
            at = (size_t) snprintf (buf, size, "%d", *(const int *) field);
            break;
        case S_SIZE:
        case S_SIZE0:
            at = (size_t) snprintf (buf, size, "%zu", *(const size_t *) field);
            break;
        case S_BOOL:
            at = (size_t) snprintf (buf, size, "%d", *(const bool *) field ? 1 : 0);
            break;
        default: {
            const char *text = *(char * const *) field;
            at = (size_t) snprintf (buf, size, "%s", text ? text : "");
        }
    }
    return at < size ? 0 : -1;
}

void
rtws_config_print (const rtws_config_t *self, FILE *out)
{
    assert (self);
    for (size_t i = 0; i < S_VARS_COUNT; i++) {
        const s_var_t *var = &s_vars [i];
        const void *field = (const char *) self + var->offset;
        fprintf (out, "%s=", var->name);
        switch (var->kind) {
            case S_SECRET:
                fprintf (out, "%s", (*(char * const *) field && strcmp (*(char * const *) field, "change-me") == 0)
                         ? "change-me (the default: set your own)" : "***");
                break;
            case S_REDIS: {
                const char *url = *(char * const *) field;
                char masked [CONFIG_URL_MAX + 8];
                if (url)
                    s_mask_url (url, masked, sizeof masked);
                fprintf (out, "%s", url ? masked : "");
                break;
            }
            case S_ORIGINS:
                for (size_t j = 0; j < self->allowed_origins_count; j++)
                    fprintf (out, "%s%s", j ? "," : "", self->allowed_origins [j]);
                break;
            case S_INT:
            case S_INT0:
                fprintf (out, "%d", *(const int *) field);
                break;
            case S_SIZE:
            case S_SIZE0:
                fprintf (out, "%zu", *(const size_t *) field);
                break;
            case S_BOOL:
                fprintf (out, "%d", *(const bool *) field ? 1 : 0);
                break;
            default: {
                const char *text = *(char * const *) field;
                fprintf (out, "%s", text ? text : "");
            }
        }
        fputc ('\n', out);
    }
}

static const s_var_t *
s_var (const char *name)
{
    for (size_t i = 0; i < S_VARS_COUNT; i++)
        if (strcmp (name, s_vars [i].name) == 0)
            return &s_vars [i];
    assert (false);
    return NULL;
}

//  Reads the PEM key named by JWT_PUBLIC_KEY_FILE into the config.
static int
s_load_key (rtws_config_t *self, char *err, size_t errlen)
{
    const s_var_t *var = s_var ("JWT_PUBLIC_KEY_FILE");
    const char *path = self->jwt_public_key_file;
    if (!path || !*path)
        return s_fail (err, errlen, var, "", "required when JWT_ALG=%s", self->jwt_alg);

    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return s_fail (err, errlen, var, path, "cannot open: %s", strerror (errno));
    //  A FIFO or device would block or never end; a key is a plain file.
    struct stat st;
    if (fstat (fd, &st) || !S_ISREG (st.st_mode)) {
        close (fd);
        return s_fail (err, errlen, var, path, "not a regular file");
    }
    char *key = malloc (CONFIG_KEY_MAX + 1);
    if (!key) {
        close (fd);
        return s_out_of_memory (err, errlen, var);
    }
    //  Read one byte past the bound to tell "exactly 64 KiB" from "more".
    size_t len = 0;
    while (len < CONFIG_KEY_MAX + 1) {
        ssize_t rc = read (fd, key + len, CONFIG_KEY_MAX + 1 - len);
        if (rc > 0)
            len += (size_t) rc;
        else
        if (rc == 0)
            break;
        else
        if (errno != EINTR) {
            int code = errno;
            free (key);
            close (fd);
            return s_fail (err, errlen, var, path, "cannot read: %s", strerror (code));
        }
    }
    close (fd);

    const char *problem = NULL;
    if (len > CONFIG_KEY_MAX)
        problem = "larger than 65536 bytes";
    else
    if (len == 0)
        problem = "empty file";
    else
    if (memchr (key, '\0', len) || !memmem (key, len, "-----BEGIN ", 11))
        problem = "not a PEM file (no \"-----BEGIN \" line)";
    if (problem) {
        free (key);
        return s_fail (err, errlen, var, path, "%s", problem);
    }
    key [len] = '\0';
    free (self->jwt_public_key);
    self->jwt_public_key = key;
    self->jwt_public_key_len = len;
    return 0;
}

int
rtws_config_check (rtws_config_t *self, char *err, size_t errlen)
{
    assert (self);
    assert (self->jwt_alg);
    //  Start from nothing so a second check never keeps a stale key.
    free (self->jwt_public_key);
    self->jwt_public_key = NULL;
    self->jwt_public_key_len = 0;

    //  HS* verifies with JWT_SECRET; a key file set alongside it is unused.
    if (self->jwt_alg [0] != 'H' && s_load_key (self, err, errlen))
        return -1;

    if (self->redis_url && *self->redis_url && !s_redis_url_ok (self->redis_url))
        return s_fail (err, errlen, s_var ("REDIS_URL"), self->redis_url,
                       "%s", s_var ("REDIS_URL")->expected);
    return 0;
}

bool
rtws_config_origin_allowed (const rtws_config_t *self, const char *origin)
{
    assert (self);
    if (self->allowed_origins_count == 0)
        return true;
    if (!origin)
        return false;
    for (size_t i = 0; i < self->allowed_origins_count; i++)
        if (strcmp (origin, self->allowed_origins [i]) == 0)
            return true;
    return false;
}

void
rtws_redis_url_clear (rtws_redis_url_t *parts)
{
    assert (parts);
    free (parts->host);
    free (parts->password);
    free (parts->unix_path);
    memset (parts, 0, sizeof *parts);
}

//  The shape was checked by s_redis_url_ok, so splitting needs no more
//  checks: the same landmarks ("@" last, "]" or ":" / "/" after the host)
//  cut it into the same pieces.
int
rtws_redis_url_parse (const char *url, rtws_redis_url_t *parts)
{
    assert (parts);
    memset (parts, 0, sizeof *parts);
    if (!url || !s_redis_url_ok (url))
        return -1;
    parts->port = 6379;
    if (strncmp (url, "unix://", 7) == 0) {
        parts->unix_path = strdup (url + 7);
        if (!parts->unix_path)
            return -1;
        return 0;
    }
    const char *p = url + 8;
    const char *at = strrchr (p, '@');
    if (at) {
        parts->password = strndup (p + 1, (size_t) (at - p - 1));
        if (!parts->password)
            return -1;
        p = at + 1;
    }
    const char *host_end;
    if (*p == '[') {
        const char *close = strchr (p, ']');
        parts->host = strndup (p + 1, (size_t) (close - p - 1));
        host_end = close + 1;
    }
    else {
        host_end = p + strcspn (p, ":/");
        parts->host = strndup (p, (size_t) (host_end - p));
    }
    if (!parts->host) {
        rtws_redis_url_clear (parts);
        return -1;
    }
    p = host_end;
    if (*p == ':') {
        const char *port_end = p + 1 + strcspn (p + 1, "/");
        parts->port = (int) s_digits (p + 1, port_end, 65535);
        p = port_end;
    }
    if (*p == '/')
        parts->db = (int) s_digits (p + 1, p + 1 + strlen (p + 1), INT_MAX);
    return 0;
}
