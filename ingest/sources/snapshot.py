"""Webcam snapshots taken when the printer starts a new layer.

OctoPrint's REST API reports the job's file and the byte position the printer has reached
(``GET /api/job`` → ``progress.filepos``) but not the nozzle height. So the trigger downloads
the job's G-code once, indexes the byte offset of every Z move, and maps the reported
position to the current Z: a higher Z than the last one is a new layer.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import httpx

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024
_Z_MOVE = re.compile(rb"^\s*G[01]\b[^;\n]*?\bZ(-?\d+(?:\.\d*)?)", re.MULTILINE | re.IGNORECASE)


class Trigger(Protocol):
    def next_layer(self, stop: threading.Event) -> tuple[int, float | None] | None:
        """Block until the next layer starts; (layer index, z) or None when the job ends."""


@dataclass
class IntervalTrigger:
    """No printer link: one snapshot every ``interval`` seconds."""

    interval: float
    _n: int = 0

    def next_layer(self, stop: threading.Event) -> tuple[int, float | None] | None:
        if self._n and stop.wait(self.interval):
            return None
        self._n += 1
        return self._n - 1, None


def z_index(gcode: bytes) -> tuple[list[int], list[float]]:
    """Byte offsets of the Z moves in a G-code file and the Z each one sets."""
    offsets, zs = [], []
    for m in _Z_MOVE.finditer(gcode):
        offsets.append(m.start())
        zs.append(float(m.group(1)))
    return offsets, zs


def z_at(index: tuple[list[int], list[float]], filepos: int) -> float | None:
    offsets, zs = index
    i = bisect.bisect_right(offsets, filepos) - 1
    return zs[i] if i >= 0 else None


@dataclass
class OctoPrintLayerTrigger:
    base_url: str
    api_key: str
    poll_s: float = 1.0
    timeout_s: float = 10.0
    _client: httpx.Client | None = None
    _index: tuple[list[int], list[float]] | None = None
    _file: str | None = None
    _last_z: float | None = None
    _layer: int = -1
    _finished: set[str] = field(default_factory=lambda: {"Operational", "Cancelling"})

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.base_url.rstrip("/"),
                headers={"X-Api-Key": self.api_key},
                timeout=self.timeout_s,
            )
        return self._client

    def _load_index(self, origin: str, path: str) -> None:
        r = self._http().get(f"/downloads/files/{origin}/{path}")
        r.raise_for_status()
        self._index = z_index(r.content)
        self._file = path
        log.info("indexed gcode", extra={"file": path, "z_moves": len(self._index[0])})

    def next_layer(self, stop: threading.Event) -> tuple[int, float | None] | None:
        seen_printing = self._layer >= 0
        while not stop.is_set():
            try:
                job = self._http().get("/api/job").raise_for_status().json()
            except httpx.HTTPError as exc:
                log.warning("OctoPrint not answering", extra={"error": str(exc)})
                stop.wait(self.poll_s)
                continue
            state = job.get("state", "")
            file = (job.get("job") or {}).get("file") or {}
            filepos = (job.get("progress") or {}).get("filepos")
            if state.startswith("Printing") and file.get("path") and filepos is not None:
                seen_printing = True
                if file["path"] != self._file:
                    self._load_index(file.get("origin", "local"), file["path"])
                    self._last_z, self._layer = None, -1
                z = z_at(self._index, int(filepos)) if self._index else None
                if z is not None and (self._last_z is None or z > self._last_z + 1e-6):
                    self._last_z = z
                    self._layer += 1
                    return self._layer, z
            elif seen_printing and state in self._finished:
                return None
            stop.wait(self.poll_s)
        return None


@dataclass
class SnapshotSource:
    url: str
    trigger: Trigger
    timeout_s: float = 10.0

    def snapshot(self, client: httpx.Client) -> bytes:
        with client.stream("GET", self.url) as r:
            r.raise_for_status()
            data = bytearray()
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) > MAX_SNAPSHOT_BYTES:
                    raise ValueError(f"snapshot from {self.url} exceeds {MAX_SNAPSHOT_BYTES} bytes")
            return bytes(data)

    def layers(self, stop: threading.Event) -> Iterator[tuple[int, float | None, bytes]]:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not stop.is_set():
                nxt = self.trigger.next_layer(stop)
                if nxt is None:
                    return
                layer, z = nxt
                try:
                    yield layer, z, self.snapshot(client)
                except (httpx.HTTPError, ValueError) as exc:
                    log.error("snapshot failed", extra={"layer": layer, "error": str(exc)})
