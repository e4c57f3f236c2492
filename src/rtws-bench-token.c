/*  rtws-bench-token.c - what rtws-bench needs from libjwt and hiredis.

    Tokens are minted before the clock starts (a pool of distinct tokens
    for --token-mode mint, one for reuse), so that the generator's signing
    cost never shows in a handshake rate.

    The Redis publisher thread is the generator's second way in: it
    publishes chat.delivery JSON on room:{room} the way any backend may
    (docs/PROTOCOL.md section 4), paced like the WebSocket publishers, so
    that fan-out can be measured without the server's own publish path.
    It owns its hiredis context; the coordinator only reads its counter.
*/
#include "rtws-bench.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RB_KEY_MAX   65536

static char *
s_read_file (const char *path, size_t *len_p)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        fprintf (stderr, "rtws-bench: cannot open key file '%s': %s\n", path, strerror (errno));
        return NULL;
    }
    char *data = malloc (RB_KEY_MAX + 1);
    size_t len = data? fread (data, 1, RB_KEY_MAX + 1, file): 0;
    fclose (file);
    if (!data || len == 0 || len > RB_KEY_MAX) {
        fprintf (stderr, "rtws-bench: key file '%s' is empty, unreadable or over 64 KiB\n", path);
        free (data);
        return NULL;
    }
    data [len] = 0;
    *len_p = len;
    return data;
}

char **
rb_tokens_mint (const rb_opts_t *opts, size_t count)
{
    char alg_name [16];
    snprintf (alg_name, sizeof alg_name, "%s", opts->jwt_alg? opts->jwt_alg: "HS256");
    for (char *c = alg_name; *c; c++)
        *c = (char) toupper ((unsigned char) *c);
    jwt_alg_t alg = jwt_str_alg (alg_name);
    if (alg == JWT_ALG_INVAL || alg == JWT_ALG_NONE) {
        fprintf (stderr, "rtws-bench: --jwt-alg '%s' is not one libjwt signs with\n", alg_name);
        return NULL;
    }
    bool hmac = alg == JWT_ALG_HS256 || alg == JWT_ALG_HS384 || alg == JWT_ALG_HS512;
    size_t key_len = 0;
    char *key = NULL;
    if (hmac) {
        if (!opts->jwt_secret) {
            fprintf (stderr, "rtws-bench: %s needs --jwt-secret\n", alg_name);
            return NULL;
        }
        key = strdup (opts->jwt_secret);
        key_len = strlen (opts->jwt_secret);
    }
    else {
        if (!opts->jwt_key_file) {
            fprintf (stderr, "rtws-bench: %s needs --jwt-key PRIVATE.pem\n", alg_name);
            return NULL;
        }
        key = s_read_file (opts->jwt_key_file, &key_len);
    }
    char **tokens = key? calloc (count, sizeof *tokens): NULL;
    long now = (long) time (NULL);
    for (size_t i = 0; tokens && i < count; i++) {
        jwt_t *jwt = NULL;
        char sub [96];
        snprintf (sub, sizeof sub, "%s%zu", opts->user_prefix, i);
        if (jwt_new (&jwt)
        ||  jwt_add_grant (jwt, "sub", sub)
        ||  jwt_add_grant_int (jwt, "iat", now)
        ||  jwt_add_grant_int (jwt, "exp", now + 86400)
        ||  jwt_set_alg (jwt, alg, (const unsigned char *) key, (int) key_len)
        ||  !(tokens [i] = jwt_encode_str (jwt))) {
            fprintf (stderr, "rtws-bench: libjwt could not sign a %s token"
                     " (does the key suit the algorithm?)\n", alg_name);
            jwt_free (jwt);
            rb_tokens_free (&tokens, count);
            break;
        }
        if (strlen (tokens [i]) >= RB_TOKEN_MAX) {
            fprintf (stderr, "rtws-bench: token longer than %d bytes\n", RB_TOKEN_MAX);
            jwt_free (jwt);
            rb_tokens_free (&tokens, count);
            break;
        }
        jwt_free (jwt);
    }
    free (key);
    return tokens;
}

