-- The C core's discovery sources in real nginx (2 workers): an etcd-fed
-- balancer serves a backend put into etcd within a second in every worker
-- (timed over 20 puts), and a worker keeps serving while a DNS source
-- waits on a server that does not answer (update() returns at once, no
-- request stalls).
local nginx = require("support.nginx")
local front = require("support.front")
local etcd = require("support.etcd")
local dnsmasq = require("support.dnsmasq")
local socket = require("socket")

local P = "/services/front/"

describe("discovery sources in nginx (2 workers)", function()
  local addrs, srv, e, d

  setup(function()
    addrs = nginx.loopback_backends(3)
    e = etcd.start()
    e:put(P .. "one", addrs[1])
    d = dnsmasq.start({ hosts = "127.0.0.51 slow.lb.test\n", ttl = 1 })
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({ discovery = lb.discovery.etcd({
          endpoints = { %q }, prefix = %q, timeout = 1 }) }))
        dnsapp = assert(lb.new({ discovery = lb.discovery.dns({
          name = "slow.lb.test", port = 80, resolvers = { %q },
          timeout = 2, min_ttl = 0.2, max_ttl = 0.5 }) }))
        -- a host name from a Lua discovery: resolved on the C thread
        -- while the timer sleeps (lb.backend), never blocking the worker
        named = assert(lb.new({ discovery = function()
          return { %q }
        end, update_frequency = 0.5 }))
      ]]):format(e.endpoint, P, d.resolver,
                 "localhost:" .. addrs[1]:match("%d+$")),
      init_worker = "assert(app:start()); assert(dnsapp:start()); "
                    .. "assert(named:start())",
      server_extra = [[
        # this worker's pid and whether its balancer selects ?addr
        location = /has {
            content_by_lua_block {
                local want, seen = ngx.var.arg_addr, false
                for _ = 1, 8 do
                    local b = app:select()
                    if b and b.addr == want then seen = true break end
                end
                ngx.print(ngx.worker.pid(), " ", seen and "yes" or "no")
            }
        }
        location = /named {
            content_by_lua_block {
                local out = {}
                for _, b in ipairs(named:backends()) do
                    out[#out + 1] = b.addr
                end
                ngx.print(ngx.worker.pid(), " ", table.concat(out, " "))
            }
        }
        # update() on the DNS source: how long the worker was held
        location = /dns-update {
            content_by_lua_block {
                ngx.update_time()
                local t0 = ngx.now()
                local ok, err = dnsapp:update()
                ngx.update_time()
                local st = dnsapp:discovery_status()
                ngx.print(ngx.now() - t0, " ", tostring(ok), " ",
                          tostring(st.last_error))
            }
        }
      ]],
    }))
  end)

  teardown(function()
    nginx.stop_all()
    dnsmasq.stop_all()
    etcd.stop_all()
  end)

  -- until every worker selects `addr` (or `secs` pass): the time taken
  local function every_worker_has(addr, secs)
    local t0 = socket.gettime()
    local yes = {}
    while socket.gettime() - t0 < secs do
      local reqs = {}
      for i = 1, 8 do
        reqs[i] = { path = "/has?addr=" .. addr .. "&i=" .. i }
      end
      -- fresh connections land on both workers (reuseport)
      for _, r in ipairs(assert(nginx.get_spread(srv.addr, reqs, 4))) do
        local pid, v = r.body:match("^(%d+) (%a+)$")
        if pid then
          yes[pid] = v == "yes"
        end
      end
      local n, all = 0, true
      for _, v in pairs(yes) do
        n = n + 1
        all = all and v
      end
      if n == 2 and all then
        return socket.gettime() - t0
      end
    end
    return nil
  end

  it("serves etcd's set in every worker", function()
    assert.is_truthy(every_worker_has(addrs[1], 5))
    local by_backend, by_worker, bad = front.count(front.get(srv, 200))
    assert.equal(0, bad)
    assert.equal(2, front.size(by_worker))
    assert.equal(200, by_backend[addrs[1]])
  end)

  it("serves a backend put into etcd within 1 s in every worker", function()
    local times = {}
    for i = 1, 20 do
      local which = addrs[2 + i % 2]
      local other = addrs[2 + (i + 1) % 2]
      e:del(P .. "x")
      -- the previous one gone from every worker first
      assert.is_truthy(nginx.wait_for(function()
        local by_backend = front.count(front.get(srv, 40))
        return by_backend[other] == nil
      end, 5))
      local t0 = socket.gettime()
      e:put(P .. "x", which)
      local took = every_worker_has(which, 5)
      assert.is_truthy(took, "put " .. i .. " not seen in every worker")
      times[i] = socket.gettime() - t0
    end
    table.sort(times)
    local median = (times[10] + times[11]) / 2
    print(("\n  # etcd put -> every worker selects it: median %.3f s, "
           .. "max %.3f s (20 puts, etcdctl and polling included)")
          :format(median, times[20]))
    assert.is_true(median < 1, "median " .. median)
    assert.is_true(times[20] < 2, "max " .. times[20])
  end)

  it("resolves a host name from a Lua discovery in every worker", function()
    local want = "127.0.0.1:" .. addrs[1]:match("%d+$")
    assert.is_truthy(nginx.wait_for(function()
      local seen = {}
      for _, r in ipairs(assert(nginx.get_spread(srv.addr,
          { "/named?1", "/named?2", "/named?3", "/named?4" }, 4))) do
        local pid, list = r.body:match("^(%d+) (.*)$")
        if pid and (" " .. list .. " "):find(" " .. want .. " ", 1, true)
        then
          seen[pid] = true
        end
      end
      return front.size(seen) == 2
    end, 5))
    assert.is_nil(srv:error_log():find("update failed", 1, true))
  end)

  it("keeps serving while the DNS server does not answer", function()
    -- the DNS source has its set
    assert.is_truthy(nginx.wait_for(function()
      local r = nginx.get(srv.addr, "/dns-update")
      return r and r.body:find(" true nil$")
    end, 5))
    d:pause()
    local r = assert(nginx.get(srv.addr, "/dns-update"))
    local held = tonumber(r.body:match("^(%S+)"))
    assert.is_true(held < 0.05, "update() held the worker " .. held .. " s")
    -- requests during the timeouts (2 s each): none stalls
    local worst, n, times = 0, 0, {}
    local t_end = socket.gettime() + 2.5
    while socket.gettime() < t_end do
      local t0 = socket.gettime()
      local res = assert(nginx.get(srv.addr, "/r/" .. n))
      local dt = socket.gettime() - t0
      assert.equal(200, res.status)
      if dt > worst then worst = dt end
      n = n + 1
      times[n] = dt
    end
    local st
    assert.is_truthy(nginx.wait_for(function()
      st = assert(nginx.get(srv.addr, "/dns-update")).body
      return st:find("timeout")
    end, 6), "no timeout reported: " .. tostring(st))
    d:resume()
    table.sort(times)
    local p99 = times[math.max(1, math.ceil(n * 0.99))]
    print(("\n  # %d requests during DNS timeouts: p99 %.1f ms, slowest %.1f ms")
          :format(n, p99 * 1000, worst * 1000))
    -- A worker blocked in the resolver would hold a request for the whole
    -- 2 s timeout: the slowest must stay far below it.  The 50 ms bound is
    -- asked of the 99th percentile, so that one request delayed by a
    -- loaded machine (50.5 ms seen with two test runs at once) does not
    -- count as a stall.
    assert.is_true(worst < 0.5, "a request took " .. worst .. " s")
    assert.is_true(p99 < 0.05, "the 99th percentile took " .. p99 .. " s")
  end)
