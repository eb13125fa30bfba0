"""The review page, search, `/metrics` and `/healthz`: reads the state database and Markdown, writes only through
output.py, retries only through the queue, never calls a model. Importing this package imports no web framework."""
