-- lb.discovery.dns against a real dnsmasq on loopback: A, AAAA and SRV
-- sets published by the C thread, TTL-driven changes, NXDOMAIN, a timeout
-- and a dead server keeping the last set (shown by discovery_status), and
-- recovery; SERVFAIL (a stub server) failing, or moving on to the next
-- resolver; the options lb.new checks.
local lb = require("lb")
local dnsmasq = require("support.dnsmasq")
local helpers = require("helpers")

local function addrs(b)
  local out = {}
  for _, be in ipairs(b:backends()) do
    out[#out + 1] = be.addr .. "/" .. be.weight
  end
  return table.concat(out, " ")
end

local function dns_balancer(d, o)
  o.resolvers = o.resolvers or { d.resolver }
  o.timeout = o.timeout or 0.5
  o.min_ttl = o.min_ttl or 0.2
  o.max_ttl = o.max_ttl or 1
  return assert(lb.new({ discovery = lb.discovery.dns(o) }))
end

describe("lb.discovery.dns", function()
  local d
  setup(function()
    d = dnsmasq.start({
      hosts = "127.0.0.11 a.lb.test\n127.0.0.12 a.lb.test\n"
              .. "::1 six.lb.test\n"
              .. "127.0.0.21 t1.lb.test\n127.0.0.22 t2.lb.test\n"
              .. "127.0.0.23 t3.lb.test\n",
      ttl = 1,
      srv = { "_app._tcp.lb.test,t1.lb.test,8001,10,5",
              "_app._tcp.lb.test,t2.lb.test,8002,10,7",
              "_app._tcp.lb.test,t3.lb.test,8003,20,9" },
    })
  end)
  teardown(function()
    dnsmasq.stop_all()
  end)

  it("publishes nothing before update() or start()", function()
    local b = dns_balancer(d, { name = "a.lb.test", port = 80 })
    assert.equal("", addrs(b))
    assert.is_false(b:discovery_status().ok)
  end)

  it("gives an A set on update() (plain Lua waits for the answer)", function()
    local b = dns_balancer(d, { name = "a.lb.test", port = 80 })
    assert.is_true(b:update())
    assert.equal("127.0.0.11:80/1 127.0.0.12:80/1", addrs(b))
    local st = b:discovery_status()
    assert.is_true(st.ok)
    assert.is_nil(st.last_error)
    assert.is_true(math.abs(st.updated_at - os.time()) < 5)
    assert.is_nil(st.revision)
    local picked = b:select()
    assert.is_truthy(picked.addr:match("^127%.0%.0%.1[12]:80$"))
    assert.equal(picked.addr, picked.host .. ":80")
  end)

  it("gives an AAAA set", function()
    local b = dns_balancer(d, { name = "six.lb.test", type = "AAAA",
                                port = 8080 })
    assert.is_true(b:update())
    assert.equal("[::1]:8080/1", addrs(b))
  end)

  it("gives SRV host, port and weight, lowest priority only", function()
    local b = dns_balancer(d, { name = "_app._tcp.lb.test", type = "SRV" })
    assert.is_true(b:update())
    assert.equal("127.0.0.21:8001/5 127.0.0.22:8002/7", addrs(b))
  end)

  it("keeps the same backend tables while they stay", function()
    local b = dns_balancer(d, { name = "a.lb.test", port = 80 })
    assert.is_true(b:update())
    local first = b:backends()[1]
    assert.is_true(b:update())
    assert.equal(first, b:backends()[1])
    assert.is_true(b:ready(first))
  end)

  it("re-resolves when the TTL runs out while started", function()
    d:set_hosts("127.0.0.31 ttl.lb.test\n")
    local b = dns_balancer(d, { name = "ttl.lb.test", port = 80 })
    assert.is_true(b:start())
    assert.is_truthy(helpers.wait_for(function()
      return addrs(b) == "127.0.0.31:80/1"
    end, 5, function() b:poll() end))
    local seen = b:select()
    d:set_hosts("127.0.0.31 ttl.lb.test\n127.0.0.32 ttl.lb.test\n")
    local t0 = lb.now()
    assert.is_truthy(helpers.wait_for(function()
      return addrs(b) == "127.0.0.31:80/1 127.0.0.32:80/1"
    end, 10, function() b:poll() end))
    -- TTL 1 s: the change shows within about one TTL
    assert.is_true(lb.now() - t0 < 4, "took " .. (lb.now() - t0))
    assert.equal(seen, b:backends()[1]) -- the table that stayed
    b:stop()
    assert.is_false(b:discovery_status().running)
  end)

  it("keeps the last set on NXDOMAIN and says why", function()
    local b = assert(lb.new({
      backends = { "127.0.0.99:80" },
      discovery = lb.discovery.dns({ name = "nothing.lb.test", port = 80,
                                     resolvers = { d.resolver },
                                     timeout = 0.5 }),
    }))
    local ok, err = b:update()
    assert.is_nil(ok)
    assert.matches("nothing.lb.test A: Domain name not found", err, 1, true)
    assert.equal("127.0.0.99:80/1", addrs(b))
    local st = b:discovery_status()
    assert.is_false(st.ok)
    assert.matches("not found", st.last_error)
  end)

  it("keeps the last set on SERVFAIL and says why", function()
    local f = dnsmasq.servfail()
    local b = assert(lb.new({
      backends = { "127.0.0.99:80" },
      discovery = lb.discovery.dns({ name = "a.lb.test", port = 80,
                                     resolvers = { f.resolver },
                                     timeout = 0.5 }),
    }))
    local ok, err = b:update()
    local asked = f:queries()
    f:close()
    assert.is_nil(ok)
    -- c-ares reports SERVFAIL from every server as it reports refused
    -- connections: the message names both
    assert.matches("a.lb.test A: Could not contact DNS servers (each "
                   .. "refused the connection, or answered SERVFAIL or "
                   .. "REFUSED)", err, 1, true)
    assert.is_true(asked >= 1, "the server was not asked")
    assert.equal("127.0.0.99:80/1", addrs(b))
    local st = b:discovery_status()
    assert.is_false(st.ok)
    assert.matches("SERVFAIL", st.last_error, 1, true)
  end)

  it("asks the next resolver after a SERVFAIL", function()
    d:set_hosts("127.0.0.51 sf.lb.test\n127.0.0.52 sf.lb.test\n")
    local f = dnsmasq.servfail()
    local b = dns_balancer(d, { name = "sf.lb.test", port = 80,
                                resolvers = { f.resolver, d.resolver } })
    local ok, err = b:update()
    local asked = f:queries()
    f:close()
    assert.is_true(ok, err)
    assert.equal("127.0.0.51:80/1 127.0.0.52:80/1", addrs(b))
    assert.is_true(asked >= 1, "the first resolver was not asked")
    assert.is_true(b:discovery_status().ok)
  end)

  it("keeps the last set through a timeout and a dead server, then "
     .. "recovers", function()
    d:set_hosts("127.0.0.41 r.lb.test\n")
    local b = dns_balancer(d, { name = "r.lb.test", port = 80,
                                timeout = 0.3 })
    assert.is_true(b:update())
    assert.equal("127.0.0.41:80/1", addrs(b))

    d:pause() -- nothing answers
    local t0 = lb.now()
    local ok, err = b:update()
    local took = lb.now() - t0
    d:resume()
    assert.is_nil(ok)
    assert.matches("timeout", err)
    assert.is_true(took < 1.5, "update() waited " .. took .. " s")
    assert.equal("127.0.0.41:80/1", addrs(b))
    assert.is_false(b:discovery_status().ok)

    d:stop() -- refused at once
    ok, err = b:update()
    assert.is_nil(ok)
    assert.is_truthy(err)
    assert.equal("127.0.0.41:80/1", addrs(b))

    assert.is_true(b:start())
    d:set_hosts("127.0.0.42 r.lb.test\n")
    d:start()
    assert.is_truthy(helpers.wait_for(function()
      return addrs(b) == "127.0.0.42:80/1"
    end, 10, function() b:poll() end))
    assert.is_true(b:discovery_status().ok)
    b:stop()
  end)

  it("hands on_health_change the tables of a set the C thread published",
     function()
    local nginx = require("support.nginx")
    local port = assert(nginx.free_port()) -- nothing listens there
    d:set_hosts("127.0.0.71 hc.lb.test\n127.0.0.72 hc.lb.test\n")
    local flips = {}
    local b = assert(lb.new({
      discovery = lb.discovery.dns({ name = "hc.lb.test", port = port,
                                     resolvers = { d.resolver },
                                     timeout = 0.5, min_ttl = 0.2,
                                     max_ttl = 1 }),
      health_check = lb.health.tcp({ timeout = 0.2 }),
      health_check_frequency = 0.2,
      on_health_change = function(be, healthy)
        flips[#flips + 1] = { be = be, healthy = healthy }
      end,
    }))
    assert.is_true(b:start())
    assert.is_truthy(helpers.wait_for(function() return #flips >= 2 end, 10,
                                      function() b:poll() end))
    b:stop()
    local mine = {}
    for _, be in ipairs(b:backends()) do
      mine[be] = true
    end
    for _, f in ipairs(flips) do
      assert.is_false(f.healthy)
      assert.is_true(mine[f.be] == true, "a table not of the set: "
                                         .. tostring(f.be.addr))
    end
    assert.is_false(b:ready(b:backends()[1]))
  end)

  it("asks again every update_frequency when the TTL is longer", function()
    -- a server whose answers live 60 s
    local long = dnsmasq.start({ hosts = "127.0.0.81 uf.lb.test\n"
                                         .. "127.0.0.82 ttl60.lb.test\n",
                                 ttl = 60 })
    local ok, err = pcall(function()
      local function make(name, uf)
        return assert(lb.new({
          update_frequency = uf,
          discovery = lb.discovery.dns({ name = name, port = 80,
                                         resolvers = { long.resolver },
                                         timeout = 2 }),
        }))
      end
      -- (a 2 s timeout: a slow answer must not count as a second question)
      local capped, by_ttl = make("uf.lb.test", 0.3), make("ttl60.lb.test")
      assert.is_true(capped:start())
      assert.is_true(by_ttl:start())
      -- 4 questions for the capped one: 0.9 s at least
      assert.is_truthy(helpers.wait_for(function()
        return long:queries("uf.lb.test") >= 4
      end, 5, function() capped:poll(); by_ttl:poll() end))
      -- the other one asked once: its answer lives 60 s
      assert.equal(1, long:queries("ttl60.lb.test"))
      -- a change shows within about one update_frequency
      long:set_hosts("127.0.0.83 uf.lb.test\n127.0.0.82 ttl60.lb.test\n")
      local t0 = lb.now()
      assert.is_truthy(helpers.wait_for(function()
        return addrs(capped) == "127.0.0.83:80/1"
      end, 5, function() capped:poll() end))
      assert.is_true(lb.now() - t0 < 2, "took " .. (lb.now() - t0))
      capped:stop()
      by_ttl:stop()
    end)
    long:close()
    assert(ok, err)
  end)

  it("is checked by lb.new, with the bad option named", function()
    local b0, err0 = lb.new({ update_frequency = 5,
                              discovery = lb.discovery.dns({
                                name = "x.lb.test", port = 80,
                                min_ttl = 10 }) })
    assert.is_nil(b0)
    assert.matches("lb.new: discovery: dns: min_ttl (10) is above "
                   .. "update_frequency (5)", err0, 1, true)
    local function bad(o, pattern)
      local b, err = lb.new({ discovery = lb.discovery.dns(o) })
      assert.is_nil(b)
      assert.matches(pattern, err)
    end
    bad({ port = 80 }, "dns: name must be")
    bad({ name = "x.lb.test", type = "MX", port = 80 }, "type must be")
    bad({ name = "x.lb.test" }, "port must be .*required for A")
    bad({ name = "x.lb.test", port = 80, resolvers = { "dns.example" } },
        "resolvers%[1%]")
    bad({ name = "x.lb.test", port = 80, resolvers = { "127.0.0.1:70000" } },
        "resolvers%[1%]")
    bad({ name = "x.lb.test", port = 80, timeout = -1 }, "timeout")
    bad({ name = "x.lb.test", port = 80, min_ttl = 10, max_ttl = 5 },
        "max_ttl")
    bad({ name = "x.lb.test", port = 80, colour = 1 }, "unknown option")
    assert.is_truthy(lb.new({ discovery = lb.discovery.dns({
      name = "x.lb.test", port = 80, resolvers = { "[::1]:53", "127.0.0.1" },
    }) }))
  end)
end)
