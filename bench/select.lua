-- bench/select.lua - ns per balancer:select(key) from LuaJIT, JIT on.
--
-- For each algorithm at 10, 100 and 1000 backends, beside two floors
-- measured in the same process:
--   ffi_call       an empty C function called through the FFI
--                  (build/bench/libfloor_ffi.so), the least any FFI-bound
--                  select can cost;
--   lua_CFunction  a trivial classic Lua/C API function
--                  (build/bench/floor_cfunc.so), which the JIT cannot
--                  compile: the trace ends and a new one is stitched.
-- Every case runs the same loop shape: a precomputed key from a table of
-- 4096 ("/user/<i>"), one call, a nil check.  BENCH_CALLS calls per run
-- (default 5,000,000), BENCH_RUNS runs (default 5), interleaved (run 1 of
-- every case, then run 2, ...), median reported.  Trace aborts are counted
-- per case, the last one's reason given: a select case should have none.
--
-- Prints "ROW <bench> <case> <value> <unit> [note]" lines (bench/run.sh
-- makes the table).  Run from the repository root after `make bench-build`.

package.path = "bench/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;build/bench/?.so;" .. package.cpath

local ffi = require("ffi")
local jit = require("jit")
local lb = require("lb")

local CALLS = tonumber(os.getenv("BENCH_CALLS")) or 5000000
local RUNS = math.max(3, tonumber(os.getenv("BENCH_RUNS")) or 5)
local NKEYS = 4096

