"""Put on PYTHONPATH of a daemon under test: a worker thread that takes a file named `die-*` dies.

A worker thread dies only from a bug — something escaping every handler — which nothing outside the
process can cause; so the test plants exactly that: `SystemExit` raised as the worker starts on such
a file. The rest of handwatch runs unchanged."""

import handwatch.service.worker as _worker

_handle = _worker.Worker.handle


def _handle_or_die(self, job):
    if job.path.name.startswith("die-"):
        raise SystemExit(f"made to die by the test on {job.path.name}")
    return _handle(self, job)


_worker.Worker.handle = _handle_or_die
