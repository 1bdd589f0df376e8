"""Printer actions against a real OctoPrint (virtual printer) and a real Moonraker."""

from __future__ import annotations

import time

from layerwatch.core.embedded import free_port
from layerwatch.virtual_printer import gcode_print
from monitor.actions import run_action
from monitor.actions.printers import Moonraker, OctoPrint, Webhook

ALARM = {"printer": "vp", "job": "j", "layer": 7, "chart": "cusum", "level": "stop"}


def _g1_count(printer) -> int:
    return printer.serial_log.read_text().count("G1 X")


def test_octoprint_pause_is_idempotent_and_stops_the_moves(virtual_printer) -> None:
    virtual_printer.print_gcode("pause.gcode", gcode_print(layers=30))
    time.sleep(1.0)
    target = OctoPrint(virtual_printer.url, virtual_printer.api_key)
    attempts = run_action(target, "pause", ALARM)
    assert [a.ok for a in attempts] == [True] and attempts[0].status_code == 204
    assert attempts[0].request["json"] == {"command": "pause", "action": "pause"}
    with virtual_printer.client() as c:
        assert virtual_printer.wait_state(c, ("Paused",), 10) == "Paused"
    time.sleep(1.0)  # moves already in the firmware buffer finish
    moves, pos = _g1_count(virtual_printer), virtual_printer.job()["progress"]["filepos"]
    # A second alarm pauses again: the print must stay paused, not toggle back on.
    again = run_action(target, "pause", ALARM)
    assert again[0].ok
    time.sleep(2.0)
    assert virtual_printer.job()["state"] == "Paused"
    assert _g1_count(virtual_printer) == moves
    assert virtual_printer.job()["progress"]["filepos"] == pos
    cancel = run_action(target, "cancel", ALARM)
    assert cancel[0].ok
    with virtual_printer.client() as c:
        virtual_printer.wait_state(c, ("Operational",), 20)


def test_octoprint_refusal_is_clear_and_not_retried(virtual_printer) -> None:
    with virtual_printer.client() as c:
        virtual_printer.wait_state(c, ("Operational",), 20)
    attempts = run_action(OctoPrint(virtual_printer.url, virtual_printer.api_key), "pause", ALARM)
    assert len(attempts) == 1 and not attempts[0].ok and attempts[0].status_code == 409
    assert "not printing" in attempts[0].result
    bad_key = run_action(OctoPrint(virtual_printer.url, "wrong-key"), "pause", ALARM)
    # A wrong key is refused (OctoPrint 1.11 answers 400 "CSRF validation failed"): no retry.
    assert len(bad_key) == 1 and bad_key[0].status_code in (400, 401, 403)


def test_moonraker_without_klipper_is_retried_then_reported(moonraker) -> None:
    sleeps: list[float] = []
    attempts = run_action(Moonraker(moonraker.url), "pause", ALARM, retries=2, sleep=sleeps.append)
    assert [a.status_code for a in attempts] == [503, 503, 503]
    assert all("Klippy Host not connected" in a.result for a in attempts)
    assert sleeps == [0.5, 1.0]  # back-off doubles
    assert attempts[0].request["url"].endswith("/printer/print/pause")


def test_unreachable_printer_gives_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    attempts = run_action(
        OctoPrint(url, "k", timeout_s=1), "pause", ALARM, retries=1, sleep=lambda s: None
    )
    assert len(attempts) == 2 and not any(a.ok for a in attempts)
    assert attempts[-1].result.startswith("OctoPrint unreachable")


def test_webhook_posts_the_alarm() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        attempts = run_action(Webhook(f"http://127.0.0.1:{srv.server_port}/hook"), "notify", ALARM)
    finally:
        srv.shutdown()
    assert attempts[0].ok and got == [{"command": "notify", "alarm": ALARM}]
