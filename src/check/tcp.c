/*
 * tcp.c - the TCP check (Pingora's TcpHealthCheck): a backend is healthy
 * when a connection (and, with tls, a handshake) completes in time.  The
 * connection is closed at once; nothing is sent.
 */
#include "check/check.h"

static int tcp_begin(struct lb_probe *p)
{
    p->keep = false;
    return LB_PROBE_OK;
}

/* begin always finishes: there is no step to take */
static int tcp_step(struct lb_probe *p, uint32_t events)
{
    (void)events;
    return tcp_begin(p);
}

const struct lb_check_kind_ops lb_check_kind_tcp = {
    .name = "tcp",
    .kind = LB_CHECK_TCP,
    .begin = tcp_begin,
    .step = tcp_step,
};
