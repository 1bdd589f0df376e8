"""Shared by every method's configuration: the JSON round trip and ``--option`` parsing."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

from scorer.features import FeatureConfig


class MethodConfig:
    """Mixin for a method's frozen dataclass config.

    ``NESTED`` names the fields that are dataclasses themselves (rebuilt from JSON, and fed by
    ``--option`` keys that are their field names); ``METHOD`` names the method in errors.
    """

    METHOD: ClassVar[str]
    NESTED: ClassVar[dict[str, type]] = {"features": FeatureConfig}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        d = dict(d)
        for name, kind in cls.NESTED.items():
            d[name] = kind(**d.get(name, {}))
        return cls(**d)

    @classmethod
    def split_options(cls, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
        """``--option`` pairs → (this config's own fields, {nested field: its keys})."""
        own = {f.name for f in fields(cls)} - set(cls.NESTED)  # type: ignore[arg-type]
        nested = {n: {f.name for f in fields(k)} for n, k in cls.NESTED.items()}
        unknown = set(extra) - own - set().union(*nested.values())
        if unknown:
            raise ValueError(f"unknown {cls.METHOD} options: {sorted(unknown)}")
        pick = lambda names: {k: v for k, v in extra.items() if k in names}  # noqa: E731
        return pick(own), {n: pick(names) for n, names in nested.items()}
