/*  gateway_recv.c - the gateway's look at client bytes before lws parses them.

    libwebsockets 4.1.6 reads every byte a client sends with recv(2), called
    from its service thread (lws_ssl_capable_read_no_ssl, flags 0), and
    exposes no hook between that read and its frame parser, whose server
    side never checks the mask bit (docs/PROTOCOL.md section 6). This file
    defines recv: the dynamic linker binds lws's calls to the executable's
    definition first, and this one passes them on to the C library's
    (dlsym RTLD_NEXT) after src/frame_guard.c has read the bytes.

    Only the gateway's service threads are affected: each one attaches its
    own table of guards (gateway_recv_attach), found through a thread-local
    pointer because recv has no argument to carry it. On every other thread
    the pointer is NULL and recv is the C library's, untouched. Reads with
    flags (MSG_PEEK) and fds the table does not follow pass through too.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "gateway_recv.h"

#include <dlfcn.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>


typedef ssize_t (s_recv_fn) (int fd, void *buf, size_t len, int flags);

//  The calling service thread's guards; NULL on every other thread.
static __thread frame_guards_t *s_guards;

static s_recv_fn *
s_libc_recv (void)
{
    //  Resolved once; every thread that races here stores the same value.
    static s_recv_fn *libc_recv;
    s_recv_fn *fn = __atomic_load_n (&libc_recv, __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = (s_recv_fn *) dlsym (RTLD_NEXT, "recv");
        __atomic_store_n (&libc_recv, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

typedef struct {
    s_recv_fn *recv;
    int fd;
} s_read_t;

static ssize_t
s_read (void *context, uint8_t *data, size_t size)
{
    s_read_t *read = (s_read_t *) context;
    return read->recv (read->fd, data, size, 0);
}

ssize_t
recv (int fd, void *buf, size_t len, int flags)
{
    s_recv_fn *libc_recv = s_libc_recv ();
    frame_guard_t *guard = s_guards && flags == 0 ? frame_guards_find (s_guards, fd) : NULL;
    if (!guard)
        return libc_recv (fd, buf, len, flags);
    s_read_t read = { libc_recv, fd };
    return frame_guard_read (guard, (uint8_t *) buf, len, s_read, &read);
}

void
gateway_recv_attach (frame_guards_t *guards)
{
    s_guards = guards;
}

bool
gateway_recv_active (void)
{
    //  False when recv is not ours for the libraries (a static build, or a
    //  preload that defines it first): the mask check is then off.
    return dlsym (RTLD_DEFAULT, "recv") == (void *) recv;
}
