/*
 * select/maglev.h - a Maglev selector's lookup table, read-only, for the
 * tests of its properties (every slot filled, weight shares, disruption)
 * and the build benchmark.  Private to src/select/ and its tests.
 */
#ifndef LB_SELECT_MAGLEV_H
#define LB_SELECT_MAGLEV_H

#include "select.h"

/* The table of a selector lb_select_maglev.build returned: *size entries,
 * each a backend index (sorted order).  Valid while the selector is.
 * Pure, any thread. */
const uint16_t *lb_maglev_table(const void *sel, uint32_t *size);

#endif /* LB_SELECT_MAGLEV_H */
