/*
 * checker.c - the background health checker (one thread per process).
 */
#include "core.h"

void lb_balancer_checks_stop(lb_balancer *b) { (void)b; }
