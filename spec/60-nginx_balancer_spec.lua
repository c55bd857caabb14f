-- lb.nginx in real nginx (2 workers): round-robin split, consistent
-- hashing against nginx's own, IPv4/IPv6/unix peers, retries that skip
-- the tried backend, disabled backends, the user's accept rule, status.

local nginx = require("support.nginx")
local front = require("support.front")

local lua_list = front.lua_list

local function near(want, got, tolerance, what)
  assert(got and math.abs(got - want) <= tolerance,
         ("%s: %s requests, want %d +- %d"):format(what, tostring(got), want,
                                                  tolerance))
end

describe("lb.nginx in balancer_by_lua (2 workers)", function()
  local addrs, srv

  setup(function()
    addrs = nginx.loopback_backends(3)
  end)

  teardown(function()
    nginx.stop_all()
  end)

  after_each(function()
    if srv then srv:stop(); srv = nil end
  end)

  local function start(opts)
    srv = assert(front.start(opts))
    return srv
  end

  it("splits round robin 1:2:3 within 5% over 3,000 requests", function()
    start({ init = ([[
        app = assert(require("lb").new({ backends = {
          { addr = %q, weight = 1 }, { addr = %q, weight = 2 },
          { addr = %q, weight = 3 } } }))
      ]]):format(addrs[1], addrs[2], addrs[3]) })
    local n = 3000
    local by_backend, by_worker, bad = front.count(front.get(srv, n))
    assert.are.equal(0, bad)
    for i, w in ipairs({ 1, 2, 3 }) do
      local want = n * w / 6
      local got = by_backend[addrs[i]] or 0
      assert(math.abs(got - want) <= 0.05 * want,
             ("%s: %d requests, want %d +- 5%%"):format(addrs[i], got, want))
    end
    -- The balancer was made in init_by_lua (the master): every worker uses it.
    assert.are.equal(2, front.size(by_worker))
  end)

  -- reuseport hashes each connection to a worker: 8 connections all land
  -- on one of 2 workers once in 128 sets, 2 connections once in 2.  The
  -- front's requests reopen the set until every worker answered.
  it("reaches both workers on every send, even over 2 connections", function()
    start({ init = ([[
        app = assert(require("lb").new({ backends = %s }))
      ]]):format(lua_list(addrs)) })
    for i = 1, 20 do
      local _, by_worker, bad = front.count(front.get(srv, 4, 2))
      assert.are.equal(0, bad)
      assert.are.equal(2, front.size(by_worker), "send " .. i)
    end
  end)

  it("works with a balancer made in init_worker_by_lua", function()
    start({ init_worker = ([[
        app = assert(require("lb").new({ backends = %s }))
        peer = assert(require("lb.nginx").new(app))
      ]]):format(lua_list(addrs)) })
    -- 32 connections: each worker's share is 16 of them on average
    local by_backend, by_worker, bad = front.count(front.get(srv, 600, 32))
    assert.are.equal(0, bad)
    -- each worker keeps its own round-robin position: off by one at most
    for _, a in ipairs(addrs) do near(200, by_backend[a], 2, a) end
    assert.are.equal(2, front.size(by_worker))
  end)

  it("sends each X-Key to one backend: the one of nginx's hash $http_x_key consistent",
     function()
    local native = assert(nginx.free_port())
    local servers = {}
    for i, a in ipairs(addrs) do
      servers[i] = ("            server %s weight=%d max_fails=0;"):format(a, i)
    end
    start({
      init = ([[
        app = assert(require("lb").new({ selection = "consistent", backends = {
          { addr = %q, weight = 1 }, { addr = %q, weight = 2 },
          { addr = %q, weight = 3 } } }))
      ]]):format(addrs[1], addrs[2], addrs[3]),
      peer_opts = [[{ key = "header:X-Key" }]],
      http_extra = ([[
    upstream native {
        hash $http_x_key consistent;
%s
        keepalive 16;
    }
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://native;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
]]):format(table.concat(servers, "\n"), native),
    })
    local reqs = {}
    for i = 1, 300 do
      local key = "user-" .. i
      reqs[#reqs + 1] = { path = "/a", headers = { ["X-Key"] = key } }
      reqs[#reqs + 1] = { path = "/b?" .. i, headers = { ["X-Key"] = key } }
    end
    local ours = front.get(srv, reqs)
    local theirs = assert(nginx.get_many("127.0.0.1:" .. native, reqs))
    local seen, used = {}, {}
    for i, r in ipairs(reqs) do
      local key = r.headers["X-Key"]
      assert.are.equal(200, ours[i].status)
      assert.are.equal(theirs[i].body, ours[i].body, "key " .. key)
      assert(seen[key] == nil or seen[key] == ours[i].body,
             key .. " went to two backends")
      seen[key] = ours[i].body
      used[ours[i].body] = true
    end
    assert.are.equal(3, front.size(used))
  end)

  it("sets IPv4, IPv6 and unix-socket peers", function()
    local dir = assert(nginx.mkdtemp("lb-unix"))
    os.execute("chmod 755 " .. nginx.q(dir)) -- nginx workers run as nobody
    local list = { "127.0.0.2:" .. assert(nginx.free_port("127.0.0.2")),
                   "unix:" .. dir .. "/b.sock" }
    if nginx.has_ipv6() then
      list[#list + 1] = "[::1]:" .. assert(nginx.free_port("::1"))
    end
    local more, err = nginx.start_backends(list)
    finally(function()
      if more then for _, s in ipairs(more) do s:stop() end end
      nginx.rmtree(dir)
    end)
    assert(more, err)
    start({ init = ("app = assert(require('lb').new({ backends = %s }))")
                     :format(lua_list(list)) })
    local by_backend = front.count(front.get(srv, 60))
    for _, a in ipairs(list) do
      near(60 / #list, by_backend[a], 2, a)
    end
    if not nginx.has_ipv6() then
      pending("no IPv6 loopback: the IPv6 peer was not exercised")
    end
  end)

  it("retries on another backend, skipping the one that failed", function()
    -- A backend nobody listens on, and no health check: every request that
    -- picks it first is retried elsewhere.
    local dead = "127.0.0.1:" .. assert(nginx.free_port())
    start({ init = ("app = assert(require('lb').new({ backends = %s }))")
                     :format(lua_list({ dead, addrs[1], addrs[2] })) })
    local res = front.get(srv, 300)
    local retried = 0
    for _, r in ipairs(res) do
      assert.are.equal(200, r.status)
      local up = r.headers["x-upstream"]
      if up:find(dead, 1, true) then
        retried = retried + 1
        -- exactly one failed attempt, then a live backend
        assert.are.equal(dead .. ", " .. r.body, up)
      end
    end
    assert(retried >= 90, "only " .. retried .. " requests tried " .. dead)
  end)

  it("never retries a backend this request already tried", function()
    -- Two dead backends and one live one, three tries: a request may fail
    -- on both dead ones, but never on the same one twice.
    local dead1 = "127.0.0.1:" .. assert(nginx.free_port())
    local dead2 = "127.0.0.1:" .. assert(nginx.free_port())
    start({ init = ("app = assert(require('lb').new({ backends = %s, "
                    .. "selection = 'random' }))")
                     :format(lua_list({ dead1, dead2, addrs[1] })) })
    local res = front.get(srv, 300)
    local twice = 0
    for _, r in ipairs(res) do
      assert.are.equal(200, r.status)
      local up = r.headers["x-upstream"]
      local seen = {}
      for a in up:gmatch("[^,%s]+") do
        assert.is_nil(seen[a], up)
        seen[a] = true
      end
      if seen[dead1] and seen[dead2] then
        twice = twice + 1
        assert.are.equal(r.body, up:match("([^,%s]+)$"))
      end
    end
    assert(twice >= 20, "only " .. twice .. " requests tried both dead ones")
  end)

  it("sends nothing to a disabled backend, also after disabling at runtime", function()
    -- Discovery reads the enablement from a shared dict, so every worker
    -- applies it on its next update.
    start({
      init = ([[
        local list = %s
        local dict = ngx.shared.lb_test
        dict:set(list[1], false)
        app = assert(require("lb").new({
          update_frequency = 0.2,
          discovery = function()
            local en = {}
            for _, a in ipairs(list) do en[a] = dict:get(a) ~= false end
            return list, en
          end }))
        assert(app:update())
      ]]):format(lua_list(addrs)),
      init_worker = "assert(app:start())",
      server_extra = [[
        location = /disable {
            content_by_lua_block {
                ngx.shared.lb_test:set(ngx.var.arg_addr, false)
                ngx.say("ok")
            }
        }
]],
    })
    local by_backend = front.count(front.get(srv, 600))
    assert.is_nil(by_backend[addrs[1]])
    assert.are.equal(600, by_backend[addrs[2]] + by_backend[addrs[3]])

    assert.are.equal(200, nginx.get(srv.addr, "/disable?addr=" .. addrs[2]).status)
    -- Both workers apply it within update_frequency (+ 1 s of margin).
    assert(nginx.wait_for(function()
      local b = front.count(front.get(srv, 200))
      return b[addrs[2]] == nil
    end, 1.2), "still sending to the backend disabled at runtime")
    local b = front.count(front.get(srv, 1000))
    assert.is_nil(b[addrs[1]])
    assert.is_nil(b[addrs[2]])
    assert.are.equal(1000, b[addrs[3]])
  end)

  it("takes only what the user's accept rule takes", function()
    start({
      init = ("app = assert(require('lb').new({ backends = %s }))")
               :format(lua_list(addrs)),
      peer_opts = ([[{ accept = function(b, healthy)
        return healthy and b.addr ~= %q end }]]):format(addrs[2]),
    })
    local by_backend = front.count(front.get(srv, 300))
    assert.is_nil(by_backend[addrs[2]])
    assert.are.equal(300, by_backend[addrs[1]] + by_backend[addrs[3]])
  end)

  it("answers 502 without connecting anywhere when no backend is ready", function()
    start({
      init = ("app = assert(require('lb').new({ backends = %s }))")
               :format(lua_list(addrs)),
      peer_opts = "{ accept = function() return false end }",
    })
    local res = front.get(srv, 10, 2)
    for _, r in ipairs(res) do
      assert.are.equal(502, r.status)
      assert.are.equal("", r.headers["x-upstream"] or "")
    end
    assert.matches("no backend available", srv:error_log(), 1, true)
  end)

  it("runs a cosocket check (connect_check) from every worker's timers", function()
    local dead = "127.0.0.1:" .. assert(nginx.free_port())
    start({
      init = ([[
        app = assert(require("lb").new({ backends = %s,
          health_check = require("lb.nginx").connect_check(0.5),
          health_check_frequency = 0.2 }))
      ]]):format(lua_list({ dead, addrs[1] })),
      init_worker = "assert(app:start())",
    })
    -- both workers have marked the dead backend down: no request retried
    assert(nginx.wait_for(function()
      local res = front.get(srv, 100)
      local workers = {}
      for _, r in ipairs(res) do
        if r.headers["x-upstream"] ~= addrs[1] then return false end
        workers[r.headers["x-worker"]] = true
      end
      return front.size(workers) == 2
    end, 2))
    local rows = require("cjson").decode(nginx.get(srv.addr, "/lb-status").body)
    for _, row in ipairs(rows) do
      assert.are.equal(row.addr ~= dead, row.healthy)
      if row.addr == dead then assert.matches("^connect: ", row.last_error) end
    end
  end)

  it("serves status() as JSON", function()
    start({ init = ("app = assert(require('lb').new({ backends = %s }))")
                     :format(lua_list(addrs)) })
    local r = assert(nginx.get(srv.addr, "/lb-status"))
    assert.are.equal(200, r.status)
    assert.matches("application/json", r.headers["content-type"], 1, true)
    local rows = require("cjson").decode(r.body)
    assert.are.equal(3, #rows)
    for i, row in ipairs(rows) do
      assert.are.equal(addrs[i], row.addr)
      assert.is_true(row.ready)
      assert.is_true(row.healthy)
      assert.is_true(row.enabled)
      assert.are.equal(1, row.weight)
    end
  end)
end)
