-- wrk script: every request asks for a different URI (/k/1, /k/2, ...),
-- so hashing upstreams spread the keys over their backends.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/k/" .. n)
end
