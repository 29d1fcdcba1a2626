"""Recovery in bulk (issue 28): the operator's background actions on many deliveries at once.

- recover: every delivery_failed delivery of one destination created since a time is queued again
  (Svix's `recover`), a chunk at a time; the dispatcher then sends them within that destination's
  limits, as it sends everything.
- replay: the results of one batch, or of the requests completed in a time range, are sent again
  as new deliveries (new ids) to a new target.

ask.py validates and creates one (idempotent while it runs) and cancels it; step.py is the recover
step that works through it; scope.py says which rows each one covers; read.py lists them.
"""
