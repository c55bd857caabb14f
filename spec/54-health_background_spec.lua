-- start()/stop() in plain LuaJIT: built-in checks run on the C checker
-- thread on their own, flips wait for poll(), stop() and garbage
-- collection end the checks and the thread.
local lb = require("lb")
local h = require("helpers")
local nginx = require("support.nginx")
local servers = require("support.servers")

local function checker_threads()
  return servers.thread_names()["lb-checker"] or 0
end

local function recorder()
  local flips = {}
  return flips, function(be, healthy, err)
    flips[#flips + 1] = { be.addr, healthy, err }
  end
end

-- Wait (no poll) until cond() holds; fails the test at the deadline.
local function eventually(cond, what, timeout)
  assert(nginx.wait_for(cond, timeout or 5), "timed out waiting for " .. what)
end

describe("background checks in plain LuaJIT", function()
  local srv
  before_each(function()
    srv = servers.start("http", { switchable = true })
  end)
  after_each(function()
    servers.stop_all()
  end)

  it("run on their own; poll() delivers the flips", function()
    local addr = srv:addr()
    local flips, cb = recorder()
    local b = h.new({ backends = { addr }, health_check = lb.health.http(),
                      health_check_frequency = 0.05, on_health_change = cb })
    finally(function() b:stop() end)
    assert.is_true(b:start())
    -- rounds happen without any call into the balancer
    eventually(function() return srv:count("req") >= 3 end, "3 requests")
    srv:set_status("503")
    eventually(function() return not b:ready(addr) end, "the flip to down")
    -- recorded on the C thread, delivered only by poll()
    assert.same({}, flips)
    assert.is_true(b:poll())
    assert.same({ { addr, false, "unexpected status 503" } }, flips)
    assert.equal("unexpected status 503", b:status()[1].last_error)
    srv:set_status("200")
    eventually(function() return b:ready(addr) end, "the flip to up")
    b:poll()
    b:poll()
    assert.same({ { addr, false, "unexpected status 503" },
                  { addr, true, nil } }, flips)
  end)

  it("stop() ends the rounds and the checker thread", function()
    local b = h.new({ backends = { srv:addr() }, health_check = lb.health.tcp(),
                      health_check_frequency = 0.02 })
    finally(function() b:stop() end)
    assert.is_true(b:start())
    -- the thread names itself once it runs: wait for it
    eventually(function() return checker_threads() == 1 end, "the thread")
    eventually(function() return srv:count("conn") >= 3 end, "3 checks")
    assert.is_true(b:stop())
    eventually(function() return checker_threads() == 0 end, "the thread to end")
    -- no round after stop() returned: the count stays over many periods
    local n = srv:count("conn")
    local quiet = not nginx.wait_for(function()
      return srv:count("conn") > n
    end, 0.3)
    assert.is_true(quiet, "a check ran after stop()")
    -- and start() again resumes them
    assert.is_true(b:start())
    eventually(function() return srv:count("conn") > n end, "a new check")
    b:stop()
  end)

  it("checks once when health_check_frequency is nil", function()
    local b = h.new({ backends = { srv:addr() }, health_check = lb.health.tcp() })
    finally(function() b:stop() end)
    assert.is_true(b:start())
    eventually(function() return srv:count("conn") >= 1 end, "the check")
    local again = nginx.wait_for(function() return srv:count("conn") > 1 end,
                                 0.3)
    assert.is_nil(again)
  end)

  it("poll() never waits for a round in flight", function()
    local silent = servers.start("silent", { count = 5 })
    local addrs = {}
    for i = 1, 5 do
      addrs[i] = silent:addr(i)
    end
    local b = h.new({ backends = addrs, health_check = lb.health.http({
                        timeout = 2 }), health_check_frequency = 0.01 })
    finally(function() b:stop() end)
    b:start()
    eventually(function() return silent:count("req") >= 1 end, "a request")
    local worst = 0
    for _ = 1, 50 do
      local t0 = lb.now()
      b:poll()
      worst = math.max(worst, lb.now() - t0)
    end
    assert.is_true(worst < 0.05, "poll() took " .. worst)
  end)

  it("check in parallel with parallel_health_check", function()
    local silent = servers.start("silent", { count = 10 })
    local addrs = {}
    for i = 1, 10 do
      addrs[i] = silent:addr(i)
    end
    local flips, cb = recorder()
    local b = h.new({ backends = addrs, health_check = lb.health.http({
                        timeout = 0.3 }), health_check_frequency = 0.05,
                      parallel_health_check = true, on_health_change = cb })
    finally(function() b:stop() end)
    local t0 = lb.now()
    b:start()
    assert.truthy(h.wait_for(function() return #flips == 10 end, 5,
                             function() b:poll() end))
    -- one round of ten timeouts in parallel, not ten in a row
    assert.is_true(lb.now() - t0 < 1.5, "took " .. (lb.now() - t0))
    for _, f in ipairs(flips) do
      assert.equal("timeout: response", f[3])
    end
  end)

  it("a collected balancer stops its checks and the thread", function()
    local tasks0 = servers.threads()
    local b = h.new({ backends = { srv:addr() }, health_check = lb.health.tcp(),
                      health_check_frequency = 0.02 })
    assert.is_true(b:start())
    eventually(function() return srv:count("conn") >= 2 end, "2 checks")
    assert.equal(1, checker_threads())
    b = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    eventually(function() return checker_threads() == 0 end, "the thread to end")
    eventually(function() return servers.threads() <= tasks0 end,
               "the thread count to return to " .. tasks0)
    local n = srv:count("conn")
    local quiet = not nginx.wait_for(function()
      return srv:count("conn") > n
    end, 0.3)
    assert.is_true(quiet, "a check ran after the balancer was collected")
  end)

  it("two balancers share one checker thread", function()
    local b1 = h.new({ backends = { srv:addr() }, health_check = lb.health.tcp(),
                       health_check_frequency = 0.05 })
    local b2 = h.new({ backends = { srv:addr() }, health_check = lb.health.http(),
                       health_check_frequency = 0.05 })
    finally(function() b1:stop(); b2:stop() end)
    b1:start()
    b2:start()
    eventually(function() return srv:count("req") >= 2 end, "HTTP checks")
    assert.equal(1, checker_threads())
    b1:stop()
    assert.equal(1, checker_threads())
    local n = srv:count("req")
    eventually(function() return srv:count("req") > n end, "b2 to go on")
    b2:stop()
    eventually(function() return checker_threads() == 0 end, "the thread to end")
  end)
end)
