-- Custom (Lua) health checks, thresholds and on_health_change.
local lb = require("lb")
local h = require("helpers")

local SET = { "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1" }

local function balancer(state, opts)
  opts = opts or {}
  local flips = {}
  local b = h.new({
    backends = SET,
    selection = "fnv",
    health_check = lb.health.custom({
      check = function(be)
        local s = state[be.addr]
        if s == "raise" then
          error("probe crashed")
        end
        if s == false then
          return nil, "down: " .. be.addr
        end
        return true
      end,
      consecutive_success = opts.success,
      consecutive_failure = opts.failure,
    }),
    start_unhealthy = opts.start_unhealthy,
    on_health_change = function(be, healthy, err)
      flips[#flips + 1] = { be.addr, healthy, err }
      if opts.callback_raises then
        error("callback exploded")
      end
    end,
  })
  return b, flips
end

describe("custom health checks", function()
  it("accepts a plain function as the check", function()
    local b = h.new({ backends = SET, health_check = function(be)
      return be.addr ~= "10.0.0.2:1", "nope"
    end })
    b:run_health_check()
    assert.is_false(b:ready("10.0.0.2:1"))
    assert.is_true(b:ready("10.0.0.1:1"))
  end)

  it("flips at the thresholds and resets the count on an equal result",
     function()
    local state = {}
    local b, flips = balancer(state, { success = 2, failure = 3 })
    state["10.0.0.2:1"] = false
    b:run_health_check()
    b:run_health_check()
    assert.is_true(b:ready("10.0.0.2:1"))
    state["10.0.0.2:1"] = true -- same as current state: count resets
    b:run_health_check()
    state["10.0.0.2:1"] = false
    b:run_health_check()
    b:run_health_check()
    assert.is_true(b:ready("10.0.0.2:1"))
    assert.equal(0, #flips)
    b:run_health_check()
    assert.is_false(b:ready("10.0.0.2:1"))
    assert.same({ { "10.0.0.2:1", false, "down: 10.0.0.2:1" } }, flips)
    state["10.0.0.2:1"] = true
    b:run_health_check()
    assert.is_false(b:ready("10.0.0.2:1"))
    b:run_health_check()
    assert.is_true(b:ready("10.0.0.2:1"))
    assert.equal(2, #flips)
    assert.same({ "10.0.0.2:1", true }, { flips[2][1], flips[2][2] })
    assert.is_nil(flips[2][3])
  end)

  it("calls on_health_change once per flip", function()
    local state = { ["10.0.0.1:1"] = false }
    local b, flips = balancer(state)
    for _ = 1, 5 do
      b:run_health_check()
    end
    assert.equal(1, #flips)
    for _ = 1, 5 do
      b:run_health_check(true)
    end
    assert.equal(1, #flips)
  end)

  it("treats a check that raises as a failure with its message", function()
    local state = { ["10.0.0.3:1"] = "raise" }
    local b, flips = balancer(state)
    b:run_health_check()
    assert.is_false(b:ready("10.0.0.3:1"))
    assert.matches("probe crashed", flips[1][3])
    local row = b:status()[3]
    assert.equal("10.0.0.3:1", row.addr)
    assert.is_false(row.healthy)
    assert.matches("check raised: .*probe crashed", row.last_error)
  end)

  it("survives a callback that raises", function()
    local state = { ["10.0.0.1:1"] = false }
    local b, flips = balancer(state, { callback_raises = true })
    b:run_health_check()
    assert.equal(1, #flips)
    assert.is_false(b:ready("10.0.0.1:1"))
    assert.is_table(b:select("k"))
  end)

  it("steers selection away from unhealthy backends", function()
    local state = {}
    local b = balancer(state)
    local first = b:select("key").addr
    state[first] = false
    b:run_health_check()
    assert.is_not.equal(first, b:select("key").addr)
    state[first] = true
    b:run_health_check()
    assert.equal(first, b:select("key").addr)
  end)

  it("keeps new backends out until a check passes with start_unhealthy",
     function()
    local state = {}
    local b = balancer(state, { start_unhealthy = true })
    assert.is_nil(b:select("k"))
    assert.is_false(b:status()[1].healthy)
    b:run_health_check()
    assert.is_table(b:select("k"))
  end)

  it("clears last_error when a check passes", function()
    local state = { ["10.0.0.1:1"] = false }
    local b = balancer(state)
    b:run_health_check()
    assert.equal("down: 10.0.0.1:1", b:status()[1].last_error)
    state["10.0.0.1:1"] = true
    b:run_health_check()
    assert.is_nil(b:status()[1].last_error)
  end)
end)

describe("start / poll / stop in plain LuaJIT", function()
  it("runs discovery and custom checks at their frequencies", function()
    local discovered, checked = 0, 0
    local b = h.new({
      discovery = function()
        discovered = discovered + 1
        return { "10.0.0.1:1" }
      end,
      update_frequency = 0.05,
      health_check = function()
        checked = checked + 1
        return true
      end,
      health_check_frequency = 0.05,
    })
    assert.equal(0, discovered)
    assert.is_true(b:start())
    assert.is_true(b:poll())
    assert.equal(1, discovered)
    assert.truthy(h.wait_for(function() return discovered >= 3 end, 5,
                             function() b:poll() end))
    assert.truthy(h.wait_for(function() return checked >= 3 end, 5,
                             function() b:poll() end))
    assert.is_true(b:stop())
    local d, c = discovered, checked
    for _ = 1, 10 do
      b:poll()
    end
    os.execute("sleep 0.1")
    b:poll()
    assert.equal(d, discovered)
    assert.equal(c, checked)
  end)

  it("runs discovery once when update_frequency is nil", function()
    local discovered = 0
    local b = h.new({ discovery = function()
      discovered = discovered + 1
      return { "10.0.0.1:1" }
    end })
    b:start()
    for _ = 1, 5 do
      b:poll()
    end
    assert.equal(1, discovered)
    assert.equal("10.0.0.1:1", b:select().addr)
  end)

  it("keeps the previous set when periodic discovery fails", function()
    local fail, fails = false, 0
    local b = h.new({ discovery = function()
      if fail then
        fails = fails + 1
        error("source down")
      end
      return { "10.0.0.1:1" }
    end, update_frequency = 0.01 })
    finally(function() b:stop() end)
    b:start()
    b:poll()
    fail = true
    assert.truthy(h.wait_for(function() return fails >= 2 end, 5,
                             function() b:poll() end))
    assert.equal("10.0.0.1:1", b:select().addr)
  end)
end)
