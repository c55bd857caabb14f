-- A real DNS server for the discovery specs: dnsmasq (Debian dnsmasq-base)
-- in the foreground on 127.0.0.1:<free port>, answering for lb.test only
-- (--no-resolv --no-hosts: it asks nobody else), stopped by its pid.
--
--   local dnsmasq = require("support.dnsmasq")
--   local d = dnsmasq.start({ hosts = "127.0.0.11 a.lb.test\n", ttl = 1,
--                             srv = { "_app._tcp.lb.test,a.lb.test,8001,10,5" } })
--   d.resolver                    -- "127.0.0.1:PORT"
--   d:set_hosts(text)             -- rewrite the hosts file, SIGHUP
--   d:stop(); d:start()           -- the same port and records again
--   d:queries()                   -- queries logged so far
--   dnsmasq.stop_all()            -- an after_each safety net
--   local f = dnsmasq.servfail()  -- a server that answers SERVFAIL:
--   f.resolver; f:queries(); f:stop()   (support/dns_servfail.lua)

local nginx = require("support.nginx")
local q = nginx.q

local M = {}
local running = {}

local Dns = {}
Dns.__index = Dns

-- Whether a DNS server answers on 127.0.0.1:port within 10 s: dig is in
-- bind9-dnsutils, but one UDP query through luasocket needs nothing more.
local function answers(port)
  local socket = require("socket")
  return nginx.wait_for(function()
    local u = socket.udp()
    u:settimeout(0.2)
    u:setpeername("127.0.0.1", port)
    -- id 1, RD, one question: lb.test A
    u:send("\0\1\1\0\0\1\0\0\0\0\0\0\2lb\4test\0\0\1\0\1")
    local r = u:receive()
    u:close()
    return r ~= nil
  end, 10)
end

function Dns:start()
  local args = { "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                 "--no-resolv", "--no-hosts", "--no-poll",
                 "--port=" .. self.port, "--listen-address=127.0.0.1",
                 "--bind-interfaces", "--local=/lb.test/",
                 "--addn-hosts=" .. q(self.hosts),
                 "--local-ttl=" .. self.ttl, "--user=root",
                 "--log-queries", "--log-facility=" .. q(self.log) }
  for _, s in ipairs(self.srv) do
    args[#args + 1] = "--srv-host=" .. q(s)
  end
  self.pid = assert(nginx.spawn(table.concat(args, " "),
                                self.dir .. "/stderr"))
  running[self.pid] = self
  assert(answers(self.port), "dnsmasq did not answer on port " .. self.port)
  return self
end

function Dns:stop()
  if self.pid then
    nginx.kill(self.pid, "TERM")
    nginx.wait_exit(self.pid, 5)
    nginx.kill(self.pid, "KILL")
    running[self.pid] = nil
    self.pid = nil
  end
end

-- Freeze it (SIGSTOP): the port stays bound and nothing answers, so a
-- query times out (a dead port answers at once with ICMP refused).
function Dns:pause()
  nginx.kill(self.pid, "STOP")
end

function Dns:resume()
  nginx.kill(self.pid, "CONT")
end

function Dns:set_hosts(text)
  nginx.write_file(self.hosts .. ".new", text)
  os.rename(self.hosts .. ".new", self.hosts)
  if self.pid then
    nginx.kill(self.pid, "HUP")
  end
end

-- Queries dnsmasq logged for `name` (all when nil).
function Dns:queries(name)
  local n = 0
  for l in (nginx.read_file(self.log) or ""):gmatch("[^\n]+") do
    if l:find("query%[") and (not name or l:find(name, 1, true)) then
      n = n + 1
    end
  end
  return n
end

function Dns:close()
  self:stop()
  if self.dir then
    nginx.rmtree(self.dir)
    self.dir = nil
  end
end

-- A loopback port free for TCP (support.nginx) and for UDP as well:
-- dnsmasq binds both.
function M.free_port()
  local socket = require("socket")
  for _ = 1, 100 do
    local p = assert(nginx.free_port())
    local u = socket.udp()
    local ok = u:setsockname("127.0.0.1", p)
    u:close()
    if ok then
      return p
    end
  end
  error("no port free for both TCP and UDP")
end

function M.start(opts)
  opts = opts or {}
  local dir = assert(nginx.mkdtemp("lb-dnsmasq"))
  local self = setmetatable({
    dir = dir, hosts = dir .. "/hosts", log = dir .. "/log",
    port = M.free_port(), ttl = opts.ttl or 1,
    srv = opts.srv or {},
  }, Dns)
  self.resolver = "127.0.0.1:" .. self.port
  nginx.write_file(self.hosts, opts.hosts or "")
  return self:start()
end

-- A server that answers every question with SERVFAIL (see
-- support/dns_servfail.lua), on a port of its own.
local Servfail = {}
Servfail.__index = Servfail

local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

function M.servfail()
  local dir = assert(nginx.mkdtemp("lb-servfail"))
  local self = setmetatable({ dir = dir, log = dir .. "/log",
                              port = M.free_port() }, Servfail)
  self.resolver = "127.0.0.1:" .. self.port
  self.pid = assert(nginx.spawn(("luajit %s %d %s"):format(
    q(HERE .. "dns_servfail.lua"), self.port, q(self.log)),
    dir .. "/stderr"))
  running[self.pid] = self
  assert(answers(self.port), "the SERVFAIL server did not answer on port "
         .. self.port .. ": " .. (nginx.read_file(dir .. "/stderr") or ""))
  self.probes = self:queries()
  return self
end

-- Questions answered so far, the readiness probes not counted.
function Servfail:queries()
  local n = 0
  for _ in (nginx.read_file(self.log) or ""):gmatch("question") do
    n = n + 1
  end
  return n - (self.probes or 0)
end

Servfail.stop, Servfail.close = Dns.stop, Dns.close

function M.stop_all()
  for _, d in pairs(running) do
    d:close()
  end
end

return M
