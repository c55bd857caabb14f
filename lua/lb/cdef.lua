-- lb.cdef: the C declarations of lb.core, declared once, and the library.
--
-- The shared library is installed as the module "lb.core" (luarocks builds
-- it from src/); it exports no luaopen_* function, so it is found through
-- package.cpath and opened with ffi.load, the way lua-resty-core binds nginx.

local ffi = require("ffi")
local bit = require("bit")

local M = {}

M.CDEF = [[
typedef struct lb_backend {
    uint8_t family;
    int8_t enable;
    uint16_t port;
    uint32_t weight;
    uint8_t ip[16];
    uint16_t addr_len;
    uint16_t host_len;
    char addr[128];
    char host[128];
} lb_backend;

typedef struct lb_balancer lb_balancer;

typedef struct lb_config {
    int selection;
    uint32_t point_multiple;
    int start_unhealthy;
    uint32_t consecutive_failures;
    uint32_t max_ejection_percent;
    double ejection_time;
    double max_ejection_time;
    double panic_threshold;
    double slow_start_window;
    double slow_start_aggression;
    double slow_start_min_weight;
    uint32_t choice_count;
    uint32_t table_size;
    int32_t active_request_bias_set;
    double active_request_bias;
    double ewma_decay;
    double hash_balance_factor;
} lb_config;

typedef struct lb_iter lb_iter;

typedef struct lb_iter_head {
    uint64_t gen;
    int32_t ready;
    uint32_t reserved;
} lb_iter_head;

typedef struct lb_health_info {
    uint64_t id;
    int32_t healthy;
    int32_t enabled;
    uint32_t consecutive;
    int32_t err_kind;
    int32_t err_detail;
    int32_t ejected;
} lb_health_info;

typedef struct lb_tally {
    uint32_t backends;
    uint32_t ready;
    uint32_t disabled;
    uint32_t unhealthy;
    uint32_t ejected;
    uint32_t checked;
    uint64_t last_check_ms;
} lb_tally;

typedef struct lb_record_info {
    uint64_t id;
    int32_t healthy;
    int32_t enabled;
    uint32_t in_flight;
    uint32_t passive_failures;
    uint32_t ejections;
    int32_t ejected;
    uint64_t ejected_until_ns;
    uint64_t latency_ewma_ns;
    uint64_t latency_last_ns;
    uint64_t selections;
    uint64_t checks_ok, checks_failed;
    uint64_t reports_ok, reports_failed;
} lb_record_info;

int lb_backend_parse(const char *text, size_t len, uint32_t weight,
                     lb_backend *out, const char **err);
int lb_backend_resolve(const char *text, size_t len, uint32_t weight,
                       lb_backend *out, int max, const char **err);

int lb_selection_find(const char *name, size_t len, uint32_t *flags);
const char *lb_selection_name(int id);
lb_balancer *lb_balancer_new(const lb_config *cfg, const char **err);
void lb_balancer_free(lb_balancer *b);
int lb_balancer_update(lb_balancer *b, const lb_backend *in, size_t n,
                       uint32_t *order, size_t *count, const char **err);
size_t lb_balancer_count(lb_balancer *b);
uint64_t lb_balancer_generation(lb_balancer *b);
int lb_balancer_backend(lb_balancer *b, size_t i, lb_backend *out);

typedef struct lb_limits {
    uint32_t max_weight;
    uint32_t max_backends;
    uint32_t max_point_multiple;
    uint32_t max_points;
    uint32_t max_threshold;
    uint32_t default_max_iterations;
    double max_timeout;
    double min_frequency;
    double max_frequency;
    double max_ejection_time;
    double max_slow_start_window;
    uint32_t max_choice_count;
    uint32_t max_table_size;
    double max_bias;
    double min_decay;
    double max_decay;
    double max_balance_factor;
} lb_limits;
const lb_limits *lb_limits_get(void);

lb_iter *lb_iter_new(void);
void lb_iter_free(lb_iter *it);
int lb_iter_first(lb_balancer *b, const char *key, size_t len,
                  uint32_t max_iterations, lb_iter *it);
int lb_iter_next(lb_balancer *b, lb_iter *it);
int lb_balancer_select(lb_balancer *b, const char *key, size_t len,
                       uint32_t max_iterations, lb_iter *it);
int lb_balancer_select_counted(lb_balancer *b, uint64_t gen, const char *key,
                               size_t len, uint32_t max_iterations,
                               int in_flight, lb_iter *it);
int lb_balancer_ready(lb_balancer *b, uint64_t gen, size_t i);
int lb_balancer_set_enable(lb_balancer *b, uint64_t gen, size_t i, int enable);
int lb_balancer_health(lb_balancer *b, size_t i, lb_health_info *out);
void lb_balancer_tally(lb_balancer *b, lb_tally *out);
int lb_balancer_observe(lb_balancer *b, uint64_t gen, size_t i, int ok,
                        uint32_t threshold, int err_kind, int err_detail);
int lb_balancer_record(lb_balancer *b, size_t i, lb_record_info *out);
int lb_balancer_report(lb_balancer *b, uint64_t gen, size_t i, int result,
                       double latency, const char **err);
int lb_balancer_in_flight_add(lb_balancer *b, uint64_t gen, size_t i,
                              int delta);
uint32_t lb_balancer_in_flight_own(lb_balancer *b, uint64_t gen, size_t i);
int lb_balancer_release(lb_balancer *b, uint64_t gen, size_t i, int result,
                        double latency, const char **err);
int lb_balancer_tick(lb_balancer *b);
int lb_balancer_panic(lb_balancer *b);

typedef struct lb_check_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} lb_check_header;

typedef struct lb_check_config {
    int32_t kind;
    double timeout;
    uint32_t consecutive_success;
    uint32_t consecutive_failure;
    int32_t tls;
    int32_t tls_verify;
    const char *tls_sni;
    size_t tls_sni_len;
    const char *tls_ca;
    size_t tls_ca_len;
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    const char *host;
    size_t host_len;
    const lb_check_header *headers;
    size_t nheaders;
    const uint16_t *expected_status;
    size_t nexpected;
    int32_t reuse_connection;
    uint16_t port;
} lb_check_config;

typedef struct lb_check_stats {
    uint64_t ok;
    uint64_t failed;
    uint64_t skipped;
} lb_check_stats;

typedef struct lb_health_event {
    uint64_t id;
    int32_t healthy;
    int32_t err_kind;
    int32_t err_detail;
    int32_t reserved;
} lb_health_event;

int lb_balancer_set_check(lb_balancer *b, const lb_check_config *cfg,
                          const char **err);
int lb_balancer_check_round(lb_balancer *b, int parallel, const char **err);
int lb_balancer_checks_start(lb_balancer *b, double frequency, int parallel,
                             const char **err);
void lb_balancer_checks_stop(lb_balancer *b);
int lb_balancer_check_stats(lb_balancer *b, lb_check_stats *out);
int lb_balancer_events(lb_balancer *b, lb_health_event *out, int max);
int lb_check_error_text(int kind, int detail, char *buf, size_t size);

typedef struct lb_record_stats {
    uint64_t flips;
    uint64_t last_check_ms;
    uint64_t check_time_ns;
    uint64_t check_timed;
    uint64_t check_buckets[12];
} lb_record_stats;
int lb_balancer_stats(lb_balancer *b, size_t i, lb_record_stats *out);
void lb_balancer_discovery_count(lb_balancer *b, int ok);
void lb_balancer_discovery_counts(lb_balancer *b, uint64_t *ok,
                                  uint64_t *failed);
int lb_balancer_check_time(lb_balancer *b, uint64_t gen, size_t i,
                           double seconds);
int lb_balancer_selected(lb_balancer *b, uint64_t gen, size_t i);

int lb_balancer_share(lb_balancer *b, uint32_t capacity, const char **err);
int lb_balancer_role(lb_balancer *b);
int lb_balancer_shared_step(lb_balancer *b, double lease, int *adopted,
                            const char **err);
void lb_balancer_shared_yield(lb_balancer *b);
void lb_balancer_shared_versions(lb_balancer *b, uint64_t *adopted,
                                 uint64_t *published);
uint32_t lb_balancer_shared_processes(lb_balancer *b);
int lb_balancer_error_text_set(lb_balancer *b, uint64_t gen, size_t i,
                               const char *text, size_t len);
size_t lb_balancer_error_text(lb_balancer *b, size_t i, char *buf,
                              size_t len);

typedef struct lb_dns_config {
    const char *name;
    size_t name_len;
    int32_t type;
    uint16_t port;
    uint16_t reserved;
    const char *resolvers;
    size_t resolvers_len;
    double timeout;
    double min_ttl;
    double max_ttl;
} lb_dns_config;

typedef struct lb_etcd_config {
    const char *endpoints;
    size_t endpoints_len;
    const char *prefix;
    size_t prefix_len;
    double timeout;
    const char *username;
    size_t username_len;
    const char *password;
    size_t password_len;
    int32_t tls_verify;
    int32_t reserved;
    const char *tls_ca;
    size_t tls_ca_len;
    const char *tls_sni;
    size_t tls_sni_len;
} lb_etcd_config;

typedef struct lb_discovery_status {
    int32_t kind;
    int32_t ok;
    int32_t running;
    int32_t has_revision;
    double updated_at;
    uint64_t revision;
    uint64_t updates;
    uint64_t errors;
    uint64_t queries;
    char last_error[256];
} lb_discovery_status;

int lb_balancer_set_dns(lb_balancer *b, const lb_dns_config *cfg,
                        const char **err);
int lb_balancer_set_etcd(lb_balancer *b, const lb_etcd_config *cfg,
                         const char **err);
int lb_balancer_discovery_start(lb_balancer *b, const char **err);
void lb_balancer_discovery_stop(lb_balancer *b);
int64_t lb_balancer_discovery_refresh(lb_balancer *b, const char **err);
int lb_balancer_discovery_wait(lb_balancer *b, int64_t ticket, double timeout);
int lb_balancer_discovery_status(lb_balancer *b, lb_discovery_status *out);
typedef struct lb_resolve lb_resolve;
lb_resolve *lb_resolve_start(const char *text, size_t len, uint32_t weight,
                             double timeout, const char **err);
int lb_resolve_result(lb_resolve *r, lb_backend *out, int max,
                      const char **err);
int lb_resolve_wait(lb_resolve *r, double timeout);
void lb_resolve_free(lb_resolve *r);
size_t lb_balancer_backends(lb_balancer *b, lb_backend *out, size_t max,
                            uint64_t *ids, uint64_t *gen);

/* libc: the monotonic clock of the background driver (struct timespec) */
struct lb_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct lb_timespec *ts);
]]

