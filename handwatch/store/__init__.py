"""The durable state: one SQLite database in the state folder, and the job store built on it.

`state.StateDB` opens it (one writer at a time, busy timeouts read through `state.is_busy`) and holds the
Markdown ledger (`Ledger`: which file handwatch wrote, with which bytes), folder states, endpoint health and
the text cache; `jobs.JobQueue` is the queue of files to transcribe (`enqueue`, `claim` with a lease
(`LEASE_S`, `MAX_ATTEMPTS`), `complete`, `skip`, `retry_later`, `fail`, recovery after a crash). It depends
on nothing but the foundation, so every stage above may record what it did.
"""
