/*  inproc.c - sockets between actors and maps keyed by connection id.  */

#include "inproc.h"

#include <assert.h>

#include "log.h"
#include "rtws.h"

zsock_t *
inproc_pull_new (const char *endpoint, int hwm, const char *component)
{
    zsock_t *sock = zsock_new (ZMQ_PULL);
    if (!sock) {
        log_error (component, "cannot create a socket for %s", endpoint);
        return NULL;
    }
    zsock_set_rcvhwm (sock, hwm);
    zsock_set_linger (sock, 0);
    if (zsock_bind (sock, "%s", endpoint) == -1) {
        log_error (component, "cannot bind %s: %s", endpoint, zmq_strerror (errno));
        zsock_destroy (&sock);
    }
    return sock;
}

void
inproc_bound_destroy (zsock_t **sock_p, const char *endpoint)
{
    if (*sock_p)
        zsock_unbind (*sock_p, "%s", endpoint);
    zsock_destroy (sock_p);
}

zsock_t *
inproc_push_new (const char *endpoint, int hwm, int sndtimeo, const char *component)
{
    zsock_t *sock = zsock_new (ZMQ_PUSH);
    if (!sock) {
        log_error (component, "cannot create a socket for %s", endpoint);
        return NULL;
    }
    zsock_set_sndhwm (sock, hwm);
    zsock_set_sndtimeo (sock, sndtimeo);
    zsock_set_linger (sock, 0);
    if (zsock_connect (sock, "%s", endpoint) == -1) {
        log_error (component, "cannot connect %s: %s", endpoint, zmq_strerror (errno));
        zsock_destroy (&sock);
    }
    return sock;
}

static size_t
s_conn_hash (const void *key)
{
    //  Ids are handed out in sequence; mix the bits so they spread evenly.
    uint64_t x = *(const uint64_t *) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t) x;
}

static int
s_conn_compare (const void *key1, const void *key2)
{
    uint64_t a = *(const uint64_t *) key1;
    uint64_t b = *(const uint64_t *) key2;
    return a < b ? -1 : a > b ? 1 : 0;
}

//  Keys are heap copies so the map works wherever a pointer is narrower
//  than 64 bits.
static void *
s_conn_dup (const void *key)
{
    uint64_t *copy = (uint64_t *) zmalloc (sizeof (uint64_t));
    *copy = *(const uint64_t *) key;
    return copy;
}

static void
s_conn_free (void **key_p)
{
    free (*key_p);
    *key_p = NULL;
}

zhashx_t *
inproc_conn_map_new (void)
{
    zhashx_t *map = zhashx_new ();
    if (map) {
        zhashx_set_key_hasher (map, s_conn_hash);
        zhashx_set_key_comparator (map, s_conn_compare);
        zhashx_set_key_duplicator (map, s_conn_dup);
        zhashx_set_key_destructor (map, s_conn_free);
    }
    return map;
}

const void *
inproc_pop_pointer (zmsg_t *msg)
{
    zframe_t *frame = zmsg_pop (msg);
    assert (frame && zframe_size (frame) == sizeof (void *));
    const void *pointer;
    memcpy (&pointer, zframe_data (frame), sizeof pointer);
    zframe_destroy (&frame);
    return pointer;
}


//  --------------------------------------------------------------------------
//  Batches

static void
s_batch_append (zmsg_t *batch, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    uint8_t frames = (uint8_t) zmsg_size (msg);
    zmsg_addmem (batch, &frames, 1);
    zframe_t *frame;
    while ((frame = zmsg_pop (msg)))
        zmsg_append (batch, &frame);
    zmsg_destroy (msg_p);
}

size_t
inproc_batch_add (inproc_batch_t *self, zmsg_t **msg_p, zsock_t *dest)
{
    assert (self && msg_p && *msg_p);
    assert (zmsg_size (*msg_p) >= 1 && zmsg_size (*msg_p) <= 255);
    size_t lost = 0;
    if (self->msg && zmsg_size (self->msg) + 1 + zmsg_size (*msg_p) > INPROC_BATCH_FRAMES)
        lost = inproc_batch_send (self, dest);
    if (self->count == 0) {
        self->first = *msg_p;
        *msg_p = NULL;
    }
    else {
        if (!self->msg) {
            self->msg = zmsg_new ();
            zmsg_addstr (self->msg, "BATCH");
            s_batch_append (self->msg, &self->first);
        }
        s_batch_append (self->msg, msg_p);
    }
    self->count++;
    return lost;
}

size_t
inproc_batch_send (inproc_batch_t *self, zsock_t *dest)
{
    assert (self);
    size_t count = self->count;
    zmsg_t *msg = self->msg ? self->msg : self->first;
    self->msg = NULL;
    self->first = NULL;
    self->count = 0;
    if (!msg)
        return 0;
    if (zmsg_send (&msg, dest) == 0)
        return 0;
    zmsg_destroy (&msg);
    return count;
}

void
inproc_batch_clear (inproc_batch_t *self)
{
    assert (self);
    zmsg_destroy (&self->msg);
    zmsg_destroy (&self->first);
    self->count = 0;
}

bool
inproc_batch_is (zmsg_t *msg)
{
    return zmsg_size (msg) > 1 && zframe_streq (zmsg_first (msg), "BATCH");
}

size_t
inproc_batch_each (zmsg_t **msg_p, inproc_handler_fn *handle, void *self)
{
    assert (msg_p && *msg_p && handle);
    zmsg_t *msg = *msg_p;
    *msg_p = NULL;
    if (!inproc_batch_is (msg)) {
        handle (self, msg);
        return 1;
    }
    size_t count = 0;
    zmsg_t *one;
    while ((one = inproc_batch_next (msg))) {
        handle (self, one);
        count++;
    }
    zmsg_destroy (&msg);
    return count;
}

zmsg_t *
inproc_batch_next (zmsg_t *batch)
{
    zframe_t *head = zmsg_first (batch);
    if (head && zframe_streq (head, "BATCH")) {
        head = zmsg_pop (batch);
        zframe_destroy (&head);
    }
    zframe_t *count = zmsg_pop (batch);
    if (!count)
        return NULL;
    size_t frames = zframe_size (count) == 1 ? *zframe_data (count) : 0;
    zframe_destroy (&count);
    if (frames == 0 || frames > zmsg_size (batch)) {
        //  Malformed: drop the rest
        zframe_t *rest;
        while ((rest = zmsg_pop (batch)))
            zframe_destroy (&rest);
        return NULL;
    }
    zmsg_t *msg = zmsg_new ();
    for (size_t i = 0; i < frames; i++) {
        zframe_t *frame = zmsg_pop (batch);
        zmsg_append (msg, &frame);
    }
    return msg;
}
