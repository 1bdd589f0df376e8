"""Which printer gets which action: a ``[printers.<id>.target]`` table in the policy TOML.

```toml
[printers.mk4.target]
kind = "octoprint"                  # octoprint | moonraker | webhook | builtin | none
url = "http://10.0.0.12"
api_key_env = "OCTOPRINT_MK4_KEY"   # the key itself only ever comes from the environment
```
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.actions.base import Target
from monitor.actions.printers import BuiltinPrinter, Moonraker, OctoPrint, Webhook


class PrinterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["octoprint", "moonraker", "webhook", "builtin", "none"] = "none"
    url: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(0.5, ge=0)


class PrinterConfigError(ValueError):
    pass


def load_printers(path: Path | None) -> dict[str, PrinterConfig]:
    """``printer id → target`` from the ``[printers.<id>.target]`` tables of a policy file."""
    if path is None:
        return {}
    data = tomllib.loads(Path(path).read_text())
    out: dict[str, PrinterConfig] = {}
    for pid, table in (data.get("printers") or {}).items():
        if "target" in table:
            try:
                out[pid] = PrinterConfig.model_validate(table["target"])
            except ValidationError as exc:
                raise PrinterConfigError(f"{path} [printers.{pid}.target]: {exc}") from None
    return out


def target_for(cfg: PrinterConfig, printer: str = "") -> Target | None:
    if cfg.kind == "none":
        return None
    if cfg.kind == "builtin":
        return BuiltinPrinter(printer)
    if not cfg.url:
        raise PrinterConfigError(f"a {cfg.kind} target needs a url")
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    if cfg.api_key_env and not key:
        raise PrinterConfigError(f"environment variable {cfg.api_key_env} (API key) is not set")
    if cfg.kind == "octoprint":
        return OctoPrint(cfg.url, key)
    if cfg.kind == "moonraker":
        return Moonraker(cfg.url, key or None)
    return Webhook(cfg.url)
