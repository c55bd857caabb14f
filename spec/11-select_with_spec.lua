local h = require("helpers")

local SET = { "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1" }

describe("select_with", function()
  it("passes each unique candidate with its readiness", function()
    local b = h.new({ selection = "fnv", backends = SET })
    local down = b:backends()[2]
    b:set_enable(down, false)
    local seen = {}
    local got = b:select_with("k", 100, function(be, healthy)
      seen[#seen + 1] = { be.addr, healthy }
      return false
    end)
    assert.is_nil(got)
    assert.equal(3, #seen)
    for _, s in ipairs(seen) do
      assert.equal(s[1] ~= down.addr, s[2])
    end
  end)

  it("returns the first accepted backend, even an unready one", function()
    local b = h.new({ selection = "fnv", backends = SET })
    for _, be in ipairs(b:backends()) do
      b:set_enable(be, false)
    end
    assert.is_nil(b:select("k"))
    local got = b:select_with("k", 10, function(_, healthy)
      assert.is_false(healthy)
      return true
    end)
    assert.is_table(got)
  end)

  it("propagates an error raised by accept and stays usable", function()
    local b = h.new({ selection = "consistent", backends = SET })
    for _ = 1, 100 do
      local ok, err = pcall(b.select_with, b, "k", 10, function()
        error("accept exploded")
      end)
      assert.is_false(ok)
      assert.matches("accept exploded", err)
    end
    assert.is_table(b:select("k"))
    assert.is_table(b:select_with("k", 10, function() return true end))
  end)

  it("supports a nested walk from inside accept", function()
    local b = h.new({ selection = "fnv", backends = SET })
    local outer = {}
    b:select_with("a", 10, function(be)
      outer[#outer + 1] = be.addr
      local inner = {}
      b:select_with("b", 10, function(x)
        inner[#inner + 1] = x.addr
        return false
      end)
      assert.equal(3, #inner)
      return false
    end)
    assert.equal(3, #outer)
  end)

  it("ends the walk when accept changes the set", function()
    local set = SET
    local b = h.new({ selection = "fnv", discovery = function() return set end })
    assert.is_true(b:update())
    local calls = 0
    local got = b:select_with("k", 10, function()
      calls = calls + 1
      set = { "10.0.0.9:1" }
      assert.is_true(b:update())
      return false
    end)
    assert.is_nil(got)
    assert.equal(1, calls)
    assert.equal("10.0.0.9:1", b:select("k").addr)
  end)
end)