-- Declare once per Lua state, even if this module is loaded again.
if not pcall(ffi.typeof, "lb_iter_head") then
  ffi.cdef(M.CDEF)
end

local function load_library()
  local path = package.searchpath("lb.core", package.cpath)
  if not path then
    error("lb: cannot find the C module 'lb.core' in package.cpath ("
          .. package.cpath .. ")", 3)
  end
  return ffi.load(path)
end

M.C = load_library()

M.OK = 0
M.ERROR = -1
M.DECLINED = -2
M.STALE = -3

M.AF_INET, M.AF_INET6, M.AF_UNIX = 0, 1, 2
-- Every limit comes from the C core (lb.h), the one place it is defined.
local limits = M.C.lb_limits_get()
M.LIMITS = {
  max_weight = tonumber(limits.max_weight),
  max_backends = tonumber(limits.max_backends),
  max_point_multiple = tonumber(limits.max_point_multiple),
  max_points = tonumber(limits.max_points),
  max_threshold = tonumber(limits.max_threshold),
  max_timeout = tonumber(limits.max_timeout),
  min_frequency = tonumber(limits.min_frequency),
  max_frequency = tonumber(limits.max_frequency),
  max_ejection_time = tonumber(limits.max_ejection_time),
  max_slow_start_window = tonumber(limits.max_slow_start_window),
  max_choice_count = tonumber(limits.max_choice_count),
  max_table_size = tonumber(limits.max_table_size),
  max_bias = tonumber(limits.max_bias),
  min_decay = tonumber(limits.min_decay),
  max_decay = tonumber(limits.max_decay),
  max_balance_factor = tonumber(limits.max_balance_factor),
}
M.MAX_WEIGHT = M.LIMITS.max_weight
M.MAX_POINT_MULTIPLE = M.LIMITS.max_point_multiple
M.DEFAULT_MAX_ITERATIONS = tonumber(limits.default_max_iterations)

