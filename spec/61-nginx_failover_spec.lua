-- Failover in nginx (2 workers): a backend stopped under load costs at
-- most 0.1% failed requests (health checks on the C thread, retries
-- skipping the tried peer), then receives nothing; back up, it receives
-- traffic again within the check period + 1 s.

local nginx = require("support.nginx")
local front = require("support.front")

local CHECK_PERIOD = 0.2

describe("failover in nginx (2 workers)", function()
  local addrs, backends, srv

  setup(function()
    addrs, backends = nginx.loopback_backends(3)
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({
          backends = %s,
          health_check = lb.health.tcp({ timeout = 0.2 }),
          health_check_frequency = %s,
        }))
      ]]):format(front.lua_list(addrs), CHECK_PERIOD),
      init_worker = "assert(app:start())",
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  it("loses at most 0.1% of requests when a backend stops under load", function()
    local load = assert(nginx.wrk(srv.url .. "/", { duration = 3,
                                                    connections = 8 }))
    finally(function() load:stop() end)
    local before = front.served(srv)
    assert(nginx.wait_for(function() return front.served(srv) > before + 1000 end, 5),
           "no load reached the front")
    assert(backends[2]:stop())
    local r = assert(load:wait())
    assert(r.requests > 3000, "only " .. r.requests .. " requests")
    assert(r.failed <= 0.001 * r.requests,
           ("%d of %d requests failed:\n%s"):format(r.failed, r.requests,
                                                   r.text))
    print(("\n  failover: %d requests, %d failed (%d non-2xx, %d socket errors)")
          :format(r.requests, r.failed, r.non2xx, r.failed - r.non2xx))
  end)

  it("sends nothing to the stopped backend once checks mark it down", function()
    local by_backend, by_worker, bad = front.count(front.get(srv, 1000))
    assert.are.equal(0, bad)
    assert.is_nil(by_backend[addrs[2]])
    assert.are.equal(2, front.size(by_worker))
    local r = assert(nginx.get(srv.addr, "/lb-status"))
    local rows = require("cjson").decode(r.body)
    for _, row in ipairs(rows) do
      assert.are.equal(row.addr ~= addrs[2], row.healthy, row.addr)
      if row.addr == addrs[2] then
        assert.is_string(row.last_error)
      end
    end
  end)

  it("sends traffic to the backend again within the check period + 1 s", function()
    local again = assert(nginx.start_backends({ addrs[2] }))
    backends[2] = again[1]
    local ok = nginx.wait_for(function()
      local b = front.count(front.get(srv, 60))
      return (b[addrs[2]] or 0) > 0
    end, CHECK_PERIOD + 1)
    assert(ok, addrs[2] .. " got no traffic after it came back")
    -- and in every worker: each keeps its own health view
    assert(nginx.wait_for(function()
      local b = front.count(front.get(srv, 300))
      return (b[addrs[2]] or 0) >= 80
    end, CHECK_PERIOD + 1))
  end)
end)
