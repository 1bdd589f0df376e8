"""``layerwatch report``: a self-contained HTML report of one print job.

:func:`render_report` is imported lazily so that the CLI can import :mod:`layerwatch.report.cli`
without loading matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_report"]


def __getattr__(name: str) -> Any:
    if name == "render_report":
        from layerwatch.report.render import render_report

        return render_report
    raise AttributeError(name)
