-- wrk script: replays the bench's pre-generated events, one POST per event, cycling through them.
-- Arguments (after `--`): events file (one JSON event per line), URL path, API key, and
-- optionally "GET": then each line of the file is a URL path (with its query) to GET instead, or
-- "PATHS": each line is "PATH EVENT", a POST of EVENT to PATH (events for several recommenders).
-- Either way each request is formatted once, at start.
-- At the end it prints one line, "BENCH-RESULT {json}", that bench/wrk_runner.py reads.

local thread_count = 0
local requests = {}
local position = 0

function setup(thread)
   thread:set("index", thread_count)
   thread_count = thread_count + 1
end

function init(args)
   local events_file, path, key, method = args[1], args[2], args[3], args[4]
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. key,
   }
   local get_headers = {["Authorization"] = "Bearer " .. key}
   for line in io.lines(events_file) do
      if #line > 0 then
         if method == "GET" then
            requests[#requests + 1] = wrk.format("GET", line, get_headers)
         elseif method == "PATHS" then
            local space = string.find(line, " ", 1, true)
            requests[#requests + 1] = wrk.format("POST", string.sub(line, 1, space - 1), headers,
                                                 string.sub(line, space + 1))
         else
            requests[#requests + 1] = wrk.format("POST", path, headers, line)
         end
      end
   end
   -- Threads start at different events, so they do not send the same event at the same time.
   position = (index * 7919) % #requests
end

function request()
   position = position % #requests + 1
   return requests[position]
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      'BENCH-RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
      '"max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max))
end
