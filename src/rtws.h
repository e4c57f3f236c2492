/*  rtws.h - what every part of rtwsd shares: inproc endpoints and hard limits.

    Actors find each other only through these endpoints. Each endpoint is
    bound by exactly one actor (named beside it); any number of siblings
    connect. ZeroMQ >= 4 lets a connect precede its bind on inproc, so start
    order only matters for shutdown (rtwsd.c stops actors in reverse).
*/
#ifndef RTWS_H_INCLUDED
#define RTWS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#define RTWS_EP_AUTH      "inproc://rtws-auth"      /* ROUTER, bound by auth */
#define RTWS_EP_ROUTER    "inproc://rtws-router"    /* PULL, bound by router */
#define RTWS_EP_ROUTER_JOIN "inproc://rtws-router-join" /* PULL, bound by router */
#define RTWS_EP_GATEWAY   "inproc://rtws-gateway"   /* PULL, bound by gateway */
#define RTWS_EP_PRESENCE  "inproc://rtws-presence"  /* PULL, bound by presence */
#define RTWS_EP_BRIDGE    "inproc://rtws-bridge"    /* PULL, bound by bridge */

/* Room names are ^[A-Za-z0-9_-]{1,64}$ (docs/PROTOCOL.md section 2). */
#define RTWS_ROOM_MAX     64
/* Longest user id we keep; a longer sub/user_id claim is cut at this size. */
#define RTWS_USER_MAX     256
/* Longest token we hand to libjwt; anything longer is rejected unparsed. */
#define RTWS_TOKEN_MAX    8192
/* Room for all request headers of a handshake (lws max_http_header_data):
   a largest token in a cookie or Authorization header plus the rest. */
#define RTWS_HEADER_MAX   (RTWS_TOKEN_MAX + 4096)

/* Connection ids are node-local, assigned by the gateway, never reused. */
typedef uint64_t rtws_conn_id_t;

#endif
