-- support/http.lua - addresses and a small HTTP/1.1 client for the specs:
-- split_addr, connect (loopback and unix sockets only), client (keep-alive,
-- pipelined, Content-Length and chunked bodies), get, get_many and
-- get_spread.  support/nginx.lua re-exports all of them.
local socket = require("socket")

local M = {}

-- Split "127.0.0.1:80", "[::1]:80", "unix:/p" into host, port (nil: unix).
function M.split_addr(addr)
  local path = addr:match("^unix:(.+)$")
  if path then return path, nil end
  local h, p = addr:match("^%[(.+)%]:(%d+)$")
  if not h then h, p = addr:match("^([^:]+):(%d+)$") end
  if not h then error("bad address " .. tostring(addr), 2) end
  return h, tonumber(p)
end

-- Connect to an address (loopback or unix only).  Returns a LuaSocket.
function M.connect(addr, timeout)
  local host, port = M.split_addr(addr)
  local s, err
  if port == nil then
    local unix = require("socket.unix")
    s = unix()
    s:settimeout(timeout or 5)
    local ok, cerr = s:connect(host)
    if not ok then s:close(); return nil, cerr end
    return s
  end
  if not (host == "::1" or host:match("^127%.%d+%.%d+%.%d+$")
          or host == "localhost") then
    error("refusing to connect to non-loopback " .. addr, 2)
  end
  s, err = (host:find(":") and socket.tcp6 or socket.tcp)()
  if not s then return nil, err end
  s:settimeout(timeout or 5)
  local ok, cerr = s:connect(host, port)
  if not ok then s:close(); return nil, cerr end
  s:setoption("tcp-nodelay", true)
  return s
end

---------------------------------------------------------------------------
-- A small HTTP/1.1 client: keep-alive, pipelined, Content-Length and
-- chunked bodies.  Enough for thousands of requests per second.
---------------------------------------------------------------------------

local Client = {}
Client.__index = Client

-- addr: "127.0.0.1:80", "[::1]:80" or "unix:/p".  opts.host: Host header.
function M.client(addr, opts)
  opts = opts or {}
  return setmetatable({
    addr = addr, timeout = opts.timeout or 5,
    host = opts.host or "localhost", depth = opts.depth or 32,
  }, Client)
end

function Client:close()
  if self.sock then self.sock:close(); self.sock = nil end
end

