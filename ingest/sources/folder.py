"""Watch a folder where camera software drops layer images.

An image's expected outline (issue 18) lies beside it as ``<name>.outline.png``
(``layer_0042.png`` + ``layer_0042.outline.png``); outline files are never layers themselves,
and one is archived with its image.

A file is sent once it has stopped changing (same size and mtime over ``settle_s``), in name
or mtime order, and never twice: the SHA-256 of every sent file is remembered in a JSON-lines
ledger in the state directory, so a restart or a re-copied file does not resend it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ingest.images import ImageError, image_size
from ingest.outline import is_outline_file, outline_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class ReadyFile:
    path: Path
    data: bytes
    digest: str


@dataclass
class FolderWatcher:
    folder: Path
    ledger_path: Path
    order: str = "name"  # name | mtime
    settle_s: float = 1.0
    archive: Path | None = None
    _seen: set[str] = field(default_factory=set)
    _sizes: dict[Path, tuple[int, float, float]] = field(default_factory=dict)
    _done: set[tuple[Path, int, float]] = field(default_factory=set)  # (path, size, mtime) sent

    def __post_init__(self) -> None:
        if self.order not in ("name", "mtime"):
            raise ValueError(f"order must be 'name' or 'mtime', not {self.order!r}")
        if self.ledger_path.exists():
            for line in self.ledger_path.read_text().splitlines():
                if line.strip():
                    self._seen.add(json.loads(line)["sha256"])

    def _candidates(self) -> list[Path]:
        files = [
            p for p in self.folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            and not is_outline_file(p)
        ]  # fmt: skip
        if self.order == "mtime":
            return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))
        return sorted(files)

    def _settled(self, p: Path, now: float) -> bool:
        """True once size and mtime have not changed for ``settle_s`` seconds."""
        st = p.stat()
        prev = self._sizes.get(p)
        if prev is None or prev[:2] != (st.st_size, st.st_mtime):
            self._sizes[p] = (st.st_size, st.st_mtime, now)
            return self.settle_s <= 0 and st.st_size > 0
        return now - prev[2] >= self.settle_s and st.st_size > 0

    def ready(self) -> Iterator[ReadyFile]:
        """Files complete and not yet sent, in order. Stops at the first file still being
        written, so the order of layers is kept."""
        now = time.monotonic()
        pending: list[tuple[Path, int, float, bool]] = []
        for p in self._candidates():  # observe every file on each poll, sent or not
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if (p, st.st_size, st.st_mtime) not in self._done:
                pending.append((p, st.st_size, st.st_mtime, self._settled(p, now)))
        for p, size, mtime, settled in pending:
            if not settled:
                return
            try:
                data = p.read_bytes()
            except FileNotFoundError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in self._seen:
                self._forget(p, size, mtime)
                continue
            try:
                image_size(data)
            except ImageError as exc:
                # Complete but not an image: still sent, so the scorer dead-letters it with
                # the reason and it is kept; here we only log it.
                log.warning("file is not a valid image", extra={"path": str(p), "error": str(exc)})
            yield ReadyFile(p, data, digest)

    def _forget(self, p: Path, size: int, mtime: float) -> None:
        self._done.add((p, size, mtime))
        self._sizes.pop(p, None)

    def mark_sent(self, f: ReadyFile) -> None:
        self._seen.add(f.digest)
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        with self.ledger_path.open("a") as out:
            out.write(json.dumps({"sha256": f.digest, "path": str(f.path)}) + "\n")
        with contextlib.suppress(FileNotFoundError):
            st = f.path.stat()
            self._forget(f.path, st.st_size, st.st_mtime)
        if self.archive is not None:
            for src in (f.path, outline_path(f.path)):
                if src.exists():
                    dest = self.archive / src.relative_to(self.folder)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(src), dest)

    def watch(
        self, send: Callable[[ReadyFile], None], once: bool, poll_s: float = 0.5,
        stop: Callable[[], bool] = lambda: False,
    ) -> int:  # fmt: skip
        """Send ready files until stopped (or, with ``once``, until nothing more is ready)."""
        sent = 0
        while not stop():
            batch = list(self.ready())
            for f in batch:
                send(f)
                self.mark_sent(f)
                sent += 1
            if once and not batch and not self._pending():
                return sent
            time.sleep(poll_s if not batch else 0)
        return sent

    def _pending(self) -> bool:
        """Files seen but not yet settled (still being written)."""
        return any(p.exists() for p in self._sizes)
