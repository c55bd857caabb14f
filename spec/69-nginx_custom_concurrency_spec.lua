-- A parallel custom check round has a cap, in nginx: with more backends
-- than worker_connections, a round that opened one cosocket per backend at
-- once ran out of connection slots, marked healthy backends down ("no
-- free connections") and left none to the clients.  lb.health.custom's
-- `concurrency` (default 32) bounds the checks in flight.
--
-- Every check connects to one loopback server that answers after 50 ms;
-- the backend addresses are selection data only.

local nginx = require("support.nginx")

local BACKENDS = 300
local CONNECTIONS = 64

describe("parallel custom checks with few worker_connections (nginx)", function()
  local srv

  local function start(check_opts)
    local slow_port = assert(nginx.free_port())
    assert(nginx.start({
      lua = true,
      http = ([[
    server {
        listen 127.0.0.1:%d backlog=1024;
        location / { content_by_lua_block { ngx.sleep(0.05) ngx.say("ok") } }
    }
]]):format(slow_port),
      wait = { "127.0.0.1:" .. slow_port },
    }))
    local port = assert(nginx.free_port())
    srv = assert(nginx.start({
      lua = true,
      worker_connections = CONNECTIONS,
      http = ([[
{{lua_paths}}
    lua_shared_dict lb_test 1m;
    init_by_lua_block {
        local lb = require("lb")
        local list = {}
        for i = 1, %d do
          list[i] = ("127.0.%%d.%%d:8"):format(1 + math.floor((i - 1) / 250), 1 + (i - 1) %% 250)
        end
        local function check()
          local sock = ngx.socket.tcp()
          sock:settimeout(2000)
          local ok, err = sock:connect("127.0.0.1", %d)
          if not ok then return nil, "connect: " .. tostring(err) end
          sock:send("GET / HTTP/1.0\r\n\r\n")
          local line, rerr = sock:receive("*l")
          sock:close()
          if not line then return nil, "receive: " .. tostring(rerr) end
          return line:find(" 200 ", 1, true) ~= nil or nil, line
        end
        app = assert(lb.new({ backends = list,
          health_check = lb.health.custom({ check = check %s }),
          parallel_health_check = true }))
    }
    server {
        listen 127.0.0.1:%d;
        location = /round {
            content_by_lua_block {
                ngx.shared.lb_test:set("done", false)
                assert(ngx.timer.at(0, function()
                    app:run_health_check(true)
                    local down, err = 0, nil
                    for _, row in ipairs(app:status()) do
                        if not row.healthy then
                            down = down + 1
                            err = err or row.last_error
                        end
                    end
                    ngx.shared.lb_test:set("down", down)
                    ngx.shared.lb_test:set("err", err or "")
                    ngx.shared.lb_test:set("done", true)
                end))
                ngx.say("started")
            }
        }
        location = /result {
            content_by_lua_block {
                local d = ngx.shared.lb_test
                if not d:get("done") then return ngx.exit(404) end
                ngx.say(d:get("down"), " ", d:get("err"))
            }
        }
        location = /ping { return 200 "pong"; }
    }
]]):format(BACKENDS, slow_port, check_opts, port),
      vars = { lua_paths = nginx.lua_paths() },
      wait = { "127.0.0.1:" .. port },
    }))
    srv.addr = "127.0.0.1:" .. port
  end

  after_each(function()
    nginx.stop_all()
  end)

  local function round()
    local r = assert(nginx.get(srv.addr, "/round"))
    assert.are.equal(200, r.status)
    -- Clients are served while the round runs.
    local served = 0
    for _ = 1, 20 do
      local p = nginx.get(srv.addr, "/ping")
      if p and p.status == 200 then served = served + 1 end
    end
    local res = nginx.wait_for(function()
      local x = nginx.get(srv.addr, "/result")
      return x and x.status == 200 and x.body
    end, 30)
    assert(res, "the round did not finish")
    local down, err = res:match("^(%d+) ?(.-)%s*$")
    return tonumber(down), err, served
  end

  it("keeps every healthy backend up and serves clients (default cap)", function()
    start("")
    local down, err, served = round()
    print(("\n  %d backends, worker_connections %d: %d marked down, %d/20 "
           .. "client requests served during the round"):format(BACKENDS,
           CONNECTIONS, down, served))
    assert.are.equal(0, down, err)
    assert.are.equal(20, served)
    assert.is_nil(srv:error_log():find("worker_connections are not enough",
                                       1, true), srv:error_log())
  end)

  it("takes an explicit concurrency", function()
    start(", concurrency = 4")
    local down, err = round()
    assert.are.equal(0, down, err)
  end)
end)
