-- Golden test: lb's "weighted_round_robin" picks, pick for pick, the
-- sequence of real nginx's default upstream balancer (smooth weighted round
-- robin) with the same weights and the servers in lb's sorted order, also
-- with servers marked `down` (in lb: disabled, so not ready).
--
-- One nginx (one worker: nginx keeps the round robin's state per worker)
-- serves everything on loopback: per weight set an upstream, a front server
-- that proxies to it and reports nginx's choice in `X-Upstream:
-- $upstream_addr`, and one server block per backend answering with its
-- own address.  The spec sends the requests one after another on one
-- connection, records nginx's sequence, then asks lb for as many picks.

local nginx = require("support.nginx")

-- Weight sets: weights, and which servers (1-based, in sorted order) are
-- down.
local SETS = {
  { name = "weights 5, 1, 1 (nginx's own example)", weights = { 5, 1, 1 } },
  { name = "weights 1, 2, 3, 5", weights = { 1, 2, 3, 5 } },
  { name = "weights 1, 2, 1, the last down", weights = { 1, 2, 1 },
    down = { [3] = true } },
  { name = "weights 3, 1, 4, 1, 5, 9, 2, 6, two down",
    weights = { 3, 1, 4, 1, 5, 9, 2, 6 }, down = { [2] = true, [6] = true } },
  { name = "five of weight 1, the first down", weights = { 1, 1, 1, 1, 1 },
    down = { [1] = true } },
  { name = "weights 100, 1, 37", weights = { 100, 1, 37 } },
}

local PICKS = 300

-- Backends on distinct loopback hosts, so lb's sorted order is by host.
local function make_sets()
  local host = 0
  for _, set in ipairs(SETS) do
    set.backends = {}
    for i, w in ipairs(set.weights) do
      host = host + 1
      local h = "127.0.80." .. host
      set.backends[i] = { addr = h .. ":" .. assert(nginx.free_port(h)),
                          weight = w }
    end
  end
  return SETS
end

local function nginx_http(sets)
  local parts = {}
  for i, set in ipairs(sets) do
    parts[#parts + 1] = ("    upstream wrr%d {\n"):format(i)
    for j, b in ipairs(set.sorted) do
      parts[#parts + 1] = ("        server %s weight=%d max_fails=0%s;\n")
        :format(b.addr, b.weight, set.down_addr[b.addr] and " down" or "")
      if j == #set.sorted then
        parts[#parts + 1] = "    }\n"
      end
    end
    parts[#parts + 1] = ([[
    server {
        listen %s;
        location / {
            proxy_pass http://wrr%d;
            proxy_next_upstream off;
            add_header X-Upstream $upstream_addr always;
        }
    }
]]):format(set.front, i)
    for _, b in ipairs(set.backends) do
      parts[#parts + 1] = nginx.identity_server(b.addr)
    end
  end
  return table.concat(parts)
end

describe("weighted_round_robin against nginx's upstream round robin", function()
  local lb = require("lb")
  local sets = make_sets()
  local srv, start_err

  setup(function()
    local wait = {}
    for _, set in ipairs(sets) do
      -- lb's sorted order is the order nginx is given the servers in
      local b = assert(lb.new({ backends = set.backends,
                                selection = "weighted_round_robin" }))
      set.sorted = b:backends()
      set.down_addr = {}
      for i, be in ipairs(set.sorted) do
        if set.down and set.down[i] then set.down_addr[be.addr] = true end
      end
      set.front = "127.0.0.1:" .. assert(nginx.free_port())
      wait[#wait + 1] = set.front
    end
    srv, start_err = nginx.start({ http = nginx_http(sets), wait = wait })
  end)

  teardown(function()
    if srv then srv:stop() end
    nginx.stop_all()
  end)

  -- nginx's sequence of PICKS choices for the set.
  local function record(set)
    assert(srv, "nginx did not start: " .. tostring(start_err))
    local paths = {}
    for i = 1, PICKS do paths[i] = "/r/" .. i end
    -- depth 1: each request waits for the previous answer
    local res = assert(nginx.get_many(set.front, paths, { depth = 1 }))
    local seq = {}
    for i = 1, PICKS do
      local r = res[i]
      assert(r.status == 200, ("%s: status %d: %s")
                                :format(set.name, r.status, r.body))
      local up = r.headers["x-upstream"]
      assert(up == r.body, ("%s: X-Upstream %q but body %q")
                             :format(set.name, tostring(up), r.body))
      seq[i] = up
    end
    return seq
  end

  for _, set in ipairs(sets) do
    it(set.name .. ": the same sequence, pick for pick", function()
      local seq = record(set)
      local b = assert(lb.new({ backends = set.backends,
                                selection = "weighted_round_robin" }))
      for addr in pairs(set.down_addr) do
        assert.is_true(b:set_enable(addr, false))
      end
      local bad, first = 0, nil
      local count = {}
      for i = 1, PICKS do
        local got = b:select().addr
        count[got] = (count[got] or 0) + 1
        if got ~= seq[i] then
          bad = bad + 1
          first = first or ("pick %d: nginx %s, lb %s"):format(i, seq[i], got)
        end
      end
      assert.are.equal(0, bad, ("%s: %d of %d picks differ; first %s")
                                 :format(set.name, bad, PICKS, tostring(first)))
      -- and the sequence is weighted: no down server, the others served
      for _, be in ipairs(set.sorted) do
        if set.down_addr[be.addr] then
          assert.is_nil(count[be.addr], be.addr .. " is down")
        else
          assert.truthy(count[be.addr], be.addr .. " never picked")
        end
      end
    end)
  end
end)
