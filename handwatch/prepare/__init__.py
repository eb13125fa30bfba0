"""Preparation: turn the bytes of a photo, scan or PDF into page images a model reads well.

`formats` says which files are inputs (`EXTENSIONS`, `readable`: by name, no image library); `inputs` opens them (pages of any format, with
`decode`, `tiff` and `pdf` under it and the pixel and page limits); `preprocess` finds the paper
(`paper`), straightens it (`skew`), evens the light and sizes the page for the model, and encodes it
(`encode_jpeg`); `pixels` has the shared image arithmetic; `notices` collects what a decoder warned about;
`alloc` tunes the allocator for large decodes. All of it is pure functions of bytes and `config.schema`
options: no database, no model, no file written.
"""