local function request_text(self, req)
  if type(req) == "string" then req = { path = req } end
  local method = req.method or "GET"
  local lines = { method .. " " .. req.path .. " HTTP/1.1",
                  "Host: " .. self.host }
  local has_len = false
  for k, v in pairs(req.headers or {}) do
    if k:lower() == "content-length" then has_len = true end
    if k:lower() ~= "host" then lines[#lines + 1] = k .. ": " .. v end
  end
  if req.body and not has_len then
    lines[#lines + 1] = "Content-Length: " .. #req.body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (req.body or ""),
         method
end

local function read_response(sock, method)
  local line, err = sock:receive("*l")
  if not line then return nil, "status line: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. line end
  local headers = {}
  while true do
    local h
    h, err = sock:receive("*l")
    if not h then return nil, "headers: " .. tostring(err) end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
    end
  end
  local body = ""
  local te = headers["transfer-encoding"]
  if method == "HEAD" or status == 204 or status == 304
     or (status >= 100 and status < 200) then
    body = ""
  elseif te and te:lower():find("chunked") then
    local parts = {}
    while true do
      local size
      size, err = sock:receive("*l")
      if not size then return nil, "chunk size: " .. tostring(err) end
      local n = tonumber(size:match("^%x+"), 16)
      if not n then return nil, "bad chunk size: " .. size end
      if n == 0 then
        repeat
          size, err = sock:receive("*l")
          if not size then return nil, "trailer: " .. tostring(err) end
        until size == ""
        break
      end
      local chunk
      chunk, err = sock:receive(n)
      if not chunk then return nil, "chunk: " .. tostring(err) end
      parts[#parts + 1] = chunk
      sock:receive("*l")
    end
    body = table.concat(parts)
  elseif headers["content-length"] then
    local n = tonumber(headers["content-length"])
    if n > 0 then
      body, err = sock:receive(n)
      if not body then return nil, "body: " .. tostring(err) end
    end
  else
    body, err = sock:receive("*a")
    if not body then return nil, "body: " .. tostring(err) end
    headers.connection = "close"
  end
  return { status = status, headers = headers, body = body }
end

-- Send every request (a path string or { method, path, headers, body }),
-- pipelining up to `depth` at a time over one kept-alive connection;
-- reconnects (and resends what was not answered) when the server closes.
-- Returns an array of responses { status, headers, body } in order, or
-- nil, err.
function Client:requests(reqs)
  local res = {}
  local n = #reqs
  local done = 0
  local reconnects = 0
  while done < n do
    if not self.sock then
      local s, err = M.connect(self.addr, self.timeout)
      if not s then return nil, "connect " .. self.addr .. ": " .. err end
      self.sock = s
    end
    local last = math.min(n, done + self.depth)
    local buf, methods = {}, {}
    for i = done + 1, last do
      buf[#buf + 1], methods[i] = request_text(self, reqs[i])
    end
    local ok, err = self.sock:send(table.concat(buf))
    local closed = not ok
    if ok then
      for i = done + 1, last do
        local r
        r, err = read_response(self.sock, methods[i])
        if not r then closed = true; break end
        res[i] = r
        done = i
        local c = r.headers.connection
        if c and c:lower():find("close") then closed = true; break end
      end
    end
    if closed then
      self:close()
      reconnects = reconnects + 1
      if reconnects > 3 + n / 10 then
        return nil, "too many reconnects (" .. tostring(err) .. ")"
      end
    end
  end
  return res
end

function Client:request(req)
  local r, err = self:requests({ req })
  if not r then return nil, err end
  return r[1]
end

-- One-shot helpers.
function M.get_many(addr, paths, opts)
  local c = M.client(addr, opts)
  local r, err = c:requests(paths)
  c:close()
  return r, err
end

function M.get(addr, path, opts)
  local r, err = M.get_many(addr, { path }, opts)
  return r and r[1], err
end


-- Open `n` kept-alive connections that together reach `workers` distinct
-- workers: each connection asks `path` (whose body names the worker that
-- answered) and the set is opened again while fewer answered.  With
-- `listen ... reuseport` the kernel hashes each connection to a worker, so
-- 8 connections all land on one of 2 workers once in 128 sets.  Returns
-- the clients, or nil, err.
local function spread_clients(addr, n, opts, probe)
  local want = math.min(probe.workers, n)
  local seen
  for _ = 1, probe.tries or 40 do
    local clients, ids, count = {}, {}, 0
    for i = 1, n do
      clients[i] = M.client(addr, opts)
      local r, err = clients[i]:request(probe.path)
      if not r then
        for _, cl in ipairs(clients) do cl:close() end
        return nil, "probe " .. probe.path .. ": " .. err
      end
      if r.status ~= 200 then
        for _, cl in ipairs(clients) do cl:close() end
        return nil, ("probe %s: status %d"):format(probe.path, r.status)
      end
      if not ids[r.body] then ids[r.body], count = true, count + 1 end
    end
    if count >= want then return clients end
    seen = count
    for _, cl in ipairs(clients) do cl:close() end
  end
  return nil, ("%d connections reached %d of %d workers, %d times")
    :format(n, seen, want, probe.tries or 40)
end

-- Send requests over `n` connections, interleaving batches so the
-- connections are open together (with `listen ... reuseport` they land on
-- different workers).  opts.spread = { path = ..., workers = N } makes
-- sure the connections reach N workers first (see spread_clients).
-- Returns the responses in request order, or nil, err.
function M.get_spread(addr, reqs, n, opts)
  n = n or 4
  local clients, parts, index = {}, {}, {}
  if opts and opts.spread then
    local err
    clients, err = spread_clients(addr, n, opts, opts.spread)
    if not clients then return nil, err end
  end
  for i = 1, n do
    clients[i] = clients[i] or M.client(addr, opts)
    parts[i], index[i] = {}, {}
  end
  for i, r in ipairs(reqs) do
    local c = (i - 1) % n + 1
    parts[c][#parts[c] + 1] = r
    index[c][#index[c] + 1] = i
  end
  local out = {}
  local batch = 64
  local pos = 1
  local more = true
  while more do
    more = false
    for c = 1, n do
      local chunk = {}
      for j = pos, math.min(pos + batch - 1, #parts[c]) do
        chunk[#chunk + 1] = parts[c][j]
      end
      if #chunk > 0 then
        more = true
        local res, err = clients[c]:requests(chunk)
        if not res then
          for _, cl in ipairs(clients) do cl:close() end
          return nil, err
        end
        for j, r in ipairs(res) do out[index[c][pos + j - 1]] = r end
      end
    end
    pos = pos + batch
  end
  for _, cl in ipairs(clients) do cl:close() end
  return out
end

return M
