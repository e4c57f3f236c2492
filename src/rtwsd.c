/*  rtwsd.c - the rtws daemon: configuration, actors, signals.

    Reads the configuration (docs/PROTOCOL.md section 1), starts the five
    actors, waits for SIGINT or SIGTERM, drains the gateway (DRAIN: no new
    connections, /readyz 503, every client closed with 1001 spread over
    DRAIN_TIMEOUT) and then stops the actors in reverse order, gateway
    first, while router, presence and bridge are still there to hear the
    LEAVEs and DISCONNECTs and send the presence DOWNs.

    Signals: SIGINT and SIGTERM are blocked in every thread (the mask is
    inherited by the actor and ZeroMQ threads created after it is set)
    and taken here with sigwait, so no actor ever sees EINTR. A second
    signal during shutdown exits at once.
*/

#include "build-config.h"

#include <czmq.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include "auth.h"
#include "bridge.h"
#include "config.h"
#include "gateway.h"
#include "log.h"
#include "notify.h"
#include "presence.h"
#include "router.h"
#include "rtws.h"

#define MAIN "rtwsd"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "Usage: rtwsd [OPTION]...\n"
        "Real-time WebSocket server: GET /ws/{room}, JWT, rooms fanned out over\n"
        "a built-in memory engine or Redis Pub/Sub.\n"
        "\n"
        "Configuration: NAME=value from the environment or a config file (same\n"
        "names; see rtwsd(8) and docs/PROTOCOL.md). Precedence: options >\n"
        "environment > config file > defaults. Variables:\n"
        "  HOST PORT JWT_SECRET JWT_ALG JWT_PUBLIC_KEY_FILE JWT_AUDIENCE JWT_ISSUER\n"
        "  REDIS_URL REDIS_OUTBOX_SIZE ALLOWED_ORIGINS PRESENCE_TTL\n"
        "  HEARTBEAT_INTERVAL IDLE_TIMEOUT MAX_MESSAGE_SIZE MAX_QUEUE_BYTES\n"
        "  MAX_QUEUE_MESSAGES RATE_LIMIT RATE_BURST MAX_CONNECTIONS\n"
        "  MAX_CONNECTIONS_PER_IP HANDSHAKE_TIMEOUT ADMIN_HOST ADMIN_PORT\n"
        "  DRAIN_TIMEOUT LOG_LEVEL LOG_FORMAT PERMESSAGE_DEFLATE GATEWAY_THREADS\n"
        "\n"
        "Options:\n"
        "  -c, --config FILE  read NAME=value lines from FILE\n"
        "      --check-config validate, print the effective configuration\n"
        "                     (secrets masked) and exit\n"
        "  -H, --host ADDR    listen address (overrides HOST)\n"
        "  -p, --port PORT    listen port (overrides PORT)\n"
        "  -h, --help         show this help and exit\n"
        "  -V, --version      show the version and exit\n"
        "\n"
        "Signals: SIGTERM/SIGINT drain and exit (a second one exits at once);\n"
        "SIGHUP reloads the configuration.\n"
        "\n"
        "Exit status: 0 after a clean shutdown, 1 when the server cannot start,\n"
        "2 for an invalid configuration or usage.\n");
}

//  What the command line asked for; kept for SIGHUP, which reads the same
//  sources again.
typedef struct {
    const char *config_file;    //  --config, or NULL
    const char *host;           //  --host, or NULL
    const char *port;           //  --port, or NULL
    bool check_only;            //  --check-config
} s_args_t;

//  Builds a configuration from defaults, the config file, the environment
//  and the options, in rising precedence. Returns NULL with err set when a
//  value is invalid.
static rtws_config_t *
s_config_load (const s_args_t *args, char *err, size_t errlen)
{
    rtws_config_t *config = rtws_config_new ();
    assert (config);
    int rc = 0;
    if (args->config_file)
        rc = rtws_config_load_file (config, args->config_file, err, errlen);
    if (rc == 0)
        rc = rtws_config_load_env (config, err, errlen);
    if (rc == 0 && args->host)
        rc = rtws_config_set (config, "HOST", args->host, err, errlen);
    if (rc == 0 && args->port)
        rc = rtws_config_set (config, "PORT", args->port, err, errlen);
    if (rc == 0)
        rc = rtws_config_check (config, err, errlen);
    if (rc != 0)
        rtws_config_destroy (&config);
    return config;
}

