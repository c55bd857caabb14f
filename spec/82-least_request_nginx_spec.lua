-- least_request in real nginx: a backend that answers in 200 ms gets less
-- than half the mean of the fast ones under 16 concurrent connections.
--
-- One nginx (one worker, so its balancer's in-flight counts are all the
-- requests) on loopback: a front whose balancer_by_lua picks with lb's
-- least_request and counts the request in flight until log_by_lua, three
-- fast backends and one that sleeps 200 ms, all answering with their own
-- address.  wrk drives 16 connections for 3 seconds; the front counts the
-- requests each backend served.
--
-- The counts go through the C API (lb_balancer_in_flight_add over the
-- FFI), which balancer:acquire/release and lb.nginx's peer call.

local nginx = require("support.nginx")

describe("least_request in nginx", function()
  local srv, start_err
  local front, fast, slow

  setup(function()
    front = "127.0.0.1:" .. assert(nginx.free_port())
    fast = {}
    for i = 1, 3 do
      fast[i] = "127.0.0.1:" .. assert(nginx.free_port())
    end
    slow = "127.0.0.1:" .. assert(nginx.free_port())
    local all = { fast[1], fast[2], fast[3], slow }
    local list = {}
    for i, a in ipairs(all) do list[i] = ("%q"):format(a) end
    local backends = {}
    for _, a in ipairs(fast) do
      backends[#backends + 1] = nginx.identity_server(a)
    end
    local sh, sp = nginx.split_addr(slow)
    backends[#backends + 1] = ([[
    server {
        listen %s:%s;
        location / { content_by_lua_block { ngx.sleep(0.2) ngx.print(%q) } }
    }
]]):format(sh, sp, slow)
    local fh, fp = nginx.split_addr(front)
    srv, start_err = nginx.start({ lua = true, wait = { front, slow }, http = ([[
%s
    lua_shared_dict served 1m;
    init_by_lua_block {
        local ffi = require("ffi")
        require("lb")
        pcall(ffi.cdef, [==[
int lb_balancer_in_flight_add(lb_balancer *b, uint64_t gen, size_t i,
                              int delta);
]==])
        app = assert(require("lb").new({ selection = "least_request",
                                         backends = { %s } }))
    }
    upstream lr {
        server 0.0.0.1;
        balancer_by_lua_block {
            local C = require("lb.cdef").C
            local be = app:select()
            local i = app._index[be]
            C.lb_balancer_in_flight_add(app._c, app._gen, i, 1)
            ngx.ctx.lb_i = i
            ngx.ctx.lb_addr = be.addr
            assert(require("ngx.balancer").set_current_peer(be.host, be.port))
        }
        keepalive 32;
    }
    server {
        listen %s:%s;
        location = /served {
            content_by_lua_block {
                for _, k in ipairs(ngx.shared.served:get_keys(0)) do
                    ngx.say(k, " ", ngx.shared.served:get(k))
                end
            }
        }
        location / {
            proxy_pass http://lr;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            log_by_lua_block {
                local i = ngx.ctx.lb_i
                if i then
                    require("lb.cdef").C.lb_balancer_in_flight_add(
                        app._c, app._gen, i, -1)
                    ngx.shared.served:incr(ngx.ctx.lb_addr, 1, 0)
                end
            }
        }
    }
%s]]):format(nginx.lua_paths(), table.concat(list, ", "), fh, fp,
             table.concat(backends)) })
  end)

  teardown(function()
    if srv then srv:stop() end
    nginx.stop_all()
  end)

  it("sends a 200 ms backend less than half the fast ones' mean", function()
    assert(srv, "nginx did not start: " .. tostring(start_err))
    local load = assert(nginx.wrk("http://" .. front .. "/x",
                                  { connections = 16, duration = 3 }))
    local r = assert(load:wait())
    assert.are.equal(0, r.failed, r.text)
    local res = assert(nginx.get(front, "/served"))
    local served = {}
    for addr, n in res.body:gmatch("(%S+) (%d+)") do
      served[addr] = tonumber(n)
    end
    local mean = 0
    for _, a in ipairs(fast) do mean = mean + (served[a] or 0) / 3 end
    local s = served[slow] or 0
    assert.is_true(mean > 100, "fast backends served " .. mean .. " on average")
    assert.is_true(s < mean / 2, ("slow backend served %d, fast mean %.1f")
                                   :format(s, mean))
    -- and it was still tried: least_request does not drop a slow backend
    assert.is_true(s > 0, "the slow backend served nothing")
  end)
end)
