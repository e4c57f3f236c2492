/*  notify.h - tells systemd how the service is doing (Type=notify).

    The protocol is one datagram of "KEY=value" lines to the AF_UNIX
    socket named by $NOTIFY_SOCKET (an abstract socket when it starts with
    '@'). Without that variable, as outside systemd, nothing is sent.
*/
#ifndef RTWS_NOTIFY_H_INCLUDED
#define RTWS_NOTIFY_H_INCLUDED

//  Sends state (e.g. "READY=1\nSTATUS=serving"). Returns 0 when sent or
//  when there is no $NOTIFY_SOCKET, -1 when the socket refused it.
int notify_send (const char *state);

#endif
