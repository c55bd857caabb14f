-- Pick orders pinned to Pingora's own unit tests (selection/weighted.rs,
-- selection/consistent.rs, selection/mod.rs).  Addresses are data only.
local h = require("helpers")

local B1, B2, B3 = "1.1.1.1:80", "1.0.0.1:80", "1.0.0.255:80"

local function walk(b, key, n)
  local out = {}
  b:select_with(key, n, function(be)
    out[#out + 1] = be.addr
    return false
  end)
  return out
end

describe("fnv (Pingora weighted.rs test_fnv)", function()
  local b = h.new({ selection = "fnv", backends = {
    B1, { addr = B2, weight = 10 }, B3 } })

  it("picks the weighted first choice, then unique uniform fallbacks",
     function()
    -- Pingora's raw sequence for "test" is b2 b2 b2 b1 b3 b2 b2 b1 b2 b3 b1;
    -- the unique iterator yields b2, b1, b3.
    assert.same({ B2, B1, B3 }, walk(b, "test", 11))
  end)

  it("bounds the walk by max_iterations over the raw sequence", function()
    -- raw: b2 b2 b2 b1 b3: 4 steps reach b1, 5 reach b3
    assert.same({ B2 }, walk(b, "test", 1))
    assert.same({ B2 }, walk(b, "test", 3))
    assert.same({ B2, B1 }, walk(b, "test", 4))
    assert.same({ B2, B1, B3 }, walk(b, "test", 5))
    assert.same({}, walk(b, "test", 0))
  end)

  it("hashes other keys as Pingora does", function()
    local expect = { B2, B2, B3, B1, B2, B2, B2 }
    for i = 1, 7 do
      assert.equal(expect[i], b:select("test" .. i).addr, "test" .. i)
    end
  end)
end)

describe("round_robin (Pingora weighted.rs test_round_robin)", function()
  it("follows the shared counter over the weighted then unique list",
     function()
    local b = h.new({ backends = { B1, { addr = B2, weight = 8 }, B3 } })
    -- first walk: counter 0 -> weighted b2; fallbacks 1,2,3,4 -> b3 b1 b2 b3
    assert.same({ B2, B3, B1 }, walk(b, "test", 5))
    -- then each select takes the next counter value (5..11)
    local got = {}
    for i = 1, 7 do
      got[i] = b:select("test1").addr
    end
    assert.same({ B2, B2, B2, B3, B1, B2, B2 }, got)
  end)

  it("splits by weight exactly over a full cycle", function()
    local b = h.new({ backends = { { addr = "10.0.0.1:1", weight = 1 },
                                   { addr = "10.0.0.2:1", weight = 2 },
                                   { addr = "10.0.0.3:1", weight = 3 } } })
    local c = h.count_picks(b, 600)
    assert.same({ ["10.0.0.1:1"] = 100, ["10.0.0.2:1"] = 200,
                  ["10.0.0.3:1"] = 300 }, c)
  end)
end)

describe("random (Pingora weighted.rs test_random)", function()
  it("picks by weight", function()
    local b = h.new({ selection = "random", backends = {
      B1, { addr = B2, weight = 8 }, B3 } })
    -- Pingora asserts 70..90 of 100; over 10000 picks the share of b2 is
    -- 0.8 with a standard deviation of 0.004.
    local c = h.count_picks(b, 10000)
    assert.is_true(c[B2] > 7700 and c[B2] < 8300, tostring(c[B2]))
    assert.is_true(c[B1] > 800 and c[B1] < 1200, tostring(c[B1]))
  end)

  it("walks every backend", function()
    local b = h.new({ selection = "random", backends = { B1, B2, B3 } })
    local got = walk(b, nil, 200)
    table.sort(got)
    assert.same({ B2, B3, B1 }, got)
  end)
end)

describe("consistent (Pingora consistent.rs test_ketama)", function()
  it("maps test0..test9 as Pingora, and moves only b3's keys on removal",
     function()
    local set = { B1, B2, B3 }
    local b = h.new({ selection = "consistent",
                      discovery = function() return set end })
    assert.is_true(b:update())
    local got = {}
    for i = 0, 9 do
      got[i + 1] = b:select("test" .. i).addr
    end
    assert.same({ B2, B1, B1, B1, B1, B3, B1, B3, B1, B2 }, got)
    set = { B1, B2 }
    assert.is_true(b:update())
    for i = 0, 9 do
      got[i + 1] = b:select("test" .. i).addr
    end
    assert.same({ B2, B1, B1, B1, B1, B2, B1, B1, B1, B2 }, got)
  end)

  it("walks the ring to the next distinct backend", function()
    local b = h.new({ selection = "consistent", backends = { B1, B2, B3 } })
    local w = walk(b, "test5", 1000)
    assert.equal(3, #w)
    assert.equal(B3, w[1])
  end)

  it("uses point_multiple", function()
    local b1 = h.new({ selection = "consistent", backends = { B1, B2, B3 },
                       point_multiple = 1 })
    local b160 = h.new({ selection = "consistent", backends = { B1, B2, B3 } })
    local differ = 0
    for i = 1, 200 do
      if b1:select("k" .. i).addr ~= b160:select("k" .. i).addr then
        differ = differ + 1
      end
    end
    assert.is_true(differ > 0)
  end)
end)

describe("unique iterator (Pingora selection/mod.rs)", function()
  it("yields each backend once and stops at the step cap", function()
    for _, sel in ipairs({ "round_robin", "random", "fnv", "consistent" }) do
      local b = h.new({ selection = sel, backends = {
        "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1" } })
      local got = walk(b, "k", 10000)
      assert.equal(4, #got, sel)
      local seen = {}
      for _, a in ipairs(got) do
        assert.is_nil(seen[a], sel)
        seen[a] = true
      end
      assert.equal(1, #walk(b, "k", 1), sel)
    end
  end)

  it("rejects a non-string key where the algorithm needs one", function()
    local b = h.new({ selection = "consistent", backends = { B1 } })
    assert.has_error(function() b:select({}) end,
      "bad argument #1 to 'select' (string expected, got table)")
    assert.has_error(function() b:select(nil) end,
      "bad argument #1 to 'select' (string expected, got nil)")
    assert.has_error(function() b:select("k", -1) end)
    assert.has_error(function() b:select_with("k", 1, "f") end,
      "bad argument #3 to 'select_with' (function expected, got string)")
    local rr = h.new({ backends = { B1 } })
    assert.equal(B1, rr:select().addr)
    assert.has_error(function() rr:select(42) end)
  end)
end)

describe("select", function()
  it("returns the same table while the backend stays", function()
    local set = { "10.0.0.1:1", "10.0.0.2:1" }
    local b = h.new({ discovery = function() return set end })
    assert.is_true(b:update())
    local t1 = b:backends()[1]
    set = { "10.0.0.1:1", "10.0.0.3:1" }
    assert.is_true(b:update())
    assert.equal(t1, b:backends()[1])
    local found = false
    for _ = 1, 4 do
      if b:select() == t1 then
        found = true
      end
    end
    assert.is_true(found)
  end)

  it("skips backends that are not ready", function()
    local b = h.new({ selection = "consistent", backends = { B1, B2, B3 } })
    local first = b:select("test5")
    assert.is_true(b:set_enable(first, false))
    assert.is_false(b:ready(first))
    local second = b:select("test5")
    assert.is_not.equal(first, second)
    assert.is_true(b:ready(second))
    for _, be in ipairs(b:backends()) do
      b:set_enable(be, false)
    end
    assert.is_nil(b:select("test5"))
    assert.is_true(b:set_enable(B1, true))
    assert.equal(B1, b:select("test5").addr)
  end)
end)

describe("set_enable by address", function()
  -- The same address listed at two weights is two backends; draining the
  -- address drains both.
  local A, B = "10.0.0.1:1", "10.0.0.2:1"

  for _, sel in ipairs({ "round_robin", "random", "fnv", "consistent" }) do
    it("disables every backend of the address (" .. sel .. ")", function()
      local b = h.new({ selection = sel, backends = {
        { addr = A, weight = 1 }, { addr = A, weight = 3 }, B } })
      assert.equal(3, #b:backends())
      assert.is_true(b:set_enable(A, false))
      local counts = h.count_picks(b, 1000, function(i) return "k" .. i end)
      assert.is_nil(counts[A], "the drained address still got "
                    .. tostring(counts[A]) .. " of 1000 picks")
      assert.equal(1000, counts[B])
      for _, row in ipairs(b:status()) do
        assert.equal(row.addr ~= A, row.enabled, row.addr .. "#" .. row.weight)
      end
      assert.is_true(b:set_enable("10.0.0.1:1", true))
      for _, row in ipairs(b:status()) do
        assert.is_true(row.enabled)
      end
    end)
  end

  it("leaves the other weight alone when given one backend table", function()
    local b = h.new({ backends = { { addr = A, weight = 1 },
                                   { addr = A, weight = 3 } } })
    assert.is_true(b:set_enable({ addr = A, weight = 3 }, false))
    local rows = b:status()
    assert.is_true(rows[1].enabled)
    assert.is_false(rows[2].enabled)
  end)
end)

describe("the algorithms come from the C core's registry", function()
  it("names and flags, in registry order", function()
    local core = require("lb.cdef")
    assert.same({ "round_robin", "random", "fnv", "consistent" },
                { unpack(core.SELECTION_NAMES, 1, 4) })
    assert.is_true(core.SELECTION.round_robin.keyless)
    assert.is_true(core.SELECTION.random.keyless)
    assert.is_false(core.SELECTION.fnv.keyless)
    assert.is_false(core.SELECTION.consistent.keyless)
    -- every registered name is accepted by lb.new, and named in its error
    local _, err = require("lb").new({ selection = "nope" })
    for _, name in ipairs(core.SELECTION_NAMES) do
      assert(h.new({ selection = name }))
      assert.truthy(err:find("'" .. name .. "'", 1, true))
    end
  end)
end)
