-- The FFI declarations of lua/lb/cdef.lua against the C compiler's view of
-- src/lb.h: every struct Lua declares exists in lb.h with the same fields
-- in the same order, and its size and every field's offset are the ones
-- the compiler gives (a small C program built here with cc prints them).
-- A field added to lb.h without the same change in Lua fails here.
local ffi = require("ffi")
local cdef = require("lb.cdef")
local nginx = require("support.nginx")
local q = nginx.q

local function strip_comments(text)
  return (text:gsub("/%*.-%*/", " "):gsub("//[^\n]*", " "))
end

-- { name = { fields in order } } of every `typedef struct X { ... } X;`.
local function structs_of(text)
  local out = {}
  for name, body, alias in strip_comments(text):gmatch(
      "typedef%s+struct%s+([%w_]+)%s*(%b{})%s*([%w_]+)%s*;") do
    assert(name == alias, "typedef struct " .. name .. " ... " .. alias)
    local fields = {}
    for decl in body:sub(2, -2):gmatch("[^;]+") do
      if decl:find("%S") then
        decl = decl:gsub("%b[]", "")
        for d in decl:gmatch("[^,]+") do
          fields[#fields + 1] = assert(d:match("([%w_]+)%s*$"), d)
        end
      end
    end
    out[name] = fields
  end
  return out
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  return s
end

describe("FFI layout", function()
  local lua_structs = structs_of(cdef.CDEF)
  -- lb.h and the parts of the API it includes (lb_check.h, lb_discovery.h)
  local header = read(nginx.root() .. "/src/lb.h")
  local parts = { header }
  for part in header:gmatch('#include "(lb_[%w_]+%.h)"') do
    parts[#parts + 1] = read(nginx.root() .. "/src/" .. part)
  end
  assert.is_true(#parts >= 3, "lb.h includes " .. (#parts - 1) .. " parts")
  local c_structs = structs_of(table.concat(parts, "\n"))
  local names = {}
  for name in pairs(lua_structs) do
    names[#names + 1] = name
  end
  table.sort(names)

  it("declares the structs Lua reads", function()
    assert.is_true(#names >= 6, "structs found in cdef.lua: " .. #names)
    assert.is_not_nil(lua_structs.lb_iter_head)
    -- lb_iter is opaque on both sides: only its head has a layout.
    assert.is_nil(lua_structs.lb_iter)
    assert.is_nil(c_structs.lb_iter)
  end)

  it("has the fields of lb.h, in lb.h's order", function()
    for _, name in ipairs(names) do
      assert.is_not_nil(c_structs[name], name .. " is not defined in lb.h")
      assert.are.same(c_structs[name], lua_structs[name], name)
    end
  end)

  it("has the compiler's sizes and offsets", function()
    local tmp = assert(nginx.mkdtemp("lb-abi"))
    local ok, err = pcall(function()
      local src = { "#include <stddef.h>", "#include <stdio.h>",
                    "#include <time.h>",
                    '#include "lb.h"', "int main(void) {" }
      for _, name in ipairs(names) do
        src[#src + 1] = ('printf("%s %%zu\\n", sizeof(%s));'):format(name, name)
        for _, f in ipairs(c_structs[name]) do
          src[#src + 1] = ('printf("%s.%s %%zu\\n", offsetof(%s, %s));')
                          :format(name, f, name, f)
        end
      end
      -- struct lb_timespec is libc's struct timespec under lb's name.
      src[#src + 1] = 'printf("timespec %zu\\n", sizeof(struct timespec));'
      src[#src + 1] = 'printf("timespec.tv_sec %zu\\n", offsetof(struct timespec, tv_sec));'
      src[#src + 1] = 'printf("timespec.tv_nsec %zu\\n", offsetof(struct timespec, tv_nsec));'
      src[#src + 1] = "return 0; }"
      local f = assert(io.open(tmp .. "/abi.c", "w"))
      f:write(table.concat(src, "\n"), "\n")
      f:close()
      local built, out = nginx.run("cc -std=gnu11 -Wall -Werror -I"
        .. q(nginx.root() .. "/src") .. " -o " .. q(tmp .. "/abi") .. " "
        .. q(tmp .. "/abi.c") .. " 2>&1")
      assert(built, out)
      local p = assert(io.popen(q(tmp .. "/abi")))
      local c = {}
      for line in p:lines() do
        local k, v = line:match("^(%S+) (%d+)$")
        c[k] = tonumber(v)
      end
      p:close()
      local lua, want = {}, {}
      for _, name in ipairs(names) do
        lua[name], want[name] = ffi.sizeof(name), c[name]
        for _, fld in ipairs(c_structs[name]) do
          local k = name .. "." .. fld
          lua[k], want[k] = ffi.offsetof(name, fld), c[k]
        end
      end
      lua.timespec, want.timespec = ffi.sizeof("struct lb_timespec"), c.timespec
      for _, fld in ipairs({ "tv_sec", "tv_nsec" }) do
        lua["timespec." .. fld] = ffi.offsetof("struct lb_timespec", fld)
        want["timespec." .. fld] = c["timespec." .. fld]
      end
      assert.are.same(want, lua)
    end)
    nginx.rmtree(tmp)
    assert(ok, err)
  end)
end)
