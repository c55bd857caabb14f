/*
 * tcp.c - the TCP check (Pingora's TcpHealthCheck): a backend is healthy
 * when a connection (and, with tls, a handshake) completes in time.  The
 * connection is closed at once; nothing is sent.
 */
#include "check/check.h"

int lb_tcp_connected(struct lb_probe *p)
{
    p->keep = false;
    return LB_PROBE_OK;
}
