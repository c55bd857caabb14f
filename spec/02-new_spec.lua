local lb = require("lb")

describe("lb.new", function()
  it("exposes _VERSION", function()
    assert.is_string(lb._VERSION)
  end)

  it("defaults to round_robin", function()
    local b = assert(lb.new({ backends = { "127.0.0.1:1" } }))
    assert.equal("round_robin", b.selection)
  end)

  it("accepts an empty set and then selects nothing", function()
    local b = assert(lb.new({ backends = {} }))
    assert.is_nil(b:select())
    local b2 = assert(lb.new({}))
    assert.is_nil(b2:select())
  end)

  local cases = {
    { nil, "options must be a table" },
    { "x", "options must be a table" },
    { { selction = "fnv" }, "unknown option 'selction'" },
    { { selection = "least_conn" }, "selection must be one of" },
    { { selection = 1 }, "selection must be one of" },
    { { selection = "consistent", point_multiple = 0 }, "point_multiple" },
    { { selection = "consistent", point_multiple = 1.5 }, "point_multiple" },
    { { selection = "consistent", point_multiple = 1e6 }, "point_multiple" },
    { { backends = {}, discovery = function() end }, "either backends or" },
    { { discovery = 42 }, "discovery must be a function" },
    { { update_frequency = 0 }, "update_frequency" },
    { { update_frequency = "1" }, "update_frequency" },
    { { health_check_frequency = -1 }, "health_check_frequency" },
    { { parallel_health_check = 1 }, "parallel_health_check" },
    { { on_health_change = true }, "on_health_change" },
    { { health_check = 42 }, "health_check" },
    { { health_check = lb.health.tcp({ timeout = -1 }) }, "timeout" },
    { { health_check = lb.health.tcp({ consecutive_success = 0 }) },
      "consecutive_success" },
    { { health_check = lb.health.http({ expected_status = "200" }) },
      "expected_status" },
    { { health_check = lb.health.http({ path = "no-slash" }) }, "path" },
    { { health_check = lb.health.http({ port = 70000 }) }, "port" },
    { { health_check = lb.health.http({ headers = { ["X a"] = "1" } }) },
      "header" },
    { { health_check = lb.health.http({ bogus = 1 }) },
      "unknown option 'bogus'" },
    { { health_check = lb.health.custom({}) }, "check must be a function" },
    { { max_iterations = 0 }, "max_iterations" },
    { { max_iterations = 1.5 }, "max_iterations" },
    { { max_iterations = 2^31 + 1 }, "max_iterations must be an integer between 1 and 2^31" },
  }
  for i, case in ipairs(cases) do
    it("returns nil, err for bad input #" .. i .. " (" .. case[2] .. ")",
       function()
      local ok, b, err = pcall(lb.new, case[1])
      assert.is_true(ok, "lb.new raised: " .. tostring(b))
      assert.is_nil(b)
      assert.is_string(err)
      assert.matches(case[2], err, 1, true)
    end)
  end

  it("does not call a discovery function at construction", function()
    local called = 0
    local b = assert(lb.new({ discovery = function()
      called = called + 1
      return { "127.0.0.1:1" }
    end }))
    assert.equal(0, called)
    assert.is_nil(b:select())
    assert.is_true(b:update())
    assert.equal(1, called)
    assert.equal("127.0.0.1:1", b:select().addr)
  end)

  it("discovers a static discovery at construction", function()
    local d = assert(lb.discovery.static({ "127.0.0.1:1", "127.0.0.1:2" }))
    local b = assert(lb.new({ discovery = d }))
    assert.equal(2, #b:backends())
  end)
end)