end)

describe("a DNS source of a shared balancer in nginx (2 workers)", function()
  local addrs, srv, d

  setup(function()
    addrs = nginx.loopback_backends(1)
    d = dnsmasq.start({ hosts = "127.0.0.1 shared.lb.test\n", ttl = 1 })
    srv = assert(front.start({
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({ shared = true,
          discovery = lb.discovery.dns({ name = "shared.lb.test",
            port = %d, resolvers = { %q }, timeout = 1,
            min_ttl = 1, max_ttl = 1 }) }))
      ]]):format(tonumber(addrs[1]:match("%d+$")), d.resolver),
      init_worker = "assert(app:start())",
    }))
  end)

  teardown(function()
    nginx.stop_all()
    dnsmasq.stop_all()
  end)

  it("is asked by the prober alone, once per TTL, and served by every "
     .. "worker", function()
    assert.is_truthy(nginx.wait_for(function()
      local by_backend, by_worker = front.count(front.get(srv, 40))
      return by_backend[addrs[1]] == 40 and front.size(by_worker) == 2
    end, 10), "both workers serve the discovered backend")
    local q0, t0 = d:queries("shared.lb.test"), socket.gettime()
    socket.sleep(5) -- a window to count queries in, not a wait for a state
    local n = d:queries("shared.lb.test") - q0
    local per_min = n / (socket.gettime() - t0) * 60
    print(("\n  # shared, 2 workers, TTL 1 s: %d DNS queries in 5 s "
           .. "(%.0f per minute)"):format(n, per_min))
    -- one per TTL (about 5), not one per worker (about 10)
    assert.is_true(n >= 3 and n <= 7, n .. " queries in 5 s")
  end)
end)
