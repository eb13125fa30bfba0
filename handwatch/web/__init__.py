"""The review page, search, `/metrics` and `/healthz`.

`server.WebServer` runs uvicorn in the daemon (or alone for `handwatch web`); `app` holds the Starlette
routes, `skipped` the view of files judged not a document (with "Transcribe anyway"), `store` reads the state
database and Markdown for them, `security` the password, CSRF and host checks, `health` the health and metrics,
`images` the original's pages and thumbnails. It writes Markdown only through `publish`, retries only through
the job store, and never calls a model. Importing this package imports no web framework.
"""
