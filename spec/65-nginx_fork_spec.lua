-- nginx daemonises and forks its workers right after init_by_lua, while
-- liburcu's call_rcu worker may still be freeing the snapshots init_by_lua
-- replaced.  Every start must come up (the starting process returns, both
-- workers run) and every worker must select from the inherited balancer.

local nginx = require("support.nginx")
local front = require("support.front")

-- init_by_lua: a consistent-hash balancer over 400 data addresses (never
-- connected to), updated 40 times so retired Ketama rings are queued for
-- the call_rcu worker when nginx forks.
local INIT = [[
  local lb = require("lb")
  local function set(shift)
    local list = {}
    for i = 1, 400 do
      local k = i + shift
      list[i] = { addr = ("10.2.%d.%d:80"):format(math.floor(k / 250), k % 250),
                  weight = 1 + k % 3 }
    end
    return list
  end
  local src = lb.discovery.static(set(0))
  app = assert(lb.new({ selection = "consistent", discovery = src }))
  for round = 1, 40 do
    assert(src:set(set(round % 2)))
    assert(app:update())
  end
]]

local PICK = [[
        location = /pick {
            content_by_lua_block {
                local b = app:select(ngx.var.arg_k or "")
                ngx.say(b and b.addr or "none", " ", ngx.worker.pid())
            }
        }
]]

describe("nginx forks while lb's call_rcu worker is busy", function()
  local srv
  after_each(function()
    if srv then srv:stop() end
    srv = nil
  end)

  it("starts every time, and each worker selects", function()
    for round = 1, 6 do
      local err
      srv, err = front.start({ init = INIT, server_extra = PICK,
                               peer_opts = [[{ key = "uri" }]] })
      assert(srv, ("start %d: %s"):format(round, tostring(err)))
      local workers = {}
      assert(nginx.wait_for(function()
        local paths = {}
        for i = 1, 16 do paths[i] = "/pick?k=" .. i end
        local res = assert(nginx.get_spread(srv.addr, paths, 8))
        for _, r in ipairs(res) do
          assert.equal(200, r.status)
          local addr, pid = r.body:match("^(%S+) (%d+)")
          assert.matches("^10%.2%.%d+%.%d+:80$", addr)
          workers[pid] = true
        end
        return front.size(workers) == 2
      end, 5), "both workers answer")
      srv:stop()
      srv = nil
    end
  end)
end)
