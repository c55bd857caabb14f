-- Test helper: a front nginx with lb in balancer_by_lua, in front of
-- loopback backends (see support.nginx).
--
--   local front = require("support.front")
--   local srv = assert(front.start({
--     init = [[ app = assert(require("lb").new({ backends = {...} })) ]],
--     balance = [[ peer:balance() ]],   -- `peer` is made from `app` by default
--   }))
--   local res = front.get(srv, n)      -- n responses, spread over workers
--   srv:stop()
--
-- The front answers with the backend's body (its address) and adds
-- X-Worker ($pid) and X-Upstream ($upstream_addr, every attempt).

local nginx = require("support.nginx")

local M = {}

local HTTP = [[
{{lua_paths}}
    lua_shared_dict lb_test 1m;
{{http_extra}}
    init_by_lua_block {
{{init}}
        if app and not peer then
            peer = assert(require("lb.nginx").new(app, {{peer_opts}}))
        end
    }
    init_worker_by_lua_block {
{{init_worker}}
    }
    upstream lb_app {
        server 127.0.0.1:1;   # placeholder: balance() always sets the peer
        balancer_by_lua_block {
{{balance}}
        }
        keepalive 64;
    }
    server {
        listen 127.0.0.1:{{port}} reuseport;
        location / {
            proxy_pass http://lb_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout;
            add_header X-Worker $pid always;
            add_header X-Upstream $upstream_addr always;
        }
        location = /lb-status {
            content_by_lua_block { require("lb.nginx").status(app) }
        }
        location = /front-status { stub_status; }
        location = /front-worker { return 200 $pid; }
{{server_extra}}
    }
]]

-- Start the front.  opts: init, init_worker, balance (Lua text),
-- peer_opts (Lua table text for lb.nginx.new, default "{}"), http_extra,
-- server_extra, workers (default 2), port (default: a free one),
-- access_log.  Returns the server (srv.addr is its address) or nil, err.
function M.start(opts)
  local port = opts.port or assert(nginx.free_port())
  local srv, err = nginx.start({
    lua = true,
    workers = opts.workers or 2,
    access_log = opts.access_log,
    http = HTTP,
    vars = {
      lua_paths = nginx.lua_paths(),
      http_extra = opts.http_extra or "",
      init = opts.init or "",
      init_worker = opts.init_worker or "",
      balance = opts.balance or "peer:balance()",
      peer_opts = opts.peer_opts or "{}",
      server_extra = opts.server_extra or "",
      port = port,
    },
    wait = { "127.0.0.1:" .. port },
  })
  if not srv then return nil, err end
  srv.addr = "127.0.0.1:" .. port
  srv.worker_count = opts.workers or 2
  srv.url = "http://127.0.0.1:" .. port
  return srv
end

-- A loopback nginx at `addr` that answers `status` to every request (a
-- failing backend); stopped by nginx.stop_all().
function M.failing_backend(addr, status)
  local host, port = nginx.split_addr(addr)
  return assert(nginx.start({
    http = ("    server {\n        listen %s:%s;\n"
            .. "        location / { return %d \"down\"; }\n    }\n")
      :format(host, port, status),
    wait = { addr }, workers = 1 }))
end

-- Requests the front has served so far (stub_status, all workers).
function M.served(srv)
  local r = nginx.get(srv.addr, "/front-status")
  return r and tonumber(r.body:match("\n%s*%d+%s+%d+%s+(%d+)")) or 0
end

-- Lua text of a list of strings.
function M.lua_list(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = ("%q"):format(s) end
  return "{ " .. table.concat(out, ", ") .. " }"
end

-- n GET requests (or the given list) spread over `conns` connections
-- that reach every worker of the front.  Returns the responses, or raises.
function M.get(srv, reqs, conns)
  if type(reqs) == "number" then
    local list = {}
    for i = 1, reqs do list[i] = "/r/" .. i end
    reqs = list
  end
  return assert(nginx.get_spread(srv.addr, reqs, conns or 8,
                                 M.spread(srv)))
end

-- get_spread's options that reach every worker of a front.
function M.spread(srv)
  return { spread = { path = "/front-worker",
                      workers = srv.worker_count or 2 } }
end

-- Count responses per body (the backend's address) and per worker.
function M.count(responses)
  local by_backend, by_worker, bad = {}, {}, 0
  for _, r in ipairs(responses) do
    if r.status == 200 then
      by_backend[r.body] = (by_backend[r.body] or 0) + 1
    else
      bad = bad + 1
    end
    local w = r.headers["x-worker"]
    if w then by_worker[w] = (by_worker[w] or 0) + 1 end
  end
  return by_backend, by_worker, bad
end

-- Number of keys in a table.
function M.size(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

return M
