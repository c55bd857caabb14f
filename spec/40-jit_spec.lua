-- The select path must JIT-compile: no trace abort, no lua_CFunction.
-- Traces are watched with jit.attach, as lua-resty-core's tests read
-- jit.dump's output.
local h = require("helpers")

local function trace_events(fn)
  local ev = { start = 0, stop = 0, abort = 0, reasons = {} }
  local cb = function(what, _, _, _, otr, oex)
    ev[what] = (ev[what] or 0) + 1
    if what == "abort" then
      local r = require("jit.vmdef").traceerr[otr]
      if r and type(oex) ~= "nil" then
        r = r:format(oex)
      end
      ev.reasons[#ev.reasons + 1] = tostring(r)
    end
  end
  jit.flush()
  jit.attach(cb, "trace")
  local ok, err = pcall(fn)
  jit.attach(cb)
  assert(ok, err)
  return ev
end

describe("JIT", function()
  assert(jit and jit.status(), "the JIT must be on for this spec")

  for _, sel in ipairs({ "round_robin", "random", "fnv", "consistent" }) do
    it("compiles the select loop for " .. sel .. " without abort", function()
      local list = {}
      for i = 1, 100 do
        list[i] = "127.0.0." .. (i % 250 + 1) .. ":" .. (8000 + i)
      end
      local b = h.new({ selection = sel, backends = list })
      local keys = {}
      for i = 1, 64 do
        keys[i] = "/key/" .. i
      end
      local n = 0
      local ev = trace_events(function()
        for i = 1, 20000 do
          local be = b:select(keys[(i % 64) + 1])
          if be then
            n = n + 1
          end
        end
      end)
      assert.equal(20000, n)
      assert.same({}, ev.reasons)
      assert.equal(0, ev.abort)
      assert.is_true(ev.stop >= 1)
    end)
  end

  it("compiles the select_with walk without abort", function()
    local b = h.new({ selection = "fnv", backends = {
      "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4" } })
    local skip = b:backends()[1]
    local function accept(be, healthy)
      return healthy and be ~= skip
    end
    local keys = {}
    for i = 1, 16 do
      keys[i] = "k" .. i
    end
    local n = 0
    local ev = trace_events(function()
      for i = 1, 20000 do
        if b:select_with(keys[(i % 16) + 1], 8, accept) then
          n = n + 1
        end
      end
    end)
    assert.equal(20000, n)
    -- The walk is a loop inside the caller's loop: LuaJIT first aborts the
    -- outer trace at the inner loop ("inner loop in root trace", "loop
    -- unroll limit reached") and then compiles each loop on its own; those
    -- are trace formation, not fallbacks.  What must not appear is a
    -- fallback to the interpreter: NYI, a C function, a blacklisting.
    for _, r in ipairs(ev.reasons) do
      assert.is_nil(r:find("NYI", 1, true), r)
      assert.is_nil(r:find("C function", 1, true), r)
      assert.is_nil(r:find("blacklist", 1, true), r)
    end
    assert.is_true(ev.stop >= 2)
  end)
end)
