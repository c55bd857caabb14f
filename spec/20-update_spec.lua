local lb = require("lb")
local h = require("helpers")

describe("update", function()
  local set, en, fail
  local function disc()
    if fail then
      return fail()
    end
    return set, en
  end
  before_each(function()
    set = { "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1" }
    en, fail = nil, nil
  end)

  local bad_results = {
    { function() error("etcd down") end, "discovery failed: .*etcd down" },
    { function() return nil end, "discovery returned nil" },
    { function() return nil, "no route" end, "discovery failed: no route" },
    { function() return "10.0.0.1:1" end, "expected a list" },
    { function() return { "10.0.0.1:1", "bogus" } end,
      "discovery result%[2%] %('bogus'%)" },
    { function() return { { addr = "10.0.0.1:1", weight = 0 } } end,
      "weight" },
    { function() return { "10.0.0.1:1" }, "x" end, "enablement" },
    { function() return { "10.0.0.1:1" }, { ["10.0.0.1:1"] = 1 } end,
      "must be a boolean" },
    { function() return { "bad host!:80" } end,
      "discovery result%[1%] %('bad host!:80'%): invalid host name" },
  }
  for i, case in ipairs(bad_results) do
    it("keeps the previous set on bad discovery #" .. i, function()
      local b = h.new({ selection = "consistent", discovery = disc })
      assert.is_true(b:update())
      local before = h.addrs(b:backends())
      local pick = b:select("key")
      fail = case[1]
      local ok, err = b:update()
      assert.is_nil(ok)
      assert.matches(case[2], err)
      assert.same(before, h.addrs(b:backends()))
      assert.equal(pick, b:select("key"))
    end)
  end

  it("keeps health records and enablement of backends that stay",
     function()
    local b = h.new({ discovery = disc })
    assert.is_true(b:update())
    local b2 = b:backends()[2]
    b:set_enable(b2, false)
    set = { "10.0.0.2:1", "10.0.0.4:1" }
    assert.is_true(b:update())
    assert.equal(b2, b:backends()[1])
    assert.is_false(b:ready(b2))
    assert.is_true(b:ready(b:backends()[2]))
    -- a backend that leaves and comes back starts afresh
    set = { "10.0.0.4:1" }
    assert.is_true(b:update())
    set = { "10.0.0.2:1", "10.0.0.4:1" }
    assert.is_true(b:update())
    assert.is_true(b:ready("10.0.0.2:1"))
  end)

  it("applies enablement, also when the set is unchanged", function()
    local b = h.new({ discovery = disc })
    en = { ["10.0.0.1:1"] = false }
    assert.is_true(b:update())
    assert.is_false(b:ready("10.0.0.1:1"))
    en = { ["10.0.0.1:1"] = true, ["10.0.0.3:01"] = false }
    assert.is_true(b:update())
    assert.is_true(b:ready("10.0.0.1:1"))
    assert.is_false(b:ready("10.0.0.3:1"))
  end)

  it("applies enablement to every backend with that address", function()
    set = { { addr = "10.0.0.1:1", weight = 1 },
            { addr = "10.0.0.1:1", weight = 5 } }
    local b = h.new({ discovery = disc })
    en = { ["10.0.0.1:1"] = false }
    assert.is_true(b:update())
    assert.equal(2, #b:backends())
    for _, be in ipairs(b:backends()) do
      assert.is_false(b:ready(be))
    end
    assert.is_nil(b:select())
  end)

  it("resolves a host name in a discovery result", function()
    set = { "localhost:8080" }
    local b = h.new({ discovery = disc })
    assert.is_true(b:update())
    local addrs = h.addrs(b:backends())
    assert.is_true(#addrs >= 1)
    for _, a in ipairs(addrs) do
      assert.is_truthy(a == "127.0.0.1:8080" or a == "[::1]:8080", a)
    end
  end)

  it("refreshes ext from the latest discovery", function()
    set = { { addr = "10.0.0.1:1", ext = 1 } }
    local b = h.new({ discovery = disc })
    assert.is_true(b:update())
    local t = b:select()
    set = { { addr = "10.0.0.1:1", ext = 2 } }
    assert.is_true(b:update())
    assert.equal(t, b:select())
    assert.equal(2, t.ext)
  end)

  it("reports status rows in sorted order", function()
    local b = h.new({ discovery = disc })
    assert.is_true(b:update())
    b:set_enable("10.0.0.2:1", false)
    local rows = b:status()
    assert.equal(3, #rows)
    assert.same({ addr = "10.0.0.2:1", weight = 1, healthy = true,
                  enabled = false, ready = false, in_flight = 0, selected = 0,
                  checked = false, ejected = false, ejections = 0,
                  passive_failures = 0, panic = false }, rows[2])
    assert.is_true(rows[1].ready)
  end)

  it("treats unknown backends as not ready and set_enable as a no-op",
     function()
    local b = h.new({ discovery = disc })
    assert.is_true(b:update())
    assert.is_false(b:ready("10.9.9.9:1"))
    assert.is_false(b:set_enable("10.9.9.9:1", false))
    assert.has_error(function() b:ready(42) end)
    assert.has_error(function() b:set_enable("10.0.0.1:1", "no") end)
  end)

  it("follows a set published through the C handle, outside the object", function()
    local ffi = require("ffi")
    local C = require("lb.cdef").C
    local b = h.new({ backends = { "10.0.0.1:1", "10.0.0.3:1" } })
    local arr = ffi.new("lb_backend[1]")
    local err = ffi.new("const char *[1]")
    assert.equal(0, C.lb_backend_parse("10.0.0.2:1", 10, 1, arr, err))
    assert.equal(1, C.lb_balancer_update(b._c, arr, 1, nil, nil, err))
    assert.equal("10.0.0.2:1", b:select().addr)
    assert.equal(1, #b:backends())
    local seen = 0
    assert.equal("10.0.0.2:1", b:select_with(nil, 8, function()
      seen = seen + 1
      return true
    end).addr)
    assert.equal(1, seen)
  end)
end)

describe("lb.discovery.static", function()
  it("adds, removes, sets and gets", function()
    local d = assert(lb.discovery.static({ "10.0.0.1:1" }))
    local b = h.new({ discovery = d })
    assert.same({ "10.0.0.1:1" }, h.addrs(b:backends()))
    assert.is_true(d:add("10.0.0.2:1"))
    assert.is_true(d:add({ addr = "10.0.0.3:1", weight = 2 }))
    assert.is_true(b:update())
    assert.same({ "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1" },
                h.addrs(b:backends()))
    assert.equal(1, d:remove("10.0.0.2:1"))
    assert.equal(1, d:remove({ addr = "10.0.0.3:1", weight = 2 }))
    assert.is_true(b:update())
    assert.same({ "10.0.0.1:1" }, h.addrs(b:backends()))
    assert.is_true(d:set({ "[::1]:5", "unix:/tmp/s" }))
    assert.same({ "[::1]:5", "unix:/tmp/s" }, h.addrs(d:get()))
    local ok, err = d:set({ "[::1]:5", "nope" })
    assert.is_nil(ok)
    assert.matches("backends%[2%]", err)
    assert.same({ "[::1]:5", "unix:/tmp/s" }, h.addrs(d:get()))
    ok, err = d:add("1.2.3.4")
    assert.is_nil(ok)
    assert.matches("missing port", err)
    assert.has_error(function() d:add(5) end)
  end)
end)
