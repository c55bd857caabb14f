/*
 * conn.c - a probe's connection, and nothing more: non-blocking connect,
 * liveness of a kept connection, plain or TLS I/O, close.  What to do
 * with a connection (the phases, the kind, reuse) is probe.c's.
 *
 * Every call either finishes (LB_PROBE_OK / LB_PROBE_FAIL with err_*) or
 * returns LB_PROBE_AGAIN with p->want set to the readiness it waits for;
 * the checker thread owns the epoll set and the deadline.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "check/check.h"

static socklen_t backend_sockaddr(const struct lb_probe *p,
                                  struct sockaddr_storage *ss);

void lb_conn_close(struct lb_conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        /* Deregister explicitly: a forked child may still hold the socket,
         * and then close() alone would leave it in our epoll set. */
        if (c->epfd >= 0)
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->epfd = -1;
}

void lb_conn_move(struct lb_conn *dst, struct lb_conn *src)
{
    if (src->fd >= 0 && src->epfd >= 0)
        epoll_ctl(src->epfd, EPOLL_CTL_DEL, src->fd, NULL);
    *dst = *src;
    dst->epfd = -1;
    src->fd = -1;
    src->epfd = -1;
    src->ssl = NULL;
}

/* A kept connection is reusable when reading would block: no EOF, no
 * reset, no unsolicited bytes (a server's timeout notice, a TLS alert). */
bool lb_conn_alive(const struct lb_conn *c)
{
    char ch;
    ssize_t n = recv(c->fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);

    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0 || !c->ssl)
        return false;
    /* TLS 1.3 servers send session tickets after the handshake, possibly
     * after the first response: records that carry no application data
     * leave the connection reusable.  The socket is non-blocking. */
    ERR_clear_error();
    n = SSL_read(c->ssl, &ch, 1);
    return n <= 0 && SSL_get_error(c->ssl, (int)n) == SSL_ERROR_WANT_READ;
}

static socklen_t backend_sockaddr(const struct lb_probe *p,
                                  struct sockaddr_storage *ss)
{
    const lb_backend *be = p->be;
    uint16_t port = p->cfg->port ? p->cfg->port : be->port;

    memset(ss, 0, sizeof(*ss));
    if (be->family == LB_AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        memcpy(&in->sin_addr, be->ip, 4);
        return sizeof(*in);
    }
    if (be->family == LB_AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        memcpy(&in6->sin6_addr, be->ip, 16);
        return sizeof(*in6);
    }
    {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        size_t len = be->host_len;

        if (len >= sizeof(un->sun_path))
            return 0;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, be->host, len);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
}

int lb_conn_connect(struct lb_probe *p)
{
    struct sockaddr_storage ss;
    socklen_t sl = backend_sockaddr(p, &ss);
    int fd, one = 1;

    if (sl == 0)
        return lb_probe_fail(p, LB_CHECK_ERR_CONNECT, ENAMETOOLONG);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, errno);
    p->conn.fd = fd;
    p->conn.epfd = -1;
    p->conn.ssl = NULL;
    p->conn.born_ns = 0;
    p->conn.uses = 0;
    if (ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&ss, sl) == 0)
        return LB_PROBE_OK;
    if (errno == EINPROGRESS || errno == EINTR) {
        p->want = EPOLLOUT;
        return LB_PROBE_AGAIN;
    }
    return lb_probe_fail(p, LB_CHECK_ERR_CONNECT, errno);
}

int lb_conn_connect_result(struct lb_probe *p)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(p->conn.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY) {
        p->want = EPOLLOUT;
        return LB_PROBE_AGAIN;
    }
    if (err)
        return lb_probe_fail(p, LB_CHECK_ERR_CONNECT, err);
    return LB_PROBE_OK;
}

/*
 * What a failed SSL_read/SSL_write (result n <= 0) means for the probe:
 * -1 with p->want set when TLS needs the socket readable or writable
 * first, 0 for an orderly end of a read, -2 after recording an I/O failure.
 */
static ssize_t ssl_outcome(struct lb_probe *p, int n, int reading)
{
    int e = SSL_get_error(p->conn.ssl, n);

    if (e == SSL_ERROR_WANT_READ) {
        p->want = EPOLLIN;
        return -1;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        p->want = EPOLLOUT;
        return -1;
    }
    if (reading &&
        (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !errno)))
        return 0;
    lb_probe_fail(p, LB_CHECK_ERR_IO,
                  e == SSL_ERROR_SYSCALL && errno ? errno : EIO);
    return -2;
}

ssize_t lb_conn_read(struct lb_probe *p, char *buf, size_t len)
{
    if (p->conn.ssl) {
        int n;

        ERR_clear_error();
        errno = 0; /* ssl_outcome tells a clean EOF by errno == 0 */
        n = SSL_read(p->conn.ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        return n > 0 ? n : ssl_outcome(p, n, 1);
    }
    for (;;) {
        ssize_t n = recv(p->conn.fd, buf, len, 0);

        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            p->want = EPOLLIN;
            return -1;
        }
        if (errno == ECONNRESET)
            return 0;
        lb_probe_fail(p, LB_CHECK_ERR_IO, errno);
        return -2;
    }
}

ssize_t lb_conn_write(struct lb_probe *p, const char *buf, size_t len)
{
    if (p->conn.ssl) {
        int n;

        ERR_clear_error();
        errno = 0;
        n = SSL_write(p->conn.ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        return n > 0 ? n : ssl_outcome(p, n, 0);
    }
    for (;;) {
        ssize_t n = send(p->conn.fd, buf, len, MSG_NOSIGNAL);

        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            p->want = EPOLLOUT;
            return -1;
        }
        lb_probe_fail(p, LB_CHECK_ERR_IO, errno);
        return -2;
    }
}
