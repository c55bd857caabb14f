/*
 * limits.c - lb.h's limits as data, for bindings that cannot read macros.
 */
#include "lb.h"

static const lb_limits limits = {
    .max_weight = LB_MAX_WEIGHT,
    .max_backends = LB_MAX_BACKENDS,
    .max_point_multiple = LB_MAX_POINT_MULTIPLE,
    .max_points = LB_MAX_POINTS,
    .max_threshold = LB_MAX_THRESHOLD,
    .default_max_iterations = LB_DEFAULT_MAX_ITERATIONS,
    .max_timeout = LB_MAX_TIMEOUT,
    .min_frequency = LB_MIN_FREQUENCY,
    .max_frequency = LB_MAX_FREQUENCY,
    .max_ejection_time = LB_MAX_EJECTION_TIME,
    .max_slow_start_window = LB_MAX_SLOW_START_WINDOW,
    .max_choice_count = LB_MAX_CHOICE_COUNT,
    .max_table_size = LB_MAX_TABLE_SIZE,
    .max_bias = LB_MAX_BIAS,
    .min_decay = LB_MIN_DECAY,
    .max_decay = LB_MAX_DECAY,
    .max_balance_factor = LB_MAX_BALANCE_FACTOR,
};

const lb_limits *lb_limits_get(void) { return &limits; }
