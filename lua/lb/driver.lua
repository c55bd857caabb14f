-- The background driver: runs a balancer's Lua-side tasks (discovery,
-- custom check rounds, delivery of health events) periodically.
--
--   local d = driver.new({ { period = 5, run = fn }, ... })  -- period nil: once
--   d:start()   -- true, or nil, err
--   d:poll()    -- plain Lua: run the tasks that are due; never blocks
--   d:stop()
--
-- In OpenResty every task is a chain of ngx.timer.at timers: each run
-- schedules the next one, a period later.  In plain Lua the program calls
-- poll(), which runs the tasks that are due.
--
-- The driver knows nothing of balancers: a task's run() is called with no
-- argument, and an error it raises is logged, never ends the task.

local type, pcall, tostring, setmetatable, ipairs =
  type, pcall, tostring, setmetatable, ipairs

local ffi = require("ffi")

ffi.cdef([[
struct lb_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct lb_timespec *ts);
]])
local ts = ffi.new("struct lb_timespec")
local CLOCK_MONOTONIC = 1

local M = {}

-- Monotonic seconds.
function M.now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local now = M.now

function M.in_openresty()
  return type(ngx) == "table" and type(ngx.timer) == "table"
         and type(ngx.get_phase) == "function"
end
local in_openresty = M.in_openresty

function M.log_error(msg)
  if in_openresty() and ngx.log then
    ngx.log(ngx.ERR, msg)
  else
    io.stderr:write(msg, "\n")
  end
end
local log_error = M.log_error

local Driver = {}
Driver.__index = Driver

function M.new(tasks)
  local d = setmetatable({ tasks = {}, active = false }, Driver)
  for i, t in ipairs(tasks) do
    d.tasks[i] = { period = t.period, run = t.run, busy = false, due = nil }
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
  if not ok then
    log_error("lb: background task failed: " .. tostring(err))
  end
end

-- A chain: run t, then schedule the next run a period later, while this
-- start() is the current one.
local function chain(d, t, token)
  local handler
  handler = function(premature)
    if premature or d.token ~= token then
      return
    end
    run_task(t)
    if t.period and d.token == token then
      local ok, err = ngx.timer.at(t.period, handler)
      if not ok then
        log_error("lb: cannot schedule timer: " .. tostring(err))
      end
    end
  end
  return ngx.timer.at(0, handler)
end

-- Start running the tasks: each runs at once, then every period.
function Driver:start()
  if not in_openresty() then
    local t0 = now()
    for _, t in ipairs(self.tasks) do
      t.due = t0
    end
    self.active = true
    return true
  end
  local token = {}
  self.token = token
  for _, t in ipairs(self.tasks) do
    local ok, err = chain(self, t, token)
    if not ok then
      self.token = nil
      return nil, err
    end
  end
  self.active = true
  return true
end

-- Stop running the tasks.
function Driver:stop()
  self.active = false
  self.token = nil
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
