/*  auth.h - the auth actor: see the message vocabulary at the top of auth.c.

    Start it with zactor_new (auth_actor, (void *) config) where config is a
    const rtws_config_t * that outlives the actor.
*/
#ifndef RTWS_AUTH_H_INCLUDED
#define RTWS_AUTH_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

void auth_actor (zsock_t *pipe, void *args);

//  Self test: starts the actor alone, plays its siblings over inproc.
//  Returns 0 when every check passed, else the number of failures.
int auth_test (bool verbose);

#endif
