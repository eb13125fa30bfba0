"""The service: the daemon's wiring, and the pipeline every command shares.

`pipeline.Pipeline` takes one file from its rule to its Markdown (rule, pages, document check, prepare,
engine, doubt, publish); `worker` runs it on a claimed job and records the outcome, `workpool` keeps the
workers and their leases, `prefetch` prepares the next pages while a model reads; `daemon.Daemon` joins
intake, workers, the review page and the signals; `systemd` speaks sd_notify and the watchdog, `unit`
writes the unit's drop-in, `notify` sends summaries through apprise, `preflight` checks what a start needs,
`crashmarks` remembers which file a crash was on. Only the command line sits above it.
"""
