/*  gateway_recv.h - the gateway's recv(2) in front of libwebsockets (see
    gateway_recv.c): private to the gateway.
*/
#ifndef RTWS_GATEWAY_RECV_H_INCLUDED
#define RTWS_GATEWAY_RECV_H_INCLUDED

#include <stdbool.h>

#include "../src/frame_guard.h"

//  Makes guards the calling thread's table (NULL: none). Called by a
//  service thread on itself, before its first lws_service and after its
//  last; the table must outlive the attachment.
void gateway_recv_attach (frame_guards_t *guards);

//  True when the libraries' recv calls reach gateway_recv.c.
bool gateway_recv_active (void);

#endif
