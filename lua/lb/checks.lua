-- Health checks and the background driver of a balancer.
--
-- Built-in checks (TCP, HTTP, TLS) run on the C core's checker thread; their
-- flips are queued there and delivered here, on the Lua thread, to
-- on_health_change.  Custom checks are Lua functions run on the Lua thread.
-- start() drives the Lua side with ngx.timer in OpenResty; in plain Lua the
-- program calls poll(), which never blocks.

local ffi = require("ffi")
local core = require("lb.cdef")

local C = core.C
local type, pcall, tostring, tonumber, ipairs = type, pcall, tostring,
                                                tonumber, ipairs

-- err_kind recorded for a failed custom check (its text is kept in Lua).
local ERR_CUSTOM = core.CHECK_ERR_CUSTOM

ffi.cdef([[
struct lb_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct lb_timespec *ts);
]])
local ts = ffi.new("struct lb_timespec")
local CLOCK_MONOTONIC = 1

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local function in_openresty()
  return type(ngx) == "table" and type(ngx.timer) == "table"
         and type(ngx.get_phase) == "function"
end

local function log_error(msg)
  if in_openresty() and ngx.log then
    ngx.log(ngx.ERR, msg)
  else
    io.stderr:write(msg, "\n")
  end
end

return function(lb, Balancer, check_self)
  lb.now = now

  -- Deliver one flip to on_health_change; its errors are logged, never
  -- raised: a failing callback must not take the balancer down.
  function Balancer:_notify(b, healthy, err)
    local cb = self.on_health_change
    if cb then
      local ok, e = pcall(cb, b, healthy, err)
      if not ok then
        log_error("lb: on_health_change failed: " .. tostring(e))
      end
    end
  end

  -- Record a custom check's result for backend index i (0-based).
  function Balancer:_observe(i, b, ok, err, gen)
    local check = self._check
    local threshold = ok and check.consecutive_success
                      or check.consecutive_failure
    local rc = C.lb_balancer_observe(self._c, gen, i, ok and 1 or 0,
                                     threshold, ERR_CUSTOM, 0)
    if rc < 0 then
      return -- the set changed during the round
    end
    local id = self:_id_of(i)
    if id then
      self._last_error[id] = (not ok) and err or nil
    end
    if rc == 1 then
      self:_notify(b, ok, (not ok) and err or nil)
    end
  end

  local hinfo = ffi.new("lb_health_info")
  function Balancer:_id_of(i)
    if C.lb_balancer_health(self._c, i, hinfo) == 0 then
      return tonumber(hinfo.id)
    end
  end

  -- Run a custom check on one backend: true, or false, err.  Never raises.
  local function run_custom(fn, b)
    local ok, res, err = pcall(fn, b)
    if not ok then
      return false, "check raised: " .. tostring(res)
    end
    if res == true then
      return true
    end
    if err == nil then
      err = res == nil and "check failed" or ("check returned "
                                              .. tostring(res))
    end
    return false, tostring(err)
  end

  function Balancer:_custom_round(parallel)
    local fn = self._check.check
    local list, gen = self._list, self._gen
    if parallel and in_openresty() and ngx.thread and ngx.get_phase() ~= "init"
       and ngx.get_phase() ~= "init_worker" then
      local threads = {}
      for i, b in ipairs(list) do
        threads[i] = ngx.thread.spawn(run_custom, fn, b)
      end
      for i, b in ipairs(list) do
        local ok, res, err = ngx.thread.wait(threads[i])
        if not ok then
          res, err = false, "check raised: " .. tostring(res)
        end
        self:_observe(i - 1, b, res, err, gen)
      end
      return
    end
    for i, b in ipairs(list) do
      local ok, err = run_custom(fn, b)
      if gen ~= self._gen then
        return
      end
      self:_observe(i - 1, b, ok, err, gen)
    end
  end

  -- Run one round of health checks now and return when it is done, after
  -- on_health_change has been called for every flip of the round.
  function Balancer:run_health_check(parallel)
    check_self(self, "run_health_check")
    if parallel ~= nil and type(parallel) ~= "boolean" then
      error("bad argument #1 to 'run_health_check' (boolean expected, got "
            .. type(parallel) .. ")", 2)
    end
    if parallel == nil then
      parallel = self.parallel_health_check
    end
    local check = self._check
    if not check then
      return true
    end
    if check.kind == "custom" then
      self:_custom_round(parallel)
      return true
    end
    local ok, err = self:_builtin_round(parallel)
    self:_drain_events()
    if not ok then
      return nil, err
    end
    return true
  end

  local function periodic_update(self)
    local ok, err = self:update()
    if not ok then
      log_error("lb: update failed, keeping the previous backends: "
                .. tostring(err))
    end
  end

  local function periodic_check(self)
    local ok, err = pcall(self._custom_round, self, self.parallel_health_check)
    if not ok then
      log_error("lb: health check round failed: " .. tostring(err))
    end
  end

  -- ngx.timer chain: runs fn(self) after `delay`, then every `period`
  -- (none: once) while this start() is the current one.
  local function timer_chain(self, token, delay, period, fn)
    local handler
    handler = function(premature)
      if premature or self._token ~= token then
        return
      end
      -- An error in one run must not end the chain (the worker would stop
      -- checking or discovering for good).
      local ran, failure = pcall(fn, self)
      if not ran then
        log_error("lb: background task failed: " .. tostring(failure))
      end
      if period and self._token == token then
        local ok, err = ngx.timer.at(period, handler)
        if not ok then
          log_error("lb: cannot schedule timer: " .. tostring(err))
        end
      end
    end
    local ok, err = ngx.timer.at(delay, handler)
    if not ok then
      return nil, err
    end
    return true
  end

  -- Start periodic discovery and health checks at the configured
  -- frequencies (nil: once).  Returns true, or nil, err.
  function Balancer:start()
    check_self(self, "start")
    if self._token then
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
    local token = {}
    local check = self._check
    local has_discovery = self._discovery ~= nil
    if check and check.kind ~= "custom" then
      local ok, err = self:_builtin_start()
      if not ok then
        return nil, err
      end
    end
    self._token = token
    if in_openresty() then
      local ok, err = true, nil
      if has_discovery then
        ok, err = timer_chain(self, token, 0, self.update_frequency,
                              periodic_update)
      end
      if ok and check and check.kind == "custom" then
        ok, err = timer_chain(self, token, 0, self.health_check_frequency,
                              periodic_check)
      end
      if ok and check and check.kind ~= "custom" then
        ok, err = timer_chain(self, token, 0, lb.EVENT_INTERVAL,
                              self._drain_events)
      end
      if not ok then
        self:stop()
        return nil, "cannot start timers: " .. tostring(err)
      end
      return true
    end
    local t = now()
    self._next_update = has_discovery and t or nil
    self._next_check = (check and check.kind == "custom") and t or nil
    return true
  end

  -- Stop what start() started.
  function Balancer:stop()
    check_self(self, "stop")
    self._token = nil
    self._next_update, self._next_check = nil, nil
    if self._check and self._check.kind ~= "custom" then
      self:_builtin_stop()
    end
    return true
  end

  -- Plain Lua: run the Lua-side work that is due (discovery, custom checks)
  -- and deliver queued health events.  Never blocks (a custom check or a
  -- discovery function may, if it is written to).
  function Balancer:poll()
    check_self(self, "poll")
    local t = now()
    if self._token then
      if self._next_update and t >= self._next_update then
        local f = self.update_frequency
        self._next_update = f and t + f or nil
        periodic_update(self)
      end
      if self._next_check and t >= self._next_check then
        local f = self.health_check_frequency
        self._next_check = f and t + f or nil
        periodic_check(self)
      end
    end
    self:_drain_events()
    return true
  end

  lb.EVENT_INTERVAL = 0.1

  require("lb.builtin")(lb, Balancer)
end
