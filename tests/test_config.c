/*  test_config.c - configuration defaults, values and cross-checks.

    One row per case: docs/PROTOCOL.md section 1 (defaults, every variable
    valid and invalid), the decisions at the top of src/config.c, the key
    file and REDIS_URL checks of rtws_config_check, the environment loader
    and the Origin allow-list.
*/
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t s_rows_run;
static size_t s_rows_failed;

static void
s_row (bool ok, const char *name, const char *detail)
{
    s_rows_run++;
    if (!ok) {
        s_rows_failed++;
        printf ("FAIL %s%s%s\n", name, detail ? ": " : "", detail ? detail : "");
    }
}

//  Renders the field behind a variable as text, so rows can state what a
//  value must turn into: numbers in decimal, booleans 0/1, NULL as "(null)",
//  origins joined with ",".
static void
s_render (const rtws_config_t *cfg, const char *name, char *buf, size_t size)
{
    const char *text = NULL;
    long long number = -1;
    if (strcmp (name, "HOST") == 0)                 text = cfg->host;
    else if (strcmp (name, "JWT_SECRET") == 0)      text = cfg->jwt_secret;
    else if (strcmp (name, "JWT_ALG") == 0)         text = cfg->jwt_alg;
    else if (strcmp (name, "JWT_PUBLIC_KEY_FILE") == 0) text = cfg->jwt_public_key_file;
    else if (strcmp (name, "JWT_AUDIENCE") == 0)    text = cfg->jwt_audience;
    else if (strcmp (name, "JWT_ISSUER") == 0)      text = cfg->jwt_issuer;
    else if (strcmp (name, "REDIS_URL") == 0)       text = cfg->redis_url;
    else if (strcmp (name, "LOG_LEVEL") == 0)       text = cfg->log_level;
    else if (strcmp (name, "ADMIN_HOST") == 0)      text = cfg->admin_host;
    else if (strcmp (name, "LOG_FORMAT") == 0)      text = cfg->log_format;
    else if (strcmp (name, "ADMIN_PORT") == 0)      number = cfg->admin_port;
    else if (strcmp (name, "DRAIN_TIMEOUT") == 0)   number = cfg->drain_timeout;
    else if (strcmp (name, "GATEWAY_THREADS") == 0) number = cfg->gateway_threads;
    else if (strcmp (name, "PORT") == 0)            number = cfg->port;
    else if (strcmp (name, "PRESENCE_TTL") == 0)    number = cfg->presence_ttl;
    else if (strcmp (name, "HEARTBEAT_INTERVAL") == 0) number = cfg->heartbeat_interval;
    else if (strcmp (name, "IDLE_TIMEOUT") == 0)    number = cfg->idle_timeout;
    else if (strcmp (name, "MAX_MESSAGE_SIZE") == 0) number = (long long) cfg->max_message_size;
    else if (strcmp (name, "MAX_QUEUE_BYTES") == 0) number = (long long) cfg->max_queue_bytes;
    else if (strcmp (name, "MAX_QUEUE_MESSAGES") == 0) number = (long long) cfg->max_queue_messages;
    else if (strcmp (name, "REDIS_OUTBOX_SIZE") == 0) number = (long long) cfg->redis_outbox_size;
    else if (strcmp (name, "PERMESSAGE_DEFLATE") == 0) number = cfg->permessage_deflate;
    else if (strcmp (name, "RATE_LIMIT") == 0)      number = (long long) cfg->rate_limit;
    else if (strcmp (name, "RATE_BURST") == 0)      number = (long long) cfg->rate_burst;
    else if (strcmp (name, "MAX_CONNECTIONS") == 0) number = (long long) cfg->max_connections;
    else if (strcmp (name, "MAX_CONNECTIONS_PER_IP") == 0) number = (long long) cfg->max_connections_per_ip;
    else if (strcmp (name, "HANDSHAKE_TIMEOUT") == 0) number = cfg->handshake_timeout;
    else if (strcmp (name, "ALLOWED_ORIGINS") == 0) {
        size_t out = 0;
        buf [0] = '\0';
        for (size_t i = 0; i < cfg->allowed_origins_count && out < size; i++)
            out += (size_t) snprintf (buf + out, size - out, "%s%s", i ? "," : "",
                                      cfg->allowed_origins [i]);
        if (cfg->allowed_origins_count == 0 && cfg->allowed_origins != NULL)
            snprintf (buf, size, "(empty but allocated)");
        return;
    }
    else {
        snprintf (buf, size, "(unknown variable)");
        return;
    }
    if (number >= 0)
        snprintf (buf, size, "%lld", number);
    else
        snprintf (buf, size, "%s", text ? text : "(null)");
}

//  Checks the shape every error line shares: one line, naming the variable
//  with its value in quotes.
static bool
s_error_shape_ok (const char *err, const char *name)
{
    char prefix [64];
    snprintf (prefix, sizeof prefix, "invalid %s=\"", name);
    return strncmp (err, prefix, strlen (prefix)) == 0 && !strchr (err, '\n') && !strchr (err, '\r');
}

//  ---------------------------------------------------------------------
//  defaults

static void
s_test_defaults (void)
{
    static const struct {
        const char *name;
        const char *expected;
    } rows [] = {
        { "HOST", "127.0.0.1" },
        { "PORT", "8000" },
        { "JWT_SECRET", "change-me" },
        { "JWT_ALG", "HS256" },
        { "JWT_PUBLIC_KEY_FILE", "(null)" },
        { "JWT_AUDIENCE", "(null)" },
        { "JWT_ISSUER", "(null)" },
        { "REDIS_URL", "(null)" },
        { "ALLOWED_ORIGINS", "" },
        { "PRESENCE_TTL", "60" },
        { "HEARTBEAT_INTERVAL", "25" },
        { "IDLE_TIMEOUT", "70" },
        { "MAX_MESSAGE_SIZE", "65536" },
        { "MAX_QUEUE_BYTES", "1048576" },
        { "MAX_QUEUE_MESSAGES", "4096" },
        { "REDIS_OUTBOX_SIZE", "10000" },
        { "LOG_LEVEL", "info" },
        { "PERMESSAGE_DEFLATE", "0" },
        { "RATE_LIMIT", "50" },
        { "RATE_BURST", "100" },
        { "MAX_CONNECTIONS", "100000" },
        { "MAX_CONNECTIONS_PER_IP", "0" },
        { "HANDSHAKE_TIMEOUT", "5" },
        { "ADMIN_HOST", "127.0.0.1" },
        { "ADMIN_PORT", "9100" },
        { "DRAIN_TIMEOUT", "10" },
        { "LOG_FORMAT", "text" },
        { "GATEWAY_THREADS", "0" },
    };
    rtws_config_t *cfg = rtws_config_new ();
    s_row (cfg != NULL, "rtws_config_new returns a config", NULL);
    if (!cfg)
        return;
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++) {
        char got [256];
        s_render (cfg, rows [i].name, got, sizeof got);
        char name [96], detail [512];
        snprintf (name, sizeof name, "default %s", rows [i].name);
        snprintf (detail, sizeof detail, "got \"%s\", expected \"%s\"", got, rows [i].expected);
        s_row (strcmp (got, rows [i].expected) == 0, name, detail);
    }
    s_row (cfg->allowed_origins_count == 0, "default: any Origin", NULL);
    s_row (cfg->jwt_public_key == NULL && cfg->jwt_public_key_len == 0, "default: no key loaded", NULL);

    char err [256] = "";
    s_row (rtws_config_check (cfg, err, sizeof err) == 0, "defaults pass rtws_config_check", err);
    rtws_config_destroy (&cfg);
    s_row (cfg == NULL, "destroy sets the pointer to NULL", NULL);
    rtws_config_destroy (&cfg);
    s_row (cfg == NULL, "destroy is idempotent", NULL);
}

