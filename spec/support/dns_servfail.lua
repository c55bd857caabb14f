-- A DNS server that fails every question: it answers SERVFAIL (RCODE 2)
-- with the question copied, the answer a resolver gets from a server
-- whose own upstream is broken.  dnsmasq passes an upstream's REFUSED on
-- and answers nothing itself with SERVFAIL, so the specs run this one.
--
--   luajit spec/support/dns_servfail.lua PORT LOG
--
-- Listens on 127.0.0.1:PORT (UDP) and writes a line per question to LOG.
-- Started and stopped by support.dnsmasq (servfail()).
local socket = require("socket")
local bit = require("bit")

local port, log = tonumber(arg[1]), arg[2]
local u = assert(socket.udp())
assert(u:setsockname("127.0.0.1", port))
local out = assert(io.open(log, "a"))
out:setvbuf("line")

-- The question section's end: its labels, a zero byte, type and class.
local function question_end(q)
  local i = 13
  while i <= #q do
    local n = q:byte(i)
    if n == 0 then return i + 4 end
    if n >= 0xc0 then return nil end -- no compression in a question
    i = i + 1 + n
  end
  return nil
end

while true do
  local q, ip, from = u:receivefrom()
  if q and #q >= 12 then
    local e = question_end(q)
    if e and e <= #q then
      -- the same id; QR, the query's opcode and RD; RA; RCODE 2; one
      -- question, no answer, authority or additional records
      local flags = bit.bor(0x80, bit.band(q:byte(3), 0x79))
      u:sendto(q:sub(1, 2) .. string.char(flags, 0x82) .. "\0\1"
               .. "\0\0\0\0\0\0" .. q:sub(13, e), ip, from)
      out:write("question ", #q, " bytes\n")
    end
  end
end
