-- fork() for the specs that need processes sharing a balancer:
--
--   local fork = require("support.fork")
--   local pid = fork.fork()          -- 0 in the child, as fork(2)
--   fork.exit(code)                  -- the child leaves (never into busted)
--   fork.kill(pid, fork.SIGKILL)
--   fork.reap(pid, timeout)          -- exit code; nil, why when it was
--                                    -- killed or had to be (at the deadline)
local ffi = require("ffi")
local lb = require("lb")

pcall(ffi.cdef, [[
int fork(void);
int waitpid(int pid, int *status, int options);
void _exit(int status);
int kill(int pid, int sig);
]])
local WNOHANG = 1

local M = { SIGKILL = 9 }

function M.fork()
  return ffi.C.fork()
end

function M.exit(code)
  ffi.C._exit(code)
end

function M.kill(pid, sig)
  return ffi.C.kill(pid, sig)
end

-- Wait for a child with a deadline; kill it by pid when it is late.
-- Returns its exit code, or nil, "killed" / "signal N".
function M.reap(pid, timeout)
  local st = ffi.new("int[1]")
  local deadline = lb.now() + timeout
  while lb.now() < deadline do
    local r = ffi.C.waitpid(pid, st, WNOHANG)
    if r == pid then
      if bit.band(st[0], 0x7f) ~= 0 then
        return nil, "signal " .. bit.band(st[0], 0x7f)
      end
      return bit.band(bit.rshift(st[0], 8), 0xff)
    end
    require("socket").sleep(0.005)
  end
  ffi.C.kill(pid, M.SIGKILL)
  ffi.C.waitpid(pid, st, 0)
  return nil, "killed"
end

return M
