-- bench/checks_scale.lua - one parallel round of built-in TCP checks over
-- 10,000 loopback backends: LISTENERS real listeners opened here on
-- 127.0.0.x (the kernel completes the handshakes from their backlogs), the
-- rest closed ports on 127.0.0.1 (refused at once).  Reports the round's
-- wall time, CPU time per check (getrusage of the whole process, checker
-- thread included) and the open descriptors before and after, which must
-- be equal.  Run from the repository root: luajit bench/checks_scale.lua
--
-- Environment: CHECKS_BACKENDS (default 10000), CHECKS_LISTENERS (300),
-- BENCH_RUNS (rounds, median reported; default 5).
package.path = "bench/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local ffi = require("ffi")
local socket = require("socket")
local lb = require("lb")

ffi.cdef([[
struct lb_bench_rlimit { unsigned long cur, max; };
int getrlimit(int resource, struct lb_bench_rlimit *rl);
int setrlimit(int resource, const struct lb_bench_rlimit *rl);
struct lb_bench_timeval { long sec, usec; };
struct lb_bench_rusage { struct lb_bench_timeval utime, stime; long rest[14]; };
int getrusage(int who, struct lb_bench_rusage *ru);
int getpid(void);
]])
local RLIMIT_NOFILE, RUSAGE_SELF = 7, 0

local N = tonumber(os.getenv("CHECKS_BACKENDS")) or 10000
local NLISTEN = tonumber(os.getenv("CHECKS_LISTENERS")) or 300
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 5

-- Every check holds a descriptor while in flight: raise the soft limit.
local rl = ffi.new("struct lb_bench_rlimit")
ffi.C.getrlimit(RLIMIT_NOFILE, rl)
if rl.cur < rl.max then
  rl.cur = rl.max
  ffi.C.setrlimit(RLIMIT_NOFILE, rl)
end
local nofile = tonumber(rl.cur)
if nofile < N + NLISTEN + 64 then
  io.stderr:write(("checks_scale: RLIMIT_NOFILE %d is too low for %d "
                   .. "backends\n"):format(nofile, N))
  os.exit(1)
end

local function fds()
  local p = io.popen("ls /proc/" .. ffi.C.getpid() .. "/fd")
  local n = 0
  for _ in p:lines() do
    n = n + 1
  end
  p:close()
  return n - 1 -- the pipe of this popen
end

local function cpu()
  local ru = ffi.new("struct lb_bench_rusage")
  ffi.C.getrusage(RUSAGE_SELF, ru)
  return tonumber(ru.utime.sec) + tonumber(ru.utime.usec) * 1e-6
         + tonumber(ru.stime.sec) + tonumber(ru.stime.usec) * 1e-6
end

-- Listeners, spread over 127.0.0.2 .. 127.0.0.(NLISTEN/50 + 2).
local listeners, backends, open = {}, {}, {}
for i = 1, NLISTEN do
  local host = "127.0.0." .. (2 + (i - 1) % 50)
  local l = assert(socket.bind(host, 0, 1024))
  local _, port = l:getsockname()
  listeners[i] = l
  backends[#backends + 1] = host .. ":" .. port
  open[port] = true
end
-- Closed ports on 127.0.0.1: bound and closed again, so nothing listens.
local port = 20000
while #backends < N do
  if not open[port] then
    local s = socket.bind("127.0.0.1", port)
    if s then
      s:close()
      backends[#backends + 1] = "127.0.0.1:" .. port
    end
  end
  port = port + 1
  if port > 65535 then
    io.stderr:write("checks_scale: not enough closed ports\n")
    os.exit(1)
  end
end

local median = require("stats").median

local fds0 = fds()
local b = assert(lb.new({ backends = backends, parallel_health_check = true,
                          health_check = lb.health.tcp({ timeout = 5 }) }))
local walls, cpus, healthy, errors = {}, {}, 0, {}
for r = 1, RUNS do
  local c0, t0 = cpu(), lb.now()
  assert(b:run_health_check(true))
  walls[r] = lb.now() - t0
  cpus[r] = (cpu() - c0) / N
  if r == RUNS then
    for _, row in ipairs(b:status()) do
      if row.healthy then
        healthy = healthy + 1
      else
        errors[row.last_error] = (errors[row.last_error] or 0) + 1
      end
    end
  end
end
b = nil -- luacheck: ignore
collectgarbage()
collectgarbage()
-- the checker thread stops after the round; give it a moment to close
local deadline = lb.now() + 5
local fds1 = fds()
while fds1 ~= fds0 and lb.now() < deadline do
  socket.sleep(0.01)
  fds1 = fds()
end

local errs = {}
for e, n in pairs(errors) do
  errs[#errs + 1] = n .. "x " .. e:gsub("%s", "_")
end
table.sort(errs)
local case = N .. "_tcp"
print(("ROW checks_scale %s_round %.1f ms min=%.1f;%d_listening"):format(
  case, median(walls) * 1e3, math.min(unpack(walls)) * 1e3, NLISTEN))
print(("ROW checks_scale %s_cpu_per_check %.2f us min=%.2f"):format(
  case, median(cpus) * 1e6, math.min(unpack(cpus)) * 1e6))
print(("ROW checks_scale %s_healthy %d - %s"):format(case, healthy,
  table.concat(errs, ";")))
print(("ROW checks_scale fds_before %d - RLIMIT_NOFILE=%d"):format(fds0,
                                                                   nofile))
print(("ROW checks_scale fds_after %d - %s"):format(fds1,
  fds1 == fds0 and "back_to_start" or "LEAK"))
for _, l in ipairs(listeners) do
  l:close()
end
if fds1 ~= fds0 or healthy ~= NLISTEN then
  io.stderr:write(("checks_scale: fds %d -> %d, %d healthy of %d listening\n")
                  :format(fds0, fds1, healthy, NLISTEN))
  os.exit(1)
end