//  A drain ends at most DRAIN_TIMEOUT + the gateway's close grace (2 s)
//  after it began; past this much more the gateway is wedged.
#define S_DRAIN_SLACK_MS 5000

//  Asks the gateway to drain and waits for its answer, bounded.
static void
s_drain (zactor_t *gateway, const rtws_config_t *config)
{
    int64_t start = zclock_mono ();
    zsock_set_rcvtimeo (gateway, config->drain_timeout * 1000 + S_DRAIN_SLACK_MS);
    zsock_send (gateway, "s", "DRAIN");
    int closed = 0;
    if (zsock_recv (gateway, "i", &closed) == 0)
        log_info (MAIN, "drained %d connections in %.1f s", closed,
                  (double) (zclock_mono () - start) / 1000.0);
    else
        log_warn (MAIN, "the drain did not end within %d s: stopping anyway",
                  config->drain_timeout + S_DRAIN_SLACK_MS / 1000);
    zsock_set_rcvtimeo (gateway, -1);
}

//  File descriptors besides the connections: listening and admin sockets,
//  Redis, zmq's and lws's own wake-up fds, handshakes not yet counted.
#define S_FD_MARGIN     1024

//  Debian's libwebsockets 4.1.6 is built with its debug checks: whenever a
//  socket is added or removed it scans a table as long as the open-file
//  limit (sanity_assert_no_sockfd_traces), so a handshake costs in
//  proportion to RLIMIT_NOFILE, not to the connections open (244 us of CPU
//  per handshake at 1,024 against 363 us at 20,000, BENCHMARKS.md). So the
//  soft limit is set to what MAX_CONNECTIONS needs: raised up to the hard
//  limit, or lowered when a unit grants far more (LimitNOFILE=1048576).
//  Returns the limit now in force.
static size_t
s_size_fd_limit (size_t max_connections)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) != 0)
        return 0;
    rlim_t want = (rlim_t) max_connections + S_FD_MARGIN;
    if (limit.rlim_max != RLIM_INFINITY && want > limit.rlim_max)
        want = limit.rlim_max;
    if (want != limit.rlim_cur) {
        rlim_t was = limit.rlim_cur;
        limit.rlim_cur = want;
        if (setrlimit (RLIMIT_NOFILE, &limit) == 0)
            log_info (MAIN, "open-file limit %llu (was %llu): MAX_CONNECTIONS + %d",
                      (unsigned long long) want, (unsigned long long) was, S_FD_MARGIN);
        else
            limit.rlim_cur = was;
    }
    if (limit.rlim_cur < (rlim_t) max_connections + S_FD_MARGIN)
        log_warn (MAIN, "the open-file limit (%llu, hard %llu) holds about %llu connections, "
                  "fewer than MAX_CONNECTIONS=%zu", (unsigned long long) limit.rlim_cur,
                  (unsigned long long) limit.rlim_max,
                  limit.rlim_cur > S_FD_MARGIN ? (unsigned long long) (limit.rlim_cur - S_FD_MARGIN) : 0ULL,
                  max_connections);
    return (size_t) limit.rlim_cur;
}

//  What SIGHUP cannot change without a restart: listeners, the engine and
//  values baked into running timers or tables. A change to one of these is
//  logged and the running value kept, so every actor sees one consistent
//  configuration.
static const char *s_restart_only [] = {
    "HOST", "PORT", "REDIS_URL", "REDIS_OUTBOX_SIZE", "PRESENCE_TTL", "ADMIN_HOST",
    "ADMIN_PORT", "HANDSHAKE_TIMEOUT", "MAX_CONNECTIONS_PER_IP", "PERMESSAGE_DEFLATE",
    "GATEWAY_THREADS", NULL
};

static bool
s_restart_only_var (const char *name)
{
    for (int i = 0; s_restart_only [i]; i++)
        if (streq (name, s_restart_only [i]))
            return true;
    return false;
}

//  Values never written to the log.
static bool
s_secret_var (const char *name)
{
    return streq (name, "JWT_SECRET") || streq (name, "REDIS_URL");
}

