/*  inproc.h - what every actor builds its plumbing from.

    Sockets between actors and maps keyed by connection id: the same few
    lines each actor would otherwise write again. Nothing here holds state.
*/
#ifndef RTWS_INPROC_H_INCLUDED
#define RTWS_INPROC_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

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

//  A batch: sibling messages sent as one, so that a burst of them (a
//  service-loop pass of the gateway, a drained inbox of presence) wakes
//  the receiving actor once instead of once per message. On the wire it
//  is "BATCH", then for each message a one-byte frame with its frame
//  count, then its frames, in the order they were added. A batch of one
//  goes as that message alone. Receivers take both forms.
#define INPROC_BATCH_FRAMES  1024   //  inproc_batch_add sends at this many frames

typedef struct {
    zmsg_t *msg;                //  "BATCH" and the messages so far, or NULL
    size_t count;               //  messages in msg
    zmsg_t *first;              //  the first message, kept whole until a second
} inproc_batch_t;

//  Moves *msg_p (1 .. 255 frames; sets *msg_p to NULL) to the end of the
//  batch. When the batch reaches INPROC_BATCH_FRAMES frames it is sent to
//  dest first. Returns the number of messages lost to a refused send of
//  this batch (0 when none), which the caller logs like a lost message.
size_t inproc_batch_add (inproc_batch_t *self, zmsg_t **msg_p, zsock_t *dest);

//  Sends what the batch holds to dest and empties it. Returns the number
//  of messages lost (dest refused them: sndtimeo passed, or terminated).
size_t inproc_batch_send (inproc_batch_t *self, zsock_t *dest);

//  Frees what the batch holds, unsent.
void inproc_batch_clear (inproc_batch_t *self);

//  True when msg is a batch; its messages then come from inproc_batch_next.
bool inproc_batch_is (zmsg_t *msg);

//  Hands msg to handle, or each message of it when it is a batch, in
//  order; handle owns (and destroys) what it is given, and *msg_p is
//  taken (set to NULL). Returns how many messages were handed over.
typedef void (inproc_handler_fn) (void *self, zmsg_t *msg);
size_t inproc_batch_each (zmsg_t **msg_p, inproc_handler_fn *handle, void *self);

//  Pops the next message of a batch, or NULL at its end. A malformed
//  batch (a count past its frames) ends there: the caller logs nothing
//  more, as siblings never send one.
zmsg_t *inproc_batch_next (zmsg_t *batch);

//  Pops the pointer a "CONFIG" pipe command carries (picture "p"). The
//  pointee is a const rtws_config_t * owned by rtwsd.c; it outlives every
//  actor that acknowledged it.
const void *inproc_pop_pointer (zmsg_t *msg);

#endif
