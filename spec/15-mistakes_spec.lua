-- The mistakes a newcomer makes, each answered by an error that says what
-- was wrong and what to write instead (plain LuaJIT; the nginx side is
-- spec/84-nginx_mistakes_spec.lua).
local lb = require("lb")
local nginx = require("support.nginx")

local q = nginx.q

local function new_err(opts)
  local b, err = lb.new(opts)
  assert.is_nil(b)
  return err
end

-- Run a Lua text with `interp` from the repository root, lb's paths set;
-- returns its exit status and everything it wrote (stderr included).
local function run_lua(interp, code)
  local r = nginx.root()
  local prelude = ("package.path = %q .. package.path; "
                   .. "package.cpath = %q .. package.cpath; "):format(
    r .. "/lua/?.lua;" .. r .. "/spec/?.lua;", r .. "/build/?.so;")
  return nginx.run(interp .. " -e " .. q(prelude .. code) .. " 2>&1")
end

describe("a newcomer's mistakes", function()
  for _, kind in ipairs({ "tcp", "http", "custom" }) do
    it("health_check = lb.health." .. kind .. " (not called) is refused",
       function()
      local err = new_err({ backends = { "127.0.0.1:1" },
                            health_check = lb.health[kind] })
      assert.matches("health_check: got the function lb.health." .. kind
                     .. " itself; call it: lb.health." .. kind .. "({ ... })",
                     err, 1, true)
    end)
  end

  it("a custom check that returns something else says what a check returns",
     function()
    local b = assert(lb.new({ backends = { "127.0.0.1:1" },
                              health_check = function() return {} end }))
    assert(b:run_health_check())
    local e = b:status()[1].last_error
    assert.matches("check returned a table; a check returns true, or nil "
                   .. "and an error message", e, 1, true)
    assert.is_nil(e:find("0x", 1, true), e)
  end)

  -- Every numeric option, given as a string, is called a string.
  local numeric = {
    { { health_check_frequency = "1" }, "health_check_frequency" },
    { { update_frequency = "5" }, "update_frequency" },
    { { point_multiple = "160", selection = "consistent" }, "point_multiple" },
    { { max_iterations = "8" }, "max_iterations" },
    { { panic_threshold = "0.5" }, "panic_threshold" },
    { { choice_count = "2", selection = "least_request" }, "choice_count" },
    { { active_request_bias = "1", selection = "least_request" },
      "active_request_bias" },
    { { ewma_decay = "10", selection = "peak_ewma" }, "ewma_decay" },
    { { table_size = "65537", selection = "maglev" }, "table_size" },
    { { hash_balance_factor = "1.5", selection = "consistent" },
      "hash_balance_factor" },
    { { passive = { consecutive_failures = "5" } },
      "passive.consecutive_failures" },
    { { passive = { ejection_time = "30" } }, "passive.ejection_time" },
    { { passive = { max_ejection_time = "300" } },
      "passive.max_ejection_time" },
    { { passive = { max_ejection_percent = "50" } },
      "passive.max_ejection_percent" },
    { { slow_start = { window = "30" } }, "slow_start.window" },
    { { slow_start = { aggression = "1" } }, "slow_start.aggression" },
    { { slow_start = { min_weight = "0.5" } }, "slow_start.min_weight" },
    { { shared = { capacity = "16" } }, "shared.capacity" },
    { { health_check = lb.health.tcp({ timeout = "1" }) }, "timeout" },
    { { health_check = lb.health.tcp({ consecutive_success = "2" }) },
      "consecutive_success" },
    { { health_check = lb.health.tcp({ consecutive_failure = "2" }) },
      "consecutive_failure" },
    { { health_check = lb.health.http({ port = "8080" }) }, "port" },
    { { health_check = lb.health.http({ expected_status = "200" }) },
      "expected_status" },
    { { health_check = lb.health.custom({ check = print,
                                          concurrency = "4" }) },
      "concurrency" },
    { { discovery = lb.discovery.dns({ name = "a.test", port = "80" }) },
      "port" },
    { { discovery = lb.discovery.dns({ name = "a.test", port = 80,
                                       timeout = "2" }) }, "timeout" },
  }
  for _, case in ipairs(numeric) do
    local opts, name = case[1], case[2]
    it(name .. " given as a string is called a string", function()
      opts.backends = opts.backends or { "127.0.0.1:1" }
      local err = new_err(opts)
      assert.matches(name, err, 1, true)
      local v = err:match('got the string "([^"]*)"')
      assert.is_not_nil(v, err)
      assert.is_not_nil(tonumber(v), err)
    end)
  end

  it("a table where a number goes is called a table, not its address",
     function()
    local err = new_err({ backends = { "127.0.0.1:1" },
                          health_check_frequency = {} })
    assert.matches("got a table", err, 1, true)
    assert.is_nil(err:find("0x", 1, true), err)
  end)

  for _, es in ipairs({ 999, 600, 99, { 200, 999 } }) do
    local shown = type(es) == "table" and "{ 200, 999 }" or tostring(es)
    it("expected_status = " .. shown .. " is refused", function()
      local err = new_err({ backends = { "127.0.0.1:1" },
        health_check = lb.health.http({ expected_status = es }) })
      local bad = type(es) == "table" and 999 or es
      assert.matches("expected_status: " .. bad .. " is not an HTTP status "
                     .. "code (100 to 599)", err, 1, true)
    end)
  end

  it("expected_status takes 100 and 599", function()
    assert(lb.new({ backends = { "127.0.0.1:1" },
      health_check = lb.health.http({ expected_status = { 100, 599 } }) }))
  end)

  it("passive.failure_status is HTTP status codes too", function()
    local err = new_err({ backends = { "127.0.0.1:1" },
                          passive = { failure_status = { 502, 700 } } })
    assert.matches("passive.failure_status[2]: 700 is not an HTTP status "
                   .. "code (100 to 599)", err, 1, true)
  end)

  it("names every public balancer method called with '.' for ':'",
     function()
    local b = assert(lb.new({ backends = { "127.0.0.1:1" } }))
    local n = 0
    for name, f in pairs(lb.Balancer) do
      if type(f) == "function" and name:sub(1, 1) ~= "_" then
        n = n + 1
        local ok, err = pcall(function()
          local r = f("k") -- a dot for a colon
          return r
        end)
        assert.is_false(ok)
        assert.matches("bad argument #1 to '" .. name .. "' (balancer "
                       .. "expected, got string; use balancer:" .. name
                       .. "(...))", err, 1, true)
        -- reported where the call was written
        assert.matches("^[^:]*15%-mistakes_spec%.lua:%d+:", err)
      end
    end
    assert.is_true(n >= 19, n .. " methods")
    assert.equal(b, b) -- the balancer is still fine
  end)

  it("names a static discovery's methods called with '.' for ':'",
     function()
    local d = lb.discovery.static({ "127.0.0.1:1" })
    for _, m in ipairs({ "add", "remove", "set", "get", "discover" }) do
      local ok, err = pcall(function()
        local r = d[m]("127.0.0.1:2") -- a dot for a colon
        return r
      end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to '" .. m .. "' (discovery expected, "
                     .. "got string; use discovery:" .. m .. "(...))", err, 1,
                     true)
    end
    assert.equal(1, #d:get())
  end)

  it("require('lb.nginx') outside nginx says what it needs", function()
    assert.is_nil(rawget(_G, "ngx"))
    local ok, err = pcall(require, "lb.nginx")
    assert.is_false(ok)
    assert.matches("lb.nginx needs OpenResty's ngx API (it runs in nginx "
                   .. "with the Lua module); in plain LuaJIT use "
                   .. 'require("lb")', err, 1, true)
  end)

  it("plain Lua 5.1 is told that lb needs LuaJIT", function()
    local ok, out = run_lua("lua5.1", 'require("lb")')
    assert.is_false(ok, out)
    assert.matches("lb needs LuaJIT", out, 1, true)
    assert.is_nil(out:find("module 'ffi' not found", 1, true), out)
  end)

  it("warns once, on stderr, when a check frequency is set and nothing runs",
     function()
    local ok, out = run_lua("luajit", [[
      local lb = require("lb")
      local function mk(name)
        return assert(lb.new({ name = name, backends = { "127.0.0.1:1" },
          health_check = lb.health.tcp({ timeout = 0.1 }),
          health_check_frequency = 0.05 }))
      end
      local idle, anon, started = mk("idle"), mk(nil), mk("started")
      assert(started:start())
      local t0 = lb.now()
      while not (idle._unchecked_warned and anon._unchecked_warned)
            and lb.now() - t0 < 20 do
        idle:status(); anon:poll(); started:status(); started:poll()
      end
      for _ = 1, 50 do idle:status(); idle:poll(); anon:status() end
      started:stop()
      print("done")
    ]])
    assert.is_true(ok, out)
    assert.matches("done", out, 1, true)
    local n, named = 0, 0
    for line in out:gmatch("[^\n]+") do
      if line:find("no health check has run", 1, true) then
        n = n + 1
        assert.is_nil(line:find('"started"', 1, true), line)
        if line:find('lb: balancer "idle": health_check_frequency is 0.05 s '
                     .. "but no health check has run yet: call start()", 1,
                     true) then
          named = named + 1
        else
          assert.matches("^lb: health_check_frequency is 0.05 s", line)
        end
      end
    end
    assert.equal(2, n, out)
    assert.equal(1, named, out)
  end)

  it("shows a never-checked backend as unchecked on the status page",
     function()
    local b = assert(lb.new({ backends = { "127.0.0.1:1" },
      health_check = lb.health.tcp({ timeout = 0.1 }) }))
    local row = b:status()[1]
    assert.is_true(row.healthy)
    assert.is_false(row.checked)
    local html = require("lb.status_page").render({ app = b })
    assert.matches('<tr class="unk"><td>127.0.0.1:1</td><td class="st">'
                   .. "unchecked</td>", html, 1, true)
  end)

  it("gives a balancer a name, checked", function()
    local b = assert(lb.new({ backends = { "127.0.0.1:1" }, name = "app" }))
    assert.equal("app", b.name)
    assert.truthy(b:metrics():find('lb_backends{balancer="app"} 1', 1, true))
    assert.truthy(b:metrics("x"):find('lb_backends{balancer="x"} 1', 1, true))
    local anon = assert(lb.new({ backends = { "127.0.0.1:1" } }))
    assert.is_nil(anon.name)
    assert.truthy(anon:metrics():find('balancer="default"', 1, true))
    for _, bad in ipairs({ 1, "", {} }) do
      local err = new_err({ backends = { "127.0.0.1:1" }, name = bad })
      assert.matches("lb.new: name must be a non-empty string", err, 1, true)
    end
  end)
end)
