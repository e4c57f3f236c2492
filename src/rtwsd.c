/*  rtwsd.c - the rtws daemon: configuration, actors, signals.

    Reads the configuration (docs/PROTOCOL.md section 1), starts the five
    actors, waits for SIGINT or SIGTERM, and stops the actors in reverse
    order: the gateway first, so every client gets its 1001 close while
    router, presence and bridge are still there to hear the LEAVEs.

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
        "Configuration comes from the environment (see docs/PROTOCOL.md):\n"
        "  HOST PORT JWT_SECRET JWT_ALG JWT_PUBLIC_KEY_FILE JWT_AUDIENCE JWT_ISSUER\n"
        "  REDIS_URL ALLOWED_ORIGINS PRESENCE_TTL HEARTBEAT_INTERVAL IDLE_TIMEOUT\n"
        "  MAX_MESSAGE_SIZE MAX_QUEUE_BYTES MAX_QUEUE_MESSAGES LOG_LEVEL\n"
        "  PERMESSAGE_DEFLATE\n"
        "\n"
        "Options:\n"
        "  -H, --host ADDR    listen address (overrides HOST)\n"
        "  -p, --port PORT    listen port (overrides PORT)\n"
        "  -h, --help         show this help and exit\n"
        "  -V, --version      show the version and exit\n"
        "\n"
        "Exit status: 0 after a clean shutdown, 1 when the server cannot start,\n"
        "2 for an invalid configuration.\n");
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
    pthread_sigmask (SIG_BLOCK, &set, NULL);
    signal (SIGPIPE, SIG_IGN);
    zsys_handler_set (NULL);

    rtws_config_t *config = rtws_config_new ();
    assert (config);
    char err [512];
    if (rtws_config_load_env (config, err, sizeof err) != 0) {
        fprintf (stderr, "rtwsd: %s\n", err);
        rtws_config_destroy (&config);
        return 2;
    }
    static const struct option options [] = {
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    int opt;
    while ((opt = getopt_long (argc, argv, "H:p:hV", options, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
            case 'H': rc = rtws_config_set (config, "HOST", optarg, err, sizeof err); break;
            case 'p': rc = rtws_config_set (config, "PORT", optarg, err, sizeof err); break;
            case 'h': s_usage (stdout); rtws_config_destroy (&config); return 0;
            case 'V': printf ("rtwsd %s\n", PACKAGE_VERSION); rtws_config_destroy (&config); return 0;
            default:  s_usage (stderr); rtws_config_destroy (&config); return 2;
        }
        if (rc != 0) {
            fprintf (stderr, "rtwsd: %s\n", err);
            rtws_config_destroy (&config);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "rtwsd: unexpected argument '%s'\n", argv [optind]);
        s_usage (stderr);
        rtws_config_destroy (&config);
        return 2;
    }
    rtws_log_set_level_name (config->log_level);

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
    //  Then bottom-up, so each actor's siblings are there when clients arrive.
    zactor_t *bridge = zactor_new (bridge_actor, config);
    zactor_t *presence = zactor_new (presence_actor, config);
    zactor_t *router = zactor_new (router_actor, config);
    zactor_t *gateway = zactor_new (gateway_actor, config);
    assert (bridge && presence && router && gateway);

    int port = -1;
    zsock_send (gateway, "s", "PORT");
    zsock_recv (gateway, "i", &port);
    int status = 0;
    if (port < 0) {
        log_error (MAIN, "cannot listen on %s:%d", config->host, config->port);
        status = 1;
    }
    else {
        log_info (MAIN, "rtwsd %s listening on ws://%s:%d/ws/{room} (engine: %s)",
                  PACKAGE_VERSION, config->host, port,
                  config->redis_url ? "redis" : "memory");
        notify_send ("READY=1\nSTATUS=serving");
        int sig = 0;
        sigwait (&set, &sig);
        log_info (MAIN, "signal %d: shutting down", sig);
        notify_send ("STOPPING=1\nSTATUS=closing connections");
        pthread_t watchdog;
        if (pthread_create (&watchdog, NULL, s_second_signal, &set) == 0)
            pthread_detach (watchdog);
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
