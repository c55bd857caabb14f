-- Passive health with `shared` in nginx (2 workers, retries on 503): the
-- requests of both workers count against the same records, so a backend
-- answering 503 to everything is ejected in every worker after a handful
-- of requests, clients see no error over an 8 s wrk run, the backend is
-- tried again about once per ejection period, and every in-flight count
-- (the total of both workers) is 0 after the load.

local nginx = require("support.nginx")
local front = require("support.front")
local cjson = require("cjson")

local EJECTION = 1

local function start_failing(addr)
  return front.failing_backend(addr, 503)
end

describe("passive health in nginx, shared (2 workers)", function()
  local addrs, bad, srv

  setup(function()
    addrs = nginx.loopback_backends(2)
    bad = "127.0.0.1:" .. assert(nginx.free_port())
    addrs[3] = bad
    start_failing(bad)
    srv = assert(front.start({
      workers = 2,
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({
          backends = %s,
          shared = true,
          passive = { consecutive_failures = 3, ejection_time = %s,
                      max_ejection_time = %s },
          on_health_change = function(b, healthy)
            ngx.shared.lb_test:incr(healthy and "back" or "eject", 1, 0)
          end,
        }))
      ]]):format(front.lua_list(addrs), EJECTION, EJECTION),
      init_worker = "assert(app:start())",
      server_extra = [[
        location /p/ {
            proxy_pass http://lb_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_503;
            add_header X-Worker $pid always;
            log_by_lua_block { peer:log() }
        }
        location = /counts {
            content_by_lua_block {
                local d = ngx.shared.lb_test
                ngx.say((d:get("eject") or 0) .. " " .. (d:get("back") or 0))
            }
        }
      ]],
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function rows_by_worker()
    local out = {}
    nginx.wait_for(function()
      local reqs = {}
      for i = 1, 16 do reqs[i] = "/lb-status?" .. i end
      for _, r in ipairs(assert(nginx.get_spread(srv.addr, reqs, 8))) do
        out[r.headers["x-lb-worker"]] = cjson.decode(r.body)
      end
      return front.size(out) >= 2
    end, 5)
    return out
  end

  local function row(rows, addr)
    for _, r in ipairs(rows) do
      if r.addr == addr then return r end
    end
  end

  local function counts()
    local e, b = assert(nginx.get(srv.addr, "/counts")).body:match("(%d+) (%d+)")
    return tonumber(e), tonumber(b)
  end

  it("ejects in every worker, 0 errors over 8 s, one retry per period",
     function()
    local reqs = {}
    for i = 1, 40 do reqs[i] = "/p/" .. i end
    local res = front.get(srv, reqs)
    local _, _, bad_n = front.count(res)
    assert.equal(0, bad_n)
    -- one ejection in the region: both workers see it at once
    local all = rows_by_worker()
    assert.equal(2, front.size(all))
    for pid, rows in pairs(all) do
      local r = row(rows, bad)
      assert.is_true(r.ejected or r.ejections >= 1, pid)
    end
    local e0, b0 = counts()
    local load = assert(nginx.wrk(srv.url .. "/p/", { duration = 8,
                                                       connections = 8 }))
    finally(function() load:stop() end)
    local r = assert(load:wait())
    local e1, b1 = counts()
    print(("\n  passive, shared: %d requests in 8 s, %d non-2xx, %d failed; "
           .. "%d ejections, %d returns (ejection_time %g s, 2 workers)")
          :format(r.requests, r.non2xx, r.failed, e1 - e0, b1 - b0, EJECTION))
    assert.is_true(r.requests > 1000)
    assert.equal(0, r.non2xx, r.text)
    assert.equal(0, r.failed, r.text)
    -- about one return per period for the host, not one per worker
    assert.is_true(b1 - b0 >= 2 and b1 - b0 <= 8 / EJECTION + 2,
                   (b1 - b0) .. " returns")
    -- the same records from both workers, nothing in flight
    all = rows_by_worker()
    local seen
    for _, rows in pairs(all) do
      for _, x in ipairs(rows) do
        assert.equal(0, x.in_flight, x.addr)
      end
      local ej = row(rows, bad).ejections
      if seen then assert.equal(seen, ej) end
      seen = ej
    end
  end)
end)
