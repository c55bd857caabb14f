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
#include <dlfcn.h>
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

/*
 * Pin this library (and so liburcu) in memory.  LuaJIT closes libraries it
 * opened with ffi.load when the Lua state closes; unloading code that
 * liburcu's call_rcu worker or our checker thread is still running would
 * crash the process on exit.  RTLD_NODELETE makes dlclose a no-op for us.
 */
static void pin_library(void)
{
    Dl_info info;

    if (dladdr((void *)pin_library, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static void install(void)
{
    pin_library();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void lb_rcu_init(void) { pthread_once(&once, install); }

void lb_quiesce(void) { lb_rcu_barrier(); }
