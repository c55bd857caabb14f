-- lb.discovery.etcd against a real etcd on loopback: the initial read, a
-- put and a delete seen within a second, malformed values skipped and
-- reported, etcd killed and restarted (the watch resumes from its
-- revision), a compacted revision (the prefix is read again), two
-- endpoints with the first dead, a user and password, two gateways that
-- agree on where 1,000 keys go; the options lb.new checks.
local lb = require("lb")
local etcd = require("support.etcd")
local nginx = require("support.nginx")
local helpers = require("helpers")

local P = "/services/app/"

local function addrs(b)
  local out = {}
  for _, be in ipairs(b:backends()) do
    out[#out + 1] = be.addr .. "/" .. be.weight
  end
  return table.concat(out, " ")
end

local function wait_addrs(b, want, secs)
  local ok = helpers.wait_for(function() return addrs(b) == want end,
                              secs or 5, function() b:poll() end)
  assert.equal(want, addrs(b))
  return ok
end

describe("lb.discovery.etcd", function()
  local e
  local made = {}
  local function gateway(o)
    o = o or {}
    o.endpoints = o.endpoints or { e.endpoint }
    o.prefix = o.prefix or P
    o.timeout = o.timeout or 1
    local b = assert(lb.new({ discovery = lb.discovery.etcd(o),
                              selection = "consistent" }))
    made[#made + 1] = b
    return b
  end

  setup(function()
    e = etcd.start()
  end)
  teardown(function()
    for _, b in ipairs(made) do
      b:stop()
    end
    etcd.stop_all()
  end)

  it("reads the prefix on update() and reports the revision", function()
    e:put(P .. "a", "127.0.0.1:8001")
    e:put(P .. "b", '{"addr": "127.0.0.1:8002", "weight": 3}')
    e:put("/services/other/x", "127.0.0.1:9999")
    local b = gateway()
    assert.equal("", addrs(b))
    assert.is_true(b:update())
    assert.equal("127.0.0.1:8001/1 127.0.0.1:8002/3", addrs(b))
    local st = b:discovery_status()
    assert.is_true(st.ok)
    assert.equal(e:revision(), st.revision)
    assert.is_true(math.abs(st.updated_at - os.time()) < 5)
  end)

  it("sees a put and a delete within a second, keeping tables", function()
    local b = gateway()
    assert.is_true(b:start())
    wait_addrs(b, "127.0.0.1:8001/1 127.0.0.1:8002/3")
    local kept = b:backends()[1]
    local t0 = lb.now()
    e:put(P .. "c", "[::1]:8003")
    wait_addrs(b, "127.0.0.1:8001/1 127.0.0.1:8002/3 [::1]:8003/1", 1)
    local put_s = lb.now() - t0
    t0 = lb.now()
    e:del(P .. "b")
    wait_addrs(b, "127.0.0.1:8001/1 [::1]:8003/1", 1)
    local del_s = lb.now() - t0
    assert.equal(kept, b:backends()[1])
    print(("# etcd put seen after %.3f s, delete after %.3f s (etcdctl "
           .. "included)"):format(put_s, del_s))
    assert.equal(e:revision(), b:discovery_status().revision)
    b:stop()
  end)

  it("applies enabled = false from a value", function()
    e:put(P .. "d", '{"addr": "127.0.0.1:8004", "enabled": false}')
    local b = gateway()
    assert.is_true(b:update())
    assert.is_false(b:ready("127.0.0.1:8004"))
    assert.is_true(b:ready("127.0.0.1:8001"))
    e:del(P .. "d")
  end)

  it("skips and reports a malformed value, never emptying the set",
     function()
    local b = gateway()
    assert.is_true(b:start())
    wait_addrs(b, "127.0.0.1:8001/1 [::1]:8003/1")
    e:put(P .. "bad", "not an address")
    assert.is_truthy(helpers.wait_for(function()
      return b:discovery_status().last_error
    end, 2, function() b:poll() end))
    local st = b:discovery_status()
    assert.matches(P .. "bad: skipped", st.last_error, 1, true)
    assert.equal("127.0.0.1:8001/1 [::1]:8003/1", addrs(b))
    e:put(P .. "bad", '{"addr": "127.0.0.1:8005", "weight": 0}')
    assert.is_truthy(helpers.wait_for(function()
      local le = b:discovery_status().last_error
      return le and le:find("weight", 1, true)
    end, 2, function() b:poll() end))
    assert.equal("127.0.0.1:8001/1 [::1]:8003/1", addrs(b))
    e:del(P .. "bad")
    assert.is_truthy(helpers.wait_for(function()
      return b:discovery_status().last_error == nil
    end, 2, function() b:poll() end))
    b:stop()
  end)

  it("resumes from its revision after etcd is killed and restarted",
     function()
    local b = gateway()
    assert.is_true(b:start())
    wait_addrs(b, "127.0.0.1:8001/1 [::1]:8003/1")
    e:stop()
    assert.is_truthy(helpers.wait_for(function()
      return not b:discovery_status().ok
    end, 5, function() b:poll() end))
    assert.equal("127.0.0.1:8001/1 [::1]:8003/1", addrs(b))
    e:start()
    e:put(P .. "e", "127.0.0.1:8006")
    e:del(P .. "a")
    wait_addrs(b, "127.0.0.1:8006/1 [::1]:8003/1", 10)
    local st = b:discovery_status()
    assert.is_true(st.ok)
    assert.equal(e:revision(), st.revision)
    b:stop()
  end)

  it("reads the prefix again when its revision was compacted", function()
    local b = gateway()
    assert.is_true(b:update())
    assert.is_true(b:start())
    wait_addrs(b, "127.0.0.1:8006/1 [::1]:8003/1")
    b:stop()
    local errors = b:discovery_status().errors
    e:put(P .. "f", "127.0.0.1:8007")
    e:del(P .. "e")
    e:put(P .. "g", "127.0.0.1:8008")
    e:compact()
    assert.is_true(b:start())
    wait_addrs(b, "127.0.0.1:8007/1 127.0.0.1:8008/1 [::1]:8003/1", 5)
    assert.equal(e:revision(), b:discovery_status().revision)
    -- the watch from the old revision was refused as compacted (counted)
    assert.is_true(b:discovery_status().errors > errors)
    b:stop()
  end)

  it("tries the endpoints in turn (the first one dead)", function()
    local dead = "http://127.0.0.1:" .. assert(nginx.free_port())
    local b = gateway({ endpoints = { dead, e.endpoint } })
    assert.is_true(b:update())
    assert.equal("127.0.0.1:8007/1 127.0.0.1:8008/1 [::1]:8003/1", addrs(b))
    local only_dead = gateway({ endpoints = { dead } })
    local ok, err = only_dead:update()
    assert.is_nil(ok)
    assert.matches("etcd: range: ", err, 1, true)
    assert.is_false(only_dead:discovery_status().ok)
  end)

  it("lets two gateways agree on 1,000 keys after a change", function()
    local g1, g2 = gateway(), gateway()
    assert.is_true(g1:start())
    assert.is_true(g2:start())
    e:put(P .. "h", '{"addr": "127.0.0.1:8009", "weight": 2}')
    local want = "127.0.0.1:8007/1 127.0.0.1:8008/1 127.0.0.1:8009/2 "
                 .. "[::1]:8003/1"
    wait_addrs(g1, want, 2)
    wait_addrs(g2, want, 2)
    for i = 1, 1000 do
      local k = "key-" .. i
      assert.equal(g1:select(k).addr, g2:select(k).addr)
    end
    g1:stop()
    g2:stop()
  end)

  it("authenticates with a user and password", function()
    e:enable_auth("lbreader", "s3cret")
    local anon = gateway()
    local ok, err = anon:update()
    assert.is_nil(ok)
    assert.is_truthy(err)
    local b = gateway({ username = "lbreader", password = "s3cret" })
    assert.is_true(b:update())
    assert.equal("127.0.0.1:8007/1 127.0.0.1:8008/1 127.0.0.1:8009/2 "
                 .. "[::1]:8003/1", addrs(b))
    assert.is_true(b:start())
    e:put(P .. "i", "127.0.0.1:8010")
    wait_addrs(b, "127.0.0.1:8007/1 127.0.0.1:8008/1 127.0.0.1:8009/2 "
                  .. "127.0.0.1:8010/1 [::1]:8003/1", 2)
    local wrong = gateway({ username = "lbreader", password = "nope" })
    ok, err = wrong:update()
    assert.is_nil(ok)
    assert.matches("authenticate", err)
    b:stop()
  end)

  it("speaks TLS to an https endpoint, verifying it by default", function()
    local servers = require("support.servers")
    local dir, cert, key = servers.make_cert()
    local t = etcd.start({ cert = cert, key = key })
    local ok, err = pcall(function()
      t:put(P .. "tls", "127.0.0.1:8100")
      local b = gateway({ endpoints = { t.endpoint }, tls = { ca = cert } })
      assert.is_true(b:update())
      assert.equal("127.0.0.1:8100/1", addrs(b))
      local untrusted = gateway({ endpoints = { t.endpoint }, tls = true })
      local ok2, err2 = untrusted:update()
      assert.is_nil(ok2)
      assert.matches("certificate", err2)
      local unverified = gateway({ endpoints = { t.endpoint },
                                   tls = { verify = false } })
      assert.is_true(unverified:update())
    end)
    t:close()
    nginx.rmtree(dir)
    assert(ok, err)
  end)

  it("verifies an https endpoint under tls.sni, connecting to its address",
     function()
    local servers = require("support.servers")
    -- a certificate for etcd.lb.test only: not for 127.0.0.1
    local dir, cert, key = servers.make_cert("etcd.lb.test")
    local t = etcd.start({ cert = cert, key = key,
                           server_name = "etcd.lb.test" })
    local ok, err = pcall(function()
      t:put(P .. "sni", "127.0.0.1:8101")
      local by_address = gateway({ endpoints = { t.endpoint },
                                   tls = { ca = cert } })
      local ok2, err2 = by_address:update()
      assert.is_nil(ok2)
      assert.matches("certificate", err2)
      local wrong = gateway({ endpoints = { t.endpoint },
                              tls = { ca = cert, sni = "other.lb.test" } })
      ok2, err2 = wrong:update()
      assert.is_nil(ok2)
      assert.matches("certificate", err2)
      -- the first endpoint is dead: the name goes with the next one too
      local dead = "https://127.0.0.1:" .. assert(nginx.free_port())
      local b = gateway({ endpoints = { dead, t.endpoint },
                          tls = { ca = cert, sni = "etcd.lb.test" } })
      assert.is_true(b:update())
      assert.equal("127.0.0.1:8101/1", addrs(b))
      -- the watch goes the same way
      assert.is_true(b:start())
      t:put(P .. "sni2", "127.0.0.1:8102")
      wait_addrs(b, "127.0.0.1:8101/1 127.0.0.1:8102/1", 2)
      b:stop()
    end)
    t:close()
    nginx.rmtree(dir)
    assert(ok, err)
  end)

  it("is checked by lb.new, with the bad option named", function()
    local function bad(o, pattern)
      local b, err = lb.new({ discovery = lb.discovery.etcd(o) })
      assert.is_nil(b)
      assert.matches(pattern, err)
    end
    bad({ prefix = P }, "etcd: endpoints must be")
    bad({ endpoints = {}, prefix = P }, "endpoints must be")
    bad({ endpoints = { "ftp://127.0.0.1:2379" }, prefix = P },
        "endpoints%[1%]")
    bad({ endpoints = { "http://127.0.0.1:2379" } }, "prefix must be")
    bad({ endpoints = { "http://127.0.0.1:2379" }, prefix = 7 },
        "prefix must be")
    bad({ endpoints = { "http://127.0.0.1:2379" }, prefix = P,
          username = "u" }, "username and password")
    bad({ endpoints = { "http://127.0.0.1:2379" }, prefix = P, tls = 1 },
        "tls must be")
    bad({ endpoints = { "https://127.0.0.1:2379" }, prefix = P,
          tls = { sni = "a b" } }, "tls.sni must be a host name")
    bad({ endpoints = { "https://127.0.0.1:2379" }, prefix = P,
          tls = { sni = true } }, "tls.sni must be a host name")
    bad({ endpoints = { "http://127.0.0.1:2379" }, prefix = P, watch = 1 },
        "unknown option")
  end)
end)
