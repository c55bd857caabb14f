/*
 * select/choices.h - the power of k choices shared by least_request.c and
 * peak_ewma.c (Mitzenmacher, "The Power of Two Choices in Randomized Load
 * Balancing", 2001): k distinct backends drawn uniformly, the best of them
 * by the algorithm's score.  Private to src/select/.
 *
 * Random numbers: each thread has its own xoshiro256** generator
 * (choices.c), seeded from getrandom() on the thread's first draw; a
 * forked child reseeds on its next draw (the ops' fork_child), so nginx
 * workers forked from one master do not draw the same candidates.  No
 * lock, no shared state, nothing secret.
 */
#ifndef LB_SELECT_CHOICES_H
#define LB_SELECT_CHOICES_H

#include "select.h"

/* A uniform 64-bit number from this thread's generator.  Lock-free, any
 * thread; reseeds after lb_choices_fork_child. */
uint64_t lb_choices_random(void);

/* Fork step (select.h): the child's thread reseeds on its next draw. */
void lb_choices_fork_child(void);

/*
 * Draw min(k, n) distinct indices below n (n >= 1) into out[] and return
 * how many: all of 0..n-1 (rotated from a random one) when k >= n, else k
 * uniform distinct ones (a repeat is drawn again; k <= LB_MAX_CHOICE_COUNT
 * keeps it short).  Distinct, so a backend holding many requests loses
 * every comparison it enters, instead of winning the 1/n^2 draws that
 * pair it with itself.
 * Lock-free, any thread.
 */
uint32_t lb_choices_draw(uint32_t n, uint32_t k, uint32_t *out);

#endif /* LB_SELECT_CHOICES_H */
