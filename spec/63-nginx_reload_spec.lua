-- `nginx -s reload` under load, with lb started in every worker (built-in
-- checks on the C thread, timers): no failed request, the old workers
-- exit, and the new workers run no more threads than the old ones did.
--
-- The load opens one connection per request (Connection: close): a client
-- that keeps connections alive races nginx closing idle ones at reload
-- (HTTP lets such a client retry; wrk counts an error instead), which
-- would measure wrk, not lb.

local nginx = require("support.nginx")
local front = require("support.front")

-- The number of threads of a worker once its checker thread runs (nil
-- before that).
local function threads(pid)
  local n, checker = 0, false
  local p = io.popen("cat /proc/" .. pid .. "/task/*/comm 2>/dev/null")
  for name in p:lines() do
    n = n + 1
    if name == "lb-checker" then checker = true end
  end
  p:close()
  return checker and n or nil
end

describe("nginx -s reload under load (2 workers)", function()
  local addrs, srv

  setup(function()
    addrs = nginx.loopback_backends(3)
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({
          backends = %s,
          health_check = lb.health.tcp({ timeout = 0.5 }),
          health_check_frequency = 0.2,
          update_frequency = 0.2,
        }))
      ]]):format(front.lua_list(addrs)),
      init_worker = "assert(app:start())",
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  it("fails no request, and the old workers exit", function()
    local old
    assert(nginx.wait_for(function()
      old = srv:workers()
      return #old == 2
    end, 5), "nginx did not start 2 workers")
    -- wait until the checker threads are up in both workers
    local before
    assert(nginx.wait_for(function()
      before = threads(old[1])
      return before and threads(old[2]) == before
    end, 5))

    local load = assert(nginx.wrk(srv.url .. "/", {
      duration = 3, connections = 4, headers = { "Connection: close" } }))
    finally(function() load:stop() end)
    local start = front.served(srv)
    assert(nginx.wait_for(function() return front.served(srv) > start + 300 end, 5),
           "no load reached the front")
    for _ = 1, 2 do
      assert(srv:reload(10)) -- returns once the old workers are gone
    end
    local r = assert(load:wait())
    assert(r.requests > 500, "only " .. r.requests .. " requests")
    assert.are.equal(0, r.failed, r.text)
    print(("\n  reload x2 under load: %d requests, %d failed; %d threads per worker")
          :format(r.requests, r.failed, before))

    for _, pid in ipairs(old) do assert.is_false(nginx.alive(pid)) end
    local new
    assert(nginx.wait_for(function()
      new = srv:workers()
      return #new == 2
    end, 5), "nginx did not start 2 new workers")
    for _, pid in ipairs(new) do
      for _, o in ipairs(old) do assert.are_not.equal(o, pid) end
      -- the same threads as before (main, checker, ...), no more
      assert(nginx.wait_for(function() return threads(pid) == before end, 2),
             ("worker %d runs %s threads, %d before the reloads")
               :format(pid, tostring(threads(pid)), before))
    end
    assert.is_nil(srv:error_log():find("%[alert%]"), srv:error_log())
  end)
end)
