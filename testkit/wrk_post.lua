-- wrk script for bench.http_intake: POST one intake body per request, each with its own custom_id.
--
--   wrk -t2 -c64 -d10s --latency -s testkit/wrk_post.lua URL -- PREFIX
--
-- The body is bench/intake.py's request (testkit.builders.client_request): a chat completion for the stand-in
-- model, delivered by webhook to an address nobody listens on (the gateway's scheduler is off).
-- custom_id = PREFIX .. thread number .. "-" .. per-thread counter: unique across threads, and
-- across runs when each run gets its own PREFIX, so the gateway never answers 409.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = args[1] or "wrk"
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local template = '{"custom_id":"%s","url":"/v1/chat/completions","method":"POST",'
  .. '"body":{"model":"stand-in","messages":[{"role":"user","content":"say hi to %s"}]},'
  .. '"delivery_config":{"type":"webhook","webhook_url":"http://127.0.0.1:9/hook"}}'

function request()
  counter = counter + 1
  local id = prefix .. tid .. "-" .. counter
  return wrk.format(nil, nil, nil, string.format(template, id, id))
end
