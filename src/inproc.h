/*  inproc.h - what every actor builds its plumbing from.

    Sockets between actors and maps keyed by connection id: the same few
    lines each actor would otherwise write again. Nothing here holds state.
*/
#ifndef RTWS_INPROC_H_INCLUDED
#define RTWS_INPROC_H_INCLUDED

#include <czmq.h>

//  A PULL bound at endpoint with the given receive high-water mark and
//  linger 0. Returns NULL (and logs why, as component) when the bind fails.
zsock_t *inproc_pull_new (const char *endpoint, int hwm, const char *component);

//  Destroys a socket bound at endpoint, unbinding it first: closing alone
//  frees an inproc endpoint later, on libzmq's reaper thread, and a
//  restarted actor (or the next test) must be able to bind it as soon as
//  zactor_destroy returns. Idempotent; sets *sock_p to NULL.
void inproc_bound_destroy (zsock_t **sock_p, const char *endpoint);

//  A PUSH connected to endpoint: sndhwm hwm, sndtimeo msecs (0 = never
//  block, -1 = block), linger 0. Returns NULL (logged) on failure.
zsock_t *inproc_push_new (const char *endpoint, int hwm, int sndtimeo, const char *component);

//  A zhashx keyed by rtws_conn_id_t: keys are heap copies made by the map,
//  so callers pass &id. Values are not owned unless a destructor is set.
zhashx_t *inproc_conn_map_new (void);

//  Pops the pointer a "CONFIG" pipe command carries (picture "p"). The
//  pointee is a const rtws_config_t * owned by rtwsd.c; it outlives every
//  actor that acknowledged it.
const void *inproc_pop_pointer (zmsg_t *msg);

#endif
