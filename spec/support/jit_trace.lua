-- support/jit_trace.lua - watching LuaJIT's traces for the JIT specs.
--
-- trace_events(fn): run fn with jit.attach watching; the counts of trace
-- events, the loops formed and the abort reasons.  fallbacks(reasons):
-- the reasons that mean the interpreter ran instead (NYI, a C function, a
-- blacklisting).  clean_loop(setup, code, name, want): whether `code`
-- compiles with no abort at all, each attempt in a fresh luajit.
--
-- Why fresh processes: LuaJIT's hot counters live in a 64-slot table
-- hashed by bytecode address, shared by loops and function entries.  When
-- the slots of functions the loop calls collide, one of them can get hot
-- before the loop and its trace aborts ("leaving loop in root trace",
-- "down-recursion") before the loop's own trace forms.  Those addresses
-- are fixed for a process's life, so attempts in one process repeat the
-- same race; each new process lays the code out anew.
local nginx = require("support.nginx")

local M = {}

function M.trace_events(fn)
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

function M.fallbacks(reasons)
  local out = {}
  for _, r in ipairs(reasons) do
    if r:find("NYI", 1, true) or r:find("C function", 1, true)
       or r:find("blacklist", 1, true) then
      out[#out + 1] = r
    end
  end
  return out
end

local CHILD = [[
local root = %q
package.path = root .. "/lua/?.lua;" .. root .. "/spec/?.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath
local jt = require("support.jit_trace")
local b, keys = assert(load(%q, "=setup"))()
local loop = assert(load(%q, %q))
local n
local ev = jt.trace_events(function() n = loop(b, keys) end)
local after = assert(load(%q, "=after"))(b)
io.write("n ", tostring(n), "\nabort ", ev.abort, "\nloops ", ev.loops,
         "\nafter ", tostring(after), "\n")
for _, r in ipairs(ev.reasons) do io.write("reason ", r, "\n") end
]]

-- One attempt in a fresh luajit: setup is a chunk returning b, keys; code
-- a chunk taking them; after (optional) a chunk taking b whose result is
-- reported.  Returns { n, abort, loops, after, reasons }, or raises.
function M.attempt(setup, code, name, after)
  local dir = assert(nginx.mkdtemp("lb-jit"))
  local file = dir .. "/attempt.lua"
  local root = nginx.root()
  assert(nginx.write_file(file, CHILD:format(root, setup, code, "=" .. name,
                                             after or "return nil")))
  local ok, out = nginx.run("cd " .. nginx.q(root) .. " && luajit "
                            .. nginx.q(file))
  nginx.rmtree(dir)
  assert(ok, out)
  local r = { reasons = {} }
  for k, v in out:gmatch("(%a+) ([^\n]*)") do
    if k == "reason" then
      r.reasons[#r.reasons + 1] = v
    else
      r[k] = tonumber(v) or v
    end
  end
  assert(r.n, "no result from the attempt: " .. out)
  return r
end

-- Up to `tries` attempts (default 3), each in a fresh process: every one
-- must return `want` and fall back to nothing (else it raises); the first
-- with no abort and a looping trace ends it.  Returns that attempt (nil if none) and the list
-- of attempts.
function M.clean_loop(setup, code, name, want, after, tries)
  local seen = {}
  for attempt = 1, tries or 3 do
    local r = M.attempt(setup, code, name .. attempt, after)
    seen[#seen + 1] = r
    if r.n ~= want then
      error(("attempt %d returned %s, not %s"):format(attempt,
            tostring(r.n), tostring(want)), 2)
    end
    local fb = M.fallbacks(r.reasons)
    if #fb > 0 then
      error(("attempt %d fell back: %s"):format(attempt,
            table.concat(fb, "; ")), 2)
    end
    if r.abort == 0 and #r.reasons == 0 and r.loops >= 1 then
      return r, seen
    end
  end
  return nil, seen
end

return M
