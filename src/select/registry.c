/*
 * select/registry.c - one row per selection algorithm.
 *
 * Adding an algorithm is its file (ending with its ops table) plus one
 * extern and one row here.  A row's position is its id: the ids of the
 * first four are the documented enum lb_selection of lb.h, and new rows
 * go at the end so those never change.
 */
#include <math.h>
#include <string.h>

#include "select.h"

extern const struct lb_selector_ops lb_select_round_robin;
extern const struct lb_selector_ops lb_select_random;
extern const struct lb_selector_ops lb_select_fnv;
extern const struct lb_selector_ops lb_select_consistent;
extern const struct lb_selector_ops lb_select_weighted_round_robin;
extern const struct lb_selector_ops lb_select_least_request;
extern const struct lb_selector_ops lb_select_peak_ewma;
extern const struct lb_selector_ops lb_select_maglev;

static const struct lb_selection_row rows[] = {
    [LB_SELECT_ROUND_ROBIN] = {"round_robin",
                               LB_SELECTION_KEYLESS |
                                   LB_SELECTION_OBSERVABLE_STEPS,
                               &lb_select_round_robin},
    [LB_SELECT_RANDOM] = {"random", LB_SELECTION_KEYLESS, &lb_select_random},
    [LB_SELECT_FNV] = {"fnv", 0, &lb_select_fnv},
    [LB_SELECT_CONSISTENT] = {"consistent",
                              LB_SELECTION_POINTS | LB_SELECTION_BOUNDED,
                              &lb_select_consistent},
    {"weighted_round_robin", LB_SELECTION_KEYLESS,
     &lb_select_weighted_round_robin},
    {"least_request",
     LB_SELECTION_KEYLESS | LB_SELECTION_COUNTS | LB_SELECTION_CHOICES |
         LB_SELECTION_BIAS,
     &lb_select_least_request},
    {"peak_ewma",
     LB_SELECTION_KEYLESS | LB_SELECTION_COUNTS | LB_SELECTION_CHOICES |
         LB_SELECTION_DECAY,
     &lb_select_peak_ewma},
    {"maglev", LB_SELECTION_TABLE, &lb_select_maglev},
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

/* n > 1 has no divisor up to its square root; n <= LB_MAX_TABLE_SIZE, so
 * trial division takes at most ~2,000 steps. */
static int is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    for (uint32_t d = 2; d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

int lb_selection_check(const lb_config *cfg, const char **err)
{
    const struct lb_selection_row *row = lb_selection_at(cfg->selection);
    uint32_t f;

    if (!row) {
        *err = "unknown selection algorithm";
        return LB_ERROR;
    }
    f = row->flags;
    if (cfg->choice_count && !(f & LB_SELECTION_CHOICES)) {
        *err = "choice_count applies to least_request and peak_ewma only";
        return LB_ERROR;
    }
    if (cfg->choice_count > LB_MAX_CHOICE_COUNT) {
        *err = "choice_count out of range (1-16)";
        return LB_ERROR;
    }
    if (cfg->active_request_bias_set && !(f & LB_SELECTION_BIAS)) {
        *err = "active_request_bias applies to least_request only";
        return LB_ERROR;
    }
    if (cfg->active_request_bias_set &&
        !(cfg->active_request_bias >= 0 &&
          cfg->active_request_bias <= LB_MAX_BIAS)) {
        *err = "active_request_bias out of range (0-100)";
        return LB_ERROR;
    }
    if (cfg->ewma_decay != 0 && !(f & LB_SELECTION_DECAY)) {
        *err = "ewma_decay applies to peak_ewma only";
        return LB_ERROR;
    }
    if (cfg->ewma_decay != 0 &&
        !(cfg->ewma_decay >= LB_MIN_DECAY && cfg->ewma_decay <= LB_MAX_DECAY)) {
        *err = "ewma_decay out of range (0.001-86400 seconds)";
        return LB_ERROR;
    }
    if (cfg->table_size && !(f & LB_SELECTION_TABLE)) {
        *err = "table_size applies to maglev only";
        return LB_ERROR;
    }
    if (cfg->table_size &&
        (cfg->table_size > LB_MAX_TABLE_SIZE || !is_prime(cfg->table_size))) {
        *err = "table_size must be a prime up to 16777213";
        return LB_ERROR;
    }
    if (cfg->hash_balance_factor != 0 && !(f & LB_SELECTION_BOUNDED)) {
        *err = "hash_balance_factor applies to consistent only";
        return LB_ERROR;
    }
    if (cfg->hash_balance_factor != 0 &&
        !(cfg->hash_balance_factor >= 1 &&
          cfg->hash_balance_factor <= LB_MAX_BALANCE_FACTOR)) {
        *err = "hash_balance_factor out of range (1-100)";
        return LB_ERROR;
    }
    return LB_OK;
}
