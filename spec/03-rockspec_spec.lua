-- The rockspec builds lb.core from exactly the C files under src/ (any
-- depth): a file added, moved or removed without the same change in the
-- rockspec fails here, not in a user's `luarocks make`.

-- The rockspec is Lua assignments: run it in an empty environment.
local function rockspec_sources(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  local env = {}
  local chunk = assert(loadstring(text, "@" .. path))
  setfenv(chunk, env)
  chunk()
  return env.build.modules["lb.core"].sources
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
end)
