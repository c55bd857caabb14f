-- Install from a clean tree: `luarocks make` of the tracked files into an
-- empty tree, then require("lb") from a fresh LuaJIT that sees only it.
local nginx = require("support.nginx")
local sh, q = nginx.run, nginx.q

describe("luarocks install", function()
  local tmp
  setup(function()
    tmp = assert(nginx.mkdtemp("lb-install"))
  end)
  teardown(function()
    if tmp then nginx.rmtree(tmp) end
  end)

  it("builds into an empty tree and works from it alone", function()
    -- Only what git tracks (or, outside a checkout, the sources) is copied,
    -- so a file the rockspec needs but nobody committed fails here.
    local ok, out = sh("if git rev-parse --git-dir >/dev/null 2>&1; then "
      .. "git ls-files -z | xargs -0 cp --parents -t " .. q(tmp) .. "; "
      .. "else cp -r src lua lb-*.rockspec " .. q(tmp) .. "; fi")
    assert.is_true(ok, out)
    ok, out = sh("cd " .. q(tmp) .. " && luarocks make --deps-mode=none "
      .. "--tree " .. q(tmp .. "/tree") .. " lb-*.rockspec")
    assert.is_true(ok, out)
    local script = tmp .. "/use.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local lb = require("lb")
assert(package.searchpath("lb.core", package.cpath):find("/tree/", 1, true))
local b = assert(lb.new({ backends = { "127.0.0.1:1", "[::1]:2", "unix:/x" },
                          selection = "consistent",
                          health_check = lb.health.tcp({ timeout = 0.5 }) }))
assert(b:select("k"))
assert(b:run_health_check())
print("ok " .. lb._VERSION .. " " .. #b:status())
]])
    f:close()
    ok, out = nginx.luajit_in_tree(tmp .. "/tree", script)
    assert.is_true(ok, out)
    assert.matches("ok %S+ 3", out)
  end)

  -- luarocks' builtin backend compiles next to the sources (src/*.o,
  -- src/*/*.o) and links lb/core.so at the top: in a checkout they are
  -- ignored by git, and `make clean` removes them.
  it("leaves only ignored files in a checkout, which make clean removes", function()
    if not sh("git rev-parse --git-dir >/dev/null 2>&1") then
      pending("not a git checkout: .gitignore and make clean need one")
      return
    end
    local co = tmp .. "/checkout"
    local ok, out = sh("mkdir " .. q(co) .. " && git ls-files -z | xargs -0 cp --parents -t "
      .. q(co) .. " && cd " .. q(co) .. " && git init -q . && git add -A"
      .. " && git -c user.name=lb -c user.email=lb@localhost -c commit.gpgsign=false"
      .. " commit -q -m tree")
    assert.is_true(ok, out)
    ok, out = sh("cd " .. q(co) .. " && luarocks make --deps-mode=none --tree "
      .. q(tmp .. "/clean-tree") .. " lb-*.rockspec")
    assert.is_true(ok, out)

    local function status()
      local ok2, st = sh("cd " .. q(co) .. " && git status --porcelain --ignored")
      assert.is_true(ok2, st)
      return st
    end
    local st = status()
    assert.matches("!! lb/\n", st)
    assert.matches("!! src/[%w_]+%.o\n", st)
    assert.matches("!! src/select/[%w_]+%.o\n", st)
    assert.is_nil(st:find("??", 1, true), "luarocks make left files git does not ignore:\n" .. st)

    ok, out = sh("cd " .. q(co) .. " && make -s clean")
    assert.is_true(ok, out)
    assert.equal("", status())
  end)
end)
