"""Publishing: the Markdown beside the original, written so that no person's text is ever overwritten.

`markdown` owns the format (front matter and body: render, read, edit); `output` writes it atomically
against the ledger (claim a name, intend, rename, record; a conflict instead of an overwrite) and saves
a person's edits from the review page; `provenance` says what produced a file, so `redo` can tell what
changed; `index.SearchIndex` keeps the full-text search over what was written. The service and the review
page write Markdown only through here.
"""
