"""The topic names, under one prefix: settings and the Kafka helpers both need them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """The four LayerWatch topics under one prefix (default ``layerwatch``).

    A prefix lets several installations (or tests) share one cluster without seeing each
    other's data. Layer and score topics are keyed by printer and get the configured
    partition count; alarms and dead letters are low-volume and keep one partition so their
    order is global.
    """

    prefix: str = "layerwatch"

    @property
    def layers(self) -> str:
        return f"{self.prefix}.layers"

    @property
    def scores(self) -> str:
        return f"{self.prefix}.scores"

    @property
    def alarms(self) -> str:
        return f"{self.prefix}.alarms"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    def partitions(self, default: int) -> dict[str, int]:
        return {self.layers: default, self.scores: default, self.alarms: 1, self.dlq: 1}
