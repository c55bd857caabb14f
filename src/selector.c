/*
 * selector.c - the algorithm registry.
 */
#include "selector.h"

const struct lb_selector_ops *lb_selector_by_id(int selection)
{
    switch (selection) {
    case LB_SELECT_ROUND_ROBIN:
        return &lb_select_round_robin;
    case LB_SELECT_RANDOM:
        return &lb_select_random;
    case LB_SELECT_FNV:
        return &lb_select_fnv;
    case LB_SELECT_CONSISTENT:
        return &lb_select_consistent;
    default:
        return NULL;
    }
}
