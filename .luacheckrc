std = "luajit"
codes = true
max_line_length = 100
read_globals = { "ngx", "jit" }
files["spec/"] = { std = "+busted" }
exclude_files = { "build/", ".tmp/" }
-- wrk scripts: wrk's own globals
files["bench/nginx/"] = { globals = { "request", "response", "done", "setup", "init", "delay", "wrk" } }
