-- A shared balancer's background (lb.h "Shared balancers"): the prober's
-- turn, renewed or taken at every tick, and the region's set adopted when
-- it moved on.  Installed on the Balancer class by lb.balancer, which
-- passes the helpers it shares (sync, check_self); returns the tick
-- period, the step and whether this process probes.

local ffi = require("ffi")
local core = require("lb.cdef")
local driver = require("lb.driver")

local C = core.C
local ffi_string = ffi.string
local tonumber = tonumber
local log_error = driver.log_error

local errbuf = ffi.new("const char *[1]")

local M = {}

function M.install(Balancer, env)
  local sync, check_self = env.sync, env.check_self
  local S = {}

  -- A shared balancer's turn lasts one period of its periodic work plus the
  -- check's timeout, and is renewed every tick (half a period, at most
  -- 0.5 s, so that a set published by the prober is adopted within a
  -- second): a prober that stops renewing is replaced within that lease
  -- and one tick, under two periods plus the timeout; one that dies is
  -- replaced at the next tick of any process.
  local function shared_period(self)
    local p = self.health_check_frequency
    local u = self.update_frequency
    if p == nil or (u ~= nil and u < p) then
      p = u
    end
    return p or 1
  end

  function S.tick(self)
    return math.min(shared_period(self) / 2, 0.5)
  end

  local function shared_lease(self)
    local timeout = self._check and self._check.timeout or 1
    return shared_period(self) + timeout
  end

  local adopted_buf = ffi.new("int[1]")

  -- The periodic step of a shared balancer: the turn, and the region's set
  -- when it moved on (this process's tables follow at once).
  function S.step(self)
    local rc = C.lb_balancer_shared_step(self._c, shared_lease(self),
                                         adopted_buf, errbuf)
    if rc < 0 then
      log_error("lb: cannot adopt the shared backend set (kept the "
                .. "previous one): " .. ffi_string(errbuf[0]))
      return
    end
    self._role = core.ROLES[rc]
    if adopted_buf[0] ~= 0 or tonumber(C.lb_balancer_generation(self._c))
                               ~= self._gen then
      sync(self)
    end
  end

  -- Whether this process runs the periodic checks and discovery: always
  -- when private; with `shared`, only the prober.
  function S.probes(self)
    if not self._shared then
      return true
    end
    if C.lb_balancer_role(self._c) ~= 2 then
      S.step(self) -- the turn may be free: take it before deciding
    end
    return self._role == "prober"
  end

  -- "private", "prober" (this process runs the checks and the discovery of
  -- a shared balancer) or "reader".
  function Balancer:role()
    check_self(self, "role")
    return core.ROLES[C.lb_balancer_role(self._c)]
  end

  return S
end

return M
