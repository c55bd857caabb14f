-- bench/metrics.lua - the cost of a scrape: lb.metrics() over one balancer
-- of 1,000 backends (every family, a histogram per backend), and of the
-- status page, median of BENCH_RUNS (default 20) renders; and what counting
-- selections adds to a select: select() alone, select() followed by the
-- selection count as a second FFI call (the old path, kept as the
-- baseline), and the counted select lb.nginx's first attempt makes (the
-- count inside the one C call); BENCH_CALLS calls, median of 5 interleaved
-- runs, in one process and then with a forked second process running the
-- same case at once on the same shared records.  Run from the repository root after
-- `make`: luajit bench/metrics.lua
--
-- BENCH_BASE=<tree> adds a baseline scrape: <tree>/lua/lb/metrics.lua
-- (another checkout's renderer, e.g. the one before a change) over the
-- same balancer, interleaved with this tree's, its output compared byte
-- for byte; and the ratio of the two medians.
package.path = "bench/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local lb = require("lb")

local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 20
local CALLS = tonumber(os.getenv("BENCH_CALLS")) or 2000000

local median = require("stats").median

local list = {}
for i = 0, 999 do
  list[#list + 1] = ("10.0.%d.%d:80"):format(math.floor(i / 250), i % 250 + 1)
end
local b = assert(lb.new({ backends = list, shared = true,
                          health_check = function() return true end }))
assert(b:run_health_check())

local base = os.getenv("BENCH_BASE")
local base_render = base and assert(loadfile(base .. "/lua/lb/metrics.lua"))()
                                .render
local t_metrics, t_page, t_base, bytes = {}, {}, {}, 0
for r = 1, RUNS do
  local t0 = lb.now()
  local text = lb.metrics({ app = b })
  t_metrics[r] = lb.now() - t0
  bytes = #text
  if base_render then
    t0 = lb.now()
    local old = base_render({ app = b })
    t_base[r] = lb.now() - t0
    assert(old == text, "the baseline's text differs")
  end
  t0 = lb.now()
  require("lb.status_page").render({ app = b })
  t_page[r] = lb.now() - t0
end
local function spread(t)
  local lo, hi = math.huge, 0
  for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return ("%.3f-%.3f ms"):format(lo * 1e3, hi * 1e3)
end
print(("ROW metrics scrape@1000 %.3f ms %d bytes, every family, runs %s")
      :format(median(t_metrics) * 1e3, bytes, spread(t_metrics)))
if base_render then
  print(("ROW metrics scrape_base@1000 %.3f ms %s, runs %s, same text")
        :format(median(t_base) * 1e3, base, spread(t_base)))
  print(("ROW ratio scrape/scrape_base %.3f x")
        :format(median(t_metrics) / median(t_base)))
end
print(("ROW metrics status_page@1000 %.3f ms"):format(median(t_page) * 1e3))

local keys = {}
for i = 1, 4096 do keys[i] = "/user/" .. i end
local function plain_of(bal)
  return function(n)
    local miss = 0
    for i = 1, n do
      if bal:select(keys[bit.band(i, 4095) + 1]) == nil then
        miss = miss + 1
      end
    end
    return miss
  end
end
local plain = plain_of(b)
-- the baseline: select, then the count as a second FFI call (lb.nginx's
-- path before the count moved into the select call; still its retries')
local function counted(n)
  local miss = 0
  for i = 1, n do
    local be = b:select(keys[bit.band(i, 4095) + 1])
    if be == nil then miss = miss + 1 else b:_selected(be) end
  end
  return miss
end
-- the count inside the select call (lb.nginx's first attempt)
local function counted_in(bal)
  return function(n)
    local miss = 0
    for i = 1, n do
      local k = keys[bit.band(i, 4095) + 1]
      if bal:_select_cstr(k, #k, nil, 0) == nil then miss = miss + 1 end
    end
    return miss
  end
end
-- the same two on a private balancer (the picks in the record itself)
local p = assert(lb.new({ backends = list }))
local plain_private = plain_of(p)
local cases = { { "select@1000", plain, "round_robin, shared" },
                { "select+count@1000", counted,
                  "select and the selection count, two FFI calls" },
                { "select_counted@1000", counted_in(b),
                  "the count inside the select call" },
                { "select@1000/private", plain_private,
                  "round_robin, private" },
                { "select_counted@1000/private", counted_in(p),
                  "the count inside the select call, private" } }
for _, c in ipairs(cases) do c[2](CALLS / 10) end

-- ns per call of each case over 5 interleaved runs; with `procs` 2, a
-- forked child runs the same case at the same time (two processes adding
-- to the same shared records, as two nginx workers do)
local ffi = require("ffi")
ffi.cdef [[ int fork(void); void _exit(int); int waitpid(int, int *, int); ]]
local function measure(procs)
  local t = {}
  for r = 1, 5 do
    for k, c in ipairs(cases) do
      local pid = procs == 2 and ffi.C.fork() or -1
      if pid == 0 then
        c[2](CALLS)
        ffi.C._exit(0)
      end
      local t0 = lb.now()
      assert(c[2](CALLS) == 0)
      t[k] = t[k] or {}
      t[k][r] = (lb.now() - t0) / CALLS * 1e9
      if pid > 0 then ffi.C.waitpid(pid, nil, 0) end
    end
  end
  local m = {}
  for k, c in ipairs(cases) do
    m[k] = median(t[k])
    local lo, hi = math.min(unpack(t[k])), math.max(unpack(t[k]))
    print(("ROW metrics %s%s %.2f ns %s; runs %.1f-%.1f"):format(c[1],
      procs == 2 and "+2procs" or "", m[k], c[3], lo, hi))
  end
  local tag = procs == 2 and " (2 processes)" or ""
  print(("ROW ratio select+count/select%s %.3f x"):format(tag, m[2] / m[1]))
  print(("ROW ratio select_counted/select%s %.3f x"):format(tag, m[3] / m[1]))
  print(("ROW ratio select_counted/select private%s %.3f x"):format(tag,
                                                                 m[5] / m[4]))
end
measure(1)
measure(2)
