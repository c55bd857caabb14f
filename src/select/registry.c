/*
 * select/registry.c - one row per selection algorithm.
 *
 * Adding an algorithm is its file (ending with its ops table) plus one
 * extern and one row here.  A row's position is its id: the ids of the
 * first four are the documented enum lb_selection of lb.h, and new rows
 * go at the end so those never change.
 */
#include <string.h>

#include "select.h"

extern const struct lb_selector_ops lb_select_round_robin;
extern const struct lb_selector_ops lb_select_random;
extern const struct lb_selector_ops lb_select_fnv;
extern const struct lb_selector_ops lb_select_consistent;

static const struct lb_selection_row rows[] = {
    [LB_SELECT_ROUND_ROBIN] = {"round_robin",
                               LB_SELECTION_KEYLESS |
                                   LB_SELECTION_OBSERVABLE_STEPS,
                               &lb_select_round_robin},
    [LB_SELECT_RANDOM] = {"random", LB_SELECTION_KEYLESS, &lb_select_random},
    [LB_SELECT_FNV] = {"fnv", 0, &lb_select_fnv},
    [LB_SELECT_CONSISTENT] = {"consistent", LB_SELECTION_POINTS,
                              &lb_select_consistent},
};

#define NROWS ((int)(sizeof(rows) / sizeof(rows[0])))

const struct lb_selection_row *lb_selection_at(int selection)
{
    if (selection < 0 || selection >= NROWS || !rows[selection].ops)
        return NULL;
    return &rows[selection];
}

int lb_selection_find(const char *name, size_t len, uint32_t *flags)
{
    if (!name)
        return LB_DECLINED;
    for (int i = 0; i < NROWS; i++)
        if (rows[i].ops && strlen(rows[i].name) == len &&
            memcmp(rows[i].name, name, len) == 0) {
            if (flags)
                *flags = rows[i].flags;
            return i;
        }
    return LB_DECLINED;
}

const char *lb_selection_name(int selection)
{
    const struct lb_selection_row *row = lb_selection_at(selection);

    return row ? row->name : NULL;
}
