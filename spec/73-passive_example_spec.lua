-- examples/passive.nginx.conf runs as documented, through tools/example.sh
-- (support.examples, as spec/64 runs the other examples): the failing
-- backend is ejected (by the worker that served the requests: without
-- reuseport nginx may give them all to one) and no client sees its 500s.

local nginx = require("support.nginx")
local examples = require("support.examples")
local cjson = require("cjson")

local root = nginx.root()

describe("examples/passive.nginx.conf", function()
  local ex

  teardown(function()
    if ex then ex:stop() end
  end)

  it("ejects the failing backend; clients see only 200", function()
    local text = assert(nginx.read_file(root .. "/examples/passive.nginx.conf"))
    assert.matches("Run from the repository root", text, 1, true)
    ex = examples.start("passive")
    local ports = ex.ports
    local front = "127.0.0.1:" .. ports["8090"]
    assert(nginx.wait_for(function() return nginx.accepting(front) end, 5))
    local reqs = {}
    for i = 1, 300 do reqs[i] = "/r/" .. i end
    local res = assert(nginx.get_spread(front, reqs, 8))
    local failing = "backend " .. ports["8093"]
    for _, r in ipairs(res) do
      assert.equal(200, r.status)
      assert.are_not.equal(failing, r.body)
    end
    local bad = "127.0.0.1:" .. ports["8093"]
    local seen = {}
    assert(nginx.wait_for(function()
      for i = 1, 8 do
        local st = assert(nginx.get(front, "/lb-status?" .. i))
        for _, row in ipairs(cjson.decode(st.body)) do
          if row.addr == bad and row.ejected then
            seen[st.headers["x-lb-worker"]] = true
          end
        end
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      return n >= 1
    end, 5), "not ejected")
    local log = ex:error_log()
    assert(nginx.wait_for(function()
      log = ex:error_log()
      return log:find("is down: ejected: 3 consecutive failures", 1, true)
    end, 5), log)
  end)
end)
