-- Loopback servers for the health-check specs, each a child process
-- started here and stopped by its pid.
--
--   local servers = require("support.servers")
--   local s = servers.start("http", { status = 503, count = 2 })
--   s:addr(1), s:addr(2)         -- "127.0.0.1:PORT"
--   s:count("req"), s:requests() -- events seen by the server
--   s:stop()                     -- also from finally(); safe twice
--
--   local h = servers.start("http", { switchable = true })
--   h:set_status(503)            -- what it answers from now on (200 first)
--
--   local t = servers.tls()      -- openssl s_server -www, a self-signed
--   t.addr, t.cert               -- certificate for localhost/127.0.0.1
--
-- servers.stop_all() stops whatever is still running (an after_each
-- safety net).  Modes and options: spec/support/check_server.lua.

local nginx = require("support.nginx")
local ports = require("support.ports")

local M = {}

local running = {} -- pid -> server

local Server = {}
Server.__index = Server

local q = nginx.q
local function lines(path)
  local s = nginx.read_file(path) or ""
  local out = {}
  for l in s:gmatch("[^\n]+") do
    out[#out + 1] = l
  end
  return out
end

-- Start check_server.lua in `mode`; opts are its name=value options.
-- Returns the server or raises (a spec cannot go on without it).
function M.start(mode, opts)
  local dir = assert(nginx.mkdtemp("lb-check-srv"))
  local args = { "luajit", q(nginx.root() .. "/spec/support/check_server.lua"),
                 mode }
  local status_file
  opts = opts or {}
  if ports.range() and opts.port == nil and opts.ports == nil then
    -- LB_PORT_BASE set: the listeners' ports come from this run's range
    local list = {}
    for i = 1, tonumber(opts.count or 1) do
      list[i] = assert(nginx.free_port(opts.host))
    end
    local o = { ports = table.concat(list, ",") }
    for k, v in pairs(opts) do o[k] = v end
    opts = o
  end
  for k, v in pairs(opts) do
    if k == "switchable" then
      status_file = dir .. "/status"
      nginx.write_file(status_file, tostring((opts or {}).status or 200))
      args[#args + 1] = q("status_file=" .. status_file)
    else
      args[#args + 1] = q(k .. "=" .. tostring(v))
    end
  end
  local log = dir .. "/events"
  local pid = assert(nginx.spawn("env LUA_PATH=" .. q(package.path)
                                 .. " LUA_CPATH=" .. q(package.cpath) .. " "
                                 .. table.concat(args, " "), log))
  local self = setmetatable({ pid = pid, dir = dir, log = log, ports = {},
                              host = (opts or {}).host or "127.0.0.1",
                              status_file = status_file },
                            Server)
  running[pid] = self
  local ready = nginx.wait_for(function()
    local l = lines(log)[1]
    return (l and l:match("^ready ") and l) or not nginx.alive(pid)
  end, 10)
  if ready == true then
    ready = nil
  end
  if not ready then
    local out = nginx.read_file(log) or ""
    self:stop()
    error("check server " .. mode .. " did not start: " .. out, 2)
  end
  for p in ready:gmatch("%d+") do
    self.ports[#self.ports + 1] = tonumber(p)
  end
  return self
end

-- A switchable server answers `status` to every request from now on.
function Server:set_status(status)
  assert(self.status_file, "server not started with switchable = true")
  nginx.write_file(self.status_file, tostring(status))
end

-- Address of listener i (default 1).
function Server:addr(i)
  local p = self.ports[i or 1]
  if self.host:find(":") then
    return "[" .. self.host .. "]:" .. p
  end
  return self.host .. ":" .. p
end

-- Events of `kind` ("conn", "req"), optionally only those of one port.
function Server:events(kind, port)
  local out = {}
  for _, l in ipairs(lines(self.log)) do
    local k, p, rest = l:match("^(%a+) (%d+) ?(.*)$")
    if k == kind and (port == nil or tonumber(p) == port) then
      out[#out + 1] = rest
    end
  end
  return out
end

function Server:count(kind, port)
  return #self:events(kind, port)
end

-- The request heads the server read, as text.
function Server:requests(port)
  local out = {}
  for i, r in ipairs(self:events("req", port)) do
    out[i] = assert(loadstring("return " .. r))()
  end
  return out
end

function Server:stop()
  if self.pid then
    nginx.kill(self.pid, "KILL")
    nginx.wait_exit(self.pid, 5)
    running[self.pid] = nil
    self.pid = nil
  end
  if self.dir then
    nginx.rmtree(self.dir)
    self.dir = nil
  end
end

function M.stop_all()
  for _, s in pairs(running) do
    s:stop()
  end
end

-- A self-signed certificate for localhost and 127.0.0.1 (or, given a
-- name, for that name only) in a new temp directory: returns dir, cert
-- path, key path.
function M.make_cert(name)
  local dir = assert(nginx.mkdtemp("lb-tls"))
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local san = name and "DNS:" .. name or "DNS:localhost,IP:127.0.0.1"
  local ok, out = nginx.run("openssl req -x509 -newkey ec -pkeyopt "
                     .. "ec_paramgen_curve:prime256v1 -nodes -days 2 "
                     .. "-subj /CN=" .. (name or "localhost") .. " -addext "
                     .. q("subjectAltName=" .. san)
                     .. " -keyout " .. q(key) .. " -out " .. q(cert))
  if not ok then
    nginx.rmtree(dir)
    error("openssl req failed: " .. out, 2)
  end
  return dir, cert, key
end

local TlsServer = {}
TlsServer.__index = TlsServer

-- openssl s_server -www on a free loopback port with the given certificate
-- (it answers every HTTP request with 200 and a status page).  With
-- opts.servername, a client sending another SNI name is refused (fatal
-- alert).  Returns the server (t.addr) or raises.
function M.tls(cert, key, opts)
  opts = opts or {}
  local dir = assert(nginx.mkdtemp("lb-tls-srv"))
  local port = assert(nginx.free_port())
  local args = { "openssl", "s_server", "-www", "-accept", "127.0.0.1:" .. port,
                 "-cert", q(cert), "-key", q(key), "-naccept", "1000000" }
  if opts.servername then
    -- a second certificate for other names, and a fatal alert for them
    args[#args + 1] = "-servername " .. q(opts.servername)
                      .. " -servername_fatal -cert2 " .. q(cert) .. " -key2 "
                      .. q(key)
  end
  local self = setmetatable({ dir = dir, addr = "127.0.0.1:" .. port,
                              port = port }, TlsServer)
  self.pid = assert(nginx.spawn(table.concat(args, " "), dir .. "/log"))
  running[self.pid] = self
  if not nginx.wait_for(function() return nginx.accepting(self.addr) end, 10) then
    local out = nginx.read_file(dir .. "/log") or ""
    self:stop()
    error("openssl s_server did not start: " .. out, 2)
  end
  return self
end

TlsServer.stop = Server.stop

-- Threads of this process (entries of /proc/self/task).
function M.threads()
  local p = io.popen("ls /proc/" .. M.getpid() .. "/task")
  local n = 0
  for _ in p:lines() do
    n = n + 1
  end
  p:close()
  return n
end

-- Names of this process's threads, counted by name.
function M.thread_names()
  local pid = M.getpid()
  local p = io.popen("cat /proc/" .. pid .. "/task/*/comm 2>/dev/null")
  local out = {}
  for l in p:lines() do
    out[l] = (out[l] or 0) + 1
  end
  p:close()
  return out
end

local ffi = require("ffi")
pcall(ffi.cdef, "int getpid(void);")
function M.getpid()
  return ffi.C.getpid()
end

return M
