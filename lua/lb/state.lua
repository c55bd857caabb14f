-- lb.state: what a balancer reports about its backends, installed on the
-- Balancer class by lb.balancer: panic(), backends(), status() (one row
-- per backend, from the C core's records), check_stats(),
-- run_health_check() and metrics().
local ffi = require("ffi")
local core = require("lb.cdef")
local args = require("lb.args")
local checking = require("lb.checking")

local C = core.C
local type, ipairs, tonumber = type, ipairs, tonumber
local bad_arg = args.bad_arg

local hinfo = ffi.new("lb_health_info")
local rinfo = ffi.new("lb_record_info")
local cstats = ffi.new("lb_check_stats")
local rstats = ffi.new("lb_record_stats")

local M = {}

-- Install the methods on Balancer; env gives refresh(self) (adopt a set
-- published elsewhere) and check_self.
function M.install(Balancer, env)
  local refresh, check_self = env.refresh, env.check_self

  -- Whether selection is in panic now (panic_threshold): fewer than that
  -- fraction of the enabled backends are ready, and every enabled backend
  -- is a candidate.  Always false without panic_threshold.
  function Balancer:panic()
    check_self(self, "panic")
    return C.lb_balancer_panic(self._c) ~= 0
  end

  -- The backends, in sorted order (IPv4 < IPv6 < unix; address, port,
  -- weight).  A new array of the balancer's own backend tables.
  function Balancer:backends()
    check_self(self, "backends")
    refresh(self)
    local out = {}
    for i, b in ipairs(self._list) do
      out[i] = b
    end
    return out
  end

  -- One row per backend in sorted order:
  -- { addr, weight, healthy, enabled, ready, last_error, in_flight, ejected,
  --   ejections, passive_failures, panic, selected, checked, last_check }.
  -- `healthy` is the active checks' verdict; ready = healthy, enabled and
  -- not ejected; `panic` (the same in every row) is balancer:panic();
  -- `checked` is whether any check of the backend ran yet, `last_check` the
  -- time the latest ended (seconds since the epoch, nil before the first),
  -- `selected` the attempts lb.nginx set and the acquires.  With `shared`,
  -- the same in every process.
  function Balancer:status()
    check_self(self, "status")
    refresh(self)
    checking.check_running(self)
    local rows = {}
    local panic = C.lb_balancer_panic(self._c) ~= 0
    for i, b in ipairs(self._list) do
      if C.lb_balancer_health(self._c, i - 1, hinfo) == 0
         and C.lb_balancer_record(self._c, i - 1, rinfo) == 0 then
        local healthy, enabled = hinfo.healthy ~= 0, hinfo.enabled ~= 0
        local ejected = hinfo.ejected ~= 0
        rows[i] = {
          addr = b.addr,
          weight = b.weight,
          healthy = healthy,
          enabled = enabled,
          ready = healthy and enabled and not ejected,
          in_flight = tonumber(rinfo.in_flight),
          ejected = ejected,
          ejections = tonumber(rinfo.ejections),
          passive_failures = tonumber(rinfo.passive_failures),
          panic = panic,
          last_error = checking.error_text(self, tonumber(hinfo.id),
                                  tonumber(hinfo.err_kind),
                                  tonumber(hinfo.err_detail), i - 1),
          selected = tonumber(rinfo.selections),
        }
        local row = rows[i]
        if C.lb_balancer_stats(self._c, i - 1, rstats) == 0 then
          local ms = tonumber(rstats.last_check_ms)
          row.checked = ms > 0
          row.last_check = ms > 0 and ms / 1000 or nil
        end
      end
    end
    return rows
  end

  -- Counts of the built-in checks since the balancer was made: `ok`,
  -- `failed` (recorded on the backend) and `skipped` (could not start for
  -- want of descriptors or memory in this process: the backend keeps its
  -- state and is checked again next round).  All zero without a built-in
  -- check.
  function Balancer:check_stats()
    check_self(self, "check_stats")
    C.lb_balancer_check_stats(self._c, cstats)
    return { ok = tonumber(cstats.ok), failed = tonumber(cstats.failed),
             skipped = tonumber(cstats.skipped) }
  end

  -- Run one round of health checks now and return when it is done, after
  -- on_health_change has been called for every flip of the round.
  function Balancer:run_health_check(parallel)
    check_self(self, "run_health_check")
    if parallel ~= nil and type(parallel) ~= "boolean" then
      bad_arg(1, "run_health_check", "boolean", parallel)
    end
    if parallel == nil then
      parallel = self.parallel_health_check
    end
    refresh(self)
    return checking.round(self, parallel)
  end

  -- The Prometheus text exposition of this balancer, labelled
  -- balancer="name" (default: the balancer's name, else "default").
  function Balancer:metrics(name)
    check_self(self, "metrics")
    if name ~= nil and type(name) ~= "string" then
      bad_arg(1, "metrics", "string", name)
    end
    return require("lb.metrics").render({ [name or self.name or "default"]
                                          = self })
  end
end

return M
