-- What docs/api.md says of lb.now, lb.nginx.status_json,
-- lb.nginx.connect_check and lb.nginx.peer_host, run in a real nginx
-- (lb.nginx loads only there).  Only loopback and a unix socket are
-- connected to.

local nginx = require("support.nginx")
local lb = require("lb")

describe("lb.now", function()
  it("is monotonic seconds with sub-millisecond resolution", function()
    local a = lb.now()
    local b
    repeat
      b = lb.now()
    until b ~= a
    assert.is_true(b > a)
    assert.is_true(b - a < 0.001, "step " .. (b - a))
    -- not wall time: CLOCK_MONOTONIC counts from boot, as /proc/uptime
    local up = tonumber(nginx.read_file("/proc/uptime"):match("^[%d%.]+"))
    assert(math.abs(lb.now() - up) < 5, lb.now() .. " s against uptime "
                                        .. up .. " s")
  end)
end)

describe("lb.nginx, as documented", function()
  local srv, port, closed, sock

  setup(function()
    port = assert(nginx.free_port())
    closed = assert(nginx.free_port()) -- nothing listens there
    srv = assert(nginx.start({
      lua = true,
      http = [[
{{lua_paths}}
    init_by_lua_block {
        local lb = require("lb")
        app = assert(lb.new({ backends = {
            "127.0.0.1:{{port}}", "127.0.0.1:{{closed}}", "[::1]:80",
            "unix:{{prefix}}/s.sock" } }))
        other = assert(lb.new({ backends = { "127.0.0.1:{{port}}" } }))
    }
    server {
        listen 127.0.0.1:{{port}};
        listen unix:{{prefix}}/s.sock;
        location = /json { content_by_lua_block {
            ngx.say(require("lb.nginx").status_json(app)) } }
        location = /json-named { content_by_lua_block {
            ngx.say(require("lb.nginx").status_json({ b = app, a = other })) } }
        location = /json-bad { content_by_lua_block {
            local ok, err = pcall(require("lb.nginx").status_json, 42)
            ngx.say(tostring(ok), " ", err) } }
        location = /check { content_by_lua_block {
            local check = require("lb.nginx").connect_check(0.5)
            for _, b in ipairs(app:backends()) do
                if b.host ~= "::1" then
                    local ok, err = check(b)
                    ngx.say(b.addr, " ", tostring(ok), " ", tostring(err))
                end
            end } }
        location = /host { content_by_lua_block {
            for _, b in ipairs(app:backends()) do
                ngx.say(b.addr, " ", require("lb.nginx").peer_host(b))
            end } }
    }
]],
      vars = { lua_paths = nginx.lua_paths(), port = port, closed = closed },
      wait = { "127.0.0.1:" .. port },
    }))
    sock = srv.prefix .. "/s.sock"
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function get(path)
    local r = assert(nginx.get("127.0.0.1:" .. port, path))
    assert.are.equal(200, r.status, r.body .. srv:error_log())
    return r.body
  end

  it("status_json: one row per backend, keys in the documented order, "
     .. "null last_error and last_check", function()
    local body = get("/json")
    local first = body:match("^%[(%b{})")
    assert(first, body)
    local keys = {}
    for k in first:gmatch('"([%w_]+)":') do
      keys[#keys + 1] = k
    end
    assert.are.same({ "addr", "weight", "healthy", "enabled", "ready",
                      "last_error", "checked", "last_check", "in_flight",
                      "selected" }, { unpack(keys, 1, 10) })
    -- the rest sorted by name
    local rest = { unpack(keys, 11) }
    local sorted = { unpack(rest) }
    table.sort(sorted)
    assert.are.same(sorted, rest)
    assert.truthy(first:find('"last_error":null', 1, true))
    assert.truthy(first:find('"last_check":null', 1, true))
    local rows = select(2, body:gsub('"addr":', ""))
    assert.are.equal(4, rows)
  end)

  it("status_json: a table of balancers is an object by sorted name",
     function()
    local body = get("/json-named")
    assert.truthy(body:find('^{"a":%[{"addr":"127%.0%.0%.1:' .. port), body)
    assert.truthy(body:find('%],"b":%[{'), body)
  end)

  it("status_json: anything else is a bad argument", function()
    assert.are.equal("false bad argument #1 to 'status_json' (balancer or "
                     .. "table of balancers expected, got number)\n",
                     get("/json-bad"))
  end)

  it("connect_check: true for a listener (TCP and unix), 'connect: ...' "
     .. "for a closed port", function()
    local lines = {}
    for l in get("/check"):gmatch("[^\n]+") do
      local addr, ok, err = l:match("^(%S+) (%S+) (.*)$")
      lines[addr] = { ok, err }
    end
    assert.are.same({ "true", "nil" }, lines["127.0.0.1:" .. port])
    assert.are.same({ "true", "nil" }, lines["unix:" .. sock])
    local c = lines["127.0.0.1:" .. closed]
    assert.are.equal("nil", c[1])
    assert.are.equal("connect: connection refused", c[2])
  end)

  it("peer_host: the text set_current_peer takes", function()
    local hosts = {}
    for l in get("/host"):gmatch("[^\n]+") do
      local addr, h = l:match("^(%S+) (%S+)$")
      hosts[addr] = h
    end
    assert.are.equal("127.0.0.1", hosts["127.0.0.1:" .. port])
    assert.are.equal("[::1]", hosts["[::1]:80"])
    assert.are.equal("unix:" .. sock, hosts["unix:" .. sock])
  end)
end)
