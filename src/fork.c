/*
 * fork.c - the library's one fork handler, above everything it coordinates.
 *
 * A balancer made before fork() (OpenResty's init_by_lua runs in the
 * master) must work in every child.  Before fork every lock a child could
 * need is taken, so no child inherits one held by a thread that does not
 * exist there; after it the locks are released (reinitialised state in the
 * child), the child forgets the readers and workers that did not survive,
 * and the call_rcu worker and the checker thread restart on demand.
 *
 * The order is fixed here, in one pthread_atfork handler, because separate
 * handlers run in reverse order of registration, which depends on what the
 * process used first.  Before fork:
 *   0. every balancer's write lock (balancer.c): a writer holding one takes
 *      the locks below (Ketama's spare arrays, call_rcu's on first use,
 *      liburcu's registry when it first reads);
 *   1. the checker's lock (src/checker/fork.c): no thread holding
 *      them waits for RCU or for the locks below;
 *   2. pause the call_rcu worker (rcu.c): it acknowledges only between
 *      batches, so the callbacks it is running (snapshot_free, which gives
 *      Ketama's arrays back under the spare lock) must be able to finish:
 *      the algorithms' locks are not held yet;
 *   3. each algorithm's own fork_prepare, in registry order (Ketama's spare
 *      lock, a leaf), as its ops table declares (select/select.h);
 *   4. liburcu-bp's registry and grace-period locks (rcu.c), last: a thread
 *      taking lb's locks may register as a reader (which takes the registry
 *      lock).
 * After fork the same steps run in reverse, in the parent and the child.
 *
 * Dependencies: this file calls down into every part; no part calls it.
 * The handler is registered when the library is loaded (a constructor), so
 * nothing below has to know it exists.
 */
#include <pthread.h>

#include "checker/fork.h"
#include "core.h"

typedef void (*fork_step)(void);

static fork_step step_of(const struct lb_selector_ops *ops, int which)
{
    return which == 0   ? ops->fork_prepare
           : which == 1 ? ops->fork_parent
                        : ops->fork_child;
}

/* Step `which` (0 prepare, 1 parent, 2 child) of every algorithm that has
 * one: prepare in registry order, the others in reverse. */
static void selections_fork(int which)
{
    int n = 0;

    while (lb_selection_at(n))
        n++;
    for (int k = 0; k < n; k++) {
        int i = which == 0 ? k : n - 1 - k;
        fork_step fn = step_of(lb_selection_at(i)->ops, which);

        if (fn)
            fn();
    }
}

static void before_fork(void)
{
    lb_balancers_fork_prepare();
    lb_checker_fork_prepare();
    lb_rcu_worker_fork_prepare();
    selections_fork(0);
    lb_rcu_readers_fork_prepare();
}

static void after_fork_parent(void)
{
    lb_rcu_readers_fork_parent();
    selections_fork(1);
    lb_rcu_worker_fork_parent();
    lb_checker_fork_parent();
    lb_balancers_fork_parent();
}

static void after_fork_child(void)
{
    lb_rcu_readers_fork_child();
    selections_fork(2);
    lb_rcu_worker_fork_child();
    lb_checker_fork_child();
    lb_balancers_fork_child();
}

__attribute__((constructor)) static void install_fork_handler(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}
