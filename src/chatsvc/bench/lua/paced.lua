-- A request of common.lua (BENCH_REQUEST, default get_messages: GET /messages) at a fixed,
-- moderate load: each connection waits BENCH_PACE_MS between requests (the latency wrk reports
-- excludes that wait). Used by the login storm and bench-scale.
local common = require("common")
common.use(common[os.getenv("BENCH_REQUEST") or "get_messages"])
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "20")
function delay()
  return pace
end
