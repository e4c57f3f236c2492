/*  router.h - the router actor: see the message vocabulary at the top of router.c.

    Start it with zactor_new (router_actor, (void *) config) where config is a
    const rtws_config_t * that outlives the actor.
*/
#ifndef RTWS_ROUTER_H_INCLUDED
#define RTWS_ROUTER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

void router_actor (zsock_t *pipe, void *args);

//  Self test: starts the actor alone, plays its siblings over inproc.
//  Returns 0 when every check passed, else the number of failures.
int router_test (bool verbose);

#endif
