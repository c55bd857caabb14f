-- The nginx test helper (spec/support/nginx.lua) keeps its promises: servers
-- start in a private prefix, always stop, leave nothing behind; the HTTP
-- client survives pipelining, chunked bodies and servers closing the
-- connection.

local nginx = require("support.nginx")

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

describe("spec helper: nginx", function()
  teardown(function() nginx.stop_all() end)

  it("hands out distinct loopback ports", function()
    local ports = nginx.free_ports(20)
    local seen = {}
    for _, p in ipairs(ports) do
      assert.is_nil(seen[p])
      seen[p] = true
    end
  end)

  it("starts, serves, stops twice, and removes its prefix", function()
    local addr = "127.0.0.1:" .. nginx.free_port()
    local srv = assert(nginx.start({ http = nginx.identity_server(addr),
                                     wait = { addr } }))
    finally(function() srv:stop() end)
    assert.is_true(nginx.alive(srv.pid))
    assert.equal(addr, assert(nginx.get(addr, "/")).body)
    assert.is_true(srv:stop())
    assert.is_true(srv:stop())
    assert.is_false(nginx.alive(srv.pid))
    assert.is_false(exists(srv.prefix .. "/conf/nginx.conf"))
    assert.is_false(nginx.accepting(addr))
  end)

  it("reports a bad configuration and leaves nothing running", function()
    local srv, err = nginx.start({ http = "no_such_directive on;" })
    assert.is_nil(srv)
    assert.matches("no_such_directive", err)
  end)

  it("cleans up workers whose master was killed", function()
    local srv = assert(nginx.start({ workers = 2, http =
      "server { listen 127.0.0.1:" .. nginx.free_port() .. "; }" }))
    finally(function() srv:stop() end)
    local workers = srv:workers()
    assert.equal(2, #workers)
    os.execute("kill -KILL " .. srv.pid)
    srv:stop()
    for _, w in ipairs(workers) do assert.is_false(nginx.alive(w)) end
  end)

  it("pipelines over keep-alive and reconnects when the server closes", function()
    local addr = "127.0.0.1:" .. nginx.free_port()
    local srv = assert(nginx.start({ wait = { addr }, http = ([[
    server {
        listen %s;
        keepalive_requests 5;
        location / { return 200 $request_uri; }
    }
]]):format(addr) }))
    finally(function() srv:stop() end)
    local paths = {}
    for i = 1, 23 do paths[i] = "/p/" .. i end
    local res = assert(nginx.get_many(addr, paths, { depth = 8 }))
    assert.equal(23, #res)
    for i, r in ipairs(res) do assert.equal("/p/" .. i, r.body) end
  end)

  it("reads chunked bodies from the Lua module", function()
    local addr = "127.0.0.1:" .. nginx.free_port()
    local srv = assert(nginx.start({ lua = true, wait = { addr }, http = ([[
    server {
        listen %s;
        location / { content_by_lua_block { ngx.say("a"); ngx.flush(true); ngx.say("b") } }
    }
]]):format(addr) }))
    finally(function() srv:stop() end)
    local r = assert(nginx.get(addr, "/"))
    assert.equal("chunked", r.headers["transfer-encoding"])
    assert.equal("a\nb\n", r.body)
  end)
end)
