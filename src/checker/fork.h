/*
 * checker/fork.h - the checker's fork steps, for the library's one fork
 * handler (src/fork.c), the only file outside src/checker/ that includes
 * this header.
 */
#ifndef LB_CHECKER_FORK_H
#define LB_CHECKER_FORK_H

/* Before fork(): take the checker's lock (the checker thread is then
 * asleep in epoll_wait, holding nothing else).  Parent: release it.
 * Child: release it, drop the rounds of threads that do not exist there
 * and restart the checker thread if any balancer runs periodic checks.
 * Called by the fork handler only, in its documented order. */
void lb_checker_fork_prepare(void);
void lb_checker_fork_parent(void);
void lb_checker_fork_child(void);

#endif /* LB_CHECKER_FORK_H */
