-- wrk script for bench/overhead.py: POSTs one body over and over, stops after a fixed count.
--   wrk -t1 -c32 -d120s -s bench/wrk_post.lua URL -- BODY_FILE LIMIT [AUTH_TOKEN ["Name: value" ...]]
-- Arguments after AUTH_TOKEN are extra request headers (e.g. "anthropic-version: 2026-10-21").
-- Counts responses (and the x-hookgate-cache header), stops its thread after LIMIT responses
-- and ends wrk at once with SIGINT to itself (wrk would otherwise sleep out -d), then prints one
-- line "BENCH_RESULT {json}" that overhead.py parses. Meant for -t1: each thread stops at LIMIT.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
int kill(int pid, int sig);
int getpid(void);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- per-thread globals (read back in done() with thread:get)
responses, non200, hit, miss, bypass, other, t_start, t_end = 0, 0, 0, 0, 0, 0, 0, 0
local limit = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
  if args[3] and args[3] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[3]
  end
  for i = 4, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    assert(name, "header argument not of the form 'Name: value': " .. args[i])
    wrk.headers[name] = value
  end
  limit = tonumber(args[2])
  t_start = now()
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
  end
  local cache = nil
  for k, v in pairs(headers) do
    if string.lower(k) == "x-hookgate-cache" then
      cache = string.upper(v)
    end
  end
  if cache == "HIT" then
    hit = hit + 1
  elseif cache == "MISS" then
    miss = miss + 1
  elseif cache == "BYPASS" then
    bypass = bypass + 1
  elseif cache ~= nil then
    other = other + 1
  end
  if responses == limit then
    t_end = now()
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2) -- SIGINT: wrk's main thread stops sleeping and reports
  end
end

function done(summary, latency, requests)
  local agg = { responses = 0, non200 = 0, hit = 0, miss = 0, bypass = 0, other = 0 }
  local t0, t1 = math.huge, 0
  for _, t in ipairs(threads) do
    for k, _ in pairs(agg) do
      agg[k] = agg[k] + t:get(k)
    end
    t0 = math.min(t0, t:get("t_start"))
    t1 = math.max(t1, t:get("t_end"))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"responses":%d,"non200":%d,"hit":%d,"miss":%d,"bypass":%d,"other":%d,' ..
    '"t_start":%.6f,"t_end":%.6f,"wrk_requests":%d,"wrk_duration_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    agg.responses, agg.non200, agg.hit, agg.miss, agg.bypass, agg.other,
    t0, t1, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
