-- The rockspec builds lb.core from exactly the C files under src/ (any
-- depth): a file added, moved or removed without the same change in the
-- rockspec fails here, not in a user's `luarocks make`.

-- The rockspec is Lua assignments: run it in an empty environment.
local function read(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  return text
end

local function rockspec_env(path)
  local env = {}
  local chunk = assert(loadstring(read(path), "@" .. path))
  setfenv(chunk, env)
  chunk()
  return env
end

local function rockspec_sources(path)
  return rockspec_env(path).build.modules["lb.core"].sources
end

local function c_files_under(dir)
  local p = assert(io.popen("find " .. dir .. " -name '*.c' -type f"))
  local out = {}
  for line in p:lines() do
    out[#out + 1] = line
  end
  p:close()
  return out
end

local function rockspec_path()
  local p = assert(io.popen("ls lb-*.rockspec"))
  local path = p:read("*l")
  p:close()
  return path
end

describe("rockspec", function()
  it("lists exactly the C files under src/ as lb.core's sources", function()
    local listed = rockspec_sources(assert(rockspec_path()))
    local found = c_files_under("src")
    local seen = {}
    for _, f in ipairs(listed) do
      assert.is_nil(seen[f], "listed twice: " .. f)
      seen[f] = true
    end
    table.sort(listed)
    table.sort(found)
    assert.same(found, listed)
  end)

  -- One version everywhere: the rockspec (its name, version, release tag),
  -- lb._VERSION, lb.nginx's, the C core's (the HTTP check's User-Agent) and
  -- the newest entry of the CHANGELOG.
  it("names one version in the rockspec, the modules and the CHANGELOG", function()
    local path = assert(rockspec_path())
    local spec = rockspec_env(path)
    local version = spec.version:match("^(%d+%.%d+%.%d+)%-%d+$")
    assert.is_string(version, "rockspec version " .. tostring(spec.version))
    assert.equal("lb-" .. spec.version .. ".rockspec", path)
    assert.equal("v" .. version, spec.source.tag)
    assert.equal(version, require("lb")._VERSION)
    assert.equal(version, read("lua/lb/nginx.lua"):match('_VERSION = "([^"]+)"'))
    assert.equal(version, read("src/lb.h"):match('#define LB_VERSION "([^"]+)"'))
    local newest = read("CHANGELOG.md"):match("\n## %[([^%]]+)%]")
    assert.equal(version, newest)
  end)

  -- The install instructions name the rockspec and the source rock of this
  -- version, not an older one.
  it("is the rockspec and source rock the README and docs name", function()
    local path = assert(rockspec_path())
    local rock = path:gsub("%.rockspec$", ".src.rock")
    local named = 0
    for _, doc in ipairs({ "README.md", "docs/openresty.md", "docs/api.md" }) do
      local text = read(doc)
      for name in text:gmatch("lb%-[%w.]+%-%d+%.rockspec") do
        assert.equal(path, name, doc)
        named = named + 1
      end
      for name in text:gmatch("lb%-[%w.]+%-%d+%.src%.rock") do
        assert.equal(rock, name, doc)
      end
    end
    assert.is_true(named >= 2, "README.md and docs/openresty.md name the rockspec")
  end)
end)
