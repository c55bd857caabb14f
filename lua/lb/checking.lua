-- The health of a balancer, beside lb.balancer: the built-in check's
-- configuration handed to the C core and its rounds, custom check rounds
-- run on the Lua thread, and the one drain that delivers every flip the
-- C core queued (built-in and custom alike) to on_health_change.
--
--   checking.setup(b, check)         give the C core the built-in check
--   checking.round(b, parallel)      one round now, flips delivered
--   checking.custom_round(b, p)      one round of a custom check
--   checking.start(b) / stop(b)      periodic built-in rounds (C thread)
--   checking.drain(b)                deliver the queued flips
--   checking.error_text(b, id, k, d) the last error of a record, as text
--   checking.tally(b)                the set counted by state (C)
--   checking.prefix(b)               'lb: balancer "name": ' for log lines
--   checking.check_running(b)        warn once when checks never run
--
-- Every function takes the balancer (a lb.balancer object) as it is: these
-- are functions of this module, not methods mixed into the Balancer.

local ffi = require("ffi")
local core = require("lb.cdef")
local driver = require("lb.driver")
local args = require("lb.args")

local C = core.C
local ffi_new, ffi_string = ffi.new, ffi.string
local ipairs, tostring, tonumber, pcall = ipairs, tostring, tonumber, pcall
local log_error, in_openresty, now = driver.log_error, driver.in_openresty,
                                   driver.now
local log_warn, wall = driver.log_warn, driver.wall
local max = math.max

local M = {}

local errbuf = ffi_new("const char *[1]")
local hinfo = ffi_new("lb_health_info")
local EVENTS = 64
local events = ffi_new("lb_health_event[?]", EVENTS)
local textbuf = ffi_new("char[256]")

-- err_kind recorded for a failed custom check (its text is kept in Lua).
local ERR_CUSTOM = core.CHECK_ERR_CUSTOM

-- Built-in checks that run once: a period so long that the first round is
-- the only one in practice, the longest the C core accepts.
local ONCE = core.LIMITS.max_frequency

-- A C call's int result as Lua's true | nil, err.
local function outcome(rc)
  if rc == core.ERROR then
    return nil, ffi_string(errbuf[0])
  end
  return true
end


local tally_buf = ffi_new("lb_tally")

-- The published set counted by state (lb_balancer_tally: one FFI call,
-- the loop in C): a buffer shared by every caller, read before the next
-- call.  For failure paths and status, not for select.
function M.tally(self)
  C.lb_balancer_tally(self._c, tally_buf)
  return tally_buf
end

-- The start of a log line about balancer b: 'lb: balancer "app": ', or
-- 'lb: ' for a balancer with no name.
function M.prefix(self)
  if self.name then
    return 'lb: balancer "' .. self.name .. '": '
  end
  return "lb: "
end

