-- Run an nginx example of examples/ the documented way, through
-- tools/example.sh, on four free ports of this run (a block handed to the
-- runner as LB_PORT_BASE/LB_PORT_COUNT) and in a private LB_TMPDIR.
--
--   local examples = require("support.examples")
--   local ex = examples.start("static")   -- raises when it does not start
--   ex:addr(8080)                         -- where the file's 8080 went
--   ex:stop()                             -- also in teardown(); idempotent

local nginx = require("support.nginx")

local M = {}

local FIRST = { static = 8080, discovery = 8090, passive = 8090 }

local Example = {}
Example.__index = Example

local function runner(self, action)
  local env = { "LB_TMPDIR=" .. nginx.q(self.tmp), "LB_PORT_BASE=" .. self.base,
                "LB_PORT_COUNT=4" }
  for k, v in pairs(self.env) do
    env[#env + 1] = k .. "=" .. nginx.q(v)
  end
  return nginx.run("env " .. table.concat(env, " ") .. " sh "
                   .. nginx.q(nginx.root() .. "/tools/example.sh") .. " "
                   .. self.name .. " " .. action)
end

-- Start example `name` (static, discovery, passive) with extra environment
-- `env` for the runner and nginx, on ports base .. base + 3 (default: a
-- block from nginx.port_block).
function M.start(name, env, base)
  assert(FIRST[name], "no example " .. tostring(name))
  local self = setmetatable({ name = name, env = env or {}, ports = {} },
                            Example)
  self.tmp = assert(nginx.mkdtemp("lb-example-run"))
  -- the workers (nobody, when nginx starts as root) read backends.txt there
  nginx.run("chmod 755 " .. nginx.q(self.tmp))
  local err
  if not base then
    base, err = nginx.port_block(4)
  end
  if not base then
    nginx.rmtree(self.tmp)
    error(err)
  end
  self.base = base
  for i = 0, 3 do
    self.ports[tostring(FIRST[name] + i)] = base + i
  end
  local ok, out = runner(self, "start")
  self.output = out
  self.dir = out:match("\ndir: (%S+)")
  self.backends_file = out:match("\nbackends: +edit (%S+)")
  local pidfile = self.dir and (self.dir .. "/" .. name .. ".pid")
  self.pid = ok and pidfile and nginx.wait_for(function()
    local s = nginx.read_file(pidfile)
    return s and tonumber(s:match("%d+"))
  end, 5)
  if not self.pid then
    self:stop()
    error("example " .. name .. " did not start: " .. out)
  end
  return self
end

function Example:children()
  return nginx.children(self.pid)
end

function Example:addr(port)
  return "127.0.0.1:" .. self.ports[tostring(port)]
end

function Example:error_log()
  return self.dir and nginx.read_file(self.dir .. "/" .. self.name
                                      .. ".error.log") or ""
end

-- Stop through the runner; KILL whatever is left, then remove the
-- directories.
function Example:stop()
  if self.stopped then
    return
  end
  self.stopped = true
  local kids = self.pid and self:children() or {}
  runner(self, "stop")
  if self.pid and not nginx.wait_exit(self.pid, 10) then
    nginx.kill(self.pid, "KILL")
  end
  for _, w in ipairs(kids) do
    if not nginx.wait_exit(w, 5) then
      nginx.kill(w, "KILL")
    end
  end
  nginx.rmtree(self.tmp)
end

return M
