"""The domain, laid out in the order a request travels through it.

    intake/         a request comes in: schema.py says what it may look like, accept.py routes
                    and inserts one (group_commit.py lets concurrent inserts share a commit),
                    bulk.py and bulk_store.py take many at once, insert_sql.py is their INSERT
    batching.py     the batcher groups pending requests per (backend, endpoint, model) and
                    closes a group into a ready batch when it is full or old enough
    dropin/         a batch made whole through the OpenAI or Anthropic face: its files, its
                    creation, its end (output and error files, expiry)
    runs/           a batch runs: lines.py builds its JSONL lines; local.py runs it on the local
                    inference server; openai/ admits, submits, polls and collects it on OpenAI
    results.py      what a backend returned is stored per request, and its delivery queued
    delivery.py     the outbox: due deliveries are claimed, sent through a channel, and every
                    attempt is audited; retries back off and end
    dispatch.py     the sends in flight, each on its own, within each destination's limits
    destinations/   each receiver's circuit breaker (hold, probe, close) and limits
    announcements.py  batch events (created, in progress, ended) for the batch-events webhook
    notices.py      operational events (destination paused or resumed, a delivery exhausted)
    retention.py    ended batches and requests are purged after RETENTION_DAYS
    actions/        what an operator does (cancel, retry, redeliver, delete, close, settings),
                    each waking the steps it gives work to
    key_store.py    the API keys created in the UI
    read/           what only reads: queries, search, keyset pages, stats, exports
    rules/          what every step obeys: the transitions table, leases, errors, the audit
                    trail, effective settings, routing, access, what can be stored
    driver/         what drives the steps: the Worker (APScheduler ticks and wake-ups) and the
                    status board /health and the dashboard read

The core knows no HTTP framework and no template; faces (app/api, app/ui, app/consumers) call
it, and it calls the adapters (app/backends, app/channels) through their protocols.
"""
