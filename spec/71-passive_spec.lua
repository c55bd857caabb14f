-- Passive health, panic mode, slow start, acquire/release, in plain
-- LuaJIT: the rules of DESIGN.md's "Passive health, outlier ejection and
-- safety valves" and "Requests in flight".  Times are short and every
-- wait is a condition with a deadline (poll() drives the returns).
local lb = require("lb")
local h = require("helpers")
local driver = require("lb.driver")

local function new(opts)
  opts.backends = opts.backends or { "127.0.0.1:1", "127.0.0.1:2",
                                     "127.0.0.1:3", "127.0.0.1:4" }
  return h.new(opts)
end

local row = h.row

local function flips_of(list)
  return function(be, healthy, err)
    list[#list + 1] = { addr = be.addr, healthy = healthy, err = err }
  end
end

describe("passive health", function()
  it("the third consecutive failure ejects, with on_health_change", function()
    local flips = {}
    local b = new({ passive = { consecutive_failures = 3 },
                    on_health_change = flips_of(flips) })
    local x = b:backends()[1]
    assert.is_true(b:report(x, 500))
    assert.is_true(b:report(x, "connect refused"))
    assert.equal(2, row(b, x.addr).passive_failures)
    assert.is_true(b:ready(x))
    assert.is_true(b:report(x, false, 0.2))
    local r = row(b, x.addr)
    assert.is_true(r.ejected)
    assert.is_false(r.ready)
    assert.is_true(r.healthy)
    assert.equal(1, r.ejections)
    assert.equal(0, r.passive_failures)
    assert.equal("ejected: 3 consecutive failures", r.last_error)
    assert.is_false(b:ready(x))
    b:poll()
    assert.same({ { addr = x.addr, healthy = false,
                    err = "ejected: 3 consecutive failures" } }, flips)
    for _ = 1, 100 do
      assert.are_not.equal(x, b:select())
    end
  end)

  it("a success resets the run", function()
    local b = new({ passive = { consecutive_failures = 3 } })
    local x = b:backends()[2]
    b:report(x, 503)
    b:report(x, 503)
    b:report(x, true)
    assert.equal(0, row(b, x.addr).passive_failures)
    b:report(x, 503)
    b:report(x, 200) -- not in failure_status: a success
    b:report(x, 503)
    b:report(x, 503)
    assert.is_false(row(b, x.addr).ejected)
    b:report(x, 503)
    assert.is_true(row(b, x.addr).ejected)
  end)

  it("failure_status decides which statuses fail", function()
    local b = new({ passive = { consecutive_failures = 2,
                                failure_status = { 429 } } })
    local x = b:backends()[1]
    b:report(x, 500)
    b:report(x, 500)
    assert.is_false(row(b, x.addr).ejected)
    b:report(x, 429)
    b:report(x, 429)
    assert.is_true(row(b, x.addr).ejected)
  end)

  it("returns by itself; the second ejection lasts twice as long", function()
    local flips = {}
    local b = new({ passive = { consecutive_failures = 1, ejection_time = 0.3,
                                max_ejection_time = 10 },
                    on_health_change = flips_of(flips) })
    local x = b:backends()[3]
    local spans = {}
    for k = 1, 2 do
      b:report(x, 502)
      local t0 = driver.now()
      assert.is_true(row(b, x.addr).ejected)
      assert.truthy(h.wait_for(function() return b:ready(x) end, 5,
                               function() b:poll() end))
      spans[k] = driver.now() - t0
      b:poll()
      assert.equal(k, row(b, x.addr).ejections)
    end
    -- poll() is called every 10 ms or so by wait_for: a return comes
    -- within a poll of its time
    assert.is_true(spans[1] >= 0.3 and spans[1] < 0.5, spans[1])
    assert.is_true(spans[2] >= 0.6 and spans[2] < 0.8, spans[2])
    assert.equal(4, #flips)
    assert.same({ false, true, false, true },
                { flips[1].healthy, flips[2].healthy, flips[3].healthy,
                  flips[4].healthy })
    assert.is_nil(flips[2].err)
  end)

  it("the cap holds with every backend failing", function()
    local list = {}
    for i = 1, 10 do
      list[i] = "127.0.0.1:" .. (100 + i)
    end
    local b = new({ backends = list,
                    passive = { consecutive_failures = 2,
                                max_ejection_percent = 30 } })
    for _ = 1, 5 do
      for _, x in ipairs(b:backends()) do
        b:report(x, 500)
      end
    end
    local n = 0
    for _, r in ipairs(b:status()) do
      n = n + (r.ejected and 1 or 0)
    end
    assert.equal(3, n)
  end)

  it("an active pass returns an ejected backend early", function()
    local b = new({ passive = { consecutive_failures = 1,
                                ejection_time = 300 },
                    health_check = function() return true end })
    local x = b:backends()[1]
    b:report(x, 500)
    assert.is_false(b:ready(x))
    assert.is_true(b:run_health_check())
    assert.is_true(b:ready(x))
    assert.is_false(row(b, x.addr).ejected)
    assert.equal(1, row(b, x.addr).ejections)
  end)
end)

describe("panic", function()
  it("picks from all enabled backends, never a disabled one", function()
    local b = new({ panic_threshold = 0.5,
                    passive = { consecutive_failures = 1,
                                max_ejection_percent = 100 } })
    local l = b:backends()
    b:set_enable(l[4], false)
    assert.is_false(b:panic())
    b:report(l[1], 500)
    assert.is_false(b:panic()) -- 2 of 3 enabled are ready
    b:report(l[2], 500)
    assert.is_true(b:panic())  -- 1 of 3
    assert.is_true(b:status()[1].panic)
    local counts = h.count_picks(b, 300)
    assert.is_nil(counts[l[4].addr])
    assert.is_true(counts[l[1].addr] > 50 and counts[l[2].addr] > 50
                   and counts[l[3].addr] > 50)
    b:report(l[3], 500)
    counts = h.count_picks(b, 300) -- all down: still the enabled ones
    assert.is_nil(counts[l[4].addr])
    assert.is_nil(counts["nil"])
    -- select_with offers them as healthy, the disabled one not
    local offered = {}
    b:select_with(nil, 8, function(be, healthy)
      offered[be.addr] = healthy
    end)
    assert.is_false(offered[l[4].addr])
    assert.is_true(offered[l[1].addr])
  end)

  it("is off without panic_threshold", function()
    local b = new({ passive = { consecutive_failures = 1,
                                max_ejection_percent = 100 } })
    for _, x in ipairs(b:backends()) do
      b:report(x, 500)
    end
    assert.is_false(b:panic())
    assert.is_nil(b:select())
  end)
end)

describe("slow start", function()
  local function share(b, addr, n)
    return (h.count_picks(b, n)[addr] or 0) / n
  end

  for _, sel in ipairs({ "round_robin", "random", "weighted_round_robin",
                         "least_request", "peak_ewma" }) do
    it("ramps a new backend up (" .. sel .. ")", function()
      local window = 1
      local t_made = driver.now()
      local src = lb.discovery.static({ "127.0.0.1:1", "127.0.0.1:2",
                                        "127.0.0.1:3" })
      local b = h.new({ discovery = src, selection = sel,
                        slow_start = { window = window, min_weight = 0.05 } })
      -- the first set's backends are past their window
      assert.truthy(h.wait_for(function()
        return driver.now() - t_made > window
      end, window + 3, function() b:poll() end))
      src:add("127.0.0.1:4")
      assert.is_true(b:update())
      local t0 = driver.now()
      local early = share(b, "127.0.0.1:4", 4000)
      local t = driver.now() - t0
      assert.is_true(t < window / 10, t)
      -- fair share 1/4; at most 0.1 of the window in, its factor is at
      -- most 0.1: a share of at most 0.1 / 3.1 (plus noise)
      assert.is_true(early < 0.06, early)
      -- after the window: its full share
      assert.truthy(h.wait_for(function()
        return driver.now() - t0 > window
      end, window + 2, function() b:poll() end))
      b:poll()
      local late = share(b, "127.0.0.1:4", 8000)
      assert.is_true(math.abs(late - 0.25) < 0.03, late)
    end)
  end
end)

describe("acquire and release", function()
  it("count requests in flight, never below zero", function()
    local b = new({})
    local got = {}
    for i = 1, 8 do
      got[i] = b:acquire()
    end
    for _, r in ipairs(b:status()) do
      assert.equal(2, r.in_flight)
    end
    for i = 1, 8 do
      assert.is_true(b:release(got[i]))
    end
    for _, r in ipairs(b:status()) do
      assert.equal(0, r.in_flight)
    end
    assert.is_true(b:release(got[1])) -- a release too many
    assert.equal(0, row(b, got[1].addr).in_flight)
  end)

  it("release reports its result", function()
    local b = new({ passive = { consecutive_failures = 2 } })
    local x = b:acquire()
    b:release(x, 503, 0.01)
    assert.equal(1, row(b, x.addr).passive_failures)
    x = b:acquire()
    b:release(x, true)
    assert.equal(0, row(b, x.addr).passive_failures)
  end)

  it("rejects bad input clearly", function()
    local b = new({ passive = {} })
    local x = b:backends()[1]
    local ok, err = b:report("127.0.0.9:80", true)
    assert.is_nil(ok)
    assert.matches("unknown backend '127.0.0.9:80'", err, 1, true)
    ok, err = b:release({ addr = "127.0.0.9:80" })
    assert.is_nil(ok)
    assert.matches("unknown backend", err, 1, true)
    assert.has_error(function() b:report(x, {}) end,
      "bad argument #2 to 'report' (true, false, an error string or an "
      .. "HTTP status expected, got table)")
    assert.has_error(function() b:report(x, 500.5) end)
    assert.has_error(function() b:release(x, true, -1) end)
    assert.has_error(function() b:report(x, true, "fast") end)
    ok, err = b:report(x, true, 1e7)
    assert.is_nil(ok)
    assert.matches("latency out of range", err, 1, true)
    assert.equal(0, row(b, x.addr).in_flight)
  end)

  it("acquire compiles with release in the loop, no trace abort", function()
    -- Each attempt in a fresh luajit (support/jit_trace.lua says why); one
    -- of up to 3 must have no abort at all, none may fall back.
    local clean, seen = require("support.jit_trace").clean_loop([[
      local b = assert(require("lb").new({ backends = {
        "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4" } }))
      return b
    ]], [[
      local b = ...
      local n, held = 0, nil
      for i = 1, 20000 do
        -- acquire on odd iterations, release on even ones: each calls the
        -- balancer's self check, which called twice per iteration gets hot
        -- as fast as the loop and aborts "leaving loop in root trace"
        if i % 2 == 1 then
          held = b:acquire()
        elseif held then
          b:release(held)
          held = nil
          n = n + 1
        end
      end
      return n
    ]], "acquire_loop", 10000)
    local aborts = {}
    for i, r in ipairs(seen) do
      aborts[i] = r.abort
    end
    assert.is_not_nil(clean, "aborts per attempt: "
                      .. table.concat(aborts, ", "))
  end)
end)

describe("options", function()
  local cases = {
    { { passive = 5 }, "passive must be a table" },
    { { passive = { consecutive = 5 } }, "passive: unknown option" },
    { { passive = { consecutive_failures = -1 } },
      "passive.consecutive_failures must be an integer" },
    { { passive = { ejection_time = 0 } }, "passive.ejection_time" },
    { { passive = { ejection_time = 60, max_ejection_time = 30 } },
      "passive.max_ejection_time" },
    { { passive = { max_ejection_percent = 101 } },
      "passive.max_ejection_percent" },
    { { passive = { failure_status = { 5000 } } },
      "passive.failure_status[1]: 5000 is not an HTTP status code" },
    { { panic_threshold = 1.5 }, "panic_threshold must be a number" },
    { { panic_threshold = "half" }, "panic_threshold must be a number" },
    { { slow_start = { window = 0 } }, "slow_start.window" },
    { { slow_start = { window = 7200 } }, "slow_start.window" },
    { { slow_start = { aggression = 0 } }, "slow_start.aggression" },
    { { slow_start = { min_weight = 2 } }, "slow_start.min_weight" },
    { { slow_start = { ramp = 1 } }, "slow_start: unknown option" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[2], function()
      c[1].backends = { "127.0.0.1:1" }
      local b, err = lb.new(c[1])
      assert.is_nil(b)
      assert.matches(c[2], err, 1, true)
    end)
  end
end)

-- Panic applies to every algorithm: those whose order depends on
-- readiness (weighted_round_robin skips a backend that is not ready
-- before adding its weight) take every enabled backend in panic, with
-- its weight.  Before this, weighted_round_robin sent all 400 picks to
-- the first backend.
describe("panic with every algorithm", function()
  for _, sel in ipairs({ "round_robin", "weighted_round_robin", "maglev",
                         "least_request", "peak_ewma", "consistent" }) do
    it(sel .. " spreads over the enabled backends", function()
      local b = h.new({ backends = { "10.0.0.1:1",
                                     { addr = "10.0.0.2:1", weight = 2 },
                                     "10.0.0.3:1", "10.0.0.4:1" },
                        selection = sel, panic_threshold = 0.5,
                        health_check = function() return nil, "down" end })
      assert(b:run_health_check())
      b:set_enable("10.0.0.4:1", false)
      assert.is_true(b:panic())
      local counts = h.count_picks(b, 400, function(i) return "k" .. i end)
      assert.is_nil(counts["nil"])
      assert.is_nil(counts["10.0.0.4:1"]) -- never a disabled one
      for _, a in ipairs({ "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1" }) do
        assert.is_true((counts[a] or 0) >= 40, sel .. " " .. a .. ": "
                       .. tostring(counts[a]))
      end
      if sel == "weighted_round_robin" then
        assert.equal(200, counts["10.0.0.2:1"]) -- the weight kept, as nginx
      end
    end)
  end
end)
