/*
 * rcu.c - process-wide RCU setup and the library's one fork handler.
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
 *   0. every balancer's write lock: a writer holding one takes the locks
 *      below (Ketama's spare arrays, call_rcu's on first use, liburcu's
 *      registry when it first reads);
 *   1. the checker's lock and event queues: no thread holding them waits
 *      for RCU or for the locks below;
 *   2. pause the call_rcu worker: it acknowledges only between batches, so
 *      the callbacks it is running (snapshot_free, which gives Ketama's
 *      arrays back under the spare lock) must be able to finish: the spare
 *      lock is not held yet;
 *   3. the spare lock, a leaf;
 *   4. liburcu-bp's registry and grace-period locks, last: a thread taking
 *      lb's locks may register as a reader (which takes the registry lock).
 * After fork the same steps run in reverse.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include "core.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    lb_balancers_fork_prepare();
    lb_checker_fork_prepare();
    urcu_bp_call_rcu_before_fork();
    lb_ketama_fork_prepare();
    urcu_bp_before_fork();
}

static void after_fork_parent(void)
{
    urcu_bp_after_fork_parent();
    lb_ketama_fork_parent();
    urcu_bp_call_rcu_after_fork_parent();
    lb_checker_fork_parent();
    lb_balancers_fork_parent();
}

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

static void after_fork_child(void)
{
    urcu_bp_after_fork_child();
    lb_ketama_fork_child();
    /* liburcu restarts its worker here: with signals blocked, as above */
    with_signals_blocked(urcu_bp_call_rcu_after_fork_child);
    lb_random_fork_child();
    lb_checker_fork_child();
    lb_balancers_fork_child();
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
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void lb_rcu_init(void) { pthread_once(&once, install); }

void lb_quiesce(void) { lb_rcu_barrier(); }
