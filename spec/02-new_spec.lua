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
    -- Every limit is named with the option, and checked here, not later.
    { { health_check_frequency = 1e7 },
      "health_check_frequency must be a number of seconds from 0.01 to 1000000" },
    { { update_frequency = 1e7 },
      "update_frequency must be a number of seconds from 0.01 to 1000000" },
    { { health_check_frequency = 1e-9 }, "from 0.01" },
    { { update_frequency = 1e-9 }, "from 0.01" },
    { { health_check_frequency = 0 / 0 }, "health_check_frequency" },
    { { health_check = lb.health.tcp({ timeout = 1e9 }) },
      "timeout must be a number of seconds above 0 and at most 86400, got 1000000000" },
    { { health_check = lb.health.custom({ check = function() end,
                                          timeout = 1e9 }) }, "at most 86400" },
    { { health_check = lb.health.tcp({ consecutive_failure = 2^29 + 1 }) },
      "consecutive_failure must be an integer from 1 to 536870912" },
    { { health_check = lb.health.custom({ check = function() end,
                                          consecutive_success = 2^29 + 1 }) },
      "consecutive_success must be an integer from 1 to 536870912" },
    { { health_check = lb.health.custom({ check = function() end,
                                          concurrency = 0 }) },
      "concurrency must be an integer from 1 to 65535, got 0" },
    { { health_check = lb.health.custom({ check = function() end,
                                          concurrency = 1.5 }) },
      "concurrency" },
    { { health_check = lb.health.tcp({ concurrency = 4 }) },
      "unknown option 'concurrency'" },
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

  it("accepts the largest threshold the core takes (2^29)", function()
    local b, err = lb.new({ backends = { "127.0.0.1:1" },
      health_check = lb.health.tcp({ consecutive_success = 2^29,
                                     consecutive_failure = 2^29 }) })
    assert.is_not_nil(b, err)
  end)

  it("takes its limits from the C core", function()
    local limits = require("lb.cdef").LIMITS
    assert.equal(2^29, limits.max_threshold)
    assert.equal(86400, limits.max_timeout)
    assert.equal(0.01, limits.min_frequency)
    assert.equal(1e6, limits.max_frequency)
    assert.equal(1000, limits.max_weight)
  end)

  it("accepts the documented frequency bounds, and starts with them", function()
    local b = assert(lb.new({ backends = { "127.0.0.1:1" },
      health_check = lb.health.tcp({ timeout = 0.1 }),
      health_check_frequency = 1e6, update_frequency = 0.01 }))
    assert.is_true(b:start())
    assert.is_true(b:stop())
  end)

  it("cuts a huge bad address in its error", function()
    local huge = ("x"):rep(1024 * 1024)
    for _, opts in ipairs({ { backends = { huge } },
                            { backends = { { addr = huge } } } }) do
      local b, err = lb.new(opts)
      assert.is_nil(b)
      assert.matches("backends[1] ('xxxx", err, 1, true)
      assert.is_true(#err < 512, "error of " .. #err .. " bytes")
    end
    local b = assert(lb.new({ discovery = function() return { huge } end }))
    local ok, err = b:update()
    assert.is_nil(ok)
    assert.is_true(#err < 512, "error of " .. #err .. " bytes")
  end)

  for _, m in ipairs({ "select", "select_with", "status", "backends", "ready",
                       "set_enable", "update", "start", "stop", "poll",
                       "run_health_check" }) do
    it("raises a clear error for a wrong self on " .. m, function()
      local b = assert(lb.new({ backends = { "127.0.0.1:1" } }))
      for _, bad in ipairs({ {}, "key", false }) do
        local ok, err = pcall(b[m], bad, "127.0.0.1:1")
        assert.is_false(ok)
        assert.matches("bad argument #1 to '" .. m .. "'", err, 1, true)
        assert.matches("use balancer:" .. m .. "(...)", err, 1, true)
      end
      local ok, err = pcall(b[m])
      assert.is_false(ok)
      assert.matches("use balancer:" .. m .. "(...)", err, 1, true)
    end)
  end

  it("takes backends and discovery together: the list until the first "
     .. "successful discovery", function()
    local result
    local b = assert(lb.new({ backends = { "127.0.0.1:1", "127.0.0.1:2" },
                              discovery = function()
                                if result then return result end
                                return nil, "not yet"
                              end }))
    assert.same({ "127.0.0.1:1", "127.0.0.1:2" },
                require("helpers").addrs(b:backends()))
    assert.is_not_nil(b:select())
    local ok, err = b:update()
    assert.is_nil(ok)
    assert.matches("not yet", err, 1, true)
    assert.equal(2, #b:backends())
    result = { "127.0.0.1:3" }
    assert.is_true(b:update())
    assert.same({ "127.0.0.1:3" }, require("helpers").addrs(b:backends()))
  end)

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
