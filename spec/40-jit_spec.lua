-- The select path must JIT-compile with no trace abort, as lua-resty-core's
-- tests check.  Traces are watched with jit.attach, as lua-resty-core's
-- tests read jit.dump's output.
local h = require("helpers")

local function trace_events(fn)
  local ev = { start = 0, stop = 0, abort = 0, reasons = {}, loops = 0 }
  local cb = function(what, tr, _, _, otr, oex)
    ev[what] = (ev[what] or 0) + 1
    if what == "stop" then
      local info = require("jit.util").traceinfo(tr)
      if info and info.linktype == "loop" then
        ev.loops = ev.loops + 1
      end
    end
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

-- What must never appear is a fallback to the interpreter: NYI, a C
-- function, a blacklisting.
local function assert_no_fallback(reasons)
  for _, r in ipairs(reasons) do
    assert.is_nil(r:find("NYI", 1, true), r)
    assert.is_nil(r:find("C function", 1, true), r)
    assert.is_nil(r:find("blacklist", 1, true), r)
  end
end

-- The loop is compiled from source for each attempt, so its bytecode sits
-- at a new address each time.  LuaJIT's hot counters live in a 64-slot
-- table hashed by bytecode address; when the loop's slot is shared with
-- the entry of a function it calls, that function can get hot first and
-- its trace aborts ("down-recursion", "call unroll limit reached") before
-- the loop's own trace forms.  That shapes traces and falls back to
-- nothing; a new address takes another slot.
local LOOP = [[
  local b, keys = ...
  local n = 0
  for i = 1, 20000 do
    local be = b:select(keys[(i % 64) + 1])
    if be then
      n = n + 1
    end
  end
  return n
]]

-- Run `code` (a chunk taking b, keys) up to 3 times: every attempt must
-- return `want` without a fallback to the interpreter, and one attempt
-- must run with no abort at all, with the loop one looping trace.
local function assert_clean_loop(code, name, b, keys, want)
  local clean
  for attempt = 1, 3 do
    local loop = assert(load(code, "=" .. name .. attempt))
    local n
    local ev = trace_events(function() n = loop(b, keys) end)
    assert.equal(want, n)
    assert_no_fallback(ev.reasons)
    if ev.abort == 0 and #ev.reasons == 0 and ev.loops >= 1 then
      clean = attempt
      break
    end
  end
  assert.is_not_nil(clean, "every attempt aborted a trace")
end

describe("JIT", function()
  assert(jit and jit.status(), "the JIT must be on for this spec")

  for _, sel in ipairs({ "round_robin", "random", "fnv", "consistent" }) do
    it("compiles the select loop for " .. sel .. " with no trace abort", function()
      local list = {}
      for i = 1, 100 do
        list[i] = "127.0.0." .. (i % 250 + 1) .. ":" .. (8000 + i)
      end
      local b = h.new({ selection = sel, backends = list })
      local keys = {}
      for i = 1, 64 do
        keys[i] = "/key/" .. i
      end
      -- the loop, select included
      assert_clean_loop(LOOP, "loop", b, keys, 20000)
    end)
  end

  -- The counting picks: acquire and release (one FFI call each), and the
  -- counted select lb.nginx's first attempt makes.
  local LOOP_COUNTED = [[
    local b, keys = ...
    local n = 0
    for i = 1, 20000 do
      local k = keys[(i % 64) + 1]
      local be = b:acquire(k)
      if be then
        n = n + 1
        b:release(be)
      end
      if b:_select_cstr(k, #k, nil, 0) then
        n = n + 1
      end
    end
    return n
  ]]
  it("compiles acquire, release and the counted select with no trace abort",
     function()
    local list = {}
    for i = 1, 100 do
      list[i] = "127.0.0." .. (i % 250 + 1) .. ":" .. (8000 + i)
    end
    local b = h.new({ backends = list, passive = {} })
    local keys = {}
    for i = 1, 64 do
      keys[i] = "/key/" .. i
    end
    assert_clean_loop(LOOP_COUNTED, "counted", b, keys, 40000)
    for _, row in ipairs(b:status()) do
      assert.equal(0, row.in_flight)
    end
  end)

  it("compiles the select_with walk without falling back", function()
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
    -- outer trace at the inner loop, then compiles each loop on its own.
    assert_no_fallback(ev.reasons)
    assert.is_true(ev.stop >= 2)
  end)
end)
