"""The skipped view: the files judged not a document (a camera roll's holiday photos, blank frames), each with a
small thumbnail and a button that has it transcribed anyway."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from handwatch.errors import HandwatchError
from handwatch.store.jobs import SKIPPED
from handwatch.web.images import SMALL_SIDE, Renderer
from handwatch.web.store import MAX_ID, folder_index

if TYPE_CHECKING:
    from handwatch.web.app import ReviewApp

SHOWN = 200  # the latest this many; the page says how many more there are
DECODES = 2  # thumbnails decoded at once: a page of camera photos must not take every core from the workers
MESSAGES = {  # ?m= codes: the page never echoes text from the request
    "anyway": "Back in the queue: it will be transcribed whatever the document check says, now and when it changes.",
    "running": "It is being looked at right now; try again when it is done.",
    "gone": "That file is not skipped any more (it changed, or it was put back already).",
}


class SkippedPages:
    """Jobs in state skipped, found by job id only; their originals served only re-encoded, as the file page does."""

    def __init__(self, review: ReviewApp):
        self.review = review
        self.renderer = Renderer(capacity=SHOWN + 56)  # a page of thumbnails, kept apart from the file pages' cache
        self.limiter = anyio.CapacityLimiter(DECODES)

    def routes(self) -> list[Route]:
        return [
            Route("/skipped", self.page),
            Route("/skipped/{id:id}/thumb.jpg", self.thumb),
            Route("/skipped/{id:id}/anyway", self.anyway, methods=["POST"]),
        ]

    def page(self, request: Request) -> Response:
        store = self.review.store
        items, total = store.skipped(store.scope(request.query_params.get("folder")), SHOWN)
        return self.review.render(
            request, "skipped.html", items=items, total=total, message=MESSAGES.get(request.query_params.get("m", ""))
        )

    def _job(self, request: Request):
        rid = request.path_params["id"]
        job = self.review.store.job_in_folders(rid) if rid <= MAX_ID else None
        if job is None:
            raise HTTPException(404, "no such file")
        return rid, job

    async def thumb(self, request: Request) -> Response:
        """At most SMALL_SIDE px on the long side, page 1. Only an original still skipped, and only from its real
        location inside a watched folder as a regular file; whatever cannot be decoded is a 404, never a 500."""
        _, (path, state) = await run_in_threadpool(self._job, request)
        src = self.review.store.servable(path) if state == SKIPPED else None
        if src is None:
            raise HTTPException(404, "no original to show")
        try:
            data = await anyio.to_thread.run_sync(self.renderer.jpeg, src, 1, SMALL_SIDE, limiter=self.limiter)
        except (HandwatchError, OSError, ValueError):
            data = None
        if data is None:
            raise HTTPException(404, "cannot show the original")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=600"})

    async def anyway(self, request: Request) -> Response:
        """Back in the queue with `anyway` set (JobQueue.retry): transcribed whatever the document check says."""
        form = await self.review.form(request)
        rid, (path, state) = await run_in_threadpool(self._job, request)
        if state != SKIPPED:
            code = "gone"
        else:
            code = "anyway" if await run_in_threadpool(self.review.queue.retry, [path], True) else "running"
        if form.get("back") == "file":  # a fixed choice of where to go, never a URL from the request
            return RedirectResponse(f"/file/{rid}?m={'queued' if code == 'anyway' else code}", status_code=303)
        folder = folder_index(request.query_params.get("folder"))
        return RedirectResponse(f"/skipped?{urlencode({'m': code, **({'folder': folder} if folder else {})})}", status_code=303)
