-- LB_PORT_BASE / LB_PORT_COUNT / LB_TMPDIR (spec/support/ports.lua): two
-- runs of specs that start nginx and socket servers, at once, each with a
-- range of its own, both pass, and every port their servers listen on
-- (ss -ltnp, the processes told apart by the files they hold open under
-- each run's LB_TMPDIR) lies in that run's range.

local nginx = require("support.nginx")
local ports = require("support.ports")

local root = nginx.root()
local q = nginx.q

-- Run `code` in a luajit with the spec helpers on its path and `env` set.
local function lua(env, code)
  local vars = {}
  for k, v in pairs(env) do
    vars[#vars + 1] = k .. "=" .. q(v)
  end
  return nginx.run("cd " .. q(root) .. " && env " .. table.concat(vars, " ")
                   .. " luajit -e " .. q('package.path = "spec/?.lua;" .. package.path '
                                          .. code))
end

describe("support.ports", function()
  it("hands out the range's ports, each once, then says it is used up", function()
    local base = assert(ports.block(3))
    local ok, out = lua({ LB_PORT_BASE = base, LB_PORT_COUNT = 3 }, [[
      local p = require("support.ports")
      local got = {}
      for i = 1, 3 do got[i] = assert(p.free()) end
      table.sort(got)
      print(table.concat(got, " "), select(2, p.free()))]])
    assert.is_true(ok, out)
    assert.are.equal(("%d %d %d\tno free port left in LB_PORT_BASE..+LB_PORT_COUNT"
                      .. " (%d..%d)\n"):format(base, base + 1, base + 2, base, base + 2),
                     out)
  end)

  it("skips a port something listens on", function()
    local base = assert(ports.block(2))
    local l = assert(require("socket").bind("127.0.0.1", base))
    local ok, out = lua({ LB_PORT_BASE = base, LB_PORT_COUNT = 2 },
                        [[print(require("support.ports").free())]])
    l:close()
    assert.is_true(ok, out)
    assert.are.equal(tostring(base + 1) .. "\n", out)
  end)

  it("names a malformed variable", function()
    local ok, out = lua({ LB_PORT_BASE = "80a" }, [[require("support.ports").free()]])
    assert.is_false(ok)
    assert.matches("LB_PORT_BASE must be a port number (1..65535), got '80a'", out, 1, true)
    ok, out = lua({ LB_PORT_BASE = "65000", LB_PORT_COUNT = "1000" },
                  [[require("support.ports").free()]])
    assert.is_false(ok)
    assert.matches("LB_PORT_BASE + LB_PORT_COUNT - 1 is 65999, past port 65535", out, 1, true)
  end)

  it("puts temporary directories under LB_TMPDIR", function()
    local dir = assert(nginx.mkdtemp("lb-tmpdir"))
    local ok, out = lua({ LB_TMPDIR = dir .. "/", TMPDIR = "/nonexistent" }, [[
      local n = require("support.nginx")
      local d = assert(n.mkdtemp("x"))
      print(d)
      n.rmtree(d)]])
    nginx.rmtree(dir)
    assert.is_true(ok, out)
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/x%.%w+\n$", out)
  end)
end)

describe("two runs at once with different LB_PORT_BASE", function()
  local runs = {}
  teardown(function()
    for _, r in ipairs(runs) do
      if r.pid then nginx.kill(r.pid, "KILL") end
      if r.tmp then nginx.rmtree(r.tmp) end
    end
  end)

  -- pid -> run index, from the files the process holds under a run's
  -- LB_TMPDIR (an nginx its error log, a check server its event log).
  local owner = {}
  local function run_of(pid)
    if owner[pid] == nil then
      owner[pid] = false
      for i, r in ipairs(runs) do
        local p = io.popen("find /proc/" .. pid .. "/fd -maxdepth 1 -lname "
                           .. q(r.tmp .. "/*") .. " 2>/dev/null")
        local hit = p:read("*l")
        p:close()
        if hit then owner[pid] = i end
      end
    end
    return owner[pid]
  end

  it("both pass, every listener in its own range", function()
    local COUNT = 100
    for i = 1, 2 do
      local r = { base = assert(ports.block(COUNT)), seen = {} }
      r.tmp = assert(nginx.mkdtemp("lb-ports-run"))
      nginx.run("chmod 755 " .. q(r.tmp))
      r.log = r.tmp .. "/busted.out"
      r.pid = assert(nginx.spawn("sh -c " .. q(("cd %s && env LB_PORT_BASE=%d"
        .. " LB_PORT_COUNT=%d LB_TMPDIR=%s luajit /usr/bin/busted"
        .. " spec/51-health_tcp_http_spec.lua spec/60-nginx_balancer_spec.lua")
        :format(q(root), r.base, COUNT, q(r.tmp))), r.log))
      runs[i] = r
    end
    local stray = {}
    local done = nginx.wait_for(function()
      local p = io.popen("ss -ltnpH 2>/dev/null")
      for line in p:lines() do
        local port = tonumber(line:match("127%.0%.0%.1:(%d+)%s"))
        if port then
          for pid in line:gmatch("pid=(%d+)") do
            local i = run_of(tonumber(pid))
            if i then
              local r = runs[i]
              if port >= r.base and port < r.base + COUNT then
                r.seen[port] = true
              else
                stray[#stray + 1] = ("run %d: port %d"):format(i, port)
              end
            end
          end
        end
      end
      p:close()
      return not nginx.alive(runs[1].pid) and not nginx.alive(runs[2].pid)
    end, 50, 0.05)
    assert.truthy(done, "the runs did not finish in 50 s")
    for i, r in ipairs(runs) do
      local out = nginx.read_file(r.log) or ""
      assert.matches("%d+ successes / 0 failures / 0 errors", out)
      local n = 0
      for _ in pairs(r.seen) do n = n + 1 end
      print(("# run %d: base %d, %d ports seen listening, all in %d..%d"):format(
        i, r.base, n, r.base, r.base + COUNT - 1))
      assert(n >= 3, "run " .. i .. ": only " .. n .. " listeners seen")
    end
    assert.are.same({}, stray)
  end)
end)
