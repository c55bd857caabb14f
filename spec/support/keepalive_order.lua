-- A front nginx with lb in balancer_by_lua and upstream keepalive, the
-- `keepalive` directive written after `balancer_by_lua_block` ("after",
-- the right order) or before it ("before"), in front of a backend nginx
-- that answers each request with its connection's serial number
-- ($connection): the distinct numbers in the bodies are the connections
-- the front opened to it.  Used by spec/83-nginx_keepalive_order_spec.lua
-- and bench/keepalive_order.lua.
--
--   local ko = require("support.keepalive_order")
--   local backend = ko.backend()            -- stopped by nginx.stop_all()
--   local srv = ko.front("before", backend.addr)
--   ko.warned(srv)                -- nginx -t: "load balancing method redefined"?
--   ko.connections(responses)               -- distinct backend connections

local nginx = require("support.nginx")

local M = {}

M.WARNING = "load balancing method redefined"

local UPSTREAM = {
  after = [[
        balancer_by_lua_block { peer:balance() }
        keepalive 16;]],
  before = [[
        keepalive 16;
        balancer_by_lua_block { peer:balance() }]],
}

local FRONT = [[
{{lua_paths}}
    init_by_lua_block {
        app = assert(require("lb").new({ backends = { "{{backend}}" } }))
        peer = assert(require("lb.nginx").new(app))
    }
    upstream app {
        server 127.0.0.1:1;   # placeholder: balance() sets the peer
{{upstream}}
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
]]

-- The backend: one worker answering "$connection" on a fresh port.
function M.backend()
  local port = assert(nginx.free_port())
  local addr = "127.0.0.1:" .. port
  local srv = assert(nginx.start({
    http = ("    server {\n        listen %s;\n"
            .. "        location / { return 200 \"$connection\"; }\n"
            .. "    }\n"):format(addr),
    wait = { addr },
  }))
  srv.addr = addr
  return srv
end

-- The front with one worker, `order` "after" or "before".  Returns the
-- server (srv.addr, srv.url) or nil, err.
function M.front(order, backend_addr)
  assert(UPSTREAM[order], "order must be 'after' or 'before'")
  local port = assert(nginx.free_port())
  local srv, err = nginx.start({
    lua = true,
    http = FRONT,
    vars = { lua_paths = nginx.lua_paths(), backend = backend_addr,
             upstream = UPSTREAM[order], port = port },
    wait = { "127.0.0.1:" .. port },
  })
  if not srv then
    return nil, err
  end
  srv.addr = "127.0.0.1:" .. port
  srv.url = "http://127.0.0.1:" .. port .. "/"
  return srv
end

-- Whether nginx warns of a replaced balancer when it reads the front's
-- configuration.  Debian's nginx writes what it finds while reading the
-- configuration at start to stderr (its compiled error log), so this
-- asks `nginx -t` for the same file; also returns what it printed.
function M.warned(srv)
  local _, out = nginx.run(nginx.NGINX .. " -t -p " .. nginx.q(srv.prefix)
                           .. " -c " .. srv.conf)
  return out:find(M.WARNING, 1, true) ~= nil, out
end

-- The number of distinct backend connections in a list of responses, and
-- how many of them were not 200.
function M.connections(responses)
  local seen, n, bad = {}, 0, 0
  for _, r in ipairs(responses) do
    if r.status ~= 200 then
      bad = bad + 1
    elseif not seen[r.body] then
      seen[r.body] = true
      n = n + 1
    end
  end
  return n, bad
end

return M