-- Warn once per balancer (in this process) when its health check has a
-- frequency but no check runs: start() was never called here and, two
-- periods and a timeout after this process first looked, no backend was
-- checked for that long (by anyone: with
-- `shared`, the prober's checks count, so a worker that reads is fine).
-- Until then every backend counts as healthy.  Called by status() (and
-- so metrics() and the status page), poll() and lb.nginx's failure path,
-- never by select: a few field loads until the grace is over, then
-- one tally (O(backends) in C) at most once a period (or a second).
function M.check_running(self)
  local f = self.health_check_frequency
  if not f or self._started ~= nil or self._unchecked_warned
     or not self._check then
    return
  end
  local t = now()
  local grace = 2 * f + self._check.timeout
  local first = self._unchecked_from
  if first == nil then
    -- the grace starts with this process's first look: a balancer made in
    -- nginx's master is looked at by workers forked any time later
    self._unchecked_from = t
    return
  end
  if t - first < grace or t < (self._unchecked_next or 0) then
    return
  end
  self._unchecked_next = t + max(f, 1)
  local ta = M.tally(self)
  if ta.backends == 0 then
    return
  end
  local last = tonumber(ta.last_check_ms) / 1000
  if last > 0 and wall() - last < grace then
    return
  end
  self._unchecked_warned = true
  log_warn(M.prefix(self) .. "health_check_frequency is " .. f
           .. " s but no health check has run "
           .. (last > 0 and ("for " .. ("%.0f"):format(wall() - last)
                             .. " s") or "yet")
           .. ": call start() (in OpenResty, in init_worker_by_lua*); "
           .. "until a check runs every backend counts as healthy")
end

local function builtin_error_text(kind, detail)
  local n = C.lb_check_error_text(kind, detail, textbuf, 256)
  return ffi_string(textbuf, n < 256 and n or 255)
end

local ERR_EJECTED = core.CHECK_ERR_EJECTED

-- `i` (0-based index), when given, lets a shared balancer find the text
-- of a custom check that another process ran.
function M.error_text(self, id, kind, detail, i)
  local custom = kind ~= ERR_EJECTED and self._last_error[id]
  if custom then
    return custom
  end
  if kind == ERR_CUSTOM and self._shared and i then
    local n = C.lb_balancer_error_text(self._c, i, textbuf, 256)
    if n > 0 then
      return ffi_string(textbuf, n)
    end
  end
  if kind == 0 then
    return nil
  end
  return builtin_error_text(kind, detail)
end

-- Deliver one flip to on_health_change; its errors are logged, never
-- raised: a failing callback must not take the balancer down.
local function notify(self, b, healthy, err)
  local cb = self.on_health_change
  if cb then
    local ok, e = pcall(cb, b, healthy, err)
    if not ok then
      log_error("lb: on_health_change failed: " .. tostring(e))
    end
  end
end

-- Deliver the flips queued on the balancer, oldest first: every
-- observation (the checker thread's built-in checks, custom checks run
-- here) goes through the C core, which queues its flips; this is the one
-- drain (passive ejections and returns come the same way).  A flip of a
-- backend that has left the set since is dropped.
--
-- Each batch is copied out of the C buffer before any callback runs: a
-- callback may drain another balancer (its run_health_check(), poll()) or,
-- in nginx, yield while other timers drain, and the shared buffer is
-- theirs meanwhile.  A drain of this same balancer started from inside one
-- of its callbacks (or from another light thread while a callback yields)
-- returns at once; the drain already running delivers the rest in order,
-- and it stops only when the queue answers empty, so nothing pushed
-- meanwhile is left behind.  The C queue is bounded: past its cap a record
-- is marked and its current state delivered later, which may repeat the
-- state last delivered; such repeats are not passed on.
function M.drain(self)
  if not (self._check or self._passive) or self._draining then
    return
  end
  self._draining = true
  local c = self._c
  local delivered = self._delivered
  while true do
    local n = C.lb_balancer_events(c, events, EVENTS)
    if n <= 0 then
      break
    end
    local batch = {}
    for i = 0, n - 1 do
      local e = events[i]
      local id = tonumber(e.id)
      local b = self._byid[id]
      local healthy = e.healthy ~= 0
      if b and delivered[id] ~= healthy then
        delivered[id] = healthy
        local err
        if not healthy then
          err = M.error_text(self, id, e.err_kind, e.err_detail)
                or "check failed"
        end
        batch[#batch + 1] = { b, healthy, err }
      end
    end
    for _, f in ipairs(batch) do
      notify(self, f[1], f[2], f[3])
    end
  end
  self._draining = false
end

local function set_str(cfg, field, s, anchors)
  if s ~= nil then
    anchors[#anchors + 1] = s
    cfg[field] = s
    cfg[field .. "_len"] = #s
  end
end

-- Give the C core the checked built-in check (see lb.health.check).
function M.setup(self, check)
  local cfg = ffi_new("lb_check_config")
  local anchors = {}
  cfg.kind = core.CHECK_KIND[check.kind]
  cfg.timeout = check.timeout
  cfg.consecutive_success = check.consecutive_success
  cfg.consecutive_failure = check.consecutive_failure
  if check.tls then
    cfg.tls = 1
    cfg.tls_verify = check.tls.verify and 1 or 0
    set_str(cfg, "tls_sni", check.tls.sni, anchors)
    set_str(cfg, "tls_ca", check.tls.ca, anchors)
  end
  if check.kind == "http" then
    set_str(cfg, "method", check.method, anchors)
    set_str(cfg, "path", check.path, anchors)
    set_str(cfg, "host", check.host, anchors)
    local nh = #check.headers
    if nh > 0 then
      local hs = ffi_new("lb_check_header[?]", nh)
      anchors[#anchors + 1] = hs
      for i, kv in ipairs(check.headers) do
        hs[i - 1].name, hs[i - 1].name_len = kv[1], #kv[1]
        hs[i - 1].value, hs[i - 1].value_len = kv[2], #kv[2]
      end
      cfg.headers, cfg.nheaders = hs, nh
    end
    local ne = #check.expected_status
    local es = ffi_new("uint16_t[?]", ne)
    anchors[#anchors + 1] = es
    for i, s in ipairs(check.expected_status) do
      es[i - 1] = s
    end
    cfg.expected_status, cfg.nexpected = es, ne
    cfg.reuse_connection = check.reuse_connection and 1 or 0
    cfg.port = check.port or 0
  end
  local rc = C.lb_balancer_set_check(self._c, cfg, errbuf)
  -- Referenced after the call so the strings outlive it; the C core
  -- copied what it keeps.
  self._check_anchors = anchors
  return outcome(rc)
end

-- Record a custom check's result for backend index i (0-based) of
-- snapshot `gen` in the C core, which queues a flip; a flip is delivered
-- at once through the one drain.
local function observe(self, i, ok, err, gen, secs)
  local check = self._check
  C.lb_balancer_check_time(self._c, gen, i, secs or -1)
  local threshold = ok and check.consecutive_success
                    or check.consecutive_failure
  local rc = C.lb_balancer_observe(self._c, gen, i, ok and 1 or 0,
                                   threshold, ERR_CUSTOM, 0)
  if rc < 0 then
    return -- the set changed during the round
  end
  if C.lb_balancer_health(self._c, i, hinfo) == 0 then
    self._last_error[tonumber(hinfo.id)] = (not ok) and err or nil
  end
  if self._shared and not ok and err then
    local text = tostring(err)
    C.lb_balancer_error_text_set(self._c, gen, i, text, #text)
  end
  if rc == 1 then
    M.drain(self)
  end
end

-- Run a custom check on one backend: true, or false, err; then the
-- seconds it took.  Never raises.
local function run_custom(fn, b)
  local t0 = now()
  local ok, res, err = pcall(fn, b)
  local secs = now() - t0
  if not ok then
    return false, "check raised: " .. tostring(res), secs
  end
  if res == true then
    return true, nil, secs
  end
  if err == nil then
    if res == nil or res == false then
      err = "check failed"
    else
      -- a table here is usually a descriptor made inside the check
      err = "check returned " .. args.text(res) .. "; a check returns "
            .. "true, or nil and an error message"
    end
  end
  return false, tostring(err), secs
end

local function can_spawn()
  if not (in_openresty() and ngx.thread) then
    return false
  end
  local phase = ngx.get_phase()
  return phase ~= "init" and phase ~= "init_worker"
end

-- One round of the custom check.  In parallel (OpenResty light threads),
-- at most check.concurrency checks are in flight at once: each holds a
-- cosocket, a connection slot of the worker that clients need too.
function M.custom_round(self, parallel)
  local check = self._check
  local fn = check.check
  local list, gen = self._list, self._gen
  if parallel and can_spawn() then
    local nexti = 0
    local function worker()
      while true do
        nexti = nexti + 1
        local i = nexti
        local b = list[i]
        if not b then
          return
        end
        local ok, err, secs = run_custom(fn, b)
        observe(self, i - 1, ok, err, gen, secs)
      end
    end
    local threads = {}
    for k = 1, math.min(check.concurrency, #list) do
      threads[k] = ngx.thread.spawn(worker)
    end
    for k = 1, #threads do
      local ok, err = ngx.thread.wait(threads[k])
      if not ok then
        log_error("lb: health check round failed: " .. tostring(err))
      end
    end
    return
  end
  for i, b in ipairs(list) do
    local ok, err, secs = run_custom(fn, b)
    if gen ~= self._gen then
      return
    end
    observe(self, i - 1, ok, err, gen, secs)
  end
end


-- One round now (built-in on the C thread, custom here), then the flips
-- delivered: true, or nil, err.
function M.round(b, parallel)
  local check = b._check
  if not check then
    return true
  end
  if check.kind == "custom" then
    M.custom_round(b, parallel)
    M.drain(b)
    return true
  end
  local ok, err = outcome(C.lb_balancer_check_round(b._c, parallel and 1 or 0,
                                                    errbuf))
  M.drain(b)
  if not ok then
    return nil, err
  end
  return true
end

-- Periodic built-in rounds on the C checker thread, at the balancer's
-- frequency (nil: once); a no-op for a custom check or none.
function M.start(b)
  local check = b._check
  if check and check.kind ~= "custom" then
    return outcome(C.lb_balancer_checks_start(
      b._c, b.health_check_frequency or ONCE,
      b.parallel_health_check and 1 or 0, errbuf))
  end
  return true
end

function M.stop(b)
  if b._check and b._check.kind ~= "custom" then
    C.lb_balancer_checks_stop(b._c)
  end
end

return M
