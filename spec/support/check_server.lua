-- A loopback test server for the health-check specs, run as its own
-- process (the checker runs on a thread of the spec's process, which is
-- blocked in run_health_check while the server must answer):
--
--   luajit spec/support/check_server.lua MODE [name=value ...]
--
-- Modes:
--   http     answer each request with `status` (default 200), or with the
--            number read from `status_file` at each request when given;
--            `keepalive=1` keeps the connection open between requests
--   silent   accept, read, never answer
--   slow     answer 200 after `delay` seconds
--   garbage  answer a non-HTTP line and close
--
-- Options: host (default 127.0.0.1), count (listeners, default 1), port
-- (every listener's port; default 0: the kernel chooses), ports (one per
-- listener, comma-separated: support.servers hands them out from
-- LB_PORT_BASE's range).
-- It prints "ready PORT..." once listening, then one line per event on
-- stdout, flushed: "conn PORT" for each accepted connection and
-- "req PORT <request head, %q-quoted>" for each request read.  It serves
-- loopback only and runs until it is killed.

local socket = require("socket")

local mode = arg[1]
local opt = { host = "127.0.0.1", count = "1", status = "200" }
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k then
    io.stderr:write("bad argument " .. arg[i] .. "\n")
    os.exit(2)
  end
  opt[k] = v
end
if not (opt.host == "::1" or opt.host:match("^127%.%d+%.%d+%.%d+$")) then
  io.stderr:write("loopback only\n")
  os.exit(2)
end

local function emit(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

-- Coroutine per connection; a coroutine yields what it waits for:
-- "r"/"w" with its socket, or "t" with a wake-up time.
local tasks = {}

local function wait(kind, what)
  coroutine.yield(kind, what)
end

-- Read one request head (up to the blank line); nil when the peer closed.
local function read_head(c, buf)
  while true do
    local e = buf:find("\r\n\r\n", 1, true)
    if e then
      return buf:sub(1, e + 3), buf:sub(e + 4)
    end
    local data, err, partial = c:receive(4096)
    data = data or partial
    if data and #data > 0 then
      buf = buf .. data
    elseif err == "closed" then
      return nil
    else
      wait("r", c)
    end
  end
end

local function send_all(c, s)
  local i = 1
  while i <= #s do
    local n, err, last = c:send(s, i)
    if n then
      return true
    end
    if err == "closed" then
      return false
    end
    i = last + 1
    wait("w", c)
  end
  return true
end

local function current_status()
  if opt.status_file then
    local f = io.open(opt.status_file, "rb")
    if f then
      local s = tonumber(f:read("*a"))
      f:close()
      if s then
        return s
      end
    end
  end
  return tonumber(opt.status)
end

local function serve(c, port)
  local buf = ""
  while true do
    local head
    head, buf = read_head(c, buf)
    if not head then
      break
    end
    emit(("req %d %q"):format(port, head):gsub("\\\n", "\\n"))
    if mode == "silent" then
      while true do
        local _, err = c:receive(4096)
        if err == "closed" then
          break
        end
        wait("r", c)
      end
      break
    elseif mode == "garbage" then
      send_all(c, "SSH-2.0-not-http\r\n\r\n")
      break
    end
    if mode == "slow" then
      wait("t", socket.gettime() + tonumber(opt.delay or "1"))
    end
    local keep = opt.keepalive == "1"
    local resp = ("HTTP/1.1 %d Test\r\nContent-Length: 2\r\n%s\r\nok")
                 :format(current_status(), keep and "" or "Connection: close\r\n")
    if not send_all(c, resp) or not keep then
      break
    end
  end
  c:close()
end

local listeners, ports, wanted = {}, {}, {}
for p in (opt.ports or ""):gmatch("%d+") do
  wanted[#wanted + 1] = tonumber(p)
end
for i = 1, tonumber(opt.count) do
  local l = assert(socket.bind(opt.host, wanted[i] or tonumber(opt.port or "0"), 256))
  l:settimeout(0)
  local _, port = l:getsockname()
  listeners[i], ports[i] = l, tonumber(port)
end
emit("ready " .. table.concat(ports, " "))

local port_of = {}
for i, l in ipairs(listeners) do
  port_of[l] = ports[i]
end

while true do
  local rset, wset, wake = {}, {}, nil
  for _, l in ipairs(listeners) do
    rset[#rset + 1] = l
  end
  local now = socket.gettime()
  for co, w in pairs(tasks) do
    if w.kind == "r" then
      rset[#rset + 1] = w.what
    elseif w.kind == "w" then
      wset[#wset + 1] = w.what
    elseif w.kind == "t" then
      wake = math.min(wake or w.what, w.what)
    end
    w.co = co
  end
  local timeout = wake and math.max(0, wake - now) or 1
  local readable, writable = socket.select(rset, wset, timeout)
  now = socket.gettime()
  local ready = {}
  for _, l in ipairs(listeners) do
    if readable[l] then
      while true do
        local c = l:accept()
        if not c then
          break
        end
        c:settimeout(0)
        emit("conn " .. port_of[l])
        local port = port_of[l]
        local co = coroutine.create(function() serve(c, port) end)
        ready[#ready + 1] = co
      end
    end
  end
  for co, w in pairs(tasks) do
    if (w.kind == "r" and readable[w.what]) or (w.kind == "w" and writable[w.what])
       or (w.kind == "t" and now >= w.what) then
      ready[#ready + 1] = co
    end
  end
  for _, co in ipairs(ready) do
    tasks[co] = nil
    local ok, kind, what = coroutine.resume(co)
    if not ok then
      io.stderr:write("task failed: ", tostring(kind), "\n")
    elseif coroutine.status(co) ~= "dead" then
      tasks[co] = { kind = kind, what = what }
    end
  end
end
