"""What happens when an alarm fires: pause or cancel the printer, call a webhook, publish it.

Every target implements :class:`monitor.actions.base.Target`; :func:`run_action` retries with
back-off and returns every attempt, which the monitor stores with the alarm.
"""

from monitor.actions.base import ActionError, Attempt, Target, run_action
from monitor.actions.config import PrinterConfig, load_printers, target_for

__all__ = [
    "ActionError", "Attempt", "PrinterConfig", "Target", "load_printers", "run_action",
    "target_for",
]  # fmt: skip
