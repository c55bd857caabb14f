-- examples/passive.nginx.conf runs as documented (its ports moved to free
-- ones, /tmp/lb-example to a private directory, as spec/64 does for the
-- other examples): the failing backend is ejected (by the worker that
-- served the requests: without reuseport nginx may give them all to one)
-- and no client sees its 500s.

local nginx = require("support.nginx")
local cjson = require("cjson")

local root = nginx.root()

describe("examples/passive.nginx.conf", function()
  local dir, pid, ports = nil, nil, {}

  teardown(function()
    if pid then
      nginx.kill(pid, "QUIT")
      if not nginx.wait_exit(pid, 10) then nginx.kill(pid, "KILL") end
    end
    if dir then nginx.rmtree(dir) end
  end)

  it("ejects the failing backend; clients see only 200", function()
    local text = assert(nginx.read_file(root .. "/examples/passive.nginx.conf"))
    assert.matches("Run from the repository root", text, 1, true)
    dir = assert(nginx.mkdtemp("lb-example"))
    os.execute("chmod 755 " .. nginx.q(dir))
    text = text:gsub("/tmp/lb%-example", dir)
    text = text:gsub("127%.0%.0%.1:(%d+)", function(p)
      if p == "1" then return nil end
      ports[p] = ports[p] or assert(nginx.free_port())
      return "127.0.0.1:" .. ports[p]
    end)
    local conf = dir .. "/passive.nginx.conf"
    assert(nginx.write_file(conf, text))
    local ok = os.execute("timeout -k 2 10 nginx -p " .. nginx.q(root .. "/")
                          .. " -c " .. nginx.q(conf) .. " > " .. dir
                          .. "/start.log 2>&1")
    assert(ok == 0 or ok == true, nginx.read_file(dir .. "/start.log"))
    pid = nginx.wait_for(function()
      local s = nginx.read_file(dir .. "/passive.pid")
      return s and tonumber(s:match("%d+"))
    end, 5)
    assert(pid, "no pid file")
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
    local log = nginx.read_file(dir .. "/passive.error.log") or ""
    assert(nginx.wait_for(function()
      log = nginx.read_file(dir .. "/passive.error.log") or ""
      return log:find("is down: ejected: 3 consecutive failures", 1, true)
    end, 5), log)
  end)
end)
