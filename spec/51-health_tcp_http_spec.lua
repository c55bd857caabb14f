-- Built-in TCP and HTTP checks against real loopback servers: every option
-- of lb.health.tcp / lb.health.http, thresholds, parallel rounds,
-- on_health_change and status().
local lb = require("lb")
local h = require("helpers")
local nginx = require("support.nginx")
local servers = require("support.servers")

-- A balancer over `addrs` with `check`; flips are recorded in the
-- returned list as { addr, healthy, err }.
local function balancer(addrs, check, extra)
  local flips = {}
  local opts = {
    backends = addrs,
    health_check = check,
    on_health_change = function(be, healthy, err)
      flips[#flips + 1] = { be.addr, healthy, err }
    end,
  }
  for k, v in pairs(extra or {}) do
    opts[k] = v
  end
  return h.new(opts), flips
end

local row = h.row

-- Seconds taken by fn().
local function timed(fn)
  local t0 = lb.now()
  fn()
  return lb.now() - t0
end

local function closed_addr()
  return "127.0.0.1:" .. assert(nginx.free_port())
end

describe("lb.health.tcp", function()
  local srv
  setup(function()
    srv = servers.start("http")
  end)
  teardown(function()
    srv:stop()
  end)

  it("passes on a listening port and fails on a closed one", function()
    local closed = closed_addr()
    local b, flips = balancer({ srv:addr(), closed }, lb.health.tcp())
    assert.is_true(b:run_health_check())
    assert.is_true(b:ready(srv:addr()))
    assert.is_false(b:ready(closed))
    assert.same({ { closed, false, "connect: Connection refused" } }, flips)
    assert.equal("connect: Connection refused", row(b, closed).last_error)
    assert.is_nil(row(b, srv:addr()).last_error)
  end)

  it("counts the checks: ok, failed and skipped", function()
    local b = balancer({ srv:addr(), closed_addr() }, lb.health.tcp())
    assert.same({ ok = 0, failed = 0, skipped = 0 }, b:check_stats())
    assert.is_true(b:run_health_check())
    assert.is_true(b:run_health_check(true))
    assert.same({ ok = 2, failed = 2, skipped = 0 }, b:check_stats())
    assert.same({ ok = 0, failed = 0, skipped = 0 },
                h.new({ backends = { srv:addr() } }):check_stats())
  end)

  it("checks an IPv6 loopback listener", function()
    if not nginx.has_ipv6() then
      pending("no IPv6 loopback")
      return
    end
    local s6 = servers.start("http", { host = "::1" })
    finally(function() s6:stop() end)
    local closed6 = "[::1]:" .. assert(nginx.free_port("::1"))
    local b = balancer({ s6:addr(), closed6 }, lb.health.tcp())
    b:run_health_check()
    assert.is_true(b:ready(s6:addr()))
    assert.is_false(b:ready(closed6))
  end)

  it("recovers when the port starts listening, clearing last_error",
     function()
    local s2 = servers.start("http")
    finally(function() s2:stop() end)
    local addr = s2:addr()
    local b, flips = balancer({ addr }, lb.health.tcp())
    b:run_health_check()
    assert.is_true(b:ready(addr))
    s2:stop()
    b:run_health_check()
    assert.is_false(b:ready(addr))
    assert.equal("connect: Connection refused", row(b, addr).last_error)
    -- a new server on the same port
    local s3 = servers.start("http", { port = s2.ports[1] })
    finally(function() s3:stop() end)
    b:run_health_check()
    assert.is_true(b:ready(addr))
    assert.is_nil(row(b, addr).last_error)
    assert.same({ { addr, false, "connect: Connection refused" },
                  { addr, true, nil } }, flips)
  end)
end)

describe("lb.health.http", function()
  local ok200, s503, silent, garbage
  setup(function()
    ok200 = servers.start("http", { count = 2 })
    s503 = servers.start("http", { status = 503 })
    silent = servers.start("silent")
    garbage = servers.start("garbage")
  end)
  teardown(function()
    servers.stop_all()
  end)

  it("passes on 200 and fails on another status, with its text", function()
    local b, flips = balancer({ ok200:addr(), s503:addr() }, lb.health.http())
    b:run_health_check()
    assert.is_true(b:ready(ok200:addr()))
    assert.is_false(b:ready(s503:addr()))
    assert.same({ { s503:addr(), false, "unexpected status 503" } }, flips)
    assert.equal("unexpected status 503", row(b, s503:addr()).last_error)
  end)

  it("takes expected_status as a number", function()
    local b = balancer({ ok200:addr(), s503:addr() },
                       lb.health.http({ expected_status = 503 }))
    b:run_health_check()
    assert.is_false(b:ready(ok200:addr()))
    assert.equal("unexpected status 200", row(b, ok200:addr()).last_error)
    assert.is_true(b:ready(s503:addr()))
  end)

  it("takes expected_status as a list", function()
    local b = balancer({ ok200:addr(), s503:addr() },
                       lb.health.http({ expected_status = { 204, 503, 200 } }))
    b:run_health_check()
    assert.is_true(b:ready(ok200:addr()))
    assert.is_true(b:ready(s503:addr()))
    b = balancer({ ok200:addr(), s503:addr() },
                 lb.health.http({ expected_status = { 204, 301 } }))
    b:run_health_check()
    assert.is_false(b:ready(ok200:addr()))
    assert.is_false(b:ready(s503:addr()))
  end)

  it("sends method, path, Host and headers", function()
    local port = ok200.ports[2]
    local b = balancer({ ok200:addr(2) }, lb.health.http({
      method = "HEAD", path = "/health?deep=1", host = "app.example",
      headers = { ["X-Check"] = "lb", Accept = "text/plain" },
    }))
    b:run_health_check()
    assert.is_true(b:ready(ok200:addr(2)))
    local reqs = ok200:requests(port)
    assert.equal(1, #reqs)
    local req = reqs[1]
    assert.matches("^HEAD /health%?deep=1 HTTP/1%.1\r\n", req)
    assert.matches("\r\nHost: app%.example\r\n", req)
    assert.matches("\r\nX%-Check: lb\r\n", req)
    assert.matches("\r\nAccept: text/plain\r\n", req)
  end)

  it("sends GET / with the backend's address as Host by default", function()
    local port = ok200.ports[1]
    local before = ok200:count("req", port)
    local b = balancer({ ok200:addr(1) }, lb.health.http())
    b:run_health_check()
    local reqs = ok200:requests(port)
    assert.equal(before + 1, #reqs)
    assert.matches("^GET / HTTP/1%.1\r\n", reqs[#reqs])
    assert.matches("\r\nHost: " .. ok200:addr(1):gsub("%p", "%%%0") .. "\r\n",
                   reqs[#reqs])
  end)

  it("checks the port override instead of the backend's port", function()
    local closed = closed_addr()
    local port = s503.ports[1]
    local before = s503:count("req", port)
    local b = balancer({ closed }, lb.health.http({ port = port,
                                                    expected_status = 503 }))
    b:run_health_check()
    assert.is_true(b:ready(closed))
    assert.equal(before + 1, s503:count("req", port))
    -- the same backend without the override is refused
    b = balancer({ closed }, lb.health.http({ expected_status = 503 }))
    b:run_health_check()
    assert.is_false(b:ready(closed))
  end)

  it("keeps one connection across rounds with reuse_connection", function()
    local ka = servers.start("http", { keepalive = 1 })
    finally(function() ka:stop() end)
    local b = balancer({ ka:addr() }, lb.health.http({ reuse_connection = true }))
    for _ = 1, 4 do
      b:run_health_check()
    end
    assert.is_true(b:ready(ka:addr()))
    assert.equal(4, ka:count("req"))
    assert.equal(1, ka:count("conn"))
  end)

  it("opens a connection per round without reuse_connection", function()
    local ka = servers.start("http", { keepalive = 1 })
    finally(function() ka:stop() end)
    local b = balancer({ ka:addr() }, lb.health.http())
    for _ = 1, 3 do
      b:run_health_check()
    end
    assert.equal(3, ka:count("req"))
    assert.equal(3, ka:count("conn"))
  end)

  it("reconnects with reuse_connection when the server closes", function()
    -- this server answers with Connection: close
    local s = servers.start("http")
    finally(function() s:stop() end)
    local b = balancer({ s:addr() }, lb.health.http({ reuse_connection = true }))
    for _ = 1, 3 do
      b:run_health_check()
      assert.is_true(b:ready(s:addr()))
    end
    assert.equal(3, s:count("conn"))
  end)

  it("fails a server that never answers within the timeout", function()
    local b, flips = balancer({ silent:addr() }, lb.health.http({ timeout = 0.3 }))
    local el = timed(function() b:run_health_check() end)
    assert.is_false(b:ready(silent:addr()))
    assert.equal("timeout: response", row(b, silent:addr()).last_error)
    assert.same({ { silent:addr(), false, "timeout: response" } }, flips)
    assert.is_true(el >= 0.28 and el < 1.5, "round took " .. el)
  end)

  it("passes a slow answer within the timeout", function()
    local slow = servers.start("slow", { delay = 0.2 })
    finally(function() slow:stop() end)
    local b = balancer({ slow:addr() }, lb.health.http({ timeout = 1.5 }))
    local el = timed(function() b:run_health_check() end)
    assert.is_true(b:ready(slow:addr()))
    assert.is_true(el >= 0.19, "round took " .. el)
  end)

  it("fails a slow answer beyond the timeout", function()
    local slow = servers.start("slow", { delay = 2 })
    finally(function() slow:stop() end)
    local b = balancer({ slow:addr() }, lb.health.http({ timeout = 0.3 }))
    local el = timed(function() b:run_health_check() end)
    assert.is_false(b:ready(slow:addr()))
    assert.equal("timeout: response", row(b, slow:addr()).last_error)
    assert.is_true(el < 1.5, "round took " .. el)
  end)

  it("fails a server that sends garbage", function()
    local b, flips = balancer({ garbage:addr() }, lb.health.http())
    b:run_health_check()
    assert.is_false(b:ready(garbage:addr()))
    assert.equal("malformed response: bad status line",
                 row(b, garbage:addr()).last_error)
    assert.same({ { garbage:addr(), false,
                    "malformed response: bad status line" } }, flips)
  end)

  it("reports a refused connection", function()
    local closed = closed_addr()
    local b = balancer({ closed }, lb.health.http())
    b:run_health_check()
    assert.equal("connect: Connection refused", row(b, closed).last_error)
  end)
end)

describe("thresholds through run_health_check", function()
  local srv
  setup(function()
    srv = servers.start("http", { switchable = true })
  end)
  teardown(function()
    srv:stop()
  end)

  -- Pingora's observe_health: an opposite result counts up and flips at
  -- the threshold; an equal result resets the count.
  it("flips at consecutive_failure / consecutive_success, once per flip",
     function()
    local addr = srv:addr()
    local b, flips = balancer({ addr }, lb.health.http({
      consecutive_failure = 2, consecutive_success = 3 }))
    local steps = {
      -- status answered, ready after the round, flips so far
      { 503, true, 0 }, { 200, true, 0 }, { 503, true, 0 }, { 503, false, 1 },
      { 200, false, 1 }, { 200, false, 1 }, { 503, false, 1 },
      { 200, false, 1 }, { 200, false, 1 }, { 200, true, 2 },
      { 200, true, 2 }, { 503, true, 2 }, { 503, false, 3 },
    }
    for i, s in ipairs(steps) do
      srv:set_status(tostring(s[1]))
      b:run_health_check()
      assert.equal(s[2], b:ready(addr), "step " .. i)
      assert.equal(s[3], #flips, "step " .. i)
    end
    assert.same({ { addr, false, "unexpected status 503" },
                  { addr, true, nil },
                  { addr, false, "unexpected status 503" } }, flips)
  end)

  it("keeps a disabled backend not ready whatever its health", function()
    local addr = srv:addr()
    srv:set_status("200")
    local b = balancer({ addr }, lb.health.http())
    b:set_enable(addr, false)
    b:run_health_check()
    local r = row(b, addr)
    assert.is_true(r.healthy)
    assert.is_false(r.enabled)
    assert.is_false(r.ready)
  end)

  it("starts unhealthy with start_unhealthy until the first pass", function()
    local addr = srv:addr()
    srv:set_status("200")
    local b, flips = balancer({ addr }, lb.health.http(),
                              { start_unhealthy = true })
    assert.is_false(b:ready(addr))
    b:run_health_check()
    assert.is_true(b:ready(addr))
    assert.same({ { addr, true, nil } }, flips)
  end)
end)

describe("parallel rounds", function()
  local N, T = 20, 0.5
  local silent
  setup(function()
    silent = servers.start("silent", { count = N })
  end)
  teardown(function()
    silent:stop()
  end)

  it("check N silent servers in about one timeout, not N", function()
    local addrs = {}
    for i = 1, N do
      addrs[i] = silent:addr(i)
    end
    local b, flips = balancer(addrs, lb.health.http({ timeout = T }))
    local el = timed(function() b:run_health_check(true) end)
    assert.equal(N, #flips)
    for _, r in ipairs(b:status()) do
      assert.is_false(r.ready)
      assert.equal("timeout: response", r.last_error)
    end
    assert.is_true(el >= T * 0.95, "round took " .. el)
    assert.is_true(el < 3 * T, "round took " .. el .. " for " .. N
                   .. " backends, timeout " .. T)
  end)

  it("run one at a time when not parallel", function()
    local addrs = { silent:addr(1), silent:addr(2), silent:addr(3) }
    local b = balancer(addrs, lb.health.http({ timeout = 0.2 }))
    local el = timed(function() b:run_health_check(false) end)
    assert.is_true(el >= 3 * 0.2 * 0.95, "round took " .. el)
  end)

  it("follow parallel_health_check when no argument is given", function()
    local addrs = {}
    for i = 1, 10 do
      addrs[i] = silent:addr(i)
    end
    local b = balancer(addrs, lb.health.http({ timeout = 0.2 }),
                       { parallel_health_check = true })
    local el = timed(function() b:run_health_check() end)
    assert.is_true(el < 1.0, "round took " .. el)
  end)
end)
