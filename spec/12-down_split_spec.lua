-- Where the traffic of a backend that is down goes (docs/openresty.md,
-- "Round robin with a backend down"): weights 1:2:3, one backend failed by
-- a custom check.  weighted_round_robin keeps the weights among the
-- others (nginx skips a down peer); random and round_robin take
-- Pingora's fallback, a walk over the unique list that is not weighted:
-- random spreads the down backend's share evenly over the others,
-- round_robin gives it to the backends its counter lands on next.
-- Addresses are data only: nothing connects to them.

local helpers = require("helpers")

local ADDRS = { "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80" }

-- A balancer of ADDRS with weights 1, 2, 3 whose backend `down` (an index)
-- failed its check.
local function with_down(selection, down)
  local b = helpers.new({
    selection = selection,
    backends = { { addr = ADDRS[1], weight = 1 }, { addr = ADDRS[2], weight = 2 },
                 { addr = ADDRS[3], weight = 3 } },
    health_check = function(be)
      if be.addr == ADDRS[down] then
        return nil, "down for the test"
      end
      return true
    end,
  })
  assert.is_true(b:run_health_check())
  assert.is_false(b:ready(ADDRS[down]))
  return b
end

-- Picks of each backend (by index) over n selections.
local function split(b, n)
  local c = helpers.count_picks(b, n, function(i) return "k" .. i end)
  return { c[ADDRS[1]] or 0, c[ADDRS[2]] or 0, c[ADDRS[3]] or 0 }
end

local function near(want, got, tolerance, what)
  assert(math.abs(got - want) <= tolerance,
         ("%s: %d picks, want %d +- %d"):format(what, got, want, tolerance))
end

describe("a backend down, weights 1:2:3", function()
  it("weighted_round_robin keeps the weights among the others", function()
    for down = 1, 3 do
      local c = split(with_down("weighted_round_robin", down), 6000)
      local rest = 6 - down
      assert.are.equal(0, c[down])
      for i = 1, 3 do
        if i ~= down then
          -- smooth weighted round robin: exact over whole periods
          assert.are.equal(6000 * i / rest, c[i],
                           ("backend %d with backend %d down"):format(i, down))
        end
      end
    end
  end)

  it("random spreads the down backend's share evenly over the others",
     function()
    local n = 24000
    for down = 1, 3 do
      local c = split(with_down("random", down), n)
      assert.are.equal(0, c[down])
      for i = 1, 3 do
        if i ~= down then
          -- its own weighted share, plus half of the down backend's
          local want = n * (i / 6 + down / 6 / 2)
          near(want, c[i], 0.02 * n, ("backend %d, %d down"):format(i, down))
        end
      end
    end
  end)

  it("random does not keep the weights: with the 3 down, 5:7, not 1:2",
     function()
    local n = 24000
    local c = split(with_down("random", 3), n)
    -- by weight the first would take n/3 = 8000; it takes 10000
    assert(c[1] > n / 3 + 0.05 * n, "backend 1: " .. c[1] .. " picks")
  end)

  it("round_robin gives the share to where its counter lands next "
     .. "(Pingora's sequence)", function()
    local n = 6000
    -- the 3 down: A B B C C C, each C's fallback takes the next counter
    -- value modulo 3 (B, then A), so A gets 1 in 4 picks, not 1 in 3
    local c = split(with_down("round_robin", 3), n)
    near(n / 4, c[1], 2, "backend 1, 3 down")
    near(3 * n / 4, c[2], 2, "backend 2, 3 down")
    -- the 2 down: 1 in 5 for A, not 1 in 4
    c = split(with_down("round_robin", 2), n)
    near(n / 5, c[1], 2, "backend 1, 2 down")
    near(4 * n / 5, c[3], 2, "backend 3, 2 down")
    -- the 1 down: 2:3, the weights, by the same mechanics
    c = split(with_down("round_robin", 1), n)
    near(2 * n / 5, c[2], 2, "backend 2, 1 down")
    near(3 * n / 5, c[3], 2, "backend 3, 1 down")
  end)
end)
