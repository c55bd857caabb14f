/*
 * checker.c - the background health checker (one thread per process).
 */
#include "core.h"

int lb_balancer_set_check(lb_balancer *b, const lb_check_config *cfg,
                          const char **err)
{
    (void)b;
    (void)cfg;
    *err = "health checks not implemented yet";
    return LB_ERROR;
}

int lb_balancer_check_round(lb_balancer *b, int parallel, const char **err)
{
    (void)b;
    (void)parallel;
    (void)err;
    return LB_DECLINED;
}

int lb_balancer_checks_start(lb_balancer *b, double frequency, int parallel,
                             const char **err)
{
    (void)b;
    (void)frequency;
    (void)parallel;
    (void)err;
    return LB_DECLINED;
}

void lb_balancer_checks_stop(lb_balancer *b) { (void)b; }

void lb_balancer_checks_free(lb_balancer *b) { (void)b; }

int lb_balancer_events(lb_balancer *b, lb_health_event *out, int max)
{
    (void)b;
    (void)out;
    (void)max;
    return 0;
}

int lb_check_error_text(int kind, int detail, char *buf, size_t size)
{
    (void)kind;
    (void)detail;
    if (size)
        buf[0] = '\0';
    return 0;
}
