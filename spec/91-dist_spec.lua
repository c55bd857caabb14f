-- make dist: the source rock of the tracked files.  `luarocks build`
-- installs it into an empty tree with the network gone (a fresh network
-- namespace: no interface but a down loopback), and a fresh LuaJIT that
-- sees only that tree requires lb from it.
local nginx = require("support.nginx")
local sh, q = nginx.run, nginx.q

local function rockspec()
  local ok, out = sh("ls lb-*.rockspec")
  assert(ok, out)
  local path = out:match("^(%S+)%s*$")
  local env = {}
  local chunk = assert(loadfile(path))
  setfenv(chunk, env)
  chunk()
  return path, env
end

local function in_git_checkout()
  local ok, top = sh("git rev-parse --show-toplevel")
  local ok2, here = sh("pwd -P")
  return ok and ok2 and top == here
end

-- `make dist` into dir; returns the rock's path.
local function dist(dir)
  local path, spec = rockspec()
  local ok, out = sh("make -s dist DIST_DIR=" .. q(dir))
  assert(ok, out)
  local rock = dir .. "/" .. path:gsub("%.rockspec$", ".src.rock")
  assert.equal("lb-" .. spec.version .. ".rockspec", path)
  assert.truthy(io.open(rock, "rb"), "no " .. rock .. " after make dist:\n" .. out)
  return rock
end

describe("make dist", function()
  local tmp
  setup(function()
    tmp = assert(nginx.mkdtemp("lb-dist"))
  end)
  teardown(function()
    if tmp then nginx.rmtree(tmp) end
  end)

  it("packs the rockspec and every tracked file, the same bytes twice", function()
    if not in_git_checkout() then
      pending("not a git checkout: make dist refuses to run (it packs git ls-files)")
      return
    end
    local rock = dist(tmp .. "/a")
    local again = dist(tmp .. "/b")
    local ok, out = sh("cmp " .. q(rock) .. " " .. q(again))
    assert.is_true(ok, out)

    local path = rockspec()
    ok, out = sh("unzip -Z1 " .. q(rock))
    assert.is_true(ok, out)
    local entries = {}
    for line in out:gmatch("[^\n]+") do
      if not line:match("/$") then entries[#entries + 1] = line end
    end
    ok, out = sh("git ls-files")
    assert.is_true(ok, out)
    local want, tracked = { path }, {}
    for line in out:gmatch("[^\n]+") do
      want[#want + 1] = "lb/" .. line
      tracked[line] = true
    end
    table.sort(entries)
    table.sort(want)
    assert.same(want, entries)
    for _, f in ipairs({ "LICENSE", "NOTICE", "CHANGELOG.md", "src/lb.h", "lua/lb.lua" }) do
      assert.is_true(tracked[f], f .. " is not tracked, so not in the rock")
    end
  end)

  it("refuses, saying why, outside a git checkout", function()
    local path = rockspec()
    local bare = tmp .. "/bare"
    local ok, out = sh("mkdir -p " .. q(bare .. "/tools") .. " && cp Makefile " .. q(path)
      .. " " .. q(bare) .. " && cp tools/dist.sh " .. q(bare .. "/tools/"))
    assert.is_true(ok, out)
    ok, out = sh("cd " .. q(bare) .. " && GIT_CEILING_DIRECTORIES=" .. q(tmp)
      .. " make -s dist DIST_DIR=" .. q(tmp .. "/bare-dist"))
    assert.is_false(ok)
    local said = ("make dist: " .. bare .. " is not a git checkout: "
                  .. "the source rock is made of the files git tracks"):gsub("%p", "%%%0")
    assert.matches(said, out)
    assert.is_nil(io.open(tmp .. "/bare-dist/" .. path:gsub("%.rockspec$", ".src.rock")))
  end)

  it("installs offline into an empty tree, and lb loads from it alone", function()
    if not in_git_checkout() then
      pending("not a git checkout: make dist refuses to run (it packs git ls-files)")
      return
    end
    local rock = dist(tmp .. "/dist")
    local _, spec = rockspec()
    local offline = "unshare -n "
    if not sh("unshare -n true") then
      offline = ""
      io.stderr:write("\nspec/91: unshare -n is not permitted here: luarocks build runs "
                      .. "with the network up, so 'offline' is not proven by this run\n")
    end
    -- A fresh HOME: no user configuration, no luarocks cache.
    local ok, out = sh("mkdir " .. q(tmp .. "/home") .. " && cd " .. q(tmp) .. " && env HOME="
      .. q(tmp .. "/home") .. " " .. offline .. "luarocks build --deps-mode=none --tree "
      .. q(tmp .. "/tree") .. " " .. q(rock))
    assert.is_true(ok, out)
    local installed = ("lb " .. spec.version .. " is now installed"):gsub("%p", "%%%0")
    assert.matches(installed, out)

    local script = tmp .. "/use.lua"
    assert(nginx.write_file(script, [[
local lb = require("lb")
assert(package.searchpath("lb", package.path):find("/tree/", 1, true))
assert(package.searchpath("lb.core", package.cpath):find("/tree/", 1, true))
local b = assert(lb.new({ backends = { "127.0.0.1:1", "[::1]:2" },
                          selection = "maglev" }))
assert(b:select("k"))
print("ok " .. lb._VERSION)
]]))
    ok, out = nginx.luajit_in_tree(tmp .. "/tree", script)
    assert.is_true(ok, out)
    assert.equal("ok " .. spec.version:match("^(.-)%-%d+$"), out:match("^(.-)%s*$"))
  end)
end)
