"""Ingest sources: the folder watcher and the OctoPrint-triggered webcam snapshot."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from ingest.images import encode_png
from ingest.sources.folder import FolderWatcher
from ingest.sources.snapshot import OctoPrintLayerTrigger, SnapshotSource, z_at, z_index
from layerwatch.virtual_printer import gcode_print

IMG = encode_png((np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64))


def _png(i: int) -> bytes:
    return encode_png(np.full((8, 8), i, np.uint8))


def test_folder_sends_each_complete_file_once_in_order(tmp_path: Path) -> None:
    inbox, ledger = tmp_path / "in", tmp_path / "ledger.jsonl"
    inbox.mkdir()
    for i in (2, 0, 1):
        (inbox / f"layer_{i:03d}.png").write_bytes(_png(i))
    sent: list[str] = []
    w = FolderWatcher(inbox, ledger, settle_s=0)
    assert w.watch(lambda f: sent.append(f.path.name), once=True, poll_s=0.01) == 3
    assert sent == ["layer_000.png", "layer_001.png", "layer_002.png"]
    # A copy of an already-sent file under another name, and a restart: nothing new is sent.
    (inbox / "copy_of_0.png").write_bytes(_png(0))
    w2 = FolderWatcher(inbox, ledger, settle_s=0)
    assert w2.watch(lambda f: sent.append(f.path.name), once=True, poll_s=0.01) == 0
    (inbox / "layer_003.png").write_bytes(_png(3))
    assert w2.watch(lambda f: sent.append(f.path.name), once=True, poll_s=0.01) == 1
    assert sent[-1] == "layer_003.png"


def test_folder_waits_for_files_still_being_written(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(_png(1))
    partial = inbox / "b.png"
    partial.write_bytes(_png(2)[:20])
    w = FolderWatcher(inbox, tmp_path / "l.jsonl", settle_s=0.5)
    assert [f.path.name for f in w.ready()] == []  # nothing has settled yet
    time.sleep(0.6)
    assert [f.path.name for f in w.ready()] == ["a.png", "b.png"]
    # A file that keeps growing is held back, and so is everything after it (order is kept).
    w = FolderWatcher(inbox, tmp_path / "l2.jsonl", settle_s=0.5)
    list(w.ready())
    time.sleep(0.6)
    with partial.open("ab") as f:
        f.write(b"more")
    os.utime(partial, (time.time() + 5, time.time() + 5))
    assert [f.path.name for f in w.ready()] == ["a.png"]


def test_folder_archives_sent_files(tmp_path: Path) -> None:
    inbox, archive = tmp_path / "in", tmp_path / "done"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sub" / "x.png").write_bytes(_png(5))
    w = FolderWatcher(inbox, tmp_path / "l.jsonl", settle_s=0, archive=archive)
    assert w.watch(lambda f: None, once=True, poll_s=0.01) == 1
    assert (archive / "sub" / "x.png").read_bytes() == _png(5)
    assert not (inbox / "sub" / "x.png").exists()


def test_z_index_maps_file_positions_to_layers() -> None:
    g = b"G28\nG1 Z0.30 F600\nG1 X1 Y1\nG0 Z0.6\n; G1 Z9 comment\nG1 X2 Z0.9 E1\n"
    idx = z_index(g)
    assert idx[1] == [0.3, 0.6, 0.9]
    assert z_at(idx, 0) is None
    assert z_at(idx, g.index(b"G1 X1")) == 0.3
    assert z_at(idx, len(g)) == 0.9


class _Webcam(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(IMG)

    def log_message(self, *args: object) -> None:
        return


def test_snapshots_follow_the_layers_of_a_real_octoprint_print(virtual_printer) -> None:
    cam = ThreadingHTTPServer(("127.0.0.1", 0), _Webcam)
    threading.Thread(target=cam.serve_forever, daemon=True).start()
    try:
        virtual_printer.print_gcode("snap.gcode", gcode_print(layers=4, moves_per_layer=4))
        trigger = OctoPrintLayerTrigger(virtual_printer.url, virtual_printer.api_key, poll_s=0.05)
        src = SnapshotSource(f"http://127.0.0.1:{cam.server_port}/snapshot", trigger)
        stop = threading.Event()
        timer = threading.Timer(120, stop.set)
        timer.start()
        got = list(src.layers(stop))
        timer.cancel()
    finally:
        cam.shutdown()
    zs = [z for _, z, _ in got]
    # Every layer's Z is seen once, in order (the first Z move is the 0.3 mm start height).
    assert zs == sorted(set(zs)) and zs[-1] == 1.2, zs
    assert [n for n, _, _ in got] == list(range(len(got)))
    assert all(data == IMG for _, _, data in got)
