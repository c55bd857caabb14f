-- Test helper: start and stop Debian's nginx in a private prefix, allocate
-- loopback ports, and talk HTTP/1.1 to it with keep-alive and pipelining.
--
--   local nginx = require("support.nginx")
--   local port = nginx.free_port()
--   local srv = assert(nginx.start({
--     http = [[ server { listen 127.0.0.1:{{port}}; return 200 "hi"; } ]],
--     vars = { port = port },
--     wait = { "127.0.0.1:" .. port },
--   }))
--   local res = nginx.get_many("127.0.0.1:" .. port, { "/a", "/b" })
--   srv:stop()          -- also in finally()/teardown(); safe to call twice
--
-- Every wait polls a condition against a deadline; nothing sleeps blindly.
-- Only loopback addresses and unix sockets are ever connected to.

local socket = require("socket")
local ports = require("support.ports")

local M = {}

-- The HTTP client and addresses (split_addr, connect, client, get,
-- get_many, get_spread) are support/http.lua's, reachable from here too.
local http_client = require("support.http")
for k, v in pairs(http_client) do
  M[k] = v
end

M.NGINX = os.getenv("LB_NGINX") or "nginx"
M.MODULES = os.getenv("LB_NGINX_MODULES") or "/usr/share/nginx/modules"

local running = {}      -- prefix -> server, for stop_all()

-- Shell-quote one word.
local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

-- Run a shell command; return ok, combined output.  Works under Lua 5.1
-- (LuaJIT), whose io.popen():close() does not report the exit status.
local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  return rc == 0, out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(data)
  f:close()
  return true
end

M.read_file = read_file
M.write_file = write_file
M.q = q
M.run = run

-- Poll cond() until it returns a true value or `timeout` seconds pass.
-- Returns cond's value, or nil and "timeout".
function M.wait_for(cond, timeout, interval)
  local deadline = socket.gettime() + (timeout or 5)
  interval = interval or 0.005
  while true do
    local v = cond()
    if v then return v end
    if socket.gettime() >= deadline then return nil, "timeout" end
    socket.sleep(interval)
    if interval < 0.05 then interval = interval * 2 end
  end
end

---------------------------------------------------------------------------
-- Temporary directories
---------------------------------------------------------------------------

-- LB_TMPDIR, else TMPDIR, else /tmp (support.ports).
local tmp_base = ports.tmpdir
M.tmpdir = ports.tmpdir

-- A fresh private directory, like mkdtemp(3): <TMPDIR>/<name>.XXXXXXXX.
function M.mkdtemp(name)
  local tmpl = tmp_base() .. "/" .. (name or "lb-test") .. ".XXXXXXXX"
  local ok, out = run("mktemp -d " .. q(tmpl))
  if not ok then return nil, "mktemp failed: " .. out end
  return (out:gsub("%s+$", ""))
end

