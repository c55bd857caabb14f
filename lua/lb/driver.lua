-- The background driver: runs a balancer's Lua-side tasks (discovery,
-- custom check rounds, delivery of health events) periodically.
--
--   local d = driver.new({ { period = 5, run = fn }, ... })  -- period nil: once
--   d:start()   -- true, or nil, err
--   d:poll()    -- plain Lua: run the tasks that are due; never blocks
--   d:stop()
--
-- In OpenResty every task is an ngx.timer.every timer, made once per
-- driver.  A chain of ngx.timer.at timers ends for good when nginx cannot
-- run one (every lua_max_running_timers slot busy with the application's
-- timers) or cannot schedule the next (the pending limit full): the worker
-- would keep a stale set and stop calling on_health_change until a reload.
-- nginx re-arms an `every` timer before it runs the handler, so a tick
-- that could not run is followed by the next one: a task resumes by
-- itself within one period once timers are available again.  A task that
-- is still running when its next tick comes (a discovery slower than its
-- period) skips that tick, so runs of one task never overlap.  In plain Lua
-- the program calls poll(), which runs the tasks that are due.
--
-- The driver knows nothing of balancers: a task's run() is called with no
-- argument, and an error it raises is logged, never ends the task.

local type, pcall, tostring, setmetatable, ipairs =
  type, pcall, tostring, setmetatable, ipairs

local ffi = require("ffi")
require("lb.cdef") -- declares struct lb_timespec and clock_gettime

local ts = ffi.new("struct lb_timespec")
local CLOCK_MONOTONIC = 1

local M = {}

-- Monotonic seconds.
function M.now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local now = M.now

-- Seconds since the epoch (CLOCK_REALTIME), as the records' check times.
function M.wall()
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

function M.in_openresty()
  return type(ngx) == "table" and type(ngx.timer) == "table"
         and type(ngx.get_phase) == "function"
end
local in_openresty = M.in_openresty

-- A log line at nginx level `level` ("ERR", "WARN"): ngx.log in
-- OpenResty, stderr elsewhere.
local function logger(level)
  return function(msg)
    if in_openresty() and ngx.log then
      ngx.log(ngx[level], msg)
    else
      io.stderr:write(msg, "\n")
    end
  end
end

M.log_error = logger("ERR")
local log_error = M.log_error

-- A warning: ngx.log(ngx.WARN) in OpenResty, stderr elsewhere.
M.log_warn = logger("WARN")

-- The tick of a task that runs once: it runs at start() and, if nginx
-- could not run that timer, at the next tick.
M.ONCE_RETRY = 1

local Driver = {}
Driver.__index = Driver

function M.new(tasks)
  local d = setmetatable({ tasks = {}, active = false }, Driver)
  for i, t in ipairs(tasks) do
    d.tasks[i] = { period = t.period, run = t.run, busy = false,
                   done = false, due = nil }
  end
  return d
end

-- Run task t now, unless it is already running (a nested run from
-- its own code, or an overlapping timer).
local function run_task(t)
  if t.busy then
    return
  end
  t.busy = true
  local ok, err = pcall(t.run)
  t.busy = false
  if not t.period then
    t.done = true
  end
  if not ok then
    log_error("lb: background task failed: " .. tostring(err))
  end
end

local function timer_handler(d, t)
  return function(premature)
    if premature or not d.active or t.done then
      return
    end
    run_task(t)
  end
end

-- Arm the timers of every task (once per driver): true, or nil, err.
local function arm(d)
  for _, t in ipairs(d.tasks) do
    if not t.handler then
      t.handler = timer_handler(d, t)
      local ok, err = ngx.timer.every(t.period or M.ONCE_RETRY, t.handler)
      if not ok then
        t.handler = nil
        return nil, err
      end
    end
  end
  return true
end

-- Start running the tasks: each runs at once, then every period.
function Driver:start()
  for _, t in ipairs(self.tasks) do
    t.done = false
  end
  if not in_openresty() then
    local t0 = now()
    for _, t in ipairs(self.tasks) do
      t.due = t0
    end
    self.active = true
    return true
  end
  local ok, err = arm(self)
  if not ok then
    return nil, err
  end
  self.active = true
  for _, t in ipairs(self.tasks) do
    -- The first run without waiting a period; when nginx cannot take this
    -- timer, the task's next tick runs it.
    ngx.timer.at(0, t.handler)
  end
  return true
end

-- Stop running the tasks.  nginx has no way to cancel a timer: the
-- timers stay and do nothing until the next start().
function Driver:stop()
  self.active = false
  for _, t in ipairs(self.tasks) do
    t.due = nil
  end
end

-- Plain Lua: run every task that is due.
function Driver:poll()
  if not self.active then
    return
  end
  local t0 = now()
  for _, t in ipairs(self.tasks) do
    if t.due and t0 >= t.due then
      t.due = t.period and t0 + t.period or nil
      run_task(t)
    end
  end
end

return M
