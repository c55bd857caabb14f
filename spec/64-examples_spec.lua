-- The examples run as documented: examples/plain.lua with luajit, the
-- nginx configurations with `nginx -p <repo> -c examples/<name>`.  For
-- nginx, the spec only moves the fixed ports to free ones and the
-- /tmp/lb-example files to a private directory.

local nginx = require("support.nginx")

local root = nginx.root()

local sh_quote = nginx.q

-- nginx started from an example configuration.
local Example = {}
Example.__index = Example

local function start_example(name, env, ports)
  local text = assert(nginx.read_file(root .. "/examples/" .. name))
  local dir = assert(nginx.mkdtemp("lb-example"))
  os.execute("chmod 755 " .. sh_quote(dir))
  local self = setmetatable({ dir = dir, conf = dir .. "/" .. name,
                              ports = ports or {} }, Example)
  text = text:gsub("/tmp/lb%-example", dir)
  text = text:gsub("127%.0%.0%.1:(%d+)", function(p)
    if p == "1" then return nil end -- the upstream's placeholder
    if not self.ports[p] then self.ports[p] = assert(nginx.free_port()) end
    return "127.0.0.1:" .. self.ports[p]
  end)
  assert(nginx.write_file(self.conf, text))
  local envs = ""
  for k, v in pairs(env or {}) do
    envs = envs .. k .. "=" .. sh_quote(v) .. " "
  end
  local ok = os.execute(envs .. "timeout -k 2 10 nginx -p " .. sh_quote(root .. "/") .. " -c "
                        .. sh_quote(self.conf) .. " > " .. dir .. "/start.log 2>&1")
  local pidfile = text:match("\npid ([^;]+);")
  self.pid = nginx.wait_for(function()
    local s = nginx.read_file(pidfile)
    return s and tonumber(s:match("%d+"))
  end, 5)
  if not (ok == 0 or ok == true) or not self.pid then
    local log = (nginx.read_file(dir .. "/start.log") or "")
    self:stop()
    error("example " .. name .. " did not start: " .. log)
  end
  return self
end

function Example:children()
  return nginx.children(self.pid)
end

function Example:addr(port)
  return "127.0.0.1:" .. self.ports[tostring(port)]
end

function Example:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid and nginx.alive(self.pid) then
    local kids = self:children()
    os.execute("nginx -p " .. sh_quote(root .. "/") .. " -c " .. sh_quote(self.conf)
               .. " -s stop > /dev/null 2>&1")
    if not nginx.wait_exit(self.pid, 10) then nginx.kill(self.pid, "KILL") end
    for _, w in ipairs(kids) do
      if not nginx.wait_exit(w, 5) then nginx.kill(w, "KILL") end
    end
  end
  nginx.rmtree(self.dir)
end

function Example:error_log()
  local out = {}
  local p = io.popen("ls " .. sh_quote(self.dir) .. "/*.error.log 2>/dev/null")
  for f in p:lines() do
    out[#out + 1] = nginx.read_file(f) or ""
  end
  p:close()
  return table.concat(out)
end

describe("examples", function()
  it("plain.lua runs under luajit", function()
    local p = io.popen("cd /tmp && luajit " .. sh_quote(root .. "/examples/plain.lua")
                       .. " 2>&1; echo rc=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("rc=0%s*$", out, nil, false)
    assert.matches("is down %(connect", out)
    assert.matches("after removing [%d.:]+: 2 backends", out)
    assert.matches("\nok\n", out, nil, true)
  end)

  describe("static.nginx.conf", function()
    local ex
    teardown(function() if ex then ex:stop() end end)

    it("splits 1:2:3 over its three backends and serves status", function()
      ex = start_example("static.nginx.conf")
      local front_addr = ex:addr(8080)
      -- the front is up (backends start healthy)
      assert(nginx.wait_for(function() return nginx.accepting(front_addr) end, 5))
      local res = assert(nginx.get_spread(front_addr, (function()
        local t = {}
        for i = 1, 1200 do t[i] = "/r/" .. i end
        return t
      end)(), 8))
      local by = {}
      for _, r in ipairs(res) do
        assert.are.equal(200, r.status)
        by[r.body] = (by[r.body] or 0) + 1
      end
      for i, w in ipairs({ 1, 2, 3 }) do
        local body = "backend " .. ex.ports[tostring(8080 + i)] .. "\n"
        local want = 1200 * w / 6
        assert(math.abs((by[body] or 0) - want) <= 0.05 * want,
               body .. ": " .. tostring(by[body]))
      end
      local st = assert(nginx.get(front_addr, "/lb-status"))
      local rows = require("cjson").decode(st.body)
      assert.are.equal(3, #rows)
      for _, row in ipairs(rows) do assert.is_true(row.ready) end
      assert.is_nil(ex:error_log():find("%[error%]"), ex:error_log())
    end)
  end)

  describe("discovery.nginx.conf", function()
    local ex, dir
    teardown(function()
      if ex then ex:stop() end
      if dir then nginx.rmtree(dir) end
    end)

    it("follows its backends file and hashes X-User consistently", function()
      dir = assert(nginx.mkdtemp("lb-backends"))
      os.execute("chmod 755 " .. sh_quote(dir))
      local file = dir .. "/backends.txt"
      -- The example's file, with the example's ports; rewritten below.
      local text = assert(nginx.read_file(root .. "/examples/backends.txt"))
      local ports = {}
      for p = 8090, 8093 do ports[tostring(p)] = assert(nginx.free_port()) end
      local function write(t)
        t = t:gsub("127%.0%.0%.1:(%d+)", function(p)
          return "127.0.0.1:" .. ports[p]
        end)
        assert(nginx.write_file(file .. ".new", t))
        assert(os.rename(file .. ".new", file))
      end
      write(text)
      ex = start_example("discovery.nginx.conf", { LB_BACKENDS_FILE = file },
                         ports)
      local front_addr = ex:addr(8090)
      local function users()
        local reqs = {}
        for i = 1, 200 do
          reqs[i] = { path = "/", headers = { ["X-User"] = "user-" .. i } }
        end
        return assert(nginx.get_spread(front_addr, reqs, 4))
      end
      local b3 = "backend " .. ex.ports["8093"] .. "\n"
      local seen
      -- the file's list is in use (8093 is "down"): every worker read it
      assert(nginx.wait_for(function()
        local ok = true
        seen = {}
        for i, r in ipairs(users()) do
          if r.status ~= 200 or r.body == b3 then ok = false end
          seen[i] = r.body
        end
        return ok
      end, 2 + 1))
      -- each user keeps its backend
      for i, r in ipairs(users()) do assert.are.equal(seen[i], r.body) end

      -- 8093 back up: some users move to it, within update_frequency + 1 s
      write((text:gsub(" down", "")))
      assert(nginx.wait_for(function()
        local n = 0
        for _, r in ipairs(users()) do if r.body == b3 then n = n + 1 end end
        return n > 0
      end, 2 + 1))
      assert.is_nil(ex:error_log():find("%[error%]"), ex:error_log())
    end)
  end)

  it("every example documents the command that runs it", function()
    for _, name in ipairs({ "static.nginx.conf", "discovery.nginx.conf",
                            "plain.lua" }) do
      local text = assert(nginx.read_file(root .. "/examples/" .. name))
      assert.matches("Run from the repository root", text, 1, true)
    end
  end)
end)
