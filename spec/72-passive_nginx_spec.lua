-- Passive health in nginx (2 workers, each with its own counts): a
-- backend answering 500 to everything is ejected by the requests
-- themselves (peer:log() reports every attempt), clients see no error
-- (retries on 500), it returns after ejection_time without any active
-- check and is ejected again, on_health_change hears of each flip, and
-- every in-flight count is 0 after the traffic.  Panic mode keeps traffic
-- flowing when checks mark every backend down.

local nginx = require("support.nginx")
local front = require("support.front")
local cjson = require("cjson")

local EJECTION = 0.5

-- A backend that answers 500 to everything.
local function start_failing(addr)
  return front.failing_backend(addr, 500)
end

-- A location that retries on 500 and reports every attempt.
local PASSIVE_LOCATION = [[
        location /p/ {
            proxy_pass http://lb_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout http_500 http_503;
            add_header X-Worker $pid always;
            add_header X-Upstream $upstream_addr always;
            log_by_lua_block { peer:log() }
        }
        location = /flips {
            content_by_lua_block {
                local d = ngx.shared.lb_test
                ngx.say(cjson_encode({ eject = d:get("eject") or 0,
                                       back = d:get("back") or 0,
                                       err = d:get("err") }))
            }
        }
]]

-- status() rows of each worker: { [pid] = rows }, asking over several
-- connections until both workers answered.
local function status_by_worker(srv)
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

local function flips(srv)
  return cjson.decode(assert(nginx.get(srv.addr, "/flips")).body)
end

local function row_of(rows, addr)
  for _, r in ipairs(rows) do
    if r.addr == addr then return r end
  end
end

describe("passive health in nginx (2 workers)", function()
  local addrs, backends, bad, srv

  setup(function()
    addrs, backends = nginx.loopback_backends(2)
    bad = "127.0.0.1:" .. assert(nginx.free_port())
    addrs[3] = bad
    backends[3] = start_failing(bad)
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        cjson_encode = require("cjson").encode
        app = assert(lb.new({
          backends = %s,
          passive = { consecutive_failures = 3, ejection_time = %s,
                      max_ejection_time = %s, max_ejection_percent = 50 },
          on_health_change = function(b, healthy, err)
            local d = ngx.shared.lb_test
            if healthy then
              d:incr("back", 1, 0)
            else
              d:incr("eject", 1, 0)
              d:set("err", b.addr .. " " .. tostring(err))
            end
          end,
        }))
      ]]):format(front.lua_list(addrs), EJECTION, EJECTION),
      init_worker = "assert(app:start())",
      server_extra = PASSIVE_LOCATION,
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  it("ejects the failing backend in every worker; clients see no error", function()
    local reqs = {}
    for i = 1, 400 do reqs[i] = "/p/" .. i end
    local res = assert(nginx.get_spread(srv.addr, reqs, 8,
                                        front.spread(srv)))
    local by_backend, by_worker, non2xx = front.count(res)
    assert.equal(0, non2xx)
    assert.is_nil(by_backend[bad])
    assert.equal(2, front.size(by_worker))
    -- every worker has ejected it at least once
    for pid, rows in pairs(status_by_worker(srv)) do
      local r = row_of(rows, bad)
      assert.is_true(r.ejections >= 1, "worker " .. pid)
    end
    -- on_health_change runs in each worker's event timer (every 0.1 s)
    local f
    nginx.wait_for(function()
      f = flips(srv)
      return f.eject >= 2
    end, 5)
    assert.is_true(f.eject >= 2, cjson.encode(f))
    assert.equal(bad .. " ejected: 3 consecutive failures", f.err)
  end)

  it("returns after ejection_time and is ejected again, once per period", function()
    local before = flips(srv)
    -- load for about 6 ejection periods
    local load = assert(nginx.wrk(srv.url .. "/p/", { duration = 3,
                                                       connections = 8 }))
    finally(function() load:stop() end)
    local r = assert(load:wait())
    assert.is_true(r.requests > 1000, "only " .. r.requests .. " requests")
    assert.equal(0, r.failed, r.text)
    local f = flips(srv)
    local ejected, back = f.eject - before.eject, f.back - before.back
    print(("\n  passive: %d requests in 3 s, 0 failed; %d ejections, %d "
           .. "returns over 2 workers (ejection_time %.1f s)")
          :format(r.requests, ejected, back, EJECTION))
    -- each worker: about one return per period, and each return is
    -- followed by a new ejection after a few requests
    assert.is_true(back >= 4, cjson.encode(f))
    assert.is_true(ejected >= 4, cjson.encode(f))
    assert.is_true(back <= 2 * (3 / EJECTION + 2), cjson.encode(f))
  end)

  it("leaves no request in flight after the traffic", function()
    for pid, rows in pairs(status_by_worker(srv)) do
      for _, row in ipairs(rows) do
        assert.equal(0, row.in_flight, pid .. " " .. row.addr)
      end
    end
  end)
end)

