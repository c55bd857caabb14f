-- The select path must JIT-compile with no trace abort, as lua-resty-core's
-- tests check.  Traces are watched with jit.attach, as lua-resty-core's
-- tests read jit.dump's output.
local h = require("helpers")

local jt = require("support.jit_trace")
local trace_events = jt.trace_events

-- What must never appear is a fallback to the interpreter: NYI, a C
-- function, a blacklisting.
local function assert_no_fallback(reasons)
  assert.same({}, jt.fallbacks(reasons))
end

-- Each attempt runs in a fresh luajit (support/jit_trace.lua says why):
-- the loop's bytecode and lb's functions sit at new addresses each time.
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

-- A balancer of 100 loopback-looking backends (data only) with `opts`
-- and 64 keys, built in the attempt's process.
local function setup(opts)
  return ([[
    local opts = %s
    local list = {}
    for i = 1, 100 do
      list[i] = "127.0.0." .. (i %% 250 + 1) .. ":" .. (8000 + i)
    end
    opts.backends = list
    local b = assert(require("lb").new(opts))
    local keys = {}
    for i = 1, 64 do
      keys[i] = "/key/" .. i
    end
    return b, keys
  ]]):format(opts)
end

-- Up to 3 attempts, every one without a fallback to the interpreter, one
-- with no abort at all and the loop one looping trace.
local function assert_clean_loop(opts, code, name, want, after)
  local clean, seen = jt.clean_loop(setup(opts), code, name, want, after)
  local aborts = {}
  for i, r in ipairs(seen) do
    aborts[i] = r.abort .. " (" .. table.concat(r.reasons, "; ") .. ")"
  end
  assert.is_not_nil(clean, "every attempt aborted a trace: "
                    .. table.concat(aborts, ", "))
  return clean
end

describe("JIT", function()
  assert(jit and jit.status(), "the JIT must be on for this spec")

  for _, sel in ipairs({ "round_robin", "random", "fnv", "consistent" }) do
    it("compiles the select loop for " .. sel .. " with no trace abort", function()
      -- the loop, select included
      assert_clean_loop(("{ selection = %q }"):format(sel), LOOP, "loop",
                        20000)
    end)
  end

  -- The counting picks: acquire and release (one FFI call each), and the
  -- counted select lb.nginx's first attempt makes.  Each lb function is
  -- called at most once per iteration on average (acquire on odd ones,
  -- release and the counted select on even ones): a function called twice
  -- per iteration gets hot as fast as the loop itself, and its trace,
  -- started at its entry, aborts "leaving loop in root trace".
  local LOOP_COUNTED = [[
    local b, keys = ...
    local n, held = 0, nil
    for i = 1, 20000 do
      local k = keys[(i % 64) + 1]
      if i % 2 == 1 then
        held = b:acquire(k)
        if held then
          n = n + 1
        end
      else
        if held then
          b:release(held)
          held = nil
        end
        if b:_select_cstr(k, #k, nil, 0) then
          n = n + 1
        end
      end
    end
    return n
  ]]
  it("compiles acquire, release and the counted select with no trace abort",
     function()
    -- every in-flight count back at 0 afterwards
    local clean = assert_clean_loop("{ passive = {} }", LOOP_COUNTED,
      "counted", 20000, [[
        local b = ...
        local most = 0
        for _, row in ipairs(b:status()) do
          if row.in_flight > most then most = row.in_flight end
        end
        return most
      ]])
    assert.equal(0, clean.after)
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
