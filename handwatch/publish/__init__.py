"""Publishing: the Markdown beside the original, written so that no person's text is ever overwritten.

`publisher.Publisher.publish` is the one call the pipeline makes: it claims the Markdown's name, writes it,
moves the original when the rule says `after: move`, updates the search index and records provenance.
Under it, `markdown` owns the format (`Document`, `render`; reading and changing front matter); `output`
writes atomically against the ledger (a conflict instead of an overwrite) and saves a person's edits from
the review page; `provenance` says what produced a file, so `redo` can tell what changed;
`index.SearchIndex` keeps the full-text search. The service and the review page write Markdown only
through here.
"""
