package = "lb"
version = "0.2.0-1"
-- Releases are tagged v<version> (v0.2.0); `make dist` packs the tracked
-- files of a checkout into lb-<version>-1.src.rock, which builds offline.
source = {
   url = "git+https://github.com/lb-lua/lb.git",
   tag = "v0.2.0",
}
description = {
   summary = "Load balancing for LuaJIT and OpenResty with a lock-free C core",
   detailed = [[
Service discovery (static, Lua functions, DNS A/AAAA/SRV and etcd v3 run in
the C core), active health checks (TCP, HTTP, TLS on a C thread, or Lua
functions), passive health (outlier ejection, slow start) and backend
selection (round robin, random, FNV hash, Ketama consistent hashing
compatible with nginx's `hash ... consistent`, with bounded loads, nginx's
smooth weighted round robin, least request, peak EWMA, Maglev), with the
state published through RCU and, across nginx workers, in shared memory
with one prober.  Prometheus metrics and a status page.  Works in
OpenResty's balancer_by_lua* and in plain LuaJIT.
]],
   homepage = "https://github.com/lb-lua/lb",
   license = "Apache-2.0",
}
-- System libraries (Debian: liburcu-dev, libssl-dev, libc-ares-dev,
-- libcurl4-openssl-dev, libjansson-dev) are found on the
-- compiler's default paths, including the multiarch ones.
dependencies = {
   "lua >= 5.1",
}
build = {
   type = "builtin",
   modules = {
      ["lb.core"] = {
         sources = {
            "src/backend.c", "src/balancer.c", "src/events.c",
            "src/fork.c", "src/limits.c", "src/passive.c", "src/rcu.c",
            "src/record.c", "src/record_stats.c", "src/share.c",
            "src/shared.c", "src/shared_procs.c", "src/snapshot.c", "src/store_heap.c",
            "src/targets.c", "src/update.c", "src/walk.c",
            "src/select/choices.c", "src/select/consistent.c",
            "src/select/fnv.c", "src/select/least_request.c",
            "src/select/maglev.c", "src/select/peak_ewma.c",
            "src/select/random.c", "src/select/registry.c",
            "src/select/round_robin.c", "src/select/weighted.c",
            "src/select/weighted_round_robin.c",
            "src/check/config.c", "src/check/conn.c", "src/check/errors.c",
            "src/check/http.c", "src/check/http_config.c",
            "src/check/http_parse.c", "src/check/probe.c", "src/check/tcp.c",
            "src/check/tls.c",
            "src/checker/api.c",
            "src/checker/fork.c", "src/checker/heap.c", "src/checker/round.c",
            "src/checker/schedule.c", "src/checker/thread.c",
            "src/discovery/dns.c", "src/discovery/etcd.c",
            "src/discovery/etcd_config.c",
            "src/discovery/dns_config.c", "src/discovery/etcd_keys.c",
            "src/discovery/loop.c", "src/discovery/resolve.c",
            "src/discovery/source.c", "src/published.c",
         },
         defines = { "_GNU_SOURCE" },
         incdirs = { "src" },
         libraries = { "urcu-bp", "urcu-common", "cares", "curl", "jansson",
                       "ssl", "crypto", "pthread", "m" },
      },
      lb = "lua/lb.lua",
      ["lb.args"] = "lua/lb/args.lua",
      ["lb.backend"] = "lua/lb/backend.lua",
      ["lb.background"] = "lua/lb/background.lua",
      ["lb.balancer"] = "lua/lb/balancer.lua",
      ["lb.cdef"] = "lua/lb/cdef.lua",
      ["lb.checking"] = "lua/lb/checking.lua",
      ["lb.discovery"] = "lua/lb/discovery.lua",
      ["lb.driver"] = "lua/lb/driver.lua",
      ["lb.health"] = "lua/lb/health.lua",
      ["lb.metrics"] = "lua/lb/metrics.lua",
      ["lb.nginx"] = "lua/lb/nginx.lua",
      ["lb.nginx_log"] = "lua/lb/nginx_log.lua",
      ["lb.outcomes"] = "lua/lb/outcomes.lua",
      ["lb.sharing"] = "lua/lb/sharing.lua",
      ["lb.state"] = "lua/lb/state.lua",
      ["lb.status_page"] = "lua/lb/status_page.lua",
   },
}
