"""The review page's routes: the list, a file's page (save, accept, retry), search, page images, metrics, health
(the skipped view's are in skipped.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from handwatch import log, safefs
from handwatch.config.schema import Config
from handwatch.errors import InputError, OutputConflict
from handwatch.publish import markdown, output
from handwatch.publish.index import SearchIndex
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB
from handwatch.web.health import Progress, StateCollector
from handwatch.web.images import FULL_SIDE, THUMB_SIDE, Renderer
from handwatch.web.security import Csrf, Guard, Password
from handwatch.web.skipped import MESSAGES as SKIPPED_MESSAGES
from handwatch.web.skipped import SkippedPages
from handwatch.web.store import DOC_KINDS, MAX_ID, SHOWS, Record, Store, display, folder_index

HERE = Path(__file__).parent
PROFILES = ("notes", "recipe", "multilingual")
MAX_FORM_BYTES = 4 << 20
MESSAGES = {  # ?m= codes: the page never echoes text from the request
    "saved": "Saved. handwatch will not overwrite your edit.",
    "accepted": "Accepted.",
    "unchanged": "Nothing changed.",
    "queued": "Back in the queue; the page shows the new transcription once it is done.",
    "running": "It is being transcribed right now; try again when it is done.",
    "gone": SKIPPED_MESSAGES["gone"],
}


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


def list_args(params: Mapping[str, str]) -> dict[str, str]:
    """The list's filters (folder, kind) as a page passes them on to the next one (previous/next, after a save):
    only valid values, so nothing else from the request is echoed into a link or a redirect."""
    args = {}
    folder = folder_index(params.get("folder"))
    if folder is not None:
        args["folder"] = folder
    if params.get("kind") in DOC_KINDS:
        args["kind"] = params["kind"]
    return args


class IdConvertor(IntegerConvertor):
    """A job id or page number in a URL: at most 19 digits. Starlette's `int` takes any number of digits and
    `int()` refuses more than 4,300, a 500 with a traceback; a longer path simply matches no route (404)."""

    regex = "[0-9]{1,19}"


register_url_convertor("id", IdConvertor())


class ReviewApp:
    def __init__(self, cfg: Config, db: StateDB, beat=None):
        self.cfg, self.db = cfg, db
        self.store = Store(cfg, db)
        self.index = SearchIndex(db)
        self.queue = JobQueue(db)
        self.renderer = Renderer()
        self.csrf = Csrf()
        self.progress = Progress(cfg, db, beat)
        self.redactor = log.Redactor(cfg.secrets())  # the same masking as the logs: no password leaves in a reply
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StateCollector(cfg, db, self.progress))
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.autoescape = True  # file names, reasons and text are untrusted: escaped whatever a template is called
        self.templates.env.filters["when"] = _when
        self.skipped = SkippedPages(self)

    def routes(self) -> list:
        return [
            Route("/", self.list_page),
            Route("/search", self.search_page),
            Route("/file/{id:id}", self.file_page),
            Route("/doc/{id:id}", self.file_page),
            Route("/file/{id:id}/page/{n:id}.jpg", self.page_image),
            Route("/doc/{id:id}/page/{n:id}.jpg", self.page_image),
            Route("/file/{id:id}/save", self.save, methods=["POST"]),
            Route("/doc/{id:id}/save", self.save, methods=["POST"]),
            Route("/file/{id:id}/retry", self.retry, methods=["POST"]),
            *self.skipped.routes(),
            Route("/metrics", self.metrics),
            Route("/healthz", self.healthz),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    def render(self, request: Request, template: str, status: int = 200, **context) -> Response:
        folders = [(str(i), str(f)) for i, f in enumerate(self.store.folders)]
        args = list_args(request.query_params)
        context.update(
            csrf=self.csrf.token,
            folders=folders,
            folder_arg=args.get("folder", ""),
            kind_arg=args.get("kind", ""),
            list_query=f"?{urlencode(args)}" if args else "",
        )
        return self.templates.TemplateResponse(request, template, context, status_code=status)

    # --- pages -----------------------------------------------------------------------------------

    def list_page(self, request: Request) -> Response:
        show = request.query_params.get("show", "")
        shows = (show,) if show in SHOWS else SHOWS
        args = list_args(request.query_params)
        scope = self.store.scope(args.get("folder"))
        items = self.store.review_items(scope, shows, args.get("kind"))
        present = self.store.doc_kinds(scope)
        kinds = [k for k in DOC_KINDS if k in present or k == args.get("kind")]
        return self.render(request, "list.html", items=items, show=show, shows=SHOWS, kinds=kinds)

    def search_page(self, request: Request) -> Response:
        q = request.query_params.get("q", "")[:500]
        started = time.perf_counter()
        hits = self.index.search(q, limit=30, folders=self.store.scope(request.query_params.get("folder"))) if q.strip() else []
        took_ms = (time.perf_counter() - started) * 1000
        results = [(h, self.store.url_for_doc(h.doc_id, h.output), *self.store_display(h.source)) for h in hits]
        return self.render(request, "search.html", q=q, results=results, took_ms=took_ms)

    def store_display(self, path: Path) -> tuple[str, str]:
        return display(path, self.store.folders)

    def _record(self, request: Request) -> Record:
        rid = request.path_params["id"]
        if rid > MAX_ID:  # the route takes any digits; SQLite cannot even be asked about more
            raise HTTPException(404, "no such file")
        rec = self.store.by_job(rid) if request.url.path.startswith("/file/") else self.store.by_doc(rid)
        # Only what lies in a watched folder: the database may remember a folder dropped from the config, and its
        # files' names, paths and states are not this page's to show or act on.
        if rec is None or not any(p is not None and self.store.root_of(p) for p in (rec.source, rec.output)):
            raise HTTPException(404, "no such file")
        return rec

    def file_page(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        rec = self._record(request)
        md = self.store.servable(rec.output)
        text, sha, partial = "", "", ""
        if md is not None:
            data, size = _read_shown(md)
            sha, text = safefs.sha256_bytes(data), data.decode("utf-8", "replace")
            if size > MAX_SHOWN_BYTES:  # another device may have put anything in its place, of any size
                partial = f"{size:,} bytes"
        src = self.store.servable(rec.source)
        pages, image_problem = 0, None
        if src is None:
            image_problem = "the original is not in a watched folder any more (moved or deleted)"
        else:
            try:
                pages = self.renderer.page_count(src)
            except InputError as e:
                image_problem = f"cannot show the original: {e}"
        args = list_args(request.query_params)
        items = self.store.review_items(self.store.scope(args.get("folder")), kind=args.get("kind"))
        urls = [i.url for i in items]
        at = urls.index(rec.url) if rec.url in urls else None
        prev_url = urls[at - 1] if at is not None and at > 0 else None
        next_url = urls[at + 1] if at is not None and at + 1 < len(urls) else (urls[0] if at is None and urls else None)
        body = markdown.body(text)
        name, folder = self.store_display(rec.source or rec.output or Path("?"))
        return self.render(
            request,
            "file.html",
            status=status,
            rec=rec,
            name=name,
            folder=folder,
            fields=(fm := markdown.fields(text)),
            body=body,
            spans=markdown.doubt_pieces(body, fm.get("other_readings")),
            sha=sha,
            has_markdown=md is not None,
            partial=partial,
            pages=pages,
            image_problem=image_problem,
            prev_url=prev_url,
            next_url=next_url,
            position=(at + 1) if at is not None else None,
            total=len(urls),
            profiles=PROFILES,
            endpoints=[ep.url for ep in self.cfg.endpoints],
            error=error,
            message=MESSAGES.get(request.query_params.get("m", "")),
        )

    def page_image(self, request: Request) -> Response:
        rec = self._record(request)
        src = self.store.servable(rec.source)
        if src is None:
            raise HTTPException(404, "no original to show")
        side = THUMB_SIDE if request.query_params.get("size") == "thumb" else FULL_SIDE
        try:
            data = self.renderer.jpeg(src, request.path_params["n"], side)
        except (InputError, OSError) as e:
            raise HTTPException(404, f"cannot show the original: {e}") from None
        if data is None:
            raise HTTPException(404, "no such page")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=600"})

    # --- actions ---------------------------------------------------------------------------------

    async def form(self, request: Request) -> dict[str, str]:
        """The POSTed form, once its CSRF token is checked (the Guard has checked its origin)."""
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise HTTPException(413, "too large")
        async with request.form(max_files=0, max_fields=20, max_part_size=MAX_FORM_BYTES) as form:
            data = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self.csrf.valid(data.get("csrf")):
            raise HTTPException(403, "the form's security token is missing or stale; reload the page")
        return data

    async def save(self, request: Request) -> Response:
        form = await self.form(request)
        rec = self._record(request)
        try:
            where = await run_in_threadpool(self._save, request, rec, form)
        except OutputConflict as e:
            return await run_in_threadpool(self.file_page, request, str(e), 409)
        return RedirectResponse(where, status_code=303)

    def _save(self, request: Request, rec: Record, form: dict[str, str]) -> str:
        md = self.store.servable(rec.output)
        if md is None or rec.output is None:
            raise OutputConflict("there is no Markdown file for this original to save")
        raw, size = _read_shown(md)
        if size > MAX_SHOWN_BYTES:
            raise OutputConflict(f"{md.name} is {size:,} bytes, more than this page edits; edit it with your own editor")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise OutputConflict(f"{md.name} is not UTF-8 text; edit it with your own editor") from None
        accept = form.get("action") == "accept"
        new = markdown.with_body(text, form["body"]) if "body" in form else text
        if accept:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            new = markdown.with_fields(new, {"needs_review": False, "reviewed": stamp})
        args = list_args(request.query_params)
        suffix = f"&{urlencode(args)}" if args else ""
        if new == text:
            return f"{rec.url}?m=unchanged{suffix}"
        next_url = None
        if accept:  # go on to the next file in the list, as a person working through it expects
            urls = [i.url for i in self.store.review_items(self.store.scope(args.get("folder")), kind=args.get("kind"))]
            after = urls[urls.index(rec.url) + 1 :] if rec.url in urls else urls
            next_url = next((u for u in after if u != rec.url), None)
        output.save_edit(rec.output, new, self.store.ledger, form.get("sha", ""), root=self.store.root_of(md))
        self.index.update(rec.output, new, rec.source or rec.output)
        if accept:
            return f"{next_url}?m=accepted{suffix}" if next_url else f"/?m=accepted{suffix}"
        return f"{rec.url}?m=saved{suffix}"

    async def retry(self, request: Request) -> Response:
        form = await self.form(request)
        rec = self._record(request)
        if rec.job_id is None:
            raise HTTPException(404, "this transcription has no job to retry (its original was moved)")
        profile, endpoint = form.get("profile") or None, form.get("endpoint") or None
        if (profile and profile not in PROFILES) or (endpoint and endpoint not in {ep.url for ep in self.cfg.endpoints}):
            raise HTTPException(400, "unknown profile or endpoint")
        ok = await run_in_threadpool(self.queue.retry_with, rec.job_id, profile, endpoint)
        return RedirectResponse(f"{rec.url}?m={'queued' if ok else 'running'}", status_code=303)

    # --- for machines ----------------------------------------------------------------------------

    def metrics(self, request: Request) -> Response:
        text = (generate_latest(REGISTRY) + generate_latest(self.registry)).decode("utf-8")
        return Response(self.redactor.text(text), media_type=CONTENT_TYPE_LATEST)

    def healthz(self, request: Request) -> Response:
        """Ok or not, and which check failed, for anyone (an uptime monitor has no password); the details
        (endpoint addresses, the state folder) only for a caller who gave the password, and masked even then."""
        ok, checks = self.progress.check()
        if request.scope.get("state", {}).get("authenticated"):
            body: dict = {"ok": ok, "checks": self.redactor.value(checks)}
        else:
            body = {"ok": ok, "failed": sorted(k for k, v in checks.items() if v != "ok")}
        return JSONResponse(body, status_code=200 if ok else 503, headers={"cache-control": "no-store"})


MAX_SHOWN_BYTES = 1 << 20  # a transcription is a few kB; a Markdown larger than this is shown in part, never edited


def _read_shown(path: Path) -> tuple[bytes, int]:
    """The first MAX_SHOWN_BYTES of a Markdown file and its size: a 200 MB file in its place is not read whole."""
    with os.fdopen(safefs.open_regular(path), "rb") as f:  # never blocks on a FIFO swapped in since it was checked
        size = os.fstat(f.fileno()).st_size
        return f.read(MAX_SHOWN_BYTES), size


def create_app(cfg: Config, db: StateDB, password: Password | None = None, hosts: set[str] | None = None, beat=None) -> Starlette:
    review = ReviewApp(cfg, db, beat)
    public = cfg.web.public_url if cfg.web else None
    app = Starlette(routes=review.routes(), middleware=[Middleware(Guard, password=password, hosts=hosts, public_url=public)])
    app.state.review = review
    return app