//  SIGHUP: reads every source again. An invalid configuration, or JWT
//  settings auth cannot use, is refused and the running one stays. Else
//  each actor switches to the new one (auth first, as it may still refuse),
//  and the old one is freed once all have answered.
static void
s_reload (const s_args_t *args, rtws_config_t **config_p, zactor_t *actors [])
{
    rtws_config_t *old = *config_p;
    char err [1024];
    rtws_config_t *fresh = s_config_load (args, err, sizeof err);
    if (!fresh) {
        log_error (MAIN, "reload refused, the running configuration stays: %s", err);
        return;
    }
    size_t changes = 0;
    //  Big enough for any value (a secret is at most 64 KiB).
    size_t size = 70000;
    char *before = malloc (size), *after = malloc (size);
    assert (before && after);
    for (size_t i = 0; i < rtws_config_count (); i++) {
        const char *name = rtws_config_name (i);
        if (rtws_config_value (old, name, before, size)
        ||  rtws_config_value (fresh, name, after, size)
        ||  streq (before, after))
            continue;
        if (s_restart_only_var (name)) {
            log_warn (MAIN, "reload: %s changed; it takes effect after a restart", name);
            int rc = rtws_config_set (fresh, name, before, err, sizeof err);
            assert (rc == 0);
            continue;
        }
        changes++;
        if (streq (name, "MAX_CONNECTIONS")) {
            struct rlimit limit;
            if (getrlimit (RLIMIT_NOFILE, &limit) == 0
            &&  fresh->max_connections + S_FD_MARGIN > (size_t) limit.rlim_cur)
                log_warn (MAIN, "reload: MAX_CONNECTIONS=%zu is past what the open-file limit "
                          "set at start-up holds (%llu); all of it takes a restart",
                          fresh->max_connections, (unsigned long long) limit.rlim_cur);
        }
        if (s_secret_var (name))
            log_info (MAIN, "reload: %s changed", name);
        else
            log_info (MAIN, "reload: %s=%s (was %s)", name, after, before);
    }
    free (before);
    free (after);
    if (changes == 0) {
        log_info (MAIN, "reload: nothing to change");
        rtws_config_destroy (&fresh);
        return;
    }
    //  rtws_config_set above may have restored a key file name: load again.
    if (rtws_config_check (fresh, err, sizeof err)) {
        log_error (MAIN, "reload refused, the running configuration stays: %s", err);
        rtws_config_destroy (&fresh);
        return;
    }
    for (int i = 0; actors [i]; i++) {
        int taken = 0;
        zsock_send (actors [i], "sp", "CONFIG", fresh);
        zsock_recv (actors [i], "i", &taken);
        if (!taken) {
            //  Only auth can refuse, and it is asked first: nobody else has
            //  the new configuration yet.
            assert (i == 0);
            log_error (MAIN, "reload refused, the running configuration stays: "
                             "the JWT settings are not usable (see above)");
            rtws_config_destroy (&fresh);
            return;
        }
    }
    rtws_log_set_level_name (fresh->log_level);
    rtws_log_set_format_name (fresh->log_format);
    rtws_config_destroy (&old);
    *config_p = fresh;
    log_info (MAIN, "reload: %zu change%s applied", changes, changes == 1 ? "" : "s");
}

//  Waits for a second SIGINT/SIGTERM during shutdown and exits at once.
static void *
s_second_signal (void *args)
{
    sigset_t *set = (sigset_t *) args;
    int sig = 0;
    if (sigwait (set, &sig) == 0) {
        log_warn (MAIN, "second signal %d: exiting now", sig);
        _exit (1);
    }
    return NULL;
}

