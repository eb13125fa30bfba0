"""Transcription: the engines that turn a prepared page into text, and what to doubt in it.

`engine` defines the `Engine` protocol and `PageText`; `vlm` asks an OpenAI-compatible server
(`VLMEngine`, `EndpointClient`, with `http` for the request and its failures and `budget` for image and
token sizes); `tesseract` reads on the CPU (`TesseractEngine`); `profiles` holds the prompts, schemas and
reply cleaning of notes, recipes and letters; `doubt` turns word confidences and reply faults into the
words to mark and the reasons a page needs review; `gate` decides whether a file is a document at all and
what kind (`Kind`, `classify`, `profile_for`); `script` tells which writing systems a text uses. It
uses `prepare` and `config`, never the database: the pipeline records what it returns.
"""
