-- Errors that say what went wrong, in real nginx (2 workers): "no backend
-- available" names the balancer and the cause, a balancer whose checks
-- never run warns once per worker (a shared reader whose prober checks
-- does not), the status page and JSON show "never checked", and the
-- mistakes only nginx can show (the peer called with '.', connect_check
-- uncalled).
local nginx = require("support.nginx")
local front = require("support.front")

-- error.log lines that contain `s`
local function lines_with(log, s)
  local out = {}
  for line in log:gmatch("[^\n]+") do
    if line:find(s, 1, true) then
      out[#out + 1] = line
    end
  end
  return out
end

-- the worker pid of an error.log line ("... [warn] 1234#1234: ...")
local function pid_of(line)
  return line:match("%[%a+%] (%d+)#")
end

describe("nginx: errors that say what went wrong", function()
  local srv, dead

  setup(function()
    dead = nginx.free_ports(3)
    local d = {}
    for i, p in ipairs(dead) do
      d[i] = "127.0.0.1:" .. p -- nothing listens there
    end
    srv = assert(front.start({
      workers = 2,
      init = ([[
        local lb = require("lb")
        local dead = %s
        app = assert(lb.new({ name = "app", backends = dead,
          health_check = function() return nil, "down" end }))
        empty = assert(lb.new({ name = "empty", backends = {} }))
        anon = assert(lb.new({ backends = {} }))
        retry = assert(lb.new({ name = "retry",
                                backends = { dead[1], dead[2] } }))
        lazy = assert(lb.new({ name = "lazy", backends = { dead[3] },
          health_check = lb.health.tcp({ timeout = 0.2 }),
          health_check_frequency = 1 }))
        sh = assert(lb.new({ name = "sh", backends = { dead[3] },
          shared = true,
          health_check = lb.health.tcp({ timeout = 0.2 }),
          health_check_frequency = 0.2 }))
        -- the key /capped/1's first candidate disabled, the others ready:
        -- a walk of one step finds nothing
        capped = assert(lb.new({ name = "capped", selection = "fnv",
                                 backends = dead }))
        capped:set_enable(capped:select("/capped/1"), false)
        local nx = require("lb.nginx")
        peers = {
          capped = assert(nx.new(capped, { key = "uri", max_iterations = 1 })),
          app = assert(nx.new(app)),
          empty = assert(nx.new(empty)),
          anon = assert(nx.new(anon)),
          retry = assert(nx.new(retry, { tries = 3 })),
          picky = assert(nx.new(retry, { tries = 1,
                                         accept = function() return false end })),
        }
      ]]):format(front.lua_list(d)),
      init_worker = [[
        assert(app:run_health_check())
        app:set_enable(app:backends()[3], false)
        -- the shared balancer runs in one worker; every worker reads it
        if ngx.worker.id() == 0 then assert(sh:start()) end
        ngx.timer.every(0.05, function()
          sh:status()
          lazy:status()
        end)
      ]],
      balance = [[ peers[ngx.var.which]:balance() ]],
      http_extra = [[
    map $uri $which {
        default app;
        ~^/empty empty;
        ~^/anon anon;
        ~^/retry retry;
        ~^/picky picky;
        ~^/capped capped;
    }
]],
      server_extra = [[
        location = /lazy-json {
          content_by_lua_block {
            ngx.say(require("lb.nginx").status_json(lazy))
          }
        }
        location = /lazy-page {
          content_by_lua_block {
            require("lb.nginx").status_page({ lazy = lazy })
          }
        }
        location = /dot {
          content_by_lua_block {
            local p = peers.app
            local _, e1 = pcall(function() local r = p.balance(); return r end)
            local _, e2 = pcall(function() local r = p.log("x"); return r end)
            local b, e3 = require("lb").new({ backends = { "127.0.0.1:1" },
              health_check = require("lb.nginx").connect_check })
            ngx.say(e1, "\n", e2, "\n", tostring(b), " ", e3)
          }
        }
      ]],
    }))
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function attempt(path, want)
    local r = assert(nginx.get(srv.addr, path))
    assert.equal(502, r.status)
    local line
    assert.truthy(nginx.wait_for(function()
      line = lines_with(srv:error_log(), want)[1]
      return line
    end, 10), "no line with: " .. want .. "\n" .. srv:error_log())
    assert.matches("[warn]", line, 1, true)
  end

  it("names the balancer and says the set is empty", function()
    attempt("/empty/1", 'lb: balancer "empty": no backend available: '
            .. "the set is empty")
  end)

  it("says how many backends are down, and why", function()
    attempt("/app/1", 'lb: balancer "app": no backend available: all 3 '
            .. "backends are down (2 unhealthy, 1 disabled)")
  end)

  it("says when every ready backend was tried", function()
    attempt("/retry/1", 'lb: balancer "retry": no backend available: '
            .. "every ready backend was tried (2 of 2 ready)")
  end)

  it("says when the accept function took none", function()
    attempt("/picky/1", 'lb: balancer "retry": no backend available: '
            .. "the accept function took none of the candidates (2 of 2 "
            .. "ready)")
  end)

  it("says when the walk ended at max_iterations", function()
    attempt("/capped/1", 'lb: balancer "capped": no backend available: '
            .. "no ready backend within max_iterations = 1 (2 of 3 ready)")
  end)

  it("leaves the name out for a balancer with none", function()
    attempt("/anon/1", "lb: no backend available: the set is empty")
    for _, l in ipairs(lines_with(srv:error_log(), "the set is empty")) do
      if not l:find('"empty"', 1, true) then
        assert.is_nil(l:find("balancer", 1, true), l)
      end
    end
  end)

  it("warns once per worker when checks never run; a shared reader does not",
     function()
    local want = 'lb: balancer "lazy": health_check_frequency is 1 s but '
                 .. "no health check has run yet: call start()"
    -- both workers warn (each polls lazy:status() every 0.05 s)
    local lines
    assert.truthy(nginx.wait_for(function()
      lines = lines_with(srv:error_log(), want)
      local pids = {}
      for _, l in ipairs(lines) do pids[pid_of(l)] = true end
      return front.size(pids) == 2
    end, 15), srv:error_log())
    -- the shared balancer's grace (0.6 s) ended long before lazy's (2.2 s),
    -- in both workers, one of which never called start()
    assert.same({}, lines_with(srv:error_log(), 'balancer "sh"'))
    -- once per worker, however often status() is called after
    assert.equal(2, #lines)
    for _ = 1, 6 do
      assert.equal(200, assert(nginx.get(srv.addr, "/lazy-json")).status)
    end
    assert.equal(2, #lines_with(srv:error_log(), want))
    assert.matches("[warn]", lines[1], 1, true)
  end)

  it("shows a never-checked backend in the status JSON and page", function()
    local r = assert(nginx.get(srv.addr, "/lazy-json"))
    assert.equal(200, r.status)
    assert.matches('"checked":false', r.body, 1, true)
    assert.matches('"healthy":true', r.body, 1, true)
    r = assert(nginx.get(srv.addr, "/lazy-page"))
    assert.equal(200, r.status)
    assert.matches('<tr class="unk"><td>127.0.0.1:' .. dead[3]
                   .. '</td><td class="st">unchecked</td>', r.body, 1, true)
  end)

  it("tells a peer method called with '.' and connect_check uncalled",
     function()
    local r = assert(nginx.get(srv.addr, "/dot"))
    assert.equal(200, r.status)
    local e1, e2, e3 = r.body:match("([^\n]*)\n([^\n]*)\n([^\n]*)")
    assert.matches("bad argument #1 to 'balance' (peer expected, got nil; "
                   .. "use peer:balance(...))", e1, 1, true)
    assert.matches("bad argument #1 to 'log' (peer expected, got string; "
                   .. "use peer:log(...))", e2, 1, true)
    assert.matches("nil lb.new: health_check: got the function "
                   .. "lb.nginx.connect_check itself; call it: "
                   .. 'require("lb.nginx").connect_check(timeout)', e3, 1, true)
  end)
end)
