-- bench/checks_workers.lua - CPU the nginx workers spend on health checks,
-- private balancers (every worker probes) against a shared one (one
-- prober per host), at 4 workers and at 1.
--
-- 500 backends: 250 loopback listeners answering HTTP 200 (one server
-- process, not counted) and 250 closed ports on 127.0.0.1 (refused at
-- once), HTTP check every CHECKS_PERIOD s (default 1), timeout 1 s.  No
-- requests are sent: what is measured is the checks alone.  After a
-- warm-up of 2 s, the CPU time (utime + stime, /proc/<pid>/stat) of every
-- worker is read over CHECKS_SECONDS (default 10) and reported as ms of
-- CPU per second of wall time, with the probes per backend per period
-- counted at the listeners.  Variants run one after the other, BENCH_RUNS
-- times (default 3) interleaved; medians reported.  Run from the
-- repository root after `make`: luajit bench/checks_workers.lua
package.path = "bench/?.lua;lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local nginx = require("support.nginx")
local front = require("support.front")
local servers = require("support.servers")
local lb = require("lb")

local PERIOD = tonumber(os.getenv("CHECKS_PERIOD")) or 1
local SECONDS = tonumber(os.getenv("CHECKS_SECONDS")) or 10
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 3
local TICK = 100 -- clock ticks per second (USER_HZ)

local function cpu_of(pid)
  local s = nginx.read_file("/proc/" .. pid .. "/stat")
  if not s then
    return 0
  end
  -- fields after the command name: state is field 3; utime 14, stime 15
  local rest = s:match("%) (.*)$")
  local f = {}
  for w in rest:gmatch("%S+") do
    f[#f + 1] = w
  end
  return (tonumber(f[12]) + tonumber(f[13])) / TICK
end

local listeners = servers.start("http", { count = 250 })
local backends = {}
for i = 1, 250 do
  backends[i] = listeners:addr(i)
end
local closed = assert(nginx.free_ports(250))
for i, p in ipairs(closed) do
  backends[250 + i] = "127.0.0.1:" .. p
end

local function run(workers, shared)
  local srv = assert(front.start({
    workers = workers,
    init = ([[
      local lb = require("lb")
      app = assert(lb.new({
        backends = %s,
        shared = %s,
        health_check = lb.health.http({ timeout = 1 }),
        health_check_frequency = %s,
      }))
    ]]):format(front.lua_list(backends), tostring(shared), PERIOD),
    init_worker = "assert(app:start())",
  }))
  require("socket").sleep(2)
  local pids = srv:workers()
  local c0, p0, t0 = {}, listeners:count("req", listeners.ports[1]), lb.now()
  for i, pid in ipairs(pids) do
    c0[i] = cpu_of(pid)
  end
  require("socket").sleep(SECONDS)
  local used = 0
  for i, pid in ipairs(pids) do
    used = used + cpu_of(pid) - c0[i]
  end
  local dt = lb.now() - t0
  local probes = (listeners:count("req", listeners.ports[1]) - p0)
                 / (dt / PERIOD)
  srv:stop()
  return used / dt * 1000, probes
end

local variants = {
  { name = "private@4", workers = 4, shared = false },
  { name = "shared@4", workers = 4, shared = true },
  { name = "shared@1", workers = 1, shared = true },
  { name = "private@1", workers = 1, shared = false },
}
for _, v in ipairs(variants) do
  v.ms, v.probes = {}, {}
end
for r = 1, RUNS do
  for _, v in ipairs(variants) do
    v.ms[r], v.probes[r] = run(v.workers, v.shared)
  end
end
listeners:stop()

local median = require("stats").median

local med = {}
for _, v in ipairs(variants) do
  med[v.name] = median(v.ms)
  print(("ROW checks_cpu %s %.1f ms/s %.2f probes per backend per period, "
         .. "500 backends (250 refused), HTTP every %g s"):format(
         v.name, med[v.name], median(v.probes), PERIOD))
end
print(("ROW ratio checks_cpu shared@4/shared@1 %.2f x"):format(
  med["shared@4"] / med["shared@1"]))
print(("ROW ratio checks_cpu private@4/shared@4 %.2f x"):format(
  med["private@4"] / med["shared@4"]))
