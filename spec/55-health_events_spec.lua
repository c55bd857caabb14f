-- Every flip reaches on_health_change once, also when a callback causes
-- another drain: another balancer's run_health_check(), or poll(), from
-- inside on_health_change.  Each drain has its own events; a drain inside
-- a callback must not overwrite what the outer drain still delivers.
local lb = require("lb")
local h = require("helpers")

-- n loopback addresses where nothing listens (connect is refused at once).
local function dead(n, third)
  local out = {}
  for i = 1, n do
    out[i] = ("127.%d.%d.%d:1"):format(third, math.floor(i / 250), i % 250 + 1)
  end
  return out
end

-- Every one of n addresses flipped exactly once.
local function once_each(flips, n)
  local seen, dups, distinct = {}, 0, 0
  for _, f in ipairs(flips) do
    if seen[f] then dups = dups + 1 else distinct = distinct + 1 end
    seen[f] = true
  end
  assert.equal(0, dups)
  assert.equal(n, distinct)
end

describe("health events", function()
  it("a drain inside on_health_change loses no flip of the outer one", function()
    local N = 150 -- more flips than one batch of the drain
    local inner_flips, outer_flips = {}, {}
    local inner = h.new({
      backends = dead(N, 201),
      health_check = lb.health.tcp({ timeout = 1 }),
      on_health_change = function(be, healthy)
        assert(not healthy)
        inner_flips[#inner_flips + 1] = be.addr
      end,
    })
    local nested = 0
    local outer
    outer = h.new({
      backends = dead(N, 202),
      health_check = lb.health.tcp({ timeout = 1 }),
      on_health_change = function(be, healthy)
        assert(not healthy)
        outer_flips[#outer_flips + 1] = be.addr
        if #outer_flips == 1 then
          -- another balancer's round, drained from inside this callback
          nested = nested + 1
          assert(inner:run_health_check(true))
        end
        outer:poll() -- and a drain of this balancer itself
      end,
    })
    assert(outer:run_health_check(true))
    assert.equal(1, nested)
    once_each(outer_flips, N)
    once_each(inner_flips, N)
    for _, row in ipairs(outer:status()) do assert.is_false(row.healthy) end
  end)

  it("custom checks' flips take the same path: once each, also nested", function()
    local N = 300 -- past the C queue's cap of 256
    local down = function() return nil, "down by test" end
    local flips, inner_flips = {}, {}
    local inner = h.new({
      backends = dead(N, 203), health_check = down,
      on_health_change = function(be) inner_flips[#inner_flips + 1] = be.addr end,
    })
    local outer
    outer = h.new({
      backends = dead(N, 204), health_check = down,
      on_health_change = function(be, healthy, err)
        assert.is_false(healthy)
        assert.equal("down by test", err)
        flips[#flips + 1] = be.addr
        if #flips == 1 then assert(inner:run_health_check()) end
        outer:poll()
      end,
    })
    assert(outer:run_health_check())
    once_each(flips, N)
    once_each(inner_flips, N)
    -- a second round changes nothing: no flip, no callback
    assert(outer:run_health_check())
    assert.equal(N, #flips)
  end)
end)