ffi.cdef [[
struct lb_bench_timespec { long tv_sec; long tv_nsec; };
int lb_bench_clock_gettime(int clk, struct lb_bench_timespec *ts)
  __asm__("clock_gettime");
void lb_bench_nop(const char *key, size_t len);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("struct lb_bench_timespec")
local function now_ns()
  ffi.C.lb_bench_clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

local floor_ffi = ffi.load("build/bench/libfloor_ffi.so")
local floor_cfunc = require("floor_cfunc")

local keys = {}
for i = 1, NKEYS do
  keys[i] = "/user/" .. ((i - 1) * 7919)
end

-- Each case gets its own copy of the loop (its own prototype, so its own
-- traces); `call(obj, key)` is what is measured.
local LOOP = [[
local bit = require("bit")
local band = bit.band
local call, obj, keys, n = ...
local misses = 0
for i = 1, n do
  local r = call(obj, keys[band(i, 4095) + 1])
  if r == nil then misses = misses + 1 end
end
return misses
]]

local function make_loop()
  return assert(loadstring(LOOP, "=bench_loop"))
end

local cases = {}

-- BENCH_ONLY: Lua patterns, comma-separated; only the cases whose name
-- matches one of them run (the floors always do), e.g.
-- BENCH_ONLY='^round_robin@1000$,release'
local ONLY = os.getenv("BENCH_ONLY")
local function wanted(name)
  if not ONLY or name == "ffi_call" or name == "lua_CFunction" then
    return true
  end
  for pat in ONLY:gmatch("[^,]+") do
    if name:find(pat) then return true end
  end
  return false
end
local function add_case(name, call, obj)
  if not wanted(name) then return end
  cases[#cases + 1] = { name = name, call = call, obj = obj,
                        loop = make_loop(), times = {}, aborts = 0 }
end

add_case("ffi_call", function(lib, key)
  lib.lb_bench_nop(key, #key)
  return true
end, floor_ffi)
add_case("lua_CFunction", function(f, key) return f(key) end, floor_cfunc.nop)

local algorithms = { "round_robin", "random", "fnv", "consistent", "maglev",
                     "least_request", "peak_ewma", "weighted_round_robin",
                     "consistent_bounded" }
-- consistent_bounded: consistent with hash_balance_factor 1.25
local OPTS = { consistent_bounded = { selection = "consistent",
                                      hash_balance_factor = 1.25 } }
local sizes = { 10, 100, 1000 }
-- n addresses of 10.0.0.0/16 (selection data only)
local function addresses(n)
  local list = {}
  for i = 0, n - 1 do
    list[#list + 1] = string.format("10.0.%d.%d:80", math.floor(i / 250),
                                    i % 250 + 1)
  end
  return list
end
for _, n in ipairs(sizes) do
  local list = addresses(n)
  for _, alg in ipairs(algorithms) do
    local o = OPTS[alg] or { selection = alg }
    local b = assert(lb.new({ backends = list, selection = o.selection,
                              hash_balance_factor = o.hash_balance_factor }))
    add_case(alg .. "@" .. n, function(bal, key) return bal:select(key) end, b)
  end
end
-- The same at 100 and 1000 backends on shared balancers (records in the
-- shared region), beside the private ones in the same run.
local shared_sizes = { 100, 1000 }
for _, n in ipairs(shared_sizes) do
  local list = addresses(n)
  for _, alg in ipairs(algorithms) do
    local o = OPTS[alg] or { selection = alg }
    local b = assert(lb.new({ backends = list, selection = o.selection,
                              hash_balance_factor = o.hash_balance_factor,
                              shared = true }))
    add_case(alg .. "@" .. n .. "+shared",
             function(bal, key) return bal:select(key) end, b)
  end
end

-- acquire + release (in-flight counting, lb.nginx's pair around each
-- attempt) against select on the same balancer: round robin at 1000
-- backends, without and with passive health (release reports a status)
if lb.Balancer.acquire then
  local list = {}
  for i = 0, 999 do
    list[#list + 1] = string.format("10.0.%d.%d:80", math.floor(i / 250),
                                    i % 250 + 1)
  end
  local b = assert(lb.new({ backends = list }))
  add_case("acquire+release@1000", function(bal, key)
    local be = bal:acquire(key)
    bal:release(be)
    return be
  end, b)
  -- the baseline: acquire as it was before the count moved into the
  -- select call (select, then the in-flight count as a second FFI call)
  add_case("select+in_flight+release@1000", function(bal, key)
    local be = bal:select(key)
    bal:_in_flight(be, 1)
    bal:release(be)
    return be
  end, b)
  local p = assert(lb.new({ backends = list, passive = {} }))
  add_case("acquire+release(200)@1000", function(bal, key)
    local be = bal:acquire(key)
    bal:release(be, 200, 0.001)
    return be
  end, p)
end

local current
local vmdef = require("jit.vmdef")
jit.attach(function(what, _, func, pc, code, info)
  if what == "abort" and current then
    current.aborts = current.aborts + 1
    local fi = require("jit.util").funcinfo(func, pc)
    local msg = vmdef.traceerr[code] or tostring(code)
    if type(info) == "number" and msg:find("%%d") then
      msg = msg:format(info)
    elseif info ~= nil and msg:find("%%s") then
      msg = msg:format(tostring(info))
    end
    current.last_abort = string.format("%s (%s)", msg, tostring(fi.loc))
  end
end, "trace")

for _, c in ipairs(cases) do -- warm-up: compile every loop
  current = c
  c.loop(c.call, c.obj, keys, math.floor(CALLS / 20))
end
for r = 1, RUNS do
  for _, c in ipairs(cases) do
    current = c
    local t0 = now_ns()
    local misses = c.loop(c.call, c.obj, keys, CALLS)
    c.times[r] = (now_ns() - t0) / CALLS
    if misses ~= 0 and c.name ~= "lua_CFunction" then
      error(c.name .. ": " .. misses .. " selects returned nil")
    end
  end
end
current = nil
jit.attach(function() end)

local median = require("stats").median

local med = {}
for _, c in ipairs(cases) do
  local m, lo = median(c.times)
  med[c.name] = m
  print(string.format("ROW select_lua %s %.3f ns min %.2f, %d trace aborts%s",
                      c.name, m, lo, c.aborts,
                      c.last_abort and ", last: " .. c.last_abort or ""))
end
-- a ratio of two cases that ran (BENCH_ONLY may leave some out)
local function ratio(label, a, b)
  if med[a] and med[b] then
    print(string.format("ROW ratio %s %.3f x", label, med[a] / med[b]))
  end
end
for _, alg in ipairs(algorithms) do
  for _, n in ipairs(sizes) do
    local name = alg .. "@" .. n
    ratio(name .. "/lua_CFunction", name, "lua_CFunction")
  end
end
for _, alg in ipairs(algorithms) do
  local name = alg .. "@1000"
  ratio(name .. "/ffi_call", name, "ffi_call")
end
for _, n in ipairs(shared_sizes) do
  for _, alg in ipairs(algorithms) do
    local name = alg .. "@" .. n
    ratio(name .. "+shared/" .. name, name .. "+shared", name)
  end
end
for _, name in ipairs({ "acquire+release@1000",
                      "select+in_flight+release@1000",
                      "acquire+release(200)@1000" }) do
  ratio(name .. "/round_robin@1000", name, "round_robin@1000")
end
print(string.format("ROW info select_lua %d calls x %d runs, %s", CALLS,
                    RUNS, jit.version))