describe("panic mode in nginx", function()
  local addrs, srv

  setup(function()
    addrs = nginx.loopback_backends(3)
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({
          backends = %s,
          panic_threshold = 0.5,
          -- every backend answers, but the check says they are all down
          health_check = function() return nil, "forced down" end,
          health_check_frequency = 0.2,
        }))
      ]]):format(front.lua_list(addrs)),
      init_worker = "assert(app:start())",
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  it("keeps traffic flowing when every backend is down", function()
    assert(nginx.wait_for(function()
      local all = status_by_worker(srv)
      for _, rows in pairs(all) do
        for _, row in ipairs(rows) do
          if row.healthy or not row.panic then return false end
        end
      end
      return front.size(all) == 2
    end, 5), "the checks did not mark every backend down in both workers")
    local by_backend, by_worker, non2xx = front.count(front.get(srv, 300))
    assert.equal(0, non2xx)
    assert.equal(3, front.size(by_backend))
    assert.equal(2, front.size(by_worker))
  end)
end)

describe("a client that goes away in nginx", function()
  local slow, srv

  setup(function()
    slow = "127.0.0.1:" .. assert(nginx.free_port())
    local host, port = nginx.split_addr(slow)
    assert(nginx.start({
      lua = true,
      http = ("    server {\n        listen %s:%s;\n        location / {\n"
              .. "            content_by_lua_block { ngx.sleep(3) "
              .. "ngx.say('slow') }\n        }\n    }\n"):format(host, port),
      wait = { slow }, workers = 1 }))
    srv = assert(front.start({
      init = ([[
        cjson_encode = require("cjson").encode
        app = assert(require("lb").new({ backends = { %q }, passive = {} }))
      ]]):format(slow),
      server_extra = PASSIVE_LOCATION,
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function in_flight()
    local n = 0
    for _, rows in pairs(status_by_worker(srv)) do
      n = n + rows[1].in_flight
    end
    return n
  end

  it("releases the attempt when the client closes before the response", function()
    local c = assert(nginx.connect(srv.addr))
    finally(function() c:close() end)
    assert(c:send("GET /p/slow HTTP/1.1\r\nHost: front\r\n\r\n"))
    assert(nginx.wait_for(function() return in_flight() == 1 end, 5),
           "the request was not counted in flight")
    c:close()
    -- nginx sees the closed connection, finalizes the request (499) and
    -- runs its log phase: peer:log() releases the attempt
    assert(nginx.wait_for(function() return in_flight() == 0 end, 2.5),
           "the aborted request's attempt stayed in flight")
  end)
end)

describe("peer:log() with a unix socket path that holds a space", function()
  local dir, addr, srv

  setup(function()
    dir = assert(nginx.mkdtemp("lb-log-unix"))
    os.execute("chmod 755 " .. nginx.q(dir)) -- nginx workers run as nobody
    addr = "unix:" .. dir .. "/a b.sock"
    assert(nginx.start({
      http = ("    server {\n        listen %q;\n"
              .. "        location / { return 200 \"ok\"; }\n    }\n")
        :format(addr),
      wait = { addr }, workers = 1 }))
    srv = assert(front.start({
      init = ([[
        cjson_encode = require("cjson").encode
        app = assert(require("lb").new({ backends = { %q }, passive = {} }))
      ]]):format(addr),
      server_extra = PASSIVE_LOCATION,
    }))
  end)

  teardown(function()
    nginx.stop_all()
    nginx.rmtree(dir)
  end)

  it("releases and reports every attempt (one entry, not a list)", function()
    local reqs = {}
    for i = 1, 40 do reqs[i] = "/p/" .. i end
    local res = assert(nginx.get_spread(srv.addr, reqs, 4))
    for _, r in ipairs(res) do
      assert.equal(200, r.status)
      assert.equal(addr, r.headers["x-upstream"])
    end
    local selected = 0
    for pid, rows in pairs(status_by_worker(srv)) do
      assert.equal(0, rows[1].in_flight, "worker " .. pid)
      selected = selected + rows[1].selected
    end
    assert.equal(40, selected)
  end)
end)

-- Two backends of one address at two weights (two identities): $upstream_addr
-- gives the address only, so peer:log() must not release the same one of
-- them every time.  A private balancer, and a shared one (each worker's
-- own share of the counts).
for _, shared in ipairs({ false, true }) do
  describe("peer:log() with one address at two weights"
           .. (shared and " (shared)" or ""), function()
    local addr, srv

    setup(function()
      addr = nginx.loopback_backends(1)[1]
      srv = assert(front.start({
        init = ([[
          cjson_encode = require("cjson").encode
          app = assert(require("lb").new({ selection = "round_robin",
            backends = { { addr = %q, weight = 1 }, { addr = %q, weight = 2 } },
            passive = {}, shared = %s }))
        ]]):format(addr, addr, tostring(shared)),
        server_extra = PASSIVE_LOCATION,
      }))
    end)

    teardown(function()
      nginx.stop_all()
    end)

    it("leaves neither in flight, and reports each attempt once", function()
      local reqs = {}
      for i = 1, 60 do reqs[i] = "/p/" .. i end
      local res = assert(nginx.get_spread(srv.addr, reqs, 4,
                                          front.spread(srv)))
      for _, r in ipairs(res) do
        assert.equal(200, r.status)
      end
      local selected = {}
      for pid, rows in pairs(status_by_worker(srv)) do
        assert.equal(2, #rows)
        local n = 0
        for _, row in ipairs(rows) do
          assert.equal(0, row.in_flight, ("worker %s, weight %d")
                                         :format(pid, row.weight))
          n = n + row.selected
        end
        selected[#selected + 1] = n
      end
      -- a private balancer counts each worker's; a shared one every
      -- worker's, in each
      if shared then
        assert.same({ 60, 60 }, selected)
      else
        assert.equal(60, selected[1] + selected[2])
      end
    end)
  end)
end
