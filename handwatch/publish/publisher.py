"""Publishing a transcription in one call: claim the Markdown's name, write it, move the original, index, record.

The pipeline hands over a finished `markdown.Document`; everything that touches the ledger, the Markdown file,
the original's place, the search index and the provenance record happens here, in that order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from handwatch import log, safefs
from handwatch.errors import HandwatchError
from handwatch.publish import markdown, output, provenance
from handwatch.publish.index import SearchIndex
from handwatch.store.state import Ledger, StateDB


@dataclass(frozen=True)
class Placed:
    source: Path  # where the original is now (it moves with `after: move`)
    output: Path  # the Markdown written


class Publisher:
    def __init__(self, db: StateDB):
        self.ledger = Ledger(db)
        self.index = SearchIndex(db)
        self.provenance = provenance.Provenance(db)
        self.log = log.get("publish")

    def publish(
        self,
        doc: markdown.Document,
        template: str,
        root: Path,
        mode: int,
        move_to: Path | None,
        parts: dict[str, str],
        asked_model: str,
    ) -> Placed:
        """`template`: the rule's `output`; `root`: the watched folder nothing may leave; `mode`: the original's
        permission bits (the Markdown gets no more); `move_to`: the rule's `after: move` folder, or None;
        `parts` and `asked_model`: what produced the text, for `redo`. Raises OutputConflict rather than
        write over a file handwatch did not write or a person edited."""
        source, sha = doc.source, doc.source_sha256
        target = output.claim_target(source, sha, template, self.ledger, doc.kind)
        text = markdown.render(doc)
        written = output.write(target, text, self.ledger, source, sha, root=root, mode=mode)
        if "{kind}" in template:
            self._drop_stale(source, written, root)
        moved = self.move_original(source, root, move_to)
        self.index.update(written, text, moved)
        self.provenance.record(
            provenance.Record(
                moved,
                written,
                sha,
                doc.fingerprint or "",
                parts,
                asked_model,
                doc.endpoint,
                doc.needs_review,
                doc.confidence,
                doc.uncertain_words,
            )
        )
        return Placed(moved, written)

    def _drop_stale(self, source: Path, written: Path, root: Path) -> None:
        """`{kind}` in the name: an original judged another kind this time (it changed, or the first answer could
        not be read) has a new name, and its old Markdown — nobody edited it — is no one's transcription now."""
        for rec in self.ledger.owned(source):
            if rec.path == written:
                continue
            try:
                output.retract(rec.path, source, self.ledger, root)
            except (HandwatchError, OSError) as e:  # edited, or not handwatch's any more: it stays
                self.log.info("markdown.kept", path=str(rec.path), reason=str(getattr(e, "strerror", None) or e))
            else:
                self.index.remove(rec.path)

    def retract(self, target: Path, source: Path, root: Path) -> None:
        """Take back the Markdown of an original now skipped (not a document): the file, its index entry and its
        provenance go, unless a person edited it (OutputConflict, nothing touched)."""
        output.retract(target, source, self.ledger, root)
        self.index.remove(target)
        self.provenance.forget(source)
        self.log.info("markdown.retracted", path=str(target), source=str(source))

    def move_original(self, path: Path, root: Path, move_to: Path | None) -> Path:
        """`after: move`: into the move folder, under a name nothing holds yet (`scan-1.png`, …), never
        over anything that is there, links included. The ledger follows the original first, so a new
        file at the old path is a new original with a Markdown of its own."""
        if move_to is None:
            return path
        try:
            with safefs.folder(root, path.parent, create=False) as sfd, safefs.folder(root, move_to) as dfd:
                current = path
                for n in range(1000):
                    name = path.name if n == 0 else f"{path.stem}-{n}{path.suffix}"
                    if safefs.lstat_at(dfd, name) is not None:
                        continue
                    dest = move_to / name
                    self.ledger.follow(current, dest)
                    current = dest
                    try:
                        safefs.rename_noreplace(path.name, name, sfd, dfd)
                    except FileExistsError:
                        continue
                    self.log.info("file.moved", path=str(path), to=str(dest))
                    return dest
                self.ledger.follow(current, path)
        except safefs.Unsafe as e:
            self.log.warning("file.not_moved", path=str(path), reason=e.strerror)
            return path
        self.log.warning("file.not_moved", path=str(path), reason="no free name in the move folder")
        return path
