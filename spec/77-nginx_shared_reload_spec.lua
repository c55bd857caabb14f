-- Shared balancers across nginx's life: `nginx -s reload` builds a new
-- region in the new generation (old workers finish with theirs) with no
-- failed request, each generation has exactly one prober, and a worker
-- respawned after kill -9 uses the master's region (it sees what the
-- others set before it was born).
local nginx = require("support.nginx")
local front = require("support.front")

local RELOADS = 5

describe("nginx: shared balancer over reloads and respawns", function()
  local addrs, srv

  setup(function()
    addrs = nginx.loopback_backends(2)
    srv = assert(front.start({
      workers = 2,
      init = ([[
        local lb = require("lb")
        local list = %s
        app = assert(lb.new({
          backends = list,
          shared = true,
          discovery = function()
            ngx.sleep(0.1)
            return list
          end,
          update_frequency = 0.2,
          health_check = lb.health.http({ timeout = 0.5 }),
          health_check_frequency = 0.2,
        }))
      ]]):format(front.lua_list(addrs)),
      init_worker = "assert(app:start())",
      server_extra = [[
        location = /state {
          content_by_lua_block {
            local be = app:backends()[1]
            ngx.say(ngx.worker.pid(), " ", app:role(), " ",
                    tostring(app:ready(be)))
          }
        }
        location = /disable {
          content_by_lua_block {
            ngx.say(tostring(app:set_enable(app:backends()[1], false)))
          }
        }
      ]],
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  -- pid -> { role, ready } of every current worker, asking over new
  -- connections until each has answered.
  local function states()
    local got = {}
    local ok = nginx.wait_for(function()
      -- the workers now (a reload or a respawn changes them)
      local want, total = {}, 0
      for _, pid in ipairs(srv:workers()) do
        want[tostring(pid)], total = true, total + 1
      end
      local r = nginx.get(srv.addr, "/state", { timeout = 1 })
      local pid, role, ready = (r and r.body or ""):match("^(%d+) (%a+) (%a+)")
      if pid and want[pid] then
        got[pid] = { role = role, ready = ready == "true" }
      end
      local n = 0
      for p in pairs(got) do
        if want[p] then n = n + 1 else got[p] = nil end
      end
      return total > 0 and n == total
    end, 20, 0.001)
    assert(ok, "not every worker answered")
    return got
  end

  local function probers(st)
    local n = 0
    for _, s in pairs(st) do n = n + (s.role == "prober" and 1 or 0) end
    return n
  end

  it("reloads under load with no failed request, one prober each time",
     function()
    local load = assert(nginx.wrk(srv.url .. "/", {
      duration = 1 + 2 * RELOADS, connections = 4,
      headers = { "Connection: close" } }))
    finally(function() load:stop() end)
    local start = front.served(srv)
    assert(nginx.wait_for(function() return front.served(srv) > start + 200 end, 5))
    for _ = 1, RELOADS do
      assert(srv:reload(10))
      assert.truthy(nginx.wait_for(function()
        return probers(states()) == 1
      end, 5), "not one prober after a reload")
    end
    local r = assert(load:wait())
    print(("\n  %d reloads, shared: %d requests, %d non-2xx, %d failed")
          :format(RELOADS, r.requests, r.non2xx, r.failed))
    assert(r.requests > 500, "only " .. r.requests .. " requests")
    assert.are.equal(0, r.non2xx, r.text)
    assert.are.equal(0, r.failed, r.text)
  end)

  it("a respawned worker uses the master's region", function()
    local r = assert(nginx.get(srv.addr, "/disable"))
    assert.equal("true\n", r.body)
    local st = nil
    assert.truthy(nginx.wait_for(function()
      st = states()
      for _, s in pairs(st) do
        if s.ready then return false end
      end
      return true
    end, 5))
    -- kill -9 a reader (nginx respawns it); the new one sees the disable
    local victim
    for pid, s in pairs(st) do
      if s.role == "reader" then victim = tonumber(pid) end
    end
    assert.is_not_nil(victim)
    nginx.kill(victim, "KILL")
    assert.truthy(nginx.wait_for(function()
      local w = srv:workers()
      if #w ~= 2 then return false end
      for _, pid in ipairs(w) do
        if pid == victim then return false end
      end
      return true
    end, 10))
    st = states()
    local n = 0
    for pid, s in pairs(st) do
      assert.is_false(s.ready, "worker " .. pid .. " sees it ready")
      n = n + 1
    end
    assert.equal(2, n)
    assert.equal(1, probers(st))
  end)
end)