-- Remove a directory made by mkdtemp (refuses anything else).
function M.rmtree(dir)
  local base = tmp_base() .. "/"
  if type(dir) ~= "string" or dir:sub(1, #base) ~= base
     or dir:find("/%.%./") or not dir:match("%.[%w]+$") then
    error("refusing to remove " .. tostring(dir), 2)
  end
  return run("rm -rf " .. q(dir))
end

---------------------------------------------------------------------------
-- Ports and addresses
---------------------------------------------------------------------------

-- A loopback port that was free a moment ago, never the same twice in one
-- run: from LB_PORT_BASE's range when it is set, else one the kernel chose
-- (support.ports).
M.free_port = ports.free
M.port_block = ports.block

function M.free_ports(n, host)
  local t = {}
  for i = 1, n do
    t[i] = assert(M.free_port(host))
  end
  return t
end

-- Is the IPv6 loopback usable (can we listen on [::1])?
local ipv6_ok
function M.has_ipv6()
  if ipv6_ok == nil then
    local s = socket.bind("::1", 0)
    ipv6_ok = s ~= nil
    if s then s:close() end
  end
  return ipv6_ok
end

-- Does something accept connections on addr?
function M.accepting(addr)
  local s = M.connect(addr, 0.5)
  if s then s:close(); return true end
  return false
end

---------------------------------------------------------------------------
-- Processes
---------------------------------------------------------------------------

-- Is pid a live process (not gone, not a zombie)?
function M.alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Direct children of pid (nginx workers of a master).
local function children(pid)
  local kids = {}
  local p = io.popen("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in p:lines() do
    local child, ppid = line:match("^(%d+) %b() %a (%d+)")
    if ppid and tonumber(ppid) == pid then kids[#kids + 1] = tonumber(child) end
  end
  p:close()
  return kids
end
M.children = children

-- nginx processes that hold a file under prefix open (every process of
-- the instance keeps its error log open), found even after a master died
-- and its workers were re-parented.
local function holders(prefix)
  local pids, seen = {}, {}
  local p = io.popen("find /proc/[0-9]*/fd -maxdepth 1 -lname "
                     .. q(prefix .. "/*") .. " 2>/dev/null")
  for line in p:lines() do
    local pid = tonumber(line:match("^/proc/(%d+)/fd/"))
    if pid and not seen[pid] then
      seen[pid] = true
      local comm = read_file("/proc/" .. pid .. "/comm")
      if comm and comm:match("^nginx") and M.alive(pid) then
        pids[#pids + 1] = pid
      end
    end
  end
  p:close()
  return pids
end

---------------------------------------------------------------------------
-- nginx
---------------------------------------------------------------------------

local Server = {}
Server.__index = Server

-- Substitute {{name}} placeholders (nginx itself uses $name and ${name}).
local function render(tmpl, vars)
  local missing
  local out = tmpl:gsub("{{%s*([%w_]+)%s*}}", function(k)
    local v = vars[k]
    if v == nil then missing = missing or k; return "" end
    return tostring(v)
  end)
  if missing then return nil, "template variable '" .. missing .. "' not set" end
  return out
end
M.render = render

local MAIN = [[
# generated by spec/support/nginx.lua
{{load_modules}}
daemon on;
master_process on;
worker_processes {{workers}};
pid {{prefix}}/logs/nginx.pid;
lock_file {{prefix}}/logs/nginx.lock;
error_log {{prefix}}/logs/error.log {{log_level}};
{{main}}
events {
    worker_connections {{worker_connections}};
{{events}}
}
]]

local HTTP = [[
http {
    access_log {{access_log}};
    client_body_temp_path {{prefix}}/tmp/body;
    proxy_temp_path {{prefix}}/tmp/proxy;
    fastcgi_temp_path {{prefix}}/tmp/fastcgi;
    uwsgi_temp_path {{prefix}}/tmp/uwsgi;
    scgi_temp_path {{prefix}}/tmp/scgi;
    keepalive_requests 1000000;
    default_type text/plain;
{{http}}
}
]]

-- Start nginx.  opts:
--   http      text inside http {} (template); or
--   conf      a whole nginx.conf (template), used instead of the generated one
--   main      extra main-context text (template), e.g. a stream {} block
--   events    extra events {} text
--   vars      values for {{name}} placeholders; {{prefix}} is always set
--   lua       true: load ndk_http_module and ngx_http_lua_module
--   modules   extra module .so paths to load
--   workers   worker_processes (default 1)
--   log_level error_log level (default "warn")
--   worker_connections  (default 1024)
--   access_log  "off" (default) or a path
--   wait      addresses ("127.0.0.1:80", "[::1]:80", "unix:/p") that must
--             accept connections before start() returns
--   timeout   seconds to wait for startup (default 10)
-- Returns a server object, or nil, err (nothing left running).
function M.start(opts)
  opts = opts or {}
  local prefix, err = M.mkdtemp("lb-nginx")
  if not prefix then return nil, err end
  local self = setmetatable({ prefix = prefix, conf = "conf/nginx.conf" },
                            Server)
  local ok, out = run("chmod 755 " .. q(prefix) .. " && mkdir -p "
                      .. q(prefix .. "/conf") .. " " .. q(prefix .. "/logs")
                      .. " " .. q(prefix .. "/tmp") .. " "
                      .. q(prefix .. "/html"))
  if not ok then M.rmtree(prefix); return nil, out end

  local vars = { prefix = prefix }
  for k, v in pairs(opts.vars or {}) do vars[k] = v end
  local mods = {}
  if opts.lua then
    mods[#mods + 1] = M.MODULES .. "/ndk_http_module.so"
    mods[#mods + 1] = M.MODULES .. "/ngx_http_lua_module.so"
  end
  for _, m in ipairs(opts.modules or {}) do mods[#mods + 1] = m end
  local lm = {}
  for i, m in ipairs(mods) do lm[i] = "load_module " .. m .. ";" end

  local conf
  if opts.conf then
    conf, err = render(opts.conf, vars)
  else
    local main, http, events
    main, err = render(opts.main or "", vars)
    if main then events, err = render(opts.events or "", vars) end
    if events and opts.http then http, err = render(opts.http, vars) end
    if main and events and (http or not opts.http) then
      conf = render(MAIN, {
        prefix = prefix, load_modules = table.concat(lm, "\n"),
        workers = opts.workers or 1, log_level = opts.log_level or "warn",
        worker_connections = opts.worker_connections or 1024,
        main = main, events = events,
      })
      if http then
        conf = conf .. render(HTTP, { prefix = prefix, http = http,
                                      access_log = opts.access_log or "off" })
      end
    end
  end
  if not conf then M.rmtree(prefix); return nil, err end
  write_file(prefix .. "/conf/nginx.conf", conf)

  running[prefix] = self
  local timeout = opts.timeout or 10
  -- The starting process exits once the master has daemonised; one that
  -- hangs (init_by_lua, a deadlocked fork) is killed after the timeout.
  ok, out = run("timeout -k 2 " .. timeout .. " " .. M.NGINX .. " -p "
                .. q(prefix) .. " -c conf/nginx.conf")
  if not ok then
    self:stop()
    return nil, "nginx failed to start within " .. timeout .. " s: " .. out
  end
  -- With `daemon on` the listening sockets exist before the command
  -- returns; the pid file appears once the master has daemonised.
  local pid = M.wait_for(function()
    local s = read_file(prefix .. "/logs/nginx.pid")
    return s and tonumber(s:match("%d+"))
  end, timeout)
  if not pid then
    local log = self:error_log()
    self:stop()
    return nil, "nginx wrote no pid file: " .. out .. log
  end
  self.pid = pid
  -- The master forks its workers after writing the pid file: wait for all
  -- of them, so callers that count or signal workers see every one.
  local nworkers = opts.workers or 1
  if not M.wait_for(function() return #children(pid) >= nworkers end,
                    timeout) then
    local log = self:error_log()
    self:stop()
    return nil, "nginx started fewer than " .. nworkers .. " workers: " .. log
  end
  for _, addr in ipairs(opts.wait or {}) do
    if not M.wait_for(function() return M.accepting(addr) end, timeout) then
      local log = self:error_log()
      self:stop()
      return nil, "nginx not accepting on " .. addr .. ": " .. log
    end
  end
  return self
end

function Server:path(rel)
  return self.prefix .. "/" .. rel
end

function Server:error_log()
  return read_file(self.prefix .. "/logs/error.log") or ""
end

-- Send a signal through nginx itself (stop, quit, reload, reopen).
function Server:signal(sig)
  return run(M.NGINX .. " -p " .. q(self.prefix) .. " -c " .. self.conf
             .. " -s " .. sig)
end

-- Reload the configuration (optionally a new http text) and wait until
-- the old workers are gone.
function Server:reload(timeout)
  local old = children(self.pid)
  local ok, out = self:signal("reload")
  if not ok then return nil, out end
  local gone = M.wait_for(function()
    for _, w in ipairs(old) do
      if M.alive(w) then return false end
    end
    return true
  end, timeout or 10)
  if not gone then return nil, "old workers still running" end
  return true
end

function Server:workers()
  return self.pid and children(self.pid) or {}
end

-- Stop nginx and wait until the master and its workers are gone, then
-- remove the prefix.  Safe to call more than once and after a failed start.
function Server:stop(timeout)
  if self.stopped then return true end
  self.stopped = true
  running[self.prefix] = nil
  timeout = timeout or 10
  local pid = self.pid
  if not pid then
    local s = read_file(self.prefix .. "/logs/nginx.pid")
    pid = s and tonumber(s:match("%d+"))
  end
  local clean = true
  if pid and M.alive(pid) then
    local workers = children(pid)
    self:signal("stop")
    if not M.wait_for(function() return not M.alive(pid) end, timeout) then
      clean = false
      for _, w in ipairs(workers) do run("kill -KILL " .. w) end
      run("kill -KILL " .. pid)
      M.wait_for(function() return not M.alive(pid) end, timeout)
    end
    M.wait_for(function()
      for _, w in ipairs(workers) do
        if M.alive(w) then return false end
      end
      return true
    end, timeout)
  end
  -- Leftovers (a master killed from outside leaves its workers running).
  local left = holders(self.prefix)
  if #left > 0 then
    clean = false
    for _, w in ipairs(left) do run("kill -KILL " .. w) end
    M.wait_for(function()
      for _, w in ipairs(left) do
        if M.alive(w) then return false end
      end
      return true
    end, timeout)
  end
  if os.getenv("LB_KEEP_NGINX") then
    io.stderr:write("nginx prefix kept: ", self.prefix, "\n")
  else
    M.rmtree(self.prefix)
  end
  if not clean then
    return nil, "nginx did not stop cleanly; leftover processes killed"
  end
  return true
end

-- Stop every server this helper started and has not stopped yet.
function M.stop_all()
  local list = {}
  for _, s in pairs(running) do list[#list + 1] = s end
  for _, s in ipairs(list) do s:stop() end
end

-- nginx text for a server that answers every request with its own address
-- (addr as "127.0.0.1:80", "[::1]:80" or "unix:/p"), for backends.
function M.identity_server(addr, extra)
  local host, port = M.split_addr(addr)
  local listen
  if port == nil then
    listen = "unix:" .. host
  elseif host:find(":") then
    listen = "[" .. host .. "]:" .. port
  else
    listen = host .. ":" .. port
  end
  return ("    server {\n        listen %s;\n%s"
          .. "        location / { return 200 \"%s\"; }\n    }\n")
    :format(listen, extra or "", addr)
end

---------------------------------------------------------------------------
-- Repository paths, background processes, load generation.
---------------------------------------------------------------------------

-- Absolute path of the repository root (specs run from it).
local root
function M.root()
  if not root then
    local src = debug.getinfo(1, "S").source:gsub("^@", "")
    local dir = src:match("^(.*)/spec/support/[^/]+$") or "."
    if dir:sub(1, 1) ~= "/" then
      local _, pwd = run("pwd")
      pwd = pwd:gsub("%s+$", "")
      dir = dir == "." and pwd or (pwd .. "/" .. dir)
    end
    root = dir
  end
  return root
end

-- nginx http {} text that makes lb (lua/, build/) and the spec helpers
-- (spec/) loadable in OpenResty.
function M.lua_paths()
  local r = M.root()
  return ('    lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;%s/spec/?.lua;;";\n'
          .. '    lua_package_cpath "%s/build/?.so;;";\n'):format(r, r, r, r)
end

-- Run a Lua script file with a fresh luajit that sees only the modules of
-- the luarocks tree `tree` (LUA_PATH and LUA_CPATH replaced, run from /).
-- Returns ok, output as run does.
function M.luajit_in_tree(tree, script)
  return run("cd / && env -u LUA_PATH -u LUA_CPATH "
    .. "LUA_PATH=" .. q(tree .. "/share/lua/5.1/?.lua;"
                        .. tree .. "/share/lua/5.1/?/init.lua") .. " "
    .. "LUA_CPATH=" .. q(tree .. "/lib/lua/5.1/?.so") .. " "
    .. "luajit " .. q(script))
end

-- Start a shell command in the background with its output in `log`;
-- returns its pid.
function M.spawn(cmd, log)
  local ok, out = run("sh -c " .. q("exec " .. cmd .. " > " .. q(log or "/dev/null")
                                     .. " 2>&1 < /dev/null") .. " & echo $!")
  if not ok then return nil, out end
  return tonumber(out:match("(%d+)%s*$"))
end

-- Wait until a process we started exits (reaps nothing: spawn's shell
-- is gone, the process is re-parented).  true, or nil, "timeout".
function M.wait_exit(pid, timeout)
  return M.wait_for(function() return not M.alive(pid) end, timeout or 10)
end

-- Send a signal to one process we started, by pid.
function M.kill(pid, sig)
  if pid and M.alive(pid) then
    run("kill -" .. (sig or "TERM") .. " " .. tonumber(pid))
  end
end

local Load = {}
Load.__index = Load

-- Start wrk against a loopback URL for a bounded time.  opts: duration
-- (seconds, default 3), connections (default 8), threads (default 1),
-- headers (list of "Name: value").  Returns a handle; :wait() returns the
-- counted result.
function M.wrk(url, opts)
  opts = opts or {}
  local host = url:match("^http://%[?([^%]/]+)%]?:%d+")
  if not (host == "::1" or (host and host:match("^127%.%d+%.%d+%.%d+$"))) then
    error("refusing to load non-loopback " .. tostring(url), 2)
  end
  local dir = assert(M.mkdtemp("lb-wrk"))
  local args = { "wrk", "-t", opts.threads or 1, "-c", opts.connections or 8,
                 "-d", (opts.duration or 3) .. "s", "--timeout", "5s" }
  for _, h in ipairs(opts.headers or {}) do
    args[#args + 1] = "-H"
    args[#args + 1] = q(h)
  end
  args[#args + 1] = q(url)
  local self = setmetatable({ dir = dir, log = dir .. "/wrk.out",
                              duration = opts.duration or 3 }, Load)
  self.pid = M.spawn(table.concat(args, " "), self.log)
  if not self.pid then M.rmtree(dir); return nil, "cannot start wrk" end
  return self
end

-- Parse wrk's summary: requests, failed (non-2xx/3xx responses plus socket
-- errors), and the parts.
function M.parse_wrk(text)
  local r = { text = text }
  r.requests = tonumber(text:match("(%d+) requests in"))
  r.non2xx = tonumber(text:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  local c, rd, w, t = text:match(
    "Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  r.connect = tonumber(c) or 0
  r.read = tonumber(rd) or 0
  r.write = tonumber(w) or 0
  r.timeout = tonumber(t) or 0
  r.failed = r.non2xx + r.connect + r.read + r.write + r.timeout
  r.rps = tonumber(text:match("Requests/sec:%s*([%d%.]+)"))
  return r
end

-- Wait for wrk to finish (its duration plus `grace` seconds); returns the
-- parsed result, or nil, err.  Always leaves wrk stopped.
function Load:wait(grace)
  local done = M.wait_exit(self.pid, self.duration + (grace or 10))
  if not done then
    self:stop()
    return nil, "wrk did not finish"
  end
  local text = read_file(self.log) or ""
  self:stop()
  local r = M.parse_wrk(text)
  if not r.requests then return nil, "no wrk summary: " .. text end
  return r
end

function Load:stop()
  if self.pid then M.kill(self.pid, "KILL"); M.wait_exit(self.pid, 5) end
  if self.dir then M.rmtree(self.dir); self.dir = nil end
end

-- One nginx per address, each answering with its own address (see
-- identity_server); separate processes so that each can be stopped.
-- Returns the list of servers, or nil, err (none left running).
function M.start_backends(addrs, opts)
  local list = {}
  for i, addr in ipairs(addrs) do
    local srv, err = M.start({ http = M.identity_server(addr),
                               wait = { addr },
                               workers = opts and opts.workers or 1 })
    if not srv then
      for _, s in ipairs(list) do s:stop() end
      return nil, err
    end
    list[i] = srv
  end
  return list
end

-- `n` identity backends on fresh 127.0.0.1 ports, their addresses sorted
-- by port (lb's order for them, as status() lists them).  Returns the
-- addresses and the servers, or raises.
function M.loopback_backends(n)
  local addrs = {}
  for i = 1, n do addrs[i] = "127.0.0.1:" .. assert(M.free_port()) end
  table.sort(addrs, function(a, b)
    return tonumber(a:match("%d+$")) < tonumber(b:match("%d+$"))
  end)
  return addrs, assert(M.start_backends(addrs))
end

return M
