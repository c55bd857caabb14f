-- The order of `keepalive` and `balancer_by_lua_block` in an upstream
-- block (docs/openresty.md, "keepalive after balancer_by_lua_block"):
-- keepalive written after it wraps lb's balancer and the front reuses its
-- upstream connections; written before it, balancer_by_lua_block
-- replaces the keepalive module's method, nginx warns "load balancing
-- method redefined", and every request opens a connection of its own.
-- The backend answers with its connection's serial number, so the
-- connections are counted, not timed.

local nginx = require("support.nginx")
local ko = require("support.keepalive_order")

local N = 200

describe("keepalive and balancer_by_lua_block", function()
  local backend

  setup(function()
    backend = ko.backend()
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function run(order)
    local srv = assert(ko.front(order, backend.addr))
    local paths = {}
    for i = 1, N do
      paths[i] = "/r/" .. i
    end
    local res, err = nginx.get_many(srv.addr, paths)
    local warned = ko.warned(srv)
    srv:stop()
    assert(res, err)
    local conns, bad = ko.connections(res)
    assert.are.equal(0, bad)
    return conns, warned
  end

  it("keepalive after it: no warning, one backend connection for "
     .. N .. " requests", function()
    local conns, warned = run("after")
    assert.is_false(warned, "nginx -t warned: " .. ko.WARNING)
    assert.are.equal(1, conns)
  end)

  it("keepalive before it: nginx warns, and every request opens a "
     .. "connection", function()
    local conns, warned = run("before")
    assert.is_true(warned, "nginx -t did not warn '" .. ko.WARNING .. "'")
    assert.are.equal(N, conns)
  end)
end)
