/*
 * probe.c - a probe's phases: a kept connection reused or a new one
 * connected, the TLS handshake when configured, then the check kind's
 * exchange (its ops, check.h).  A reused connection the server closed
 * just as it was reused is retried once on a fresh one.
 */
#include <sys/epoll.h>

#include "check/check.h"

static int connect_start(struct lb_probe *p);
static int connected(struct lb_probe *p);
static int reuse_outcome(struct lb_probe *p, int rc);

int lb_probe_fail(struct lb_probe *p, int kind, int detail)
{
    p->err_kind = kind;
    p->err_detail = detail;
    return LB_PROBE_FAIL;
}

static int connect_start(struct lb_probe *p)
{
    int rc;

    p->phase = LB_PHASE_CONNECT;
    p->reused = false;
    p->got_bytes = false;
    rc = lb_conn_connect(p);
    return rc == LB_PROBE_OK ? connected(p) : rc;
}

static int connected(struct lb_probe *p)
{
    if (p->cfg->tls && !p->conn.ssl) {
        /* The handshake may complete in its first step on loopback. */
        int rc = lb_tls_begin(p);
        return rc == LB_PROBE_OK ? p->cfg->ops->begin(p) : rc;
    }
    return p->cfg->ops->begin(p);
}

/* A kept connection the server closed just as we reused it: the request
 * never reached a live server, so try once more on a fresh connection,
 * within the same deadline, as HTTP clients do.  Whichever step finds it
 * (the first one, run as the probe starts, or a later one). */
static int reuse_outcome(struct lb_probe *p, int rc)
{
    if (rc == LB_PROBE_FAIL && p->reused && !p->got_bytes &&
        (p->err_kind == LB_CHECK_ERR_CLOSED ||
         p->err_kind == LB_CHECK_ERR_IO)) {
        if (p->cfg->ops->release)
            p->cfg->ops->release(p);
        lb_conn_close(&p->conn);
        p->err_kind = p->err_detail = 0;
        return connect_start(p);
    }
    return rc;
}

int lb_probe_start(struct lb_probe *p, struct lb_conn *kept)
{
    p->conn.fd = -1;
    p->conn.epfd = -1;
    p->conn.ssl = NULL;
    p->err_kind = p->err_detail = 0;
    p->keep = false;
    p->state = NULL;
    if (kept && kept->fd >= 0) {
        if (lb_conn_alive(kept)) {
            lb_conn_move(&p->conn, kept);
            p->reused = true;
            p->got_bytes = false;
            return reuse_outcome(p, p->cfg->ops->begin(p));
        }
        lb_conn_close(kept);
    }
    return connect_start(p);
}

int lb_probe_step(struct lb_probe *p, uint32_t events)
{
    int rc;

    switch (p->phase) {
    case LB_PHASE_CONNECT:
        rc = lb_conn_connect_result(p);
        return rc == LB_PROBE_OK ? connected(p) : rc;
    case LB_PHASE_TLS:
        rc = lb_tls_step(p);
        return rc == LB_PROBE_OK ? p->cfg->ops->begin(p) : rc;
    default:
        return reuse_outcome(p, p->cfg->ops->step(p, events));
    }
}

void lb_probe_finish(struct lb_probe *p, bool ok, struct lb_conn *kept)
{
    if (p->cfg->ops->release)
        p->cfg->ops->release(p);
    if (ok && p->keep && kept && p->conn.fd >= 0) {
        lb_conn_move(kept, &p->conn);
        return;
    }
    lb_conn_close(&p->conn);
}
