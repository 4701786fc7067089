-- Shared by the wrk scripts of `make bench`: the prefilled users and their session tokens
-- (BENCH_DATA, a Lua file chatsvc.bench.data writes), request builders, and the JSON summary.
--
-- Every request comes from a random prefilled user and carries that user's own client
-- address in X-Forwarded-For (the server trusts it from 127.0.0.1, as behind an ingress),
-- so the rate limiters key by user and by address exactly as in production.
local M = {}

local data = dofile(os.getenv("BENCH_DATA"))
M.users = data.users
M.readers = data.readers or data.users  -- the users whose inboxes GET /messages reads
M.password = data.password
M.tokens = data.tokens
M.hubs = data.hubs or 0  -- users 1..hubs are each in many conversations
M.pairs = data.pairs or {}  -- long conversations: {a, b, the `before` of a page far back}

-- A few message texts of realistic lengths, built once.
local TEXTS = {
  "hi",
  "on my way, see you in ten minutes",
  "did you get the photos from saturday? the ones by the lake came out really well",
  string.rep("a longer message that goes on for a while, as people sometimes write. ", 4),
}

local function address(uid)
  -- 198.18.0.0/15 is set aside for benchmarks (RFC 2544): never a real client.
  return string.format("198.18.%d.%d", math.floor(uid / 256), uid % 256)
end

local function user_headers(uid)
  return {["Authorization"] = "Bearer " .. M.tokens[uid], ["X-Forwarded-For"] = address(uid)}
end

function M.check()
  return wrk.format("GET", "/check", {["X-Forwarded-For"] = address(math.random(M.users))})
end

function M.get_messages()
  local uid = math.random(M.readers)
  return wrk.format("GET", "/messages?recipient=" .. uid .. "&limit=100", user_headers(uid))
end

function M.get_conversations()
  local uid = math.random(M.hubs)
  return wrk.format("GET", "/conversations?limit=50", user_headers(uid))
end

function M.get_conversation_newest()
  local pair = M.pairs[math.random(#M.pairs)]
  return wrk.format("GET", "/conversations/" .. pair[2] .. "/messages?limit=50", user_headers(pair[1]))
end

function M.get_conversation_back()
  local pair = M.pairs[math.random(#M.pairs)]
  return wrk.format("GET", "/conversations/" .. pair[2] .. "/messages?limit=50&before=" .. pair[3],
                    user_headers(pair[1]))
end

function M.post_message()
  local uid = math.random(M.users)
  local headers = user_headers(uid)
  headers["Content-Type"] = "application/json"
  local body = string.format('{"recipient":%d,"content":{"type":"text","text":"%s"}}',
                             math.random(M.users), TEXTS[math.random(#TEXTS)])
  return wrk.format("POST", "/messages", headers, body)
end

function M.login()
  local uid = math.random(M.users)
  local body = string.format('{"username":"bench-user-%d","password":"%s"}', uid, M.password)
  return wrk.format("POST", "/login",
                    {["Content-Type"] = "application/json", ["X-Forwarded-For"] = address(uid)}, body)
end

local threads = 0

function M.setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function M.init(args)
  -- Each thread has its own Lua state: seed each differently.
  math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
end

-- One line chatsvc.bench.load parses: counts, and latencies in microseconds.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"non_2xx_3xx":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

-- Install the shared callbacks and `request` as the globals wrk calls.
function M.use(request)
  _G.setup, _G.init, _G.done, _G.request = M.setup, M.init, M.done, request
end

return M
