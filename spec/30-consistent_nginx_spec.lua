-- Golden test: lb's "consistent" selection picks, for every key, the same
-- backend as real nginx's `hash $request_uri consistent`.
--
-- One nginx serves everything on loopback: for each set of backends an
-- upstream with `hash $request_uri consistent`, a front server that proxies
-- to it and reports nginx's choice in `X-Upstream: $upstream_addr`, and one
-- server block per backend answering with its own address.  The spec
-- records nginx's choice for every key, then asks lb.

local nginx = require("support.nginx")
local ketama = require("support.ketama")

-- Keys: /k/1../k/1000 and some odd request URIs ($request_uri is the raw
-- request target, query string and escapes included).
local function make_keys()
  local keys = {}
  for i = 1, 1000 do keys[#keys + 1] = "/k/" .. i end
  for i = 1, 40 do
    keys[#keys + 1] = "/q?id=" .. i .. "&sort=desc&x=" .. (i * 7919)
    keys[#keys + 1] = "/p/%E2%82%AC%20" .. i .. "%2F%3F%25"
    keys[#keys + 1] = "/long/" .. string.rep(string.char(97 + i % 26), 200 * (i % 9) + 1)
                      .. "/" .. i
  end
  local odd = {
    "/", "//", "/?", "/?=", "/a/../b", "/a/./b/", "/a/%2e%2e/x", "/caf\195\169",
    "/k/1?", "/K/1", "/k/01", "/k/1/", "/~user/index.html", "/a;b=c/d",
    "/x?a[]=1&a[]=2", "/x?q=hello+world", "/+%2B+", "/" .. string.rep("z", 4000),
    "/emoji/\240\159\152\128", "/%ff%fe", "/a:b@c!$&'()*,",
  }
  for _, k in ipairs(odd) do keys[#keys + 1] = k end
  return keys
end

-- The sets of backends; addresses may contain {{prefix}} (unix sockets
-- live in nginx's private prefix).  Weight nil: the default (1).
local function make_sets(ipv6)
  local function v4(host, w)
    return { addr = host .. ":" .. assert(nginx.free_port(host)), weight = w }
  end
  local function v6(w)
    return { addr = "[::1]:" .. assert(nginx.free_port("::1")), weight = w }
  end
  local function ux(name, w)
    return { addr = "unix:{{prefix}}/" .. name .. ".sock", weight = w }
  end
  local sets = {
    { name = "IPv4, weights 1, 2, 3, 5",
      backends = { v4("127.0.0.1", 1), v4("127.0.0.1", 2), v4("127.0.0.2", 3),
                   v4("127.0.1.5", 5) } },
    { name = "unix sockets mixed with IPv4",
      backends = { ux("a", 1), v4("127.0.0.1", 2), ux("b", 3), ux("c"),
                   v4("127.0.0.3", 1) } },
    { name = "IPv4, 24 backends, weights 1..4",
      backends = {} },
  }
  for i = 1, 24 do
    local host = "127.0." .. (i % 3) .. "." .. (1 + i % 5)
    local w = i % 4
    if w == 0 then w = nil end
    sets[3].backends[i] = v4(host, w)
  end
  if ipv6 then
    table.insert(sets, 2, {
      name = "IPv6 mixed with IPv4",
      backends = { v6(1), v4("127.0.0.1", 3), v6(2), v6(), v4("127.0.0.4", 1),
                   v6(4) } })
  else
    table.insert(sets, 2, { name = "IPv6 mixed with IPv4", skip =
      "no IPv6 loopback: cannot listen on [::1], IPv6 set not run" })
  end
  return sets
end

local function nginx_http(sets)
  local parts = {}
  local seen = {}
  for i, set in ipairs(sets) do
    if not set.skip then
      parts[#parts + 1] = ("    upstream set%d {\n"
                          .. "        hash $request_uri consistent;\n"):format(i)
      for _, b in ipairs(set.backends) do
        parts[#parts + 1] = ("        server %s%s max_fails=0;\n")
          :format(b.addr, b.weight and (" weight=" .. b.weight) or "")
      end
      parts[#parts + 1] = "        keepalive 16;\n    }\n"
      parts[#parts + 1] = ([[
    server {
        listen %s;
        location / {
            proxy_pass http://set%d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            add_header X-Upstream $upstream_addr always;
        }
    }
]]):format(set.front, i)
      for _, b in ipairs(set.backends) do
        if not seen[b.addr] then
          seen[b.addr] = true
          parts[#parts + 1] = nginx.identity_server(b.addr)
        end
      end
    end
  end
  return table.concat(parts)
end

local function render_addr(addr, prefix)
  return (assert(nginx.render(addr, { prefix = prefix })))
end

describe("consistent selection against nginx's hash $request_uri consistent", function()
  local keys = make_keys()
  local sets = make_sets(nginx.has_ipv6())
  local srv, start_err

  setup(function()
    local wait = {}
    for _, set in ipairs(sets) do
      if not set.skip then
        set.front = "127.0.0.1:" .. assert(nginx.free_port())
        wait[#wait + 1] = set.front
      end
    end
    srv, start_err = nginx.start({ http = nginx_http(sets), wait = wait })
    if not srv then return end
    for _, set in ipairs(sets) do
      if not set.skip then
        for _, b in ipairs(set.backends) do
          b.addr = render_addr(b.addr, srv.prefix)
        end
      end
    end
  end)

  teardown(function()
    if srv then srv:stop() end
    nginx.stop_all()
  end)

  -- Ask nginx for every key; returns { [key] = addr }.
  local function record(set)
    assert(srv, "nginx did not start: " .. tostring(start_err))
    if set.recorded then return set.recorded end
    local res = assert(nginx.get_many(set.front, keys, { depth = 64 }))
    local chosen = {}
    for i, key in ipairs(keys) do
      local r = res[i]
      assert(r.status == 200, ("%s: status %d for %q: %s")
                                :format(set.name, r.status, key, r.body))
      local up = r.headers["x-upstream"]
      -- The backend's own answer confirms the header names who served it.
      assert(up == r.body, ("%s: X-Upstream %q but body %q for %q")
                             :format(set.name, tostring(up), r.body, key))
      chosen[key] = up
    end
    set.recorded = chosen
    return chosen
  end

  -- Compare pick(key) with nginx's choice for every key.
  local function compare(set, pick, who)
    local chosen = record(set)
    local ring = ketama.new(set.backends)
    local bad, first = 0, {}
    for _, key in ipairs(keys) do
      local got = pick(key)
      if got ~= chosen[key] then
        bad = bad + 1
        if #first < 8 then
          first[#first + 1] = ("  key %q: nginx %s, %s %s (Lua model: %s)")
            :format(#key > 60 and key:sub(1, 57) .. "..." or key, chosen[key],
                    who, tostring(got), ring:pick(key))
        end
      end
    end
    assert.are.equal(0, bad, ("%s: %s disagrees with nginx on %d of %d keys;"
                              .. " first:\n%s"):format(set.name, who, bad, #keys,
                                                    table.concat(first, "\n")))
  end

  local function lb_backends(set)
    local list = {}
    for i, b in ipairs(set.backends) do
      -- Weight-1 backends given as plain strings, the others as tables.
      list[i] = b.weight and { addr = b.addr, weight = b.weight } or b.addr
    end
    return list
  end

  for _, set in ipairs(sets) do
    describe(set.name, function()
      it("every key goes to nginx's backend", function()
        if set.skip then pending(set.skip) return end
        local lb = require("lb")
        local b = assert(lb.new({ backends = lb_backends(set),
                                  selection = "consistent" }))
        compare(set, function(key)
          local be = b:select(key)
          return be and be.addr
        end, "lb")
      end)

      it("nginx agrees with the Lua model of its ring", function()
        if set.skip then pending(set.skip) return end
        local ring = ketama.new(set.backends)
        compare(set, function(key) return ring:pick(key) end, "Lua model")
      end)
    end)
  end

  it("each set spreads keys over all its backends", function()
    for _, set in ipairs(sets) do
      if not set.skip then
        local chosen = record(set)
        local count = {}
        for _, addr in pairs(chosen) do count[addr] = (count[addr] or 0) + 1 end
        for _, b in ipairs(set.backends) do
          assert(count[b.addr], set.name .. ": no key went to " .. b.addr)
        end
      end
    end
  end)
end)
