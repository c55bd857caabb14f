/*
 * rcu.c - process-wide RCU setup: fork handlers.
 *
 * A balancer made before fork() (OpenResty's init_by_lua runs in the
 * master) must work in every child.  liburcu's bp flavour and its call_rcu
 * worker both need to be told about fork: before it, they take their locks
 * so no child inherits one held by a thread that does not exist there;
 * after it, the child forgets the readers and workers that did not survive
 * and restarts the call_rcu worker on demand.
 */
#include <pthread.h>

#include "rcu.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    urcu_bp_call_rcu_before_fork();
    urcu_bp_before_fork();
}

static void after_fork_parent(void)
{
    urcu_bp_after_fork_parent();
    urcu_bp_call_rcu_after_fork_parent();
}

static void after_fork_child(void)
{
    urcu_bp_after_fork_child();
    urcu_bp_call_rcu_after_fork_child();
}

static void install(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void lb_rcu_init(void) { pthread_once(&once, install); }