void
rb_tokens_free (char ***tokens_p, size_t count)
{
    if (tokens_p && *tokens_p) {
        for (size_t i = 0; i < count; i++)
            free ((*tokens_p) [i]);     //  jwt_encode_str allocates with malloc
        free (*tokens_p);
        *tokens_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Redis publisher

typedef struct {
    rb_run_t *run;
    redisContext *redis;
    uint64_t *seq;              //  per virtual publisher
    uint64_t *step_sent;
    int step_seen;
} s_redis_t;

static void
s_redis_fail (rb_run_t *run, const char *what, const char *why)
{
    if (!atomic_load (&run->redis_failed)) {
        snprintf (run->redis_error, sizeof run->redis_error, "redis %s: %s", what, why);
        atomic_store (&run->redis_failed, 1);
    }
}

//  redis://[:password@]host[:port][/db]
static redisContext *
s_redis_connect (rb_run_t *run, const char *url)
{
    char host [RB_HOST_MAX] = "127.0.0.1", password [256] = "";
    int port = 6379, db = 0;
    const char *p = url;
    if (strncmp (p, "redis://", 8) == 0)
        p += 8;
    const char *at = strchr (p, '@');
    if (at) {
        const char *colon = memchr (p, ':', (size_t) (at - p));
        const char *pw = colon? colon + 1: p;
        snprintf (password, sizeof password, "%.*s", (int) (at - pw), pw);
        p = at + 1;
    }
    size_t host_len = strcspn (p, ":/");
    if (host_len > 0 && host_len < sizeof host)
        snprintf (host, sizeof host, "%.*s", (int) host_len, p);
    p += host_len;
    if (*p == ':')
        port = (int) strtol (p + 1, (char **) &p, 10);
    if (*p == '/')
        db = atoi (p + 1);
    struct timeval timeout = { 2, 0 };
    redisContext *redis = redisConnectWithTimeout (host, port, timeout);
    if (!redis || redis->err) {
        s_redis_fail (run, "connect", redis? redis->errstr: "out of memory");
        if (redis)
            redisFree (redis);
        return NULL;
    }
    redisReply *reply = NULL;
    if (*password)
        reply = redisCommand (redis, "AUTH %s", password);
    if (*password && (!reply || reply->type == REDIS_REPLY_ERROR)) {
        s_redis_fail (run, "AUTH", reply? reply->str: redis->errstr);
        freeReplyObject (reply);
        redisFree (redis);
        return NULL;
    }
    freeReplyObject (reply);
    if (db) {
        reply = redisCommand (redis, "SELECT %d", db);
        freeReplyObject (reply);
    }
    return redis;
}

static void *
s_redis_thread (void *arg)
{
    s_redis_t *self = arg;
    rb_run_t *run = self->run;
    const rb_opts_t *opts = run->opts;
    size_t pubs = run->pub_total;
    char text [70000], payload [70400], channel [128], room [96];
    while (atomic_load (&run->phase) != RB_PHASE_STOP) {
        struct timespec nap = { 0, 200000 };
        if (atomic_load (&run->phase) != RB_PHASE_RUN || !atomic_load (&run->publishing)
        ||  atomic_load (&run->redis_failed)) {
            nanosleep (&nap, NULL);
            continue;
        }
        int step = atomic_load (&run->step);
        if (step != self->step_seen) {
            self->step_seen = step;
            memset (self->step_sent, 0, pubs * sizeof self->step_sent [0]);
        }
        uint64_t bits = atomic_load (&run->rate_bits);
        double rate;
        memcpy (&rate, &bits, sizeof rate);
        uint64_t now = rb_now_ns ();
        uint64_t due = rb_due (run, now, pubs);
        uint64_t allowed = UINT64_MAX;
        if (rate <= 0) {
            uint64_t published = rb_get (&run->redis_published), delivered = 0;
            for (size_t w = 0; w < run->worker_count; w++)
                delivered += rb_get (&run->workers [w].stats.delivered);
            uint64_t expected = published * run->subs_per_room;
            uint64_t in_flight = expected > delivered? expected - delivered: 0;
            uint64_t window = opts->window * run->subs_per_room;
            allowed = in_flight >= window? 0: (window - in_flight) / run->subs_per_room + 1;
        }
        size_t pending = 0;
        for (size_t k = 0; k < pubs && allowed > 0; k++) {
            uint64_t target = rate > 0? due: self->step_sent [k] + allowed;
            for (int burst = 0; burst < 512 && self->step_sent [k] < target; burst++) {
                uint64_t left = atomic_load (&run->publish_quota);
                if (left != UINT64_MAX) {
                    if (left == 0)
                        break;
                    atomic_fetch_sub (&run->publish_quota, 1);
                }
                size_t text_len = rb_stamp (text, sizeof text, rb_now_ns (), self->seq [k],
                                            k, opts->text_size);
                rb_room_name (opts, k / opts->publishers, room, sizeof room);
                snprintf (channel, sizeof channel, "room:%s", room);
                int n = snprintf (payload, sizeof payload,
                                  "{\"type\":\"chat.delivery\",\"room\":\"%s\",\"user\":\"bench\","
                                  "\"text\":\"%.*s\",\"id\":\"r%zu-%llu\",\"ts\":%.6f}",
                                  room, (int) text_len, text, k,
                                  (unsigned long long) self->seq [k], (double) time (NULL));
                redisAppendCommand (self->redis, "PUBLISH %s %b", channel, payload, (size_t) n);
                self->seq [k]++;
                self->step_sent [k]++;
                pending++;
                if (rate <= 0 && --allowed == 0)
                    break;
            }
        }
        for (size_t i = 0; i < pending; i++) {
            void *reply = NULL;
            if (redisGetReply (self->redis, &reply) != REDIS_OK) {
                s_redis_fail (run, "PUBLISH", self->redis->errstr);
                break;
            }
            freeReplyObject (reply);
            rb_add (&run->redis_published, 1);
        }
        if (pending == 0)
            nanosleep (&nap, NULL);
    }
    return NULL;
}

static void *
s_redis_main (void *arg)
{
    s_redis_t *self = arg;
    s_redis_thread (self);
    if (self->redis)
        redisFree (self->redis);
    free (self->seq);
    free (self->step_sent);
    free (self);
    return NULL;
}

int
rb_redis_start (rb_run_t *run, pthread_t *thread)
{
    s_redis_t *self = calloc (1, sizeof *self);
    if (!self)
        return -1;
    self->run = run;
    self->step_seen = -1;
    self->seq = calloc (run->pub_total, sizeof self->seq [0]);
    self->step_sent = calloc (run->pub_total, sizeof self->step_sent [0]);
    self->redis = s_redis_connect (run, run->opts->redis_url);
    if (!self->seq || !self->step_sent || !self->redis) {
        if (self->redis)
            redisFree (self->redis);
        free (self->seq);
        free (self->step_sent);
        free (self);
        return -1;
    }
    if (pthread_create (thread, NULL, s_redis_main, self)) {
        redisFree (self->redis);
        free (self->seq);
        free (self->step_sent);
        free (self);
        return -1;
    }
    return 0;
}
