-- bench/stats.lua - the figures the benchmarks report of their runs.
local M = {}

-- The median of a list of numbers (the mean of the middle two for an even
-- count), and its smallest and largest; the list is left as it was.
function M.median(t)
  local s = {}
  for i = 1, #t do
    s[i] = t[i]
  end
  table.sort(s)
  local n = #s
  local m
  if n % 2 == 1 then
    m = s[(n + 1) / 2]
  else
    m = (s[n / 2] + s[n / 2 + 1]) / 2
  end
  return m, s[1], s[n]
end

return M
