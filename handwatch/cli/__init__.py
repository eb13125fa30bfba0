"""The command line: argument parsing and one module per command; the only place that prints for people.

`main.main` is the console script and `python -m handwatch`; it parses arguments, loads the config and turns
every `errors.HandwatchError` into its exit code. `scan`, `check`, `status` and `redo` are the commands of
those names, `progress` draws the progress bar. Nothing imports from here but `__main__`.
"""
