-- Discovery written in Lua, in nginx (2 workers): every worker asks a
-- local HTTP endpoint for the backend list with a cosocket, from the timer
-- that start() set up.  A backend discovery adds receives traffic within
-- update_frequency + 1 s; one it removes receives nothing after that.

local nginx = require("support.nginx")
local front = require("support.front")

local UPDATE = 0.5

describe("discovery with a cosocket in nginx (2 workers)", function()
  local addrs, srv

  setup(function()
    addrs = nginx.loopback_backends(3)
    local registry = assert(nginx.free_port())
    srv = assert(front.start({
      init = ([[
        local dict = ngx.shared.lb_test
        dict:set("backends", %q)
        -- Ask the registry (a location of this nginx) for "addr\n" lines.
        local function discover()
          local sock = ngx.socket.tcp()
          sock:settimeout(1000)
          assert(sock:connect("127.0.0.1", %d))
          assert(sock:send("GET /backends HTTP/1.0\r\nHost: registry\r\n\r\n"))
          local resp = assert(sock:receive("*a"))
          sock:close()
          local status, body = resp:match("^HTTP/1%%.%%d (%%d+).-\r\n\r\n(.*)$")
          assert(status == "200", "registry answered " .. tostring(status))
          local list = {}
          for addr in body:gmatch("[^\n]+") do list[#list + 1] = addr end
          return list
        end
        app = assert(require("lb").new({ discovery = discover,
                                         update_frequency = %s }))
      ]]):format(addrs[1] .. "\n" .. addrs[2], registry, UPDATE),
      init_worker = "assert(app:start())",
      http_extra = ([[
    server {
        listen 127.0.0.1:%d;
        location = /backends {
            content_by_lua_block {
                if ngx.req.get_method() == "PUT" then
                    ngx.req.read_body()
                    ngx.shared.lb_test:set("backends", ngx.req.get_body_data())
                end
                ngx.print(ngx.shared.lb_test:get("backends"))
            }
        }
    }
]]):format(registry),
    }))
    srv.registry = "127.0.0.1:" .. registry
    -- Both workers ran their first discovery.
    assert(nginx.wait_for(function()
      local _, by_worker, bad = front.count(front.get(srv, 100))
      return bad == 0 and front.size(by_worker) == 2
    end, 5), "discovery did not run in both workers")
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function set_backends(list)
    local r = assert(nginx.client(srv.registry):request({
      method = "PUT", path = "/backends", body = table.concat(list, "\n") }))
    assert.are.equal(200, r.status)
  end

  it("uses what discovery returned", function()
    local by_backend, by_worker, bad = front.count(front.get(srv, 600))
    assert.are.equal(0, bad)
    assert.are.equal(2, front.size(by_worker))
    assert.are.equal(600, by_backend[addrs[1]] + by_backend[addrs[2]])
    assert.is_nil(by_backend[addrs[3]])
  end)

  it("sends traffic to an added backend within update_frequency + 1 s", function()
    local t0 = require("socket").gettime()
    set_backends({ addrs[1], addrs[2], addrs[3] })
    -- every worker: a third of 300 requests spread over both
    local ok = nginx.wait_for(function()
      local b = front.count(front.get(srv, 300))
      return (b[addrs[3]] or 0) >= 90
    end, UPDATE + 1)
    assert(ok, "the added backend got no traffic within " .. (UPDATE + 1) .. " s")
    print(("\n  discovery: added backend served after %.2f s (update_frequency %.1f s)")
          :format(require("socket").gettime() - t0, UPDATE))
  end)

  it("sends nothing to a removed backend after the next update", function()
    set_backends({ addrs[2], addrs[3] })
    assert(nginx.wait_for(function()
      local b = front.count(front.get(srv, 200))
      return b[addrs[1]] == nil
    end, UPDATE + 1))
    local by_backend, _, bad = front.count(front.get(srv, 1000))
    assert.are.equal(0, bad)
    assert.is_nil(by_backend[addrs[1]])
  end)

  it("keeps the last list while discovery fails", function()
    set_backends({ "not an address" })
    -- wait until both workers have tried (and failed) at least once
    assert(nginx.wait_for(function()
      local pids = {}
      for pid in srv:error_log():gmatch("(%d+)#%d+: [^\n]*update failed, keeping") do
        pids[pid] = true
      end
      return front.size(pids) == 2
    end, UPDATE + 1))
    local by_backend, _, bad = front.count(front.get(srv, 300))
    assert.are.equal(0, bad)
    assert.are.equal(300, (by_backend[addrs[2]] or 0) + (by_backend[addrs[3]] or 0))
  end)
end)
