/*
 * rcu.c - process-wide RCU setup and liburcu's own fork steps.
 *
 * The one fork handler (src/fork.c) orders these steps among the others;
 * this file knows nothing above liburcu.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include "rcu.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

/*
 * Run fn with every signal blocked on this thread, so a thread it creates
 * starts with them blocked (a new thread inherits its creator's mask).
 * liburcu 0.13 starts its call_rcu worker with the mask of whichever
 * thread first defers a free, or forks: in nginx that is the master in
 * init_by_lua, before it blocks its signals, and a worker that takes
 * SIGCHLD or SIGQUIT keeps the master's sigsuspend() from ever waking.
 */
static void with_signals_blocked(void (*fn)(void))
{
    sigset_t all, old;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    fn();
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void start_call_rcu_worker(void)
{
    (void)urcu_bp_get_default_call_rcu_data();
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
    /* The worker starts now, with signals blocked, rather than on the
     * first deferred free with the mask of whatever thread does that. */
    with_signals_blocked(start_call_rcu_worker);
}

void lb_rcu_init(void) { pthread_once(&once, install); }

void lb_rcu_worker_fork_prepare(void) { urcu_bp_call_rcu_before_fork(); }
void lb_rcu_worker_fork_parent(void) { urcu_bp_call_rcu_after_fork_parent(); }

void lb_rcu_worker_fork_child(void)
{
    /* liburcu restarts its worker here: with signals blocked, as above */
    with_signals_blocked(urcu_bp_call_rcu_after_fork_child);
}

void lb_rcu_readers_fork_prepare(void) { urcu_bp_before_fork(); }
void lb_rcu_readers_fork_parent(void) { urcu_bp_after_fork_parent(); }
void lb_rcu_readers_fork_child(void) { urcu_bp_after_fork_child(); }

void lb_quiesce(void) { lb_rcu_barrier(); }
