"""Printer APIs: OctoPrint and Moonraker (Klipper), plus a generic webhook.

OctoPrint's pause is sent with ``"action": "pause"``: without it the command toggles, and a
second alarm would resume the print (PRINTERS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from monitor.actions.base import Command, Outcome, http_outcome

OCTOPRINT_BODIES: dict[str, dict[str, str]] = {
    "pause": {"command": "pause", "action": "pause"},
    "cancel": {"command": "cancel"},
}


@dataclass
class OctoPrint:
    url: str
    api_key: str
    timeout_s: float = 10.0
    name: str = "octoprint"

    def execute(self, command: Command, alarm: dict[str, Any]) -> Outcome:
        body = OCTOPRINT_BODIES.get(command)
        request = {"method": "POST", "url": f"{self.url.rstrip('/')}/api/job", "json": body}
        if body is None:
            return Outcome(False, None, f"OctoPrint has no {command!r} action", request)
        with httpx.Client(timeout=self.timeout_s, headers={"X-Api-Key": self.api_key}) as c:
            out = http_outcome(
                lambda: c.post(request["url"], json=body), request, (200, 204), "OctoPrint"
            )
        if out.status_code == 409:
            out.result = f"OctoPrint refused {command}: the printer is not printing (409)"
        return out


@dataclass
class Moonraker:
    url: str
    api_key: str | None = None
    timeout_s: float = 10.0
    name: str = "moonraker"

    def execute(self, command: Command, alarm: dict[str, Any]) -> Outcome:
        if command not in ("pause", "cancel"):
            return Outcome(False, None, f"Moonraker has no {command!r} action", {})
        url = f"{self.url.rstrip('/')}/printer/print/{command}"
        request = {"method": "POST", "url": url}
        headers = {"X-Api-Key": self.api_key} if self.api_key else {}
        with httpx.Client(timeout=self.timeout_s, headers=headers) as c:
            return http_outcome(lambda: c.post(url), request, (200,), "Moonraker")


@dataclass
class Webhook:
    url: str
    timeout_s: float = 10.0
    name: str = "webhook"

    def execute(self, command: Command, alarm: dict[str, Any]) -> Outcome:
        body = {"command": command, "alarm": alarm}
        request = {"method": "POST", "url": self.url, "json": body}
        with httpx.Client(timeout=self.timeout_s) as c:
            return http_outcome(
                lambda: c.post(self.url, json=body), request, (200, 201, 202, 204), "webhook"
            )


BUILTIN_STATES: dict[str, str] = {}
"""State of the built-in printers of this process (printer id → printing | paused | cancelled)."""


@dataclass
class BuiltinPrinter:
    """A printer that lives in this process (the demo's): a pause really stops its print,
    because the demo's layer source stops producing layers while it is paused."""

    printer: str
    name: str = "builtin"

    def execute(self, command: Command, alarm: dict[str, Any]) -> Outcome:
        request = {"printer": self.printer, "command": command}
        state = BUILTIN_STATES.get(self.printer, "printing")
        if command == "pause":
            if state == "cancelled":
                return Outcome(False, 409, "built-in printer: the print was cancelled", request)
            BUILTIN_STATES[self.printer] = "paused"
            return Outcome(True, 204, f"built-in printer {self.printer} paused", request)
        if command == "cancel":
            BUILTIN_STATES[self.printer] = "cancelled"
            return Outcome(True, 204, f"built-in printer {self.printer} cancelled", request)
        return Outcome(False, None, f"built-in printer has no {command!r} action", request)
