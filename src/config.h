/*  config.h - rtwsd configuration: defaults, environment, validation.

    A config is built once by rtwsd.c before any actor starts and is
    read-only afterwards; actors receive a const pointer as their zactor
    argument and never write to it.
*/
#ifndef RTWS_CONFIG_H_INCLUDED
#define RTWS_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    char *host;                 //  HOST, listen address
    int port;                   //  PORT, 1..65535
    char *jwt_secret;           //  JWT_SECRET, HMAC secret
    char *jwt_alg;              //  JWT_ALG, upper-case: HS256|HS384|HS512|RS*|ES*|PS*
    char *jwt_public_key_file;  //  JWT_PUBLIC_KEY_FILE or NULL
    char *jwt_public_key;       //  contents of that file (PEM), NULL for HS*
    size_t jwt_public_key_len;  //  its length in bytes
    char *jwt_audience;         //  JWT_AUDIENCE or NULL
    char *jwt_issuer;           //  JWT_ISSUER or NULL
    char *redis_url;            //  REDIS_URL or NULL (NULL = memory engine)
    size_t redis_outbox_size;   //  REDIS_OUTBOX_SIZE, PUBLISHes waiting for Redis plus
                                //  commands sent and unanswered, 1..1000000
    char **allowed_origins;     //  ALLOWED_ORIGINS, each normalised (origin.h)
    size_t allowed_origins_count; //  0 = any Origin accepted
    int presence_ttl;           //  PRESENCE_TTL seconds, > 0
    int heartbeat_interval;     //  HEARTBEAT_INTERVAL seconds, > 0
    int idle_timeout;           //  IDLE_TIMEOUT seconds, > 0
    size_t max_message_size;    //  MAX_MESSAGE_SIZE bytes, 1..16 MiB
    size_t max_queue_bytes;     //  MAX_QUEUE_BYTES, per-connection unsent output bound
    size_t max_queue_messages;  //  MAX_QUEUE_MESSAGES, per-connection unsent frames bound
    char *log_level;            //  LOG_LEVEL: error|warn|info|debug
    bool permessage_deflate;    //  PERMESSAGE_DEFLATE: 0|1, off by default
    size_t rate_limit;          //  RATE_LIMIT, data frames/s per connection, 0 = off
    size_t rate_burst;          //  RATE_BURST, token bucket depth
    size_t max_connections;     //  MAX_CONNECTIONS, on this node
    size_t max_connections_per_ip; //  MAX_CONNECTIONS_PER_IP, 0 = off
    int handshake_timeout;      //  HANDSHAKE_TIMEOUT, seconds to complete the upgrade
    char *admin_host;           //  ADMIN_HOST, the admin listener's address
    int admin_port;             //  ADMIN_PORT, /healthz /readyz /metrics; 0 = off
    int drain_timeout;          //  DRAIN_TIMEOUT, seconds to spread 1001 closes over
    char *log_format;           //  LOG_FORMAT: text|json
    int gateway_threads;        //  GATEWAY_THREADS, lws service threads; 0 = one per core
} rtws_config_t;

//  Returns a config holding the defaults of docs/PROTOCOL.md section 1.
rtws_config_t *rtws_config_new (void);

//  Destroys a config; idempotent, sets *self_p to NULL.
void rtws_config_destroy (rtws_config_t **self_p);

//  Sets one variable by name from its text value, validating it. Returns 0,
//  or -1 with a one-line message naming the variable and value in err.
//  Unknown names return 0 and change nothing (the environment holds more
//  than ours). An empty value means "unset" for the optional variables
//  (REDIS_URL, JWT_PUBLIC_KEY_FILE, JWT_AUDIENCE, JWT_ISSUER, ALLOWED_ORIGINS)
//  and is an error for the others.
int rtws_config_set (rtws_config_t *self, const char *name, const char *value,
                     char *err, size_t errlen);

//  Reads a config file: "NAME=value" lines with the environment's names,
//  "#" comments and blank lines, an optional "export " and quotes around
//  the value. An unknown name or invalid value fails with "FILE:LINE: ..."
//  in err. Does not call rtws_config_check (the caller does, once every
//  source is read). Returns 0 or -1.
int rtws_config_load_file (rtws_config_t *self, const char *path, char *err, size_t errlen);

//  The variables by index (0 .. rtws_config_count () - 1), for comparing
//  two configurations on SIGHUP.
size_t rtws_config_count (void);
const char *rtws_config_name (size_t index);

//  Writes a variable's value as text that rtws_config_set accepts back
//  (unmasked: never log it for JWT_SECRET or REDIS_URL). Returns 0, or -1
//  for an unknown name or a buffer too small.
int rtws_config_value (const rtws_config_t *self, const char *name, char *buf, size_t size);

//  Prints the effective configuration as NAME=value lines, with the JWT
//  secret and any Redis password masked (rtwsd --check-config).
void rtws_config_print (const rtws_config_t *self, FILE *out);

//  Reads every known variable from the process environment via
//  rtws_config_set, then rtws_config_check. Returns 0 or -1 with err set.
int rtws_config_load_env (rtws_config_t *self, char *err, size_t errlen);

//  Cross-checks after all values are set: loads JWT_PUBLIC_KEY_FILE when the
//  algorithm is RS*/ES*/PS* (required then), checks REDIS_URL's shape.
//  Returns 0 or -1 with err set.
int rtws_config_check (rtws_config_t *self, char *err, size_t errlen);

//  True when origin (already normalised) is allowed by ALLOWED_ORIGINS.
bool rtws_config_origin_allowed (const rtws_config_t *self, const char *origin);

//  The parts of a REDIS_URL. Exactly one of host and unix_path is set.
typedef struct {
    char *host;                 //  redis://: host name or address, an IPv6
                                //  literal without its brackets; NULL for unix://
    int port;                   //  redis://: 6379 when the URL names none
    char *password;             //  the text between ":" and the last "@", taken
                                //  verbatim (no %-decoding); NULL when none
    int db;                     //  the "/db" number, 0 when the URL names none
    char *unix_path;            //  unix://: the socket path; NULL for redis://
} rtws_redis_url_t;

//  Splits url (a value REDIS_URL accepts) into *parts, which the caller
//  clears with rtws_redis_url_clear. Returns 0, or -1 with *parts all zero
//  when url is not a valid REDIS_URL (or memory ran out).
int rtws_redis_url_parse (const char *url, rtws_redis_url_t *parts);

//  Frees what rtws_redis_url_parse allocated and zeroes *parts; idempotent.
void rtws_redis_url_clear (rtws_redis_url_t *parts);

#endif