//  ---------------------------------------------------------------------
//  rtws_config_set, one variable at a time

typedef struct {
    const char *name;
    const char *value;
    int rc;                 //  0 or -1
    const char *expected;   //  rc 0: the field rendered; rc -1: a substring of err
} set_row_t;

#define OK(v, r) v, 0, r
#define BAD(v, s) v, -1, s

static const set_row_t s_set_rows [] = {
    { "HOST", OK ("0.0.0.0", "0.0.0.0") },
    { "HOST", OK ("localhost", "localhost") },
    { "HOST", OK ("::", "::") },
    { "HOST", BAD ("", "invalid HOST=\"\": expected a listen address") },
    { "HOST", BAD ("a b", "expected a listen address") },
    { "HOST", BAD ("host\n", "invalid HOST=\"host\\x0a\"") },

    { "PORT", OK ("8080", "8080") },
    { "PORT", OK ("1", "1") },
    { "PORT", OK ("65535", "65535") },
    { "PORT", OK ("080", "80") },
    { "PORT", BAD ("0", "invalid PORT=\"0\": expected a port number 1..65535") },
    { "PORT", BAD ("65536", "invalid PORT=\"65536\"") },
    { "PORT", BAD ("-1", "invalid PORT=\"-1\"") },
    { "PORT", BAD ("+80", "invalid PORT=\"+80\"") },
    { "PORT", BAD (" 80", "invalid PORT=\" 80\"") },
    { "PORT", BAD ("80 ", "invalid PORT=\"80 \"") },
    { "PORT", BAD ("8o", "invalid PORT=\"8o\"") },
    { "PORT", BAD ("0x50", "invalid PORT=\"0x50\"") },
    { "PORT", BAD ("1e3", "invalid PORT=\"1e3\"") },
    { "PORT", BAD ("99999999999999999999999", "invalid PORT=\"99999999999999999999999\"") },
    { "PORT", BAD ("", "invalid PORT=\"\"") },

    { "JWT_SECRET", OK ("s3cret", "s3cret") },
    { "JWT_SECRET", OK ("with space\tand tab", "with space\tand tab") },
    { "JWT_SECRET", BAD ("", "invalid JWT_SECRET=\"\": expected a non-empty secret") },

    { "JWT_ALG", OK ("HS256", "HS256") },
    { "JWT_ALG", OK ("HS384", "HS384") },
    { "JWT_ALG", OK ("HS512", "HS512") },
    { "JWT_ALG", OK ("RS256", "RS256") },
    { "JWT_ALG", OK ("RS384", "RS384") },
    { "JWT_ALG", OK ("RS512", "RS512") },
    { "JWT_ALG", OK ("ES256", "ES256") },
    { "JWT_ALG", OK ("ES384", "ES384") },
    { "JWT_ALG", OK ("ES512", "ES512") },
    { "JWT_ALG", BAD ("PS256", "invalid JWT_ALG=\"PS256\": expected one of") },
    { "JWT_ALG", BAD ("PS384", "invalid JWT_ALG=\"PS384\": expected one of") },
    { "JWT_ALG", BAD ("PS512", "invalid JWT_ALG=\"PS512\": expected one of") },
    { "JWT_ALG", OK ("hs512", "HS512") },
    { "JWT_ALG", BAD ("none", "invalid JWT_ALG=\"none\": unsigned tokens are never accepted") },
    { "JWT_ALG", BAD ("NONE", "invalid JWT_ALG=\"NONE\": unsigned tokens") },
    { "JWT_ALG", BAD ("None", "invalid JWT_ALG=\"None\": unsigned tokens") },
    { "JWT_ALG", BAD ("HS1024", "expected one of HS256 HS384 HS512") },
    { "JWT_ALG", BAD ("EdDSA", "invalid JWT_ALG=\"EdDSA\"") },
    { "JWT_ALG", BAD ("HS256 ", "invalid JWT_ALG=\"HS256 \"") },
    { "JWT_ALG", BAD ("", "invalid JWT_ALG=\"\"") },

    { "JWT_PUBLIC_KEY_FILE", OK ("/etc/rtws/key.pem", "/etc/rtws/key.pem") },
    { "JWT_PUBLIC_KEY_FILE", OK ("", "(null)") },
    { "JWT_PUBLIC_KEY_FILE", BAD ("/tmp/a\nb", "invalid JWT_PUBLIC_KEY_FILE=\"/tmp/a\\x0ab\"") },

    { "JWT_AUDIENCE", OK ("rtws-clients", "rtws-clients") },
    { "JWT_AUDIENCE", OK ("", "(null)") },
    { "JWT_AUDIENCE", BAD ("a\x01", "invalid JWT_AUDIENCE=\"a\\x01\"") },
    { "JWT_ISSUER", OK ("https://auth.example.com/", "https://auth.example.com/") },
    { "JWT_ISSUER", OK ("", "(null)") },
    { "JWT_ISSUER", BAD ("a\tb", "invalid JWT_ISSUER=\"a\\x09b\"") },

    //  REDIS_URL: the contract's shapes
    { "REDIS_URL", OK ("redis://localhost", "redis://localhost") },
    { "REDIS_URL", OK ("redis://localhost:6379", "redis://localhost:6379") },
    { "REDIS_URL", OK ("redis://localhost:6379/0", "redis://localhost:6379/0") },
    { "REDIS_URL", OK ("redis://redis/15", "redis://redis/15") },
    { "REDIS_URL", OK ("redis://127.0.0.1:6380", "redis://127.0.0.1:6380") },
    { "REDIS_URL", OK ("redis://:s3cret@redis.example.com:6380/2",
                       "redis://:s3cret@redis.example.com:6380/2") },
    { "REDIS_URL", OK ("redis://:p@ss@host", "redis://:p@ss@host") },
    { "REDIS_URL", OK ("redis://[::1]:6379/1", "redis://[::1]:6379/1") },
    { "REDIS_URL", OK ("redis://[::1]", "redis://[::1]") },
    { "REDIS_URL", OK ("unix:///var/run/redis/redis.sock", "unix:///var/run/redis/redis.sock") },
    { "REDIS_URL", OK ("", "(null)") },
    { "REDIS_URL", BAD ("localhost:6379", "invalid REDIS_URL=\"localhost:6379\": expected redis://") },
    { "REDIS_URL", BAD ("http://localhost", "invalid REDIS_URL=\"http://localhost\"") },
    { "REDIS_URL", BAD ("rediss://localhost", "invalid REDIS_URL=\"rediss://localhost\"") },
    { "REDIS_URL", BAD ("redis://", "invalid REDIS_URL=\"redis://\"") },
    { "REDIS_URL", BAD ("redis://:6379", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host:", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host:0", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host:65536", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host:port", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host/", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host/x", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host/-1", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host/99999999999", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host:6379/0/1", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://host?db=1", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://ho st", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://user@host", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://:@host", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://:pw", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://[::1", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("redis://[zz::1]", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("unix://", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("unix:///", "invalid REDIS_URL") },
    { "REDIS_URL", BAD ("unix://relative/redis.sock", "invalid REDIS_URL") },
    //  the password never reaches the error line
    { "REDIS_URL", BAD ("redis://user:topsecret@host", "invalid REDIS_URL=\"redis://***@host\"") },

    //  ALLOWED_ORIGINS: each entry normalised, blanks skipped
    { "ALLOWED_ORIGINS", OK ("https://app.example.com", "https://app.example.com") },
    { "ALLOWED_ORIGINS", OK (" https://A.example.com:443 , http://b.example.com:80 ,, \t",
                             "https://a.example.com,http://b.example.com") },
    { "ALLOWED_ORIGINS", OK ("https://app.example.com/", "https://app.example.com") },
    { "ALLOWED_ORIGINS", OK ("http://[::1]:8080,http://localhost:3000",
                             "http://[::1]:8080,http://localhost:3000") },
    { "ALLOWED_ORIGINS", OK ("wss://x.example:443", "wss://x.example:443") },
    { "ALLOWED_ORIGINS", OK ("", "") },
    { "ALLOWED_ORIGINS", OK (" , ,", "") },
    { "ALLOWED_ORIGINS", BAD ("https://a.example,null", "entry \"null\" is not an origin") },
    { "ALLOWED_ORIGINS", BAD ("example.com", "invalid ALLOWED_ORIGINS=\"example.com\": entry \"example.com\"") },
    { "ALLOWED_ORIGINS", BAD ("https://a.example/app", "entry \"https://a.example/app\"") },
    { "ALLOWED_ORIGINS", BAD ("https://a.example:0", "entry \"https://a.example:0\"") },
    { "ALLOWED_ORIGINS", BAD ("*", "leave ALLOWED_ORIGINS empty to accept any Origin") },

    //  intervals
    { "PRESENCE_TTL", OK ("30", "30") },
    { "PRESENCE_TTL", OK ("86400", "86400") },
    { "PRESENCE_TTL", BAD ("86401", "invalid PRESENCE_TTL=\"86401\": expected a positive integer of seconds") },
    { "PRESENCE_TTL", BAD ("0", "invalid PRESENCE_TTL=\"0\"") },
    { "PRESENCE_TTL", BAD ("", "invalid PRESENCE_TTL=\"\"") },
    { "HEARTBEAT_INTERVAL", OK ("1", "1") },
    { "HEARTBEAT_INTERVAL", OK ("10", "10") },
    { "HEARTBEAT_INTERVAL", BAD ("abc", "invalid HEARTBEAT_INTERVAL=\"abc\": expected a positive integer of seconds") },
    { "HEARTBEAT_INTERVAL", BAD ("0", "invalid HEARTBEAT_INTERVAL=\"0\"") },
    { "HEARTBEAT_INTERVAL", BAD ("-5", "invalid HEARTBEAT_INTERVAL=\"-5\"") },
    { "HEARTBEAT_INTERVAL", BAD ("2.5", "invalid HEARTBEAT_INTERVAL=\"2.5\"") },
    { "HEARTBEAT_INTERVAL", BAD ("10s", "invalid HEARTBEAT_INTERVAL=\"10s\"") },
    { "HEARTBEAT_INTERVAL", BAD ("", "invalid HEARTBEAT_INTERVAL=\"\"") },
    { "IDLE_TIMEOUT", OK ("120", "120") },
    { "IDLE_TIMEOUT", BAD ("0", "invalid IDLE_TIMEOUT=\"0\"") },
    { "IDLE_TIMEOUT", BAD ("100000", "invalid IDLE_TIMEOUT=\"100000\"") },
    { "IDLE_TIMEOUT", BAD ("seventy", "invalid IDLE_TIMEOUT=\"seventy\"") },

    //  sizes
    { "MAX_MESSAGE_SIZE", OK ("1", "1") },
    { "MAX_MESSAGE_SIZE", OK ("16777216", "16777216") },
    { "MAX_MESSAGE_SIZE", BAD ("16777217", "invalid MAX_MESSAGE_SIZE=\"16777217\": expected a positive integer of bytes") },
    { "MAX_MESSAGE_SIZE", BAD ("0", "invalid MAX_MESSAGE_SIZE=\"0\"") },
    { "MAX_MESSAGE_SIZE", BAD ("64k", "invalid MAX_MESSAGE_SIZE=\"64k\"") },
    { "MAX_MESSAGE_SIZE", BAD ("", "invalid MAX_MESSAGE_SIZE=\"\"") },
    { "MAX_QUEUE_BYTES", OK ("2097152", "2097152") },
    { "MAX_QUEUE_BYTES", OK ("1073741824", "1073741824") },
    { "MAX_QUEUE_BYTES", BAD ("1073741825", "invalid MAX_QUEUE_BYTES=\"1073741825\"") },
    { "MAX_QUEUE_BYTES", BAD ("0", "invalid MAX_QUEUE_BYTES=\"0\"") },
    { "MAX_QUEUE_MESSAGES", OK ("100", "100") },
    { "MAX_QUEUE_MESSAGES", OK ("1048576", "1048576") },
    { "MAX_QUEUE_MESSAGES", BAD ("1048577", "invalid MAX_QUEUE_MESSAGES=\"1048577\"") },
    { "MAX_QUEUE_MESSAGES", BAD ("0", "invalid MAX_QUEUE_MESSAGES=\"0\"") },
    { "RATE_LIMIT", OK ("0", "0") },
    { "RATE_LIMIT", OK ("1000000", "1000000") },
    { "RATE_LIMIT", BAD ("1000001", "invalid RATE_LIMIT=\"1000001\": expected messages per second per connection, 0 (off)") },
    { "RATE_LIMIT", BAD ("-1", "invalid RATE_LIMIT=\"-1\"") },
    { "RATE_LIMIT", BAD ("00x", "invalid RATE_LIMIT=\"00x\"") },
    { "RATE_BURST", OK ("1", "1") },
    { "RATE_BURST", BAD ("0", "invalid RATE_BURST=\"0\"") },
    { "MAX_CONNECTIONS", OK ("1", "1") },
    { "MAX_CONNECTIONS", BAD ("0", "invalid MAX_CONNECTIONS=\"0\"") },
    { "MAX_CONNECTIONS", BAD ("10000001", "invalid MAX_CONNECTIONS=\"10000001\"") },
    { "MAX_CONNECTIONS_PER_IP", OK ("0", "0") },
    { "MAX_CONNECTIONS_PER_IP", OK ("16", "16") },
    { "MAX_CONNECTIONS_PER_IP", BAD ("many", "invalid MAX_CONNECTIONS_PER_IP=\"many\"") },
    { "HANDSHAKE_TIMEOUT", OK ("1", "1") },
    { "HANDSHAKE_TIMEOUT", OK ("300", "300") },
    { "HANDSHAKE_TIMEOUT", BAD ("0", "invalid HANDSHAKE_TIMEOUT=\"0\"") },
    { "HANDSHAKE_TIMEOUT", BAD ("301", "invalid HANDSHAKE_TIMEOUT=\"301\"") },
    { "ADMIN_HOST", OK ("0.0.0.0", "0.0.0.0") },
    { "ADMIN_HOST", BAD ("", "invalid ADMIN_HOST=\"\"") },
    { "ADMIN_PORT", OK ("0", "0") },
    { "ADMIN_PORT", OK ("9101", "9101") },
    { "ADMIN_PORT", BAD ("65536", "invalid ADMIN_PORT=\"65536\"") },
    { "ADMIN_PORT", BAD ("-1", "invalid ADMIN_PORT=\"-1\"") },
    { "DRAIN_TIMEOUT", OK ("0", "0") },
    { "DRAIN_TIMEOUT", OK ("3600", "3600") },
    { "DRAIN_TIMEOUT", BAD ("3601", "invalid DRAIN_TIMEOUT=\"3601\"") },
    { "GATEWAY_THREADS", OK ("0", "0") },
    { "GATEWAY_THREADS", OK ("1", "1") },
    { "GATEWAY_THREADS", OK ("64", "64") },
    { "GATEWAY_THREADS", BAD ("65", "invalid GATEWAY_THREADS=\"65\"") },
    { "GATEWAY_THREADS", BAD ("-1", "invalid GATEWAY_THREADS=\"-1\"") },
    { "GATEWAY_THREADS", BAD ("two", "invalid GATEWAY_THREADS=\"two\"") },
    { "LOG_FORMAT", OK ("json", "json") },
    { "LOG_FORMAT", OK ("JSON", "json") },
    { "LOG_FORMAT", BAD ("xml", "invalid LOG_FORMAT=\"xml\": expected text or json") },
    { "REDIS_OUTBOX_SIZE", OK ("1", "1") },
    { "REDIS_OUTBOX_SIZE", OK ("500", "500") },
    { "REDIS_OUTBOX_SIZE", OK ("1000000", "1000000") },
    { "REDIS_OUTBOX_SIZE", BAD ("1000001", "invalid REDIS_OUTBOX_SIZE=\"1000001\": expected a positive integer of messages, at most 1000000") },
    { "REDIS_OUTBOX_SIZE", BAD ("0", "invalid REDIS_OUTBOX_SIZE=\"0\"") },
    { "REDIS_OUTBOX_SIZE", BAD ("-1", "invalid REDIS_OUTBOX_SIZE=\"-1\"") },
    { "REDIS_OUTBOX_SIZE", BAD ("10k", "invalid REDIS_OUTBOX_SIZE=\"10k\"") },
    { "REDIS_OUTBOX_SIZE", BAD ("", "invalid REDIS_OUTBOX_SIZE=\"\"") },

    { "LOG_LEVEL", OK ("error", "error") },
    { "LOG_LEVEL", OK ("warn", "warn") },
    { "LOG_LEVEL", OK ("info", "info") },
    { "LOG_LEVEL", OK ("debug", "debug") },
    { "LOG_LEVEL", OK ("DEBUG", "debug") },
    { "LOG_LEVEL", BAD ("trace", "invalid LOG_LEVEL=\"trace\": expected one of error warn info debug") },
    { "LOG_LEVEL", BAD ("warning", "invalid LOG_LEVEL=\"warning\"") },
    { "LOG_LEVEL", BAD ("", "invalid LOG_LEVEL=\"\"") },

    { "PERMESSAGE_DEFLATE", OK ("1", "1") },
    { "PERMESSAGE_DEFLATE", OK ("true", "1") },
    { "PERMESSAGE_DEFLATE", OK ("yes", "1") },
    { "PERMESSAGE_DEFLATE", OK ("on", "1") },
    { "PERMESSAGE_DEFLATE", OK ("TRUE", "1") },
    { "PERMESSAGE_DEFLATE", OK ("0", "0") },
    { "PERMESSAGE_DEFLATE", OK ("false", "0") },
    { "PERMESSAGE_DEFLATE", OK ("no", "0") },
    { "PERMESSAGE_DEFLATE", OK ("off", "0") },
    { "PERMESSAGE_DEFLATE", BAD ("2", "invalid PERMESSAGE_DEFLATE=\"2\": expected 0/1") },
    { "PERMESSAGE_DEFLATE", BAD ("enabled", "invalid PERMESSAGE_DEFLATE=\"enabled\"") },
    { "PERMESSAGE_DEFLATE", BAD ("", "invalid PERMESSAGE_DEFLATE=\"\"") },
};

#define SET_ROWS (sizeof s_set_rows / sizeof s_set_rows [0])

//  Runs one set and checks its outcome. For a success the field must hold
//  the expected rendering; for a failure the error must carry the expected
//  text and the field must keep the value it had before.
static void
s_check_set (const char *label, const char *name, const char *value, int rc_expected,
             const char *expected)
{
    rtws_config_t *cfg = rtws_config_new ();
    if (!cfg)
        abort ();
    //  a non-default starting point, so "unchanged" and "cleared" differ
    char err [512] = "";
    if (strcmp (name, "PERMESSAGE_DEFLATE") == 0 && rc_expected == 0)
        cfg->permessage_deflate = strcmp (expected, "1") != 0;
    char before [1024];
    s_render (cfg, name, before, sizeof before);
    int rc = rtws_config_set (cfg, name, value, err, sizeof err);
    char after [1024];
    s_render (cfg, name, after, sizeof after);

    char detail [2048];
    bool ok;
    if (rc_expected == 0) {
        ok = rc == 0 && strcmp (after, expected) == 0;
        snprintf (detail, sizeof detail, "rc %d err \"%.400s\", field \"%.400s\", expected \"%.400s\"",
                  rc, err, after, expected);
    }
    else {
        ok = rc == -1 && strstr (err, expected) && s_error_shape_ok (err, name)
          && strcmp (before, after) == 0;
        snprintf (detail, sizeof detail, "rc %d err \"%.400s\" (want \"%.200s\"), field \"%.400s\" (was \"%.400s\")",
                  rc, err, expected, after, before);
    }
    s_row (ok, label, detail);
    rtws_config_destroy (&cfg);
}

static void
s_test_set (void)
{
    for (size_t i = 0; i < SET_ROWS; i++) {
        const set_row_t *row = &s_set_rows [i];
        char label [256];
        snprintf (label, sizeof label, "set row %zu: %s=\"%.60s\"", i + 1, row->name, row->value);
        s_check_set (label, row->name, row->value, row->rc, row->expected);
    }

    rtws_config_t *cfg = rtws_config_new ();
    if (!cfg)
        abort ();
    char err [512] = "";

    //  the environment holds more than ours
    s_row (rtws_config_set (cfg, "PATH", "/bin", err, sizeof err) == 0 && cfg->port == 8000,
           "unknown name is ignored", err);
    s_row (rtws_config_set (cfg, "port", "1", err, sizeof err) == 0 && cfg->port == 8000,
           "names are case-sensitive: 'port' is not PORT", err);

    //  a failed set keeps the earlier good value
    rtws_config_set (cfg, "PORT", "9000", err, sizeof err);
    rtws_config_set (cfg, "PORT", "nope", err, sizeof err);
    s_row (cfg->port == 9000, "failed set keeps the previous value", NULL);
    rtws_config_set (cfg, "ALLOWED_ORIGINS", "https://a.example", err, sizeof err);
    rtws_config_set (cfg, "ALLOWED_ORIGINS", "https://b.example,bad", err, sizeof err);
    s_row (cfg->allowed_origins_count == 1 && strcmp (cfg->allowed_origins [0], "https://a.example") == 0,
           "failed ALLOWED_ORIGINS keeps the previous list", NULL);
    rtws_config_set (cfg, "ALLOWED_ORIGINS", "", err, sizeof err);
    s_row (cfg->allowed_origins_count == 0, "empty ALLOWED_ORIGINS clears the list", NULL);
    rtws_config_set (cfg, "REDIS_URL", "redis://h", err, sizeof err);
    rtws_config_set (cfg, "REDIS_URL", "", err, sizeof err);
    s_row (cfg->redis_url == NULL, "empty REDIS_URL means the memory engine", NULL);

    //  bounds on texts
    char *long_value = malloc (70000);
    if (!long_value)
        abort ();
    memset (long_value, 'a', 65537);
    long_value [65537] = '\0';
    int rc = rtws_config_set (cfg, "JWT_SECRET", long_value, err, sizeof err);
    s_row (rc == -1 && !strstr (err, "aaaa") && strstr (err, "65537 bytes hidden")
           && s_error_shape_ok (err, "JWT_SECRET"),
           "over-long JWT_SECRET refused without echoing it", err);
    long_value [65536] = '\0';
    rc = rtws_config_set (cfg, "JWT_SECRET", long_value, err, sizeof err);
    s_row (rc == 0 && strlen (cfg->jwt_secret) == 65536, "65536-byte JWT_SECRET accepted", err);
    long_value [256] = '\0';
    rc = rtws_config_set (cfg, "HOST", long_value, err, sizeof err);
    s_row (rc == -1 && strlen (err) < 300 && strstr (err, "aaa...\""),
           "over-long HOST refused, value cut in the error line", err);
    long_value [255] = '\0';
    s_row (rtws_config_set (cfg, "HOST", long_value, err, sizeof err) == 0, "255-byte HOST accepted", err);

    //  257 origins is one too many
    {
        size_t size = 257 * 32;
        char *list = malloc (size);
        if (!list)
            abort ();
        size_t out = 0;
        for (int i = 0; i < 257; i++)
            out += (size_t) snprintf (list + out, size - out, "%shttps://h%d.example", i ? "," : "", i);
        rc = rtws_config_set (cfg, "ALLOWED_ORIGINS", list, err, sizeof err);
        s_row (rc == -1 && strstr (err, "more than 256 entries"), "257 ALLOWED_ORIGINS refused", err);
        char *last_comma = strrchr (list, ',');
        *last_comma = '\0';
        rc = rtws_config_set (cfg, "ALLOWED_ORIGINS", list, err, sizeof err);
        s_row (rc == 0 && cfg->allowed_origins_count == 256, "256 ALLOWED_ORIGINS accepted", err);
        free (list);
    }
    //  unix socket paths must fit sun_path (108 bytes with the NUL)
    memcpy (long_value, "unix:///", 8);
    memset (long_value + 8, 's', 200);
    long_value [7 + 107] = '\0';        //  path of 107 bytes
    s_row (rtws_config_set (cfg, "REDIS_URL", long_value, err, sizeof err) == 0,
           "unix socket path of 107 bytes accepted", err);
    long_value [7 + 107] = 's';
    long_value [7 + 108] = '\0';        //  path of 108 bytes
    s_row (rtws_config_set (cfg, "REDIS_URL", long_value, err, sizeof err) == -1,
           "unix socket path of 108 bytes refused", err);
    free (long_value);

    //  err is optional and never overrun
    s_row (rtws_config_set (cfg, "PORT", "x", NULL, 0) == -1, "NULL err still returns -1", NULL);
    char tiny [8];
    memset (tiny, 'Z', sizeof tiny);
    rc = rtws_config_set (cfg, "PORT", "x", tiny, 6);
    s_row (rc == -1 && strlen (tiny) == 5 && tiny [7] == 'Z', "short err buffer is cut, not overrun", NULL);

    rtws_config_destroy (&cfg);
}

//  ---------------------------------------------------------------------
//  rtws_config_check: key file and REDIS_URL

static const char s_pem [] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\n"
    "q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n"
    "-----END PUBLIC KEY-----\n";

//  Writes size bytes (contents repeated or cut to fit) to a fresh temp file;
//  returns its path (caller unlinks and frees).
static char *
s_temp_file (const char *contents, size_t size)
{
    char *path = strdup ("/tmp/rtws-test-config-XXXXXX");
    if (!path)
        abort ();
    int fd = mkstemp (path);
    if (fd < 0)
        abort ();
    size_t len = strlen (contents);
    size_t done = 0;
    while (done < size) {
        size_t chunk = size - done < len ? size - done : len;
        if (write (fd, contents, chunk) != (ssize_t) chunk)
            abort ();
        done += chunk;
    }
    close (fd);
    return path;
}

typedef struct {
    const char *why;
    const char *alg;
    const char *key_file;       //  "PEM", "EMPTY", "BIG", "EXACT", "JUNK", or a path, or NULL
    int rc;
    const char *expected;       //  rc -1: substring of err; rc 0: "key" when the key must load
} check_row_t;

static const check_row_t s_check_rows [] = {
    { "HS256 needs no key file", "HS256", NULL, 0, "" },
    { "HS256 ignores a missing key file", "HS256", "/nonexistent/rtws.pem", 0, "" },
    { "HS512 ignores a valid key file", "HS512", "PEM", 0, "" },
    { "RS256 loads its key", "RS256", "PEM", 0, "key" },
    { "ES256 loads its key", "ES256", "PEM", 0, "key" },
    { "ES512 loads its key", "ES512", "PEM", 0, "key" },
    { "a 65536-byte key file is accepted", "RS256", "EXACT", 0, "key" },
    { "RS256 without a key file",
      "RS256", NULL, -1, "invalid JWT_PUBLIC_KEY_FILE=\"\": required when JWT_ALG=RS256" },
    { "ES384 without a key file", "ES384", NULL, -1, "required when JWT_ALG=ES384" },
    { "RS512 without a key file", "RS512", NULL, -1, "required when JWT_ALG=RS512" },
    { "missing key file named with its path",
      "RS256", "/nonexistent/rtws.pem",
      -1, "invalid JWT_PUBLIC_KEY_FILE=\"/nonexistent/rtws.pem\": cannot open: No such file" },
    { "key file that is a directory", "RS256", "/tmp", -1, "invalid JWT_PUBLIC_KEY_FILE=\"/tmp\": not a regular file" },
    { "empty key file", "RS256", "EMPTY", -1, "empty file" },
    { "key file over 64 KiB", "RS256", "BIG", -1, "larger than 65536 bytes" },
    { "key file that is not PEM", "RS256", "JUNK", -1, "not a PEM file" },
};

static void
s_test_check (void)
{
    char *pem = s_temp_file (s_pem, strlen (s_pem));
    char *empty = s_temp_file ("", 0);
    char *big = s_temp_file (s_pem, 65537);
    char *exact = s_temp_file (s_pem, 65536);
    static const char ssh_key [] = "ssh-rsa AAAAB3NzaC1yc2E user@host\n";
    char *junk = s_temp_file (ssh_key, strlen (ssh_key));

    for (size_t i = 0; i < sizeof s_check_rows / sizeof s_check_rows [0]; i++) {
        const check_row_t *row = &s_check_rows [i];
        const char *path = row->key_file;
        if (path && strcmp (path, "PEM") == 0)   path = pem;
        if (path && strcmp (path, "EMPTY") == 0) path = empty;
        if (path && strcmp (path, "BIG") == 0)   path = big;
        if (path && strcmp (path, "EXACT") == 0) path = exact;
        if (path && strcmp (path, "JUNK") == 0)  path = junk;

        rtws_config_t *cfg = rtws_config_new ();
        if (!cfg)
            abort ();
        char err [512] = "";
        bool ok = rtws_config_set (cfg, "JWT_ALG", row->alg, err, sizeof err) == 0
               && (!path || rtws_config_set (cfg, "JWT_PUBLIC_KEY_FILE", path, err, sizeof err) == 0);
        int rc = rtws_config_check (cfg, err, sizeof err);
        ok = ok && rc == row->rc;
        if (row->rc == -1)
            ok = ok && strstr (err, row->expected) && s_error_shape_ok (err, "JWT_PUBLIC_KEY_FILE");
        else
        if (strcmp (row->expected, "key") == 0) {
            size_t expected_len = path == exact ? 65536 : strlen (s_pem);
            ok = ok && cfg->jwt_public_key && cfg->jwt_public_key_len == expected_len
              && strlen (cfg->jwt_public_key) == expected_len
              && strncmp (cfg->jwt_public_key, s_pem, strlen (s_pem)) == 0;
        }
        else
            ok = ok && cfg->jwt_public_key == NULL && cfg->jwt_public_key_len == 0;
        char label [160];
        snprintf (label, sizeof label, "check row %zu (%s)", i + 1, row->why);
        s_row (ok, label, err);
        rtws_config_destroy (&cfg);
    }

    //  checking again after a switch to HS* drops the loaded key
    rtws_config_t *cfg = rtws_config_new ();
    if (!cfg)
        abort ();
    char err [512] = "";
    rtws_config_set (cfg, "JWT_ALG", "RS256", err, sizeof err);
    rtws_config_set (cfg, "JWT_PUBLIC_KEY_FILE", pem, err, sizeof err);
    int rc1 = rtws_config_check (cfg, err, sizeof err);
    int rc2 = rtws_config_check (cfg, err, sizeof err);
    s_row (rc1 == 0 && rc2 == 0 && cfg->jwt_public_key, "check twice keeps one key (ASan: no leak)", err);
    rtws_config_set (cfg, "JWT_ALG", "HS256", err, sizeof err);
    s_row (rtws_config_check (cfg, err, sizeof err) == 0 && cfg->jwt_public_key == NULL,
           "switching to HS256 drops the key", err);

    //  REDIS_URL is checked again, as a struct can be filled by hand
    free (cfg->redis_url);
    cfg->redis_url = strdup ("redis://:hunter2@host:99999");
    rc1 = rtws_config_check (cfg, err, sizeof err);
    s_row (rc1 == -1 && strstr (err, "invalid REDIS_URL=\"redis://***@host:99999\"")
           && !strstr (err, "hunter2"),
           "check refuses a malformed REDIS_URL and masks its password", err);
    free (cfg->redis_url);
    cfg->redis_url = strdup ("redis://host:6379/3");
    s_row (rtws_config_check (cfg, err, sizeof err) == 0, "check accepts a good REDIS_URL", err);
    rtws_config_destroy (&cfg);

    unlink (pem);
    unlink (empty);
    unlink (big);
    unlink (exact);
    unlink (junk);
    free (pem);
    free (empty);
    free (big);
    free (exact);
    free (junk);
}

//  ---------------------------------------------------------------------
//  rtws_config_load_env

static const char *s_names [] = {
    "HOST", "PORT", "JWT_SECRET", "JWT_ALG", "JWT_PUBLIC_KEY_FILE", "JWT_AUDIENCE",
    "JWT_ISSUER", "REDIS_URL", "ALLOWED_ORIGINS", "PRESENCE_TTL", "HEARTBEAT_INTERVAL",
    "IDLE_TIMEOUT", "MAX_MESSAGE_SIZE", "MAX_QUEUE_BYTES", "MAX_QUEUE_MESSAGES",
    "REDIS_OUTBOX_SIZE", "LOG_LEVEL", "PERMESSAGE_DEFLATE"
};
#define NAMES (sizeof s_names / sizeof s_names [0])

typedef struct {
    const char *why;
    const char *env [6][2];     //  name, value pairs; NULL name ends
    int rc;
    const char *expected [6][2];    //  rc 0: name, rendering; rc -1: [0][0] err substring
} env_row_t;

static const env_row_t s_env_rows [] = {
    { "empty environment gives the defaults", { { NULL } }, 0,
      { { "PORT", "8000" }, { "HEARTBEAT_INTERVAL", "25" }, { "REDIS_URL", "(null)" } } },
    { "every kind of variable is read",
      { { "PORT", "9000" }, { "HEARTBEAT_INTERVAL", "10" },
        { "ALLOWED_ORIGINS", "https://A.example:443, http://b.example" },
        { "LOG_LEVEL", "debug" }, { "PERMESSAGE_DEFLATE", "on" }, { NULL } }, 0,
      { { "PORT", "9000" }, { "HEARTBEAT_INTERVAL", "10" },
        { "ALLOWED_ORIGINS", "https://a.example,http://b.example" },
        { "LOG_LEVEL", "debug" }, { "PERMESSAGE_DEFLATE", "1" } } },
    { "REDIS_URL and JWT claims",
      { { "REDIS_URL", "redis://redis:6379/0" }, { "JWT_AUDIENCE", "aud" },
        { "JWT_ISSUER", "iss" }, { "HOST", "0.0.0.0" }, { "REDIS_OUTBOX_SIZE", "250" },
        { NULL } }, 0,
      { { "REDIS_URL", "redis://redis:6379/0" }, { "JWT_AUDIENCE", "aud" },
        { "JWT_ISSUER", "iss" }, { "HOST", "0.0.0.0" }, { "REDIS_OUTBOX_SIZE", "250" } } },
    { "bad REDIS_OUTBOX_SIZE stops loading",
      { { "REDIS_OUTBOX_SIZE", "0" }, { NULL } }, -1,
      { { "invalid REDIS_OUTBOX_SIZE=\"0\": expected a positive integer of messages" } } },
    { "empty optional variables mean unset",
      { { "REDIS_URL", "" }, { "ALLOWED_ORIGINS", "" }, { "JWT_AUDIENCE", "" }, { NULL } }, 0,
      { { "REDIS_URL", "(null)" }, { "ALLOWED_ORIGINS", "" }, { "JWT_AUDIENCE", "(null)" } } },
    { "bad interval stops loading",
      { { "HEARTBEAT_INTERVAL", "abc" }, { NULL } }, -1,
      { { "invalid HEARTBEAT_INTERVAL=\"abc\": expected a positive integer of seconds" } } },
    { "empty required variable is an error",
      { { "PORT", "" }, { NULL } }, -1, { { "invalid PORT=\"\"" } } },
    { "JWT_ALG=none is refused",
      { { "JWT_ALG", "none" }, { NULL } }, -1, { { "invalid JWT_ALG=\"none\"" } } },
    { "RS256 without a key file fails in the check step",
      { { "JWT_ALG", "RS256" }, { NULL } }, -1, { { "invalid JWT_PUBLIC_KEY_FILE=\"\"" } } },
    { "RS256 with a missing key file",
      { { "JWT_ALG", "RS256" }, { "JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem" }, { NULL } }, -1,
      { { "invalid JWT_PUBLIC_KEY_FILE=\"/nonexistent/key.pem\"" } } },
    { "bad origin entry named",
      { { "ALLOWED_ORIGINS", "https://ok.example, ftp//bad" }, { NULL } }, -1,
      { { "entry \"ftp//bad\" is not an origin" } } },
    { "malformed REDIS_URL",
      { { "REDIS_URL", "redis//localhost" }, { NULL } }, -1, { { "invalid REDIS_URL=\"redis//localhost\"" } } },
};

static void
s_test_load_env (void)
{
    for (size_t i = 0; i < sizeof s_env_rows / sizeof s_env_rows [0]; i++) {
        const env_row_t *row = &s_env_rows [i];
        for (size_t n = 0; n < NAMES; n++)
            unsetenv (s_names [n]);
        for (size_t n = 0; n < 6 && row->env [n][0]; n++)
            setenv (row->env [n][0], row->env [n][1], 1);

        rtws_config_t *cfg = rtws_config_new ();
        if (!cfg)
            abort ();
        char err [512] = "";
        int rc = rtws_config_load_env (cfg, err, sizeof err);
        bool ok = rc == row->rc;
        char detail [1024];
        snprintf (detail, sizeof detail, "rc %d err \"%s\"", rc, err);
        if (row->rc == 0) {
            for (size_t n = 0; n < 6 && row->expected [n][0]; n++) {
                char got [512];
                s_render (cfg, row->expected [n][0], got, sizeof got);
                if (strcmp (got, row->expected [n][1]) != 0) {
                    ok = false;
                    snprintf (detail, sizeof detail, "%s is \"%s\", expected \"%s\"",
                              row->expected [n][0], got, row->expected [n][1]);
                }
            }
        }
        else
            ok = ok && strstr (err, row->expected [0][0]) && !strchr (err, '\n');
        char label [160];
        snprintf (label, sizeof label, "env row %zu (%s)", i + 1, row->why);
        s_row (ok, label, detail);
        rtws_config_destroy (&cfg);
    }
    for (size_t n = 0; n < NAMES; n++)
        unsetenv (s_names [n]);
}

//  ---------------------------------------------------------------------
//  rtws_redis_url_parse: what the Redis engine connects to

typedef struct {
    const char *url;
    int rc;
    const char *host;           //  NULL = must be NULL
    int port;
    const char *password;
    int db;
    const char *unix_path;
} url_row_t;

static const url_row_t s_url_rows [] = {
    //  defaults: port 6379, db 0, no password
    { "redis://localhost", 0, "localhost", 6379, NULL, 0, NULL },
    { "redis://localhost:6380", 0, "localhost", 6380, NULL, 0, NULL },
    { "redis://localhost/3", 0, "localhost", 6379, NULL, 3, NULL },
    { "redis://127.0.0.1:1/0", 0, "127.0.0.1", 1, NULL, 0, NULL },
    { "redis://redis:65535/15", 0, "redis", 65535, NULL, 15, NULL },
    { "redis://r:007/007", 0, "r", 7, NULL, 7, NULL },
    { "redis://h/2147483647", 0, "h", 6379, NULL, 2147483647, NULL },
    //  passwords, verbatim: the last "@" ends them, no %-decoding
    { "redis://:s3cret@redis.example.com:6380/2", 0, "redis.example.com", 6380, "s3cret", 2, NULL },
    { "redis://:p@ss@host", 0, "host", 6379, "p@ss", 0, NULL },
    { "redis://:a:b/c@host:1/1", 0, "host", 1, "a:b/c", 1, NULL },
    { "redis://:p%40ss@host", 0, "host", 6379, "p%40ss", 0, NULL },
    //  IPv6 literals lose their brackets
    { "redis://[::1]:6379/1", 0, "::1", 6379, NULL, 1, NULL },
    { "redis://[::1]", 0, "::1", 6379, NULL, 0, NULL },
    { "redis://:pw@[fe80::1]:7000", 0, "fe80::1", 7000, "pw", 0, NULL },
    //  unix sockets: path only
    { "unix:///var/run/redis/redis.sock", 0, NULL, 6379, NULL, 0, "/var/run/redis/redis.sock" },
    { "unix:///s", 0, NULL, 6379, NULL, 0, "/s" },
    //  anything REDIS_URL refuses is refused here too, with nothing allocated
    { "", -1, NULL, 0, NULL, 0, NULL },
    { "localhost:6379", -1, NULL, 0, NULL, 0, NULL },
    { "redis://", -1, NULL, 0, NULL, 0, NULL },
    { "redis://host:0", -1, NULL, 0, NULL, 0, NULL },
    { "redis://host:65536", -1, NULL, 0, NULL, 0, NULL },
    { "redis://host/", -1, NULL, 0, NULL, 0, NULL },
    { "redis://host/99999999999", -1, NULL, 0, NULL, 0, NULL },
    { "redis://user:pw@host", -1, NULL, 0, NULL, 0, NULL },
    { "redis://:@host", -1, NULL, 0, NULL, 0, NULL },
    { "redis://[::1", -1, NULL, 0, NULL, 0, NULL },
    { "unix://relative.sock", -1, NULL, 0, NULL, 0, NULL },
    { "rediss://host", -1, NULL, 0, NULL, 0, NULL },
};

static bool
s_same (const char *got, const char *expected)
{
    if (!got || !expected)
        return got == expected;
    return strcmp (got, expected) == 0;
}

static void
s_test_url_parse (void)
{
    for (size_t i = 0; i < sizeof s_url_rows / sizeof s_url_rows [0]; i++) {
        const url_row_t *row = &s_url_rows [i];
        rtws_redis_url_t parts;
        memset (&parts, 0x5a, sizeof parts);    //  parse must overwrite every field
        int rc = rtws_redis_url_parse (row->url, &parts);
        bool ok = rc == row->rc
               && s_same (parts.host, row->host) && parts.port == row->port
               && s_same (parts.password, row->password) && parts.db == row->db
               && s_same (parts.unix_path, row->unix_path);
        char label [160], detail [512];
        snprintf (label, sizeof label, "url row %zu (\"%s\")", i + 1, row->url);
        snprintf (detail, sizeof detail, "rc %d host %s port %d password %s db %d unix %s",
                  rc, parts.host ? parts.host : "(null)", parts.port,
                  parts.password ? parts.password : "(null)", parts.db,
                  parts.unix_path ? parts.unix_path : "(null)");
        s_row (ok, label, detail);
        rtws_redis_url_clear (&parts);
        s_row (!parts.host && !parts.password && !parts.unix_path, "clear zeroes the parts", label);
        rtws_redis_url_clear (&parts);
    }
    rtws_redis_url_t parts;
    s_row (rtws_redis_url_parse (NULL, &parts) == -1 && !parts.host, "a NULL url is refused", NULL);
}

//  ---------------------------------------------------------------------
//  rtws_config_origin_allowed

static void
s_test_origin_allowed (void)
{
    static const struct {
        const char *list;       //  ALLOWED_ORIGINS
        const char *origin;     //  already normalised by the caller
        bool expected;
    } rows [] = {
        { "", "https://anything.example", true },
        { "", NULL, true },
        { "https://A.example:443, http://b.example:8080", "https://a.example", true },
        { "https://A.example:443, http://b.example:8080", "http://b.example:8080", true },
        { "https://A.example:443, http://b.example:8080", "https://b.example:8080", false },
        { "https://A.example:443, http://b.example:8080", "http://a.example", false },
        { "https://A.example:443, http://b.example:8080", "https://a.example.evil", false },
        { "https://A.example:443, http://b.example:8080", "https://a.exampl", false },
        { "https://A.example:443, http://b.example:8080", "", false },
        { "https://A.example:443, http://b.example:8080", NULL, false },
        { "http://[::1]:8080", "http://[::1]:8080", true },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++) {
        rtws_config_t *cfg = rtws_config_new ();
        if (!cfg)
            abort ();
        char err [512] = "";
        int rc = rtws_config_set (cfg, "ALLOWED_ORIGINS", rows [i].list, err, sizeof err);
        bool got = rtws_config_origin_allowed (cfg, rows [i].origin);
        char label [256];
        snprintf (label, sizeof label, "origin_allowed row %zu (list \"%s\", origin %s)",
                  i + 1, rows [i].list, rows [i].origin ? rows [i].origin : "NULL");
        s_row (rc == 0 && got == rows [i].expected, label, err);
        rtws_config_destroy (&cfg);
    }
}

int
main (void)
{
    s_test_defaults ();
    s_test_set ();
    s_test_check ();
    s_test_load_env ();
    s_test_url_parse ();
    s_test_origin_allowed ();
    printf ("test_config: %zu rows, %zu failed\n", s_rows_run, s_rows_failed);
    return s_rows_failed ? 1 : 0;
}
