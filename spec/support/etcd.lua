-- A real etcd (Debian etcd-server) for the discovery specs: one member on
-- 127.0.0.1 with free client and peer ports and a temp data dir, stopped
-- by its pid; etcdctl (etcd-client) writes to it.
--
--   local etcd = require("support.etcd")
--   local e = etcd.start()
--   e.endpoint                 -- "http://127.0.0.1:PORT"
--   e:put(key, value); e:del(key); e:compact(); e:revision()
--   e:stop(); e:start()        -- the same data dir: a restart
--   e:enable_auth("root", "pw")
--   etcd.start({ cert = c, key = k })   -- clients over https://
--   etcd.stop_all()            -- an after_each safety net

local nginx = require("support.nginx")
local q = nginx.q

local M = {}
local running = {}

local Etcd = {}
Etcd.__index = Etcd

function Etcd:start()
  local peer = "http://127.0.0.1:" .. self.peer_port
  local args = { "etcd", "--name", "default", "--data-dir", q(self.data),
                 "--listen-client-urls", self.endpoint,
                 "--advertise-client-urls", self.endpoint,
                 "--listen-peer-urls", peer,
                 "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", "default=" .. peer,
                 "--log-level", "warn" }
  if self.cert then
    args[#args + 1] = "--cert-file " .. q(self.cert) .. " --key-file "
                      .. q(self.key)
  end
  self.pid = assert(nginx.spawn(table.concat(args, " "),
                                self.dir .. "/log"))
  running[self.pid] = self
  assert(nginx.wait_for(function()
    local ca = self.cert and (" --cacert " .. q(self.cert)) or ""
    local url = self.endpoint .. "/health"
    if self.server_name then
      -- the certificate names only server_name: ask it under that name
      local name_port = self.server_name .. ":" .. self.client_port
      ca = ca .. " --connect-to " .. q(name_port .. ":127.0.0.1:"
                                       .. self.client_port)
      url = "https://" .. name_port .. "/health"
    end
    local ok = nginx.run("curl -s -m 1" .. ca .. " " .. q(url)
                         .. " | grep -q true")
    return ok
  end, 20), "etcd did not come up: " .. (nginx.read_file(self.dir .. "/log")
                                         or ""))
  return self
end

function Etcd:stop()
  if self.pid then
    nginx.kill(self.pid, "KILL")
    nginx.wait_exit(self.pid, 10)
    running[self.pid] = nil
    self.pid = nil
  end
end

function Etcd:ctl(args)
  local auth = self.auth and (" --user " .. q(self.auth)) or ""
  if self.server_name then
    -- etcdctl cannot ask an address under another name
    auth = auth .. " --insecure-transport=false --insecure-skip-tls-verify"
  elseif self.cert then
    auth = auth .. " --cacert " .. q(self.cert)
  end
  local ok, out = nginx.run("ETCDCTL_API=3 etcdctl --endpoints="
                            .. self.endpoint .. auth .. " " .. args)
  assert(ok, "etcdctl " .. args .. ": " .. tostring(out))
  return out
end

function Etcd:put(key, value)
  return self:ctl("put " .. q(key) .. " -- " .. q(value))
end

function Etcd:del(key)
  return self:ctl("del " .. q(key))
end

function Etcd:revision()
  local out = self:ctl("endpoint status -w json")
  return tonumber(out:match('"revision":(%d+)'))
end

function Etcd:compact()
  return self:ctl("compact " .. self:revision())
end

function Etcd:enable_auth(user, password)
  self:ctl("user add root:" .. q(password))
  if user ~= "root" then
    self:ctl("user add " .. q(user .. ":" .. password))
  end
  self:ctl("role add reader")
  self:ctl("role grant-permission reader --prefix=true read /")
  if user ~= "root" then
    self:ctl("user grant-role " .. q(user) .. " reader")
  end
  self:ctl("user grant-role root root")
  self:ctl("auth enable")
  self.auth = "root:" .. password
end

function Etcd:close()
  self:stop()
  if self.dir then
    nginx.rmtree(self.dir)
    self.dir = nil
  end
end

-- opts.cert, opts.key: serve clients over TLS (https://) with them;
-- opts.server_name: the only name the certificate holds.
function M.start(opts)
  opts = opts or {}
  local dir = assert(nginx.mkdtemp("lb-etcd"))
  local ports = nginx.free_ports(2)
  local self = setmetatable({
    dir = dir, data = dir .. "/data", client_port = ports[1],
    peer_port = ports[2], cert = opts.cert, key = opts.key,
    server_name = opts.server_name,
  }, Etcd)
  self.endpoint = (opts.cert and "https" or "http") .. "://127.0.0.1:"
                  .. self.client_port
  return self:start()
end

function M.stop_all()
  for _, e in pairs(running) do
    e:close()
  end
end

return M
