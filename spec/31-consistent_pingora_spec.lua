-- Pingora's own expectations for Ketama, transcribed as expected values:
-- pingora-load-balancing (selection/consistent.rs, test_ketama) and
-- pingora-ketama (src/lib.rs tests and its recorded nginx trace).
-- Every address here is data; nothing is connected to.

local lb = require("lb")

local function new(backends)
  return assert(lb.new({ backends = backends, selection = "consistent" }))
end

local function pick(b, key)
  local be = b:select(key)
  return be and be.addr
end

-- The unique backends select_with offers for key, in order.
local function order(b, key)
  local seen = {}
  b:select_with(key, 64, function(be)
    seen[#seen + 1] = be.addr
    return false
  end)
  return seen
end

describe("consistent: pingora-load-balancing test_ketama", function()
  local b1, b2, b3 = "1.1.1.1:80", "1.0.0.1:80", "1.0.0.255:80"
  local keys = { "test0", "test1", "test2", "test3", "test4",
                 "test5", "test6", "test7", "test8", "test9" }

  local function picks(b)
    local out = {}
    for i, k in ipairs(keys) do out[i] = pick(b, k) end
    return out
  end

  it("three backends", function()
    local b = new({ b1, b2, b3 })
    assert.same({ b2, b1, b1, b1, b1, b3, b1, b3, b1, b2 }, picks(b))
  end)

  it("after removing 1.0.0.255:80 through static discovery", function()
    local d = assert(lb.discovery.static({ b1, b2, b3 }))
    local b = assert(lb.new({ discovery = d, selection = "consistent" }))
    assert.same({ b2, b1, b1, b1, b1, b3, b1, b3, b1, b2 }, picks(b))
    assert.equal(1, d:remove(b3))
    assert.is_true(b:update())
    -- Only the keys that were on b3 move (test5 and test7).
    assert.same({ b2, b1, b1, b1, b1, b2, b1, b1, b1, b2 }, picks(b))
  end)

  it("after removing 1.0.0.255:80 through a discovery function", function()
    local list = { b1, b2, b3 }
    local b = assert(lb.new({ discovery = function() return list end,
                              selection = "consistent" }))
    assert.is_true(b:update())
    assert.same({ b2, b1, b1, b1, b1, b3, b1, b3, b1, b2 }, picks(b))
    list = { b1, b2 }
    assert.is_true(b:update())
    assert.same({ b2, b1, b1, b1, b1, b2, b1, b1, b1, b2 }, picks(b))
  end)
end)

describe("consistent: pingora-ketama", function()
  it("matches_nginx_sample", function()
    local b = new({ "127.0.0.1:7777", "127.0.0.1:7778" })
    assert.equal("127.0.0.1:7778", pick(b, "/some/path"))
    assert.equal("127.0.0.1:7777", pick(b, "/some/longer/path"))
    assert.equal("127.0.0.1:7778", pick(b, "/sad/zaidoon"))
    assert.equal("127.0.0.1:7777", pick(b, "/g"))
    assert.equal("127.0.0.1:7778",
                 pick(b, "/pingora/team/is/cool/and/this/is/a/long/uri"))
    assert.equal("127.0.0.1:7777", pick(b, "/i/am/not/confident/in/this/code"))
  end)

  it("consistency_after_adding_host", function()
    for _, n in ipairs({ 10, 11 }) do
      local list = {}
      for i = 1, n do list[i] = "127.0.0." .. i .. ":6443" end
      local b = new(list)
      assert.equal("127.0.0.10:6443", pick(b, "a"))
      assert.equal("127.0.0.5:6443", pick(b, "b"))
    end
  end)

  it("the crate documentation's example (weights 1, 2, 3)", function()
    local b = new({ { addr = "127.0.0.1:12345", weight = 1 },
                    { addr = "127.0.0.2:12345", weight = 2 },
                    { addr = "127.0.0.3:12345", weight = 3 } })
    assert.equal("127.0.0.3:12345", pick(b, "some_key"))
    assert.equal("127.0.0.3:12345", pick(b, "another_key"))
    assert.equal("127.0.0.2:12345", pick(b, "last_key"))
  end)

  -- node_iter walks ring points: 7778 7779 7779 7777 7777 7778 7778 7779;
  -- select_with offers each backend once, in first-seen order.
  it("node_iter order for doghash, as unique backends", function()
    local b = new({ "127.0.0.1:7777", "127.0.0.1:7778", "127.0.0.1:7779" })
    assert.same({ "127.0.0.1:7778", "127.0.0.1:7779", "127.0.0.1:7777" },
                order(b, "doghash"))
    -- Dropping 7778: points 7779 7779 7777 7777 7779.
    b = new({ "127.0.0.1:7777", "127.0.0.1:7779" })
    assert.same({ "127.0.0.1:7779", "127.0.0.1:7777" }, order(b, "doghash"))
  end)

  -- test_ipv6_ring expects [::1]:7777 7778 7777 7778 7778 7777 7779, because
  -- Pingora hashes the text "::1".  lb hashes "[::1]" as nginx does (see
  -- DESIGN.md, Compatibility; spec 30 checks it against real nginx), so the
  -- same ring walks differently: a documented difference.
  it("IPv6 hashes as nginx ([::1]), not as Pingora (::1)", function()
    local b = new({ "[::1]:7777", "[::1]:7778", "[::1]:7779" })
    assert.same({ "[::1]:7779", "[::1]:7778", "[::1]:7777" },
                order(b, "doghash"))
  end)

  it("matches_nginx_sample_data (9 backends of weight 100, 581 keys)", function()
    local list = {}
    for i = 1, 9 do list[i] = { addr = "10.0.0." .. i .. ":443", weight = 100 } end
    local b = new(list)
    local trace = require("support.pingora_ketama_trace")
    local n, bad, first = 0, 0, {}
    for key, want in trace:gmatch("([^,\n]+),([^\n]+)") do
      n = n + 1
      local got = pick(b, key)
      if got ~= want then
        bad = bad + 1
        if #first < 5 then
          first[#first + 1] = ("%s: want %s, got %s"):format(key, want,
                                                             tostring(got))
        end
      end
    end
    assert.equal(581, n)
    assert.equal(0, bad, table.concat(first, "\n"))
  end)
end)
