-- wrk script: replays the bench's pre-generated events, one POST per event, cycling through them.
-- Arguments (after `--`): events file (one JSON event per line), URL path, Authorization header
-- value, method ("POST"; "GET": each line of the file is a URL path, with its query, to GET;
-- "PATHS": each line is "PATH EVENT", a POST of EVENT to PATH), the number of wrk threads, and
-- how many requests each thread of an earlier run (the warm-up) sent at most ("sent_max" in that
-- run's result line).
-- Each thread replays its own part of the pool: lines n with n mod threads == its index, so no two
-- threads ever send the same event (a second thread offset into the same list would replay the
-- first thread's events and turn cold events into cache hits). Each thread starts past the part a
-- warm-up already sent, for the same reason. Each request is formatted once, at start.
-- At the end it prints one line, "BENCH-RESULT {json}", that bench/wrk_runner.py reads.

local thread_count = 0
local threads_made = {}
local requests = {}
local position = 0
sent = 0  -- global: done() reads each thread's with thread:get

function setup(thread)
   thread:set("index", thread_count)
   thread_count = thread_count + 1
   threads_made[thread_count] = thread
end

function init(args)
   local events_file, path, authorization, method = args[1], args[2], args[3], args[4]
   local threads, skip = tonumber(args[5] or "1"), tonumber(args[6] or "0")
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = authorization,
   }
   local get_headers = {["Authorization"] = authorization}
   local n = 0
   for line in io.lines(events_file) do
      if #line > 0 then
         if n % threads == index then
            if method == "GET" then
               requests[#requests + 1] = wrk.format("GET", line, get_headers)
            elseif method == "PATHS" then
               local space = string.find(line, " ", 1, true)
               requests[#requests + 1] = wrk.format("POST", string.sub(line, 1, space - 1),
                                                    headers, string.sub(line, space + 1))
            else
               requests[#requests + 1] = wrk.format("POST", path, headers, line)
            end
         end
         n = n + 1
      end
   end
   if #requests == 0 then
      error("thread " .. index .. " has no events: fewer events than wrk threads")
   end
   position = skip % #requests
end

function request()
   position = position % #requests + 1
   sent = sent + 1
   return requests[position]
end

function done(summary, latency, _)
   local e = summary.errors
   local sent_max = 0
   for _, thread in ipairs(threads_made) do
      sent_max = math.max(sent_max, thread:get("sent") or 0)
   end
   io.write(string.format(
      'BENCH-RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "sent_max": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, sent_max))
end