M.CHECK_KIND = { tcp = 1, http = 2 }
M.DNS_TYPE = { A = 1, AAAA = 28, SRV = 33 }
M.CHECK_ERR_CUSTOM = 10
M.CHECK_ERR_EJECTED = 11

-- LB_CHECK_BUCKET_BOUNDS (lb.h): upper bounds of the check-duration
-- histogram, in seconds
M.CHECK_BUCKET_BOUNDS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                          0.1, 0.25, 0.5, 1, 2.5 }

-- lb_balancer_role
M.ROLES = { [0] = "private", [1] = "reader", [2] = "prober" }
-- Backends a shared region holds by default (lb.new{ shared = true }).
M.SHARED_CAPACITY = 4096
M.SHARED_MAX_CAPACITY = 65535

-- The selection algorithms, from the C core's registry (one row per
-- algorithm): name -> { id, keyless, counts, takes = { option = true } },
-- and the names in registry order.  `counts`: the algorithm reads
-- in-flight counts (a binding acquires and releases for it; consistent
-- does with hash_balance_factor set, see `takes`).
M.SELECTION, M.SELECTION_NAMES = {}, {}
local SELECTION_KEYLESS = 1 -- LB_SELECTION_KEYLESS
local SELECTION_COUNTS = 8 -- LB_SELECTION_COUNTS
-- LB_SELECTION_* flags that say an algorithm takes an option
local SELECTION_TAKES = {
  point_multiple = 4, choice_count = 16, active_request_bias = 32,
  ewma_decay = 64, table_size = 128, hash_balance_factor = 256,
}
do
  local flags = ffi.new("uint32_t[1]")
  local id = 0
  while true do
    local name = M.C.lb_selection_name(id)
    if name == nil then break end
    name = ffi.string(name)
    assert(M.C.lb_selection_find(name, #name, flags) == id)
    local takes = {}
    for opt, flag in pairs(SELECTION_TAKES) do
      takes[opt] = bit.band(flags[0], flag) ~= 0
    end
    M.SELECTION[name] = {
      id = id, keyless = bit.band(flags[0], SELECTION_KEYLESS) ~= 0,
      counts = bit.band(flags[0], SELECTION_COUNTS) ~= 0, takes = takes }
    M.SELECTION_NAMES[#M.SELECTION_NAMES + 1] = name
    id = id + 1
  end
end

return M
