-- The examples run as documented: examples/plain.lua with luajit, the
-- nginx configurations through tools/example.sh (support.examples), which
-- renders them with this run's ports and temp directory.

local nginx = require("support.nginx")
local examples = require("support.examples")

local root = nginx.root()

local sh_quote = nginx.q

describe("examples", function()
  it("plain.lua runs under luajit", function()
    local p = io.popen("cd " .. sh_quote(nginx.tmpdir()) .. " && luajit "
                       .. sh_quote(root .. "/examples/plain.lua") .. " 2>&1; echo rc=$?")
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
      ex = examples.start("static")
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
    local ex
    teardown(function()
      if ex then ex:stop() end
    end)

    it("follows its backends file and hashes X-User consistently", function()
      local tracked = assert(nginx.read_file(root .. "/examples/backends.txt"))
      ex = examples.start("discovery")
      -- The file the runner says to edit: a copy in the example's own
      -- directory, with the example's ports moved; rewritten below.
      local file = ex.backends_file
      assert(file, ex.output)
      assert.are_not.equal(root .. "/examples/backends.txt", file)
      assert.are.equal(ex.dir, file:match("^(.*)/[^/]+$"))
      local text = tracked
      local function write(t)
        t = t:gsub("127%.0%.0%.1:(%d+)", function(p)
          return "127.0.0.1:" .. ex.ports[p]
        end)
        assert(nginx.write_file(file .. ".new", t))
        assert(os.rename(file .. ".new", file))
      end
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
      -- the tracked file was read, never written
      assert.are.equal(tracked, nginx.read_file(root .. "/examples/backends.txt"))
    end)
  end)

  describe("discovery.nginx.conf with LB_BACKENDS_FILE", function()
    local ex, dir
    teardown(function()
      if ex then ex:stop() end
      if dir then nginx.rmtree(dir) end
    end)

    it("reads the file LB_BACKENDS_FILE names instead", function()
      dir = assert(nginx.mkdtemp("lb-backends"))
      os.execute("chmod 755 " .. sh_quote(dir))
      local file = dir .. "/mine.txt"
      -- the example's ports, chosen first: the file names its 8092
      local base = assert(nginx.port_block(4))
      assert(nginx.write_file(file, "# only one\n127.0.0.1:" .. (base + 2) .. "\n"))
      ex = examples.start("discovery", { LB_BACKENDS_FILE = file }, base)
      assert.are.equal(file, ex.backends_file)
      local front_addr = ex:addr(8090)
      local st = assert(nginx.get(front_addr, "/lb-status"))
      local rows = require("cjson").decode(st.body)
      assert.are.equal(1, #rows)
      assert.are.equal(ex:addr(8092), rows[1].addr)
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
