/*  bridge.h - the bridge actor: see the message vocabulary at the top of bridge.c.

    Start it with zactor_new (bridge_actor, (void *) config) where config is a
    const rtws_config_t * that outlives the actor.
*/
#ifndef RTWS_BRIDGE_H_INCLUDED
#define RTWS_BRIDGE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

void bridge_actor (zsock_t *pipe, void *args);

//  Self test: starts the actor alone, plays its siblings over inproc.
//  Returns 0 when every check passed, else the number of failures.
int bridge_test (bool verbose);

#endif
