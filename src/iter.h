/*
 * iter.h - the private layout of lb.h's opaque lb_iter (balancer.c owns
 * it; the C tests read the walk counters to pin Pingora's step counts).
 */
#ifndef LB_ITER_H
#define LB_ITER_H

#include "lb.h"

#define LB_ITER_TOUCH 16

/* The iterator behind lb.h's opaque lb_iter; `head` comes first so that
 * lb_iter_head_of is a cast.  gen and ready live in the head. */
struct lb_iter {
    lb_iter_head head;
    uint32_t steps;
    uint32_t max_steps;
    uint32_t nseen;    /* unique candidates returned in this walk */
    uint32_t panic;    /* the walk takes enabled backends (panic mode) */
    uint64_t state;    /* the selector's position (hash seed, ring index) */
    uint32_t nwords;   /* bitmap capacity in 64-bit words */
    uint32_t ntouched; /* words dirtied in this walk; > LB_ITER_TOUCH: all */
    uint64_t *seen;
    uint32_t touched[LB_ITER_TOUCH];
    const lb_balancer *owner; /* the balancer of the walk (generations are
                                 per balancer) */
};

#endif /* LB_ITER_H */
