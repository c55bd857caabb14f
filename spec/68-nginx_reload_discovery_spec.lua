-- A fresh worker never answers 502 for want of a first discovery: with
-- `backends` and `discovery` together, the list (set in init_by_lua, in
-- the master) is the set of every new worker until its first discovery,
-- which here takes 100 ms.  Five reloads under wrk load: not one 502.
--
-- With discovery alone the set of a new worker is empty until its first
-- discovery returns: the same load saw 2,197-2,724 responses 502 over 5
-- reloads.  The load opens one connection per request, as spec/63 does.

local nginx = require("support.nginx")
local front = require("support.front")

local RELOADS = 5

describe("nginx -s reload with a 100 ms discovery (2 workers)", function()
  local addrs, srv

  setup(function()
    addrs = nginx.loopback_backends(2)
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        local list = %s
        app = assert(lb.new({
          backends = list,
          discovery = function()
            ngx.sleep(0.1) -- a discovery that takes 100 ms
            return list
          end,
          update_frequency = 0.1,
        }))
      ]]):format(front.lua_list(addrs)),
      init_worker = "assert(app:start())",
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  it("answers no 502 over " .. RELOADS .. " reloads under load", function()
    local load = assert(nginx.wrk(srv.url .. "/", {
      duration = 1 + RELOADS, connections = 4,
      headers = { "Connection: close" } }))
    finally(function() load:stop() end)
    local start = front.served(srv)
    assert(nginx.wait_for(function() return front.served(srv) > start + 200 end, 5),
           "no load reached the front")
    for _ = 1, RELOADS do
      assert(srv:reload(10)) -- returns once the old workers are gone
    end
    local r = assert(load:wait())
    assert(r.requests > 500, "only " .. r.requests .. " requests")
    print(("\n  %d reloads, 100 ms discovery: %d requests, %d non-2xx, %d failed")
          :format(RELOADS, r.requests, r.non2xx, r.failed))
    assert.are.equal(0, r.non2xx, r.text)
    assert.are.equal(0, r.failed, r.text)
  end)
end)
