/*
 * loop.c - the sources' place on the checker thread.
 *
 * The sources keep their descriptors (c-ares' sockets, libcurl's) in an
 * epoll set of their own, which sits in the checker's epoll set as one
 * descriptor: the checker's loop knows it only as a marker, and the
 * sources never see the checker's slots.  The set is made once per
 * process (and again in a forked child, whose inherited one is the
 * parent's) when the thread starts, and closed when it stops.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "checker/checker.h"
#include "discovery/discovery.h"

static int disc_epfd = -1;

int lb_disc_watch(struct lb_disc_fd *h, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = h};
    int op;

    if (disc_epfd < 0)
        return LB_OK;
    if (events == 0) {
        if (h->events == 0)
            return LB_OK;
        h->events = 0;
        /* ENOENT/EBADF: the descriptor was closed already (c-ares closes
         * before it tells us) */
        epoll_ctl(disc_epfd, EPOLL_CTL_DEL, h->fd, NULL);
        return LB_OK;
    }
    op = h->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(disc_epfd, op, h->fd, &ev) < 0) {
        if (op == EPOLL_CTL_MOD && errno == ENOENT)
            op = EPOLL_CTL_ADD;
        else if (op == EPOLL_CTL_ADD && errno == EEXIST)
            op = EPOLL_CTL_MOD;
        else
            return LB_ERROR;
        if (epoll_ctl(disc_epfd, op, h->fd, &ev) < 0)
            return LB_ERROR;
    }
    h->events = events;
    return LB_OK;
}

int lb_disc_attach(int epfd, void *marker)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = marker};

    if (disc_epfd < 0)
        disc_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (disc_epfd < 0)
        return LB_ERROR;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, disc_epfd, &ev) < 0 ? LB_ERROR
                                                              : LB_OK;
}

void lb_disc_detach(void)
{
    if (disc_epfd >= 0)
        close(disc_epfd);
    disc_epfd = -1;
}

void lb_disc_io(void)
{
    struct epoll_event evs[64];
    int n;

    if (disc_epfd < 0)
        return;
    n = epoll_wait(disc_epfd, evs, 64, 0);
    for (int i = 0; i < n; i++) {
        struct lb_disc_fd *h = evs[i].data.ptr;

        /* a handler run before this one in the batch may have removed h:
         * the kinds free handles only after lb_disc_io returns (they
         * defer frees to their next begin or settle step) */
        if (h->events)
            h->ready(h, evs[i].events);
    }
}

void lb_disc_loop_fork_child(void)
{
    if (disc_epfd >= 0)
        close(disc_epfd);
    disc_epfd = -1;
}
