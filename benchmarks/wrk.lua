-- The wrk script of benchmarks/http.py: wrk -s wrk.lua URL -- ENDPOINT CUSTOMERS
-- sends ENDPOINT's requests with random ids up to CUSTOMERS, and prints one WRK_RESULT line.
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

local function get(path) return wrk.format("GET", path) end
local function post(path) return wrk.format("POST", path) end
local requests = {
  customer = function() return get("/customers/" .. math.random(1, N)) end,
  transfer = function()
    local a, b = math.random(1, N), math.random(1, N - 1)
    if b >= a then b = b + 1 end
    local body = string.format(
      '{"from_account": %d, "to_account": %d, "amount": %d}', a, b, math.random(1, 100))
    return wrk.format("POST", "/transfers", {["Content-Type"] = "application/json"}, body)
  end,
  transfers = function() return get("/accounts/" .. math.random(1, N) .. "/transfers") end,
  noop = function() return get("/bench/noop") end,
  hold = function() return post("/bench/hold/" .. math.random(1, N)) end,
  ["hold-short"] = function() return post("/bench/hold-short/" .. math.random(1, N)) end,
}

function init(args)
  math.randomseed(os.time() + 7919 * (seed or 0))
  N = tonumber(args[2])
  request = requests[args[1]]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