int
main (int argc, char *argv [])
{
    //  Before any thread exists: the mask is inherited by all of them.
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGINT);
    sigaddset (&set, SIGTERM);
    sigset_t blocked = set;
    sigaddset (&blocked, SIGHUP);
    pthread_sigmask (SIG_BLOCK, &blocked, NULL);
    signal (SIGPIPE, SIG_IGN);
    zsys_handler_set (NULL);

    s_args_t args = { NULL, NULL, NULL, false };
    static const struct option options [] = {
        { "config", required_argument, NULL, 'c' },
        { "check-config", no_argument, NULL, 'C' },
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    int opt;
    while ((opt = getopt_long (argc, argv, "c:H:p:hV", options, NULL)) != -1) {
        switch (opt) {
            case 'c': args.config_file = optarg; break;
            case 'C': args.check_only = true; break;
            case 'H': args.host = optarg; break;
            case 'p': args.port = optarg; break;
            case 'h': s_usage (stdout); return 0;
            case 'V': printf ("rtwsd %s\n", PACKAGE_VERSION); return 0;
            default:  s_usage (stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "rtwsd: unexpected argument '%s'\n", argv [optind]);
        s_usage (stderr);
        return 2;
    }
    char err [1024];
    rtws_config_t *config = s_config_load (&args, err, sizeof err);
    if (!config) {
        fprintf (stderr, "rtwsd: %s\n", err);
        return 2;
    }
    if (args.check_only) {
        rtws_config_print (config, stdout);
        rtws_config_destroy (&config);
        return 0;
    }
    rtws_log_set_level_name (config->log_level);
    rtws_log_set_format_name (config->log_format);

    if (streq (config->jwt_secret, "change-me") && config->jwt_alg [0] == 'H')
        log_warn (MAIN, "JWT_SECRET is the default 'change-me': anyone can mint tokens; set your own");
    if (config->allowed_origins_count == 0)
        log_warn (MAIN, "ALLOWED_ORIGINS is empty: any Origin is accepted");

    //  auth first: it is the one actor whose set-up depends on outside
    //  input (the key), and it answers READY 1 only when it accepted it.
    //  Its own log line says what was wrong; nothing else has run yet.
    zactor_t *auth = zactor_new (auth_actor, config);
    assert (auth);
    int ready = 0;
    zsock_send (auth, "s", "READY");
    zsock_recv (auth, "i", &ready);
    if (ready != 1) {
        zactor_destroy (&auth);
        rtws_config_destroy (&config);
        return 2;
    }
    //  Before the gateway: lws sizes its tables by the limit at start-up.
    s_size_fd_limit (config->max_connections);
    //  Then bottom-up, so each actor's siblings are there when clients arrive.
    zactor_t *bridge = zactor_new (bridge_actor, config);
    zactor_t *presence = zactor_new (presence_actor, config);
    zactor_t *router = zactor_new (router_actor, config);
    zactor_t *gateway = zactor_new (gateway_actor, config);
    assert (bridge && presence && router && gateway);

    int port = -1;
    zsock_send (gateway, "s", "PORT");
    zsock_recv (gateway, "i", &port);
    int admin_port = -1;
    zsock_send (gateway, "s", "ADMIN_PORT");
    zsock_recv (gateway, "i", &admin_port);
    int status = 0;
    if (port < 0 || admin_port < 0) {
        if (admin_port < 0)
            log_error (MAIN, "cannot listen on %s:%d (ADMIN_PORT)", config->admin_host,
                       config->admin_port);
        else
            log_error (MAIN, "cannot listen on %s:%d", config->host, config->port);
        status = 1;
    }
    else {
        log_info (MAIN, "rtwsd %s listening on ws://%s:%d/ws/{room} (engine: %s)",
                  PACKAGE_VERSION, config->host, port,
                  config->redis_url ? "redis" : "memory");
        if (admin_port > 0)
            log_info (MAIN, "health, readiness and metrics on http://%s:%d/{healthz,readyz,metrics}",
                      config->admin_host, admin_port);
        notify_send ("READY=1\nSTATUS=serving");
        zactor_t *actors [] = { auth, gateway, router, presence, bridge, NULL };
        sigset_t waited = set;
        sigaddset (&waited, SIGHUP);
        int sig = 0;
        while (sigwait (&waited, &sig) == 0 && sig == SIGHUP) {
            notify_send ("RELOADING=1");
            s_reload (&args, &config, actors);
            notify_send ("READY=1");
        }
        log_info (MAIN, "signal %d: shutting down", sig);
        notify_send ("STOPPING=1\nSTATUS=draining connections");
        pthread_t watchdog;
        if (pthread_create (&watchdog, NULL, s_second_signal, &set) == 0)
            pthread_detach (watchdog);
        s_drain (gateway, config);
    }
    zactor_destroy (&gateway);
    zactor_destroy (&auth);
    zactor_destroy (&router);
    zactor_destroy (&presence);
    zactor_destroy (&bridge);
    rtws_config_destroy (&config);
    if (status == 0)
        log_info (MAIN, "stopped");
    return status;
}
