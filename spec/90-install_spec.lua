-- Install from a clean tree: `luarocks make` of the tracked files into an
-- empty tree, then require("lb") from a fresh LuaJIT that sees only it.
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out
end

describe("luarocks install", function()
  local tmp
  setup(function()
    local rc, out = sh("mktemp -d")
    assert(rc == 0, out)
    tmp = out:match("^(%S+)")
  end)
  teardown(function()
    if tmp and tmp:match("^/tmp/") then
      os.execute("rm -rf '" .. tmp .. "'")
    end
  end)

  it("builds into an empty tree and works from it alone", function()
    -- Only what git tracks (or, outside a checkout, the sources) is copied,
    -- so a file the rockspec needs but nobody committed fails here.
    local rc, out = sh("if git rev-parse --git-dir >/dev/null 2>&1; then "
      .. "git ls-files -z | xargs -0 cp --parents -t '" .. tmp .. "'; "
      .. "else cp -r src lua lb-*.rockspec '" .. tmp .. "'; fi")
    assert.equal(0, rc, out)
    rc, out = sh("cd '" .. tmp .. "' && luarocks make --deps-mode=none "
      .. "--tree '" .. tmp .. "/tree' lb-*.rockspec")
    assert.equal(0, rc, out)
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
    rc, out = sh("cd / && env -u LUA_PATH -u LUA_CPATH "
      .. "LUA_PATH='" .. tmp .. "/tree/share/lua/5.1/?.lua;"
      .. tmp .. "/tree/share/lua/5.1/?/init.lua' "
      .. "LUA_CPATH='" .. tmp .. "/tree/lib/lua/5.1/?.so' "
      .. "luajit '" .. script .. "'")
    assert.equal(0, rc, out)
    assert.matches("ok %S+ 3", out)
  end)
end)
