-- lb.background: a balancer's background, installed on the Balancer
-- class by lb.balancer: start() (the built-in checks on the C thread, a
-- discovery source in the core, and lb.driver's timers in OpenResty for
-- Lua discovery, custom checks, a shared balancer's step and the drain of
-- health flips), stop(), and poll() (plain Lua: the due work, now).
local ffi = require("ffi")
local core = require("lb.cdef")
local driver = require("lb.driver")
local checking = require("lb.checking")

local C = core.C
local ffi_string, tostring = ffi.string, tostring
local log_error, in_openresty = driver.log_error, driver.in_openresty

local M = {}

local errbuf = ffi.new("const char *[1]")

-- Install start, stop and poll on Balancer.  B is lb.balancer's module
-- (its EVENT_INTERVAL is read when start() makes the timers); env gives
-- sync(self) and refresh(self) (adopt a set published elsewhere) and
-- check_self.  Returns the shared balancer's tick function (lb.sharing).
function M.install(Balancer, B, env)
  local refresh, check_self = env.refresh, env.check_self

  -- The shared balancer's turn and adoption (lb.sharing).
  local sharing = require("lb.sharing").install(Balancer, {
    sync = env.sync,
    check_self = check_self,
  })
  local step, probes = sharing.step, sharing.probes

  -- The balancer's Lua-side tasks for lb.driver.
  local function driver_tasks(self)
    local tasks = {}
    local check = self._check
    if self._shared then
      tasks[#tasks + 1] = { period = sharing.tick(self), run = function()
        step(self)
      end }
    end
    if self._discovery ~= nil and not self._source then
      tasks[#tasks + 1] = { period = self.update_frequency, run = function()
        if not probes(self) then
          return
        end
        local ok, err = self:update()
        if not ok then
          log_error("lb: update failed, keeping the previous backends: "
                    .. tostring(err))
        end
      end }
    end
    if check and check.kind == "custom" then
      tasks[#tasks + 1] = { period = self.health_check_frequency,
                            run = function()
        if not probes(self) then
          return
        end
        checking.custom_round(self, self.parallel_health_check)
      end }
    end
    if (check or self._ticks) and in_openresty() then
      tasks[#tasks + 1] = { period = B.EVENT_INTERVAL, run = function()
        refresh(self)
        if self._ticks then
          C.lb_balancer_tick(self._c)
        end
        checking.drain(self)
      end }
    end
    return tasks
  end

  -- Start periodic discovery and health checks at the configured
  -- frequencies (nil: once).  Returns true, or nil, err.
  function Balancer:start()
    check_self(self, "start")
    if self._started then
      return true
    end
    if in_openresty() and ngx.get_phase() == "init" then
      -- The master runs no timers and its state is copied into every
      -- worker: a start() here would leave every worker "started" with
      -- nothing driving it.
      return nil, "start() must be called in init_worker_by_lua* (or "
                  .. "later), not in init_by_lua*: each worker runs its own "
                  .. "timers"
    end
    local ok0, err0 = checking.start(self)
    if not ok0 then
      return nil, err0
    end
    if self._source and C.lb_balancer_discovery_start(self._c, errbuf) < 0 then
      checking.stop(self)
      return nil, "cannot start discovery: " .. ffi_string(errbuf[0])
    end
    self._driver = self._driver or driver.new(driver_tasks(self))
    local ok, err = self._driver:start()
    if not ok then
      self:stop()
      self._started = nil -- never started (checking.check_running)
      return nil, "cannot start timers: " .. tostring(err)
    end
    self._started = true
    return true
  end

  -- Stop what start() started.
  function Balancer:stop()
    check_self(self, "stop")
    self._started = false
    if self._driver then
      self._driver:stop()
    end
    checking.stop(self)
    if self._source then
      C.lb_balancer_discovery_stop(self._c)
    end
    if self._shared then
      C.lb_balancer_shared_yield(self._c)
      self._role = "reader"
    end
    return true
  end

  -- Plain Lua: run the Lua-side work that is due (discovery, custom checks),
  -- end the ejections whose time is up (and slow start's windows) and
  -- deliver queued health events.  Never blocks (a custom check or a
  -- discovery function may, if it is written to).
  function Balancer:poll()
    check_self(self, "poll")
    if self._driver then
      self._driver:poll()
    end
    refresh(self)
    if self._ticks then
      C.lb_balancer_tick(self._c)
    end
    checking.drain(self)
    checking.check_running(self)
    return true
  end

  return sharing.tick
end

return M
