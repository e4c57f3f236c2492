/*  inproc.c - sockets between actors and maps keyed by connection id.  */

#include "inproc.h"

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
