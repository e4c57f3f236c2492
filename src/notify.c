/*  notify.c - sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET.  */

#include "notify.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
notify_send (const char *state)
{
    const char *path = getenv ("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    size_t len = strlen (path);
    struct sockaddr_un addr;
    if ((path [0] != '/' && path [0] != '@') || len >= sizeof addr.sun_path)
        return -1;
    memset (&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy (addr.sun_path, path, len);
    if (path [0] == '@')
        addr.sun_path [0] = 0;      //  abstract namespace
    int fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t addrlen = (socklen_t) (offsetof (struct sockaddr_un, sun_path) + len);
    ssize_t sent = sendto (fd, state, strlen (state), MSG_NOSIGNAL,
                           (struct sockaddr *) &addr, addrlen);
    close (fd);
    return sent < 0 ? -1 : 0;
}
