"""The domain, laid out in the order a request travels through it.

    intake/         a request comes in: schema.py says what it may look like, accept.py routes
                    it to a backend and inserts it as pending (REST and RabbitMQ faces call it)
    batching.py     the batcher groups pending requests per (backend, endpoint, model) and
                    closes a group into a ready batch when it is full or old enough
    runs/           a batch runs: lines.py builds its JSONL lines; local.py runs it on the local
                    inference server; openai/ admits, submits, polls and collects it on OpenAI
    results.py      what a backend returned is stored per request, and its delivery queued
    delivery.py     the outbox: due deliveries are claimed, sent through a channel, and every
                    attempt is audited; retries back off and end
    actions/        what an operator does (cancel, retry, redeliver, delete, close, settings),
                    each waking the steps it gives work to
    read/           what only reads: queries, keyset pages, dashboard stats, JSONL exports
    runtime/        what runs the clock: effective settings, the scheduler and its steps, the
                    process status shown by /health and the dashboard
    rules/          what every step obeys: statuses and their one transitions table, leases,
                    errors, the request audit trail
    access.py       who may call the API: the configured API keys, checked in constant time

The core knows no HTTP framework and no template; faces (app/api, app/ui, app/consumers) call
it, and it calls the adapters (app/backends, app/channels) through their protocols.
"""
