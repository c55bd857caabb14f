-- Send requests /k/<first> .. /k/<last> to a loopback address, one at a
-- time over one keep-alive connection (bench/nginx.sh, instruction
-- counts).  Exits non-zero unless every response is a 200.
--   luajit bench/nginx/requests.lua 127.0.0.1:8080 1 3000
package.path = "spec/?.lua;" .. package.path
local nginx = require("support.nginx")

local addr, first, last = arg[1], tonumber(arg[2]), tonumber(arg[3])
local client = nginx.client(addr, { depth = 1, timeout = 60 })
local batch = 100
for from = first, last, batch do
  local paths = {}
  for i = from, math.min(last, from + batch - 1) do
    paths[#paths + 1] = "/k/" .. i
  end
  local res = assert(client:requests(paths))
  for _, r in ipairs(res) do
    if r.status ~= 200 then
      io.stderr:write("requests.lua: status ", r.status, "\n")
      os.exit(1)
    end
  end
end
client:close()
