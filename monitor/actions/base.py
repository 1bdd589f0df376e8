"""Targets, attempts and the retry loop shared by every action."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

log = logging.getLogger(__name__)

Command = Literal["pause", "cancel", "notify"]


class ActionError(RuntimeError):
    """A target answered with a refusal that retrying will not change (e.g. 401, 409)."""


@dataclass
class Attempt:
    """One try at one target; stored in the ``actions`` table."""

    target: str
    command: str
    attempt: int
    request: dict[str, Any]
    ok: bool
    status_code: int | None = None
    result: str = ""
    at: float = field(default_factory=time.time)


@dataclass
class Outcome:
    """What one call of a target gave: ok, the HTTP status if any, a readable result, and
    whether a retry could change it."""

    ok: bool
    status_code: int | None
    result: str
    request: dict[str, Any]
    retryable: bool = False


class Target(Protocol):
    name: str

    def execute(self, command: Command, alarm: dict[str, Any]) -> Outcome: ...


def http_outcome(
    call: Callable[[], httpx.Response], request: dict[str, Any], ok_codes: tuple[int, ...],
    where: str,
) -> Outcome:  # fmt: skip
    """Run an HTTP call and classify it: connection problems and 5xx are retryable."""
    try:
        r = call()
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{where} unreachable: {exc}", request, retryable=True)
    if r.status_code in ok_codes:
        return Outcome(True, r.status_code, r.text[:300].strip() or "ok", request)
    return Outcome(
        False, r.status_code, f"{where} answered {r.status_code}: {_error_text(r)}", request,
        retryable=r.status_code >= 500 or r.status_code == 429,
    )  # fmt: skip


def _error_text(r: httpx.Response) -> str:
    """The server's own error message when it sends JSON (OctoPrint: ``{"error": "..."}``,
    Moonraker: ``{"error": {"message": "..."}}``), else the start of the body."""
    try:
        err = r.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict) and "message" in err:
        return str(err["message"])
    if isinstance(err, str):
        return err
    return r.text[:300].strip()


def run_action(
    target: Target, command: Command, alarm: dict[str, Any], retries: int = 3,
    backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
) -> list[Attempt]:  # fmt: skip
    """Try up to ``1 + retries`` times (back-off doubles); every attempt is returned."""
    attempts: list[Attempt] = []
    delay = backoff_s
    for n in range(1, retries + 2):
        out = target.execute(command, alarm)
        attempts.append(
            Attempt(target.name, command, n, out.request, out.ok, out.status_code, out.result)
        )
        level = logging.INFO if out.ok else logging.WARNING
        log.log(
            level, "printer action",
            extra={"target": target.name, "command": command, "attempt": n, "ok": out.ok,
                   "result": out.result[:200]},
        )  # fmt: skip
        if out.ok or not out.retryable:
            break
        if n <= retries:
            sleep(delay)
            delay *= 2
    return attempts
