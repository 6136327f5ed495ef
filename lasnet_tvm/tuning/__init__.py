"""Per-device auto-tuning of the LAS kernels with MetaSchedule (``lasnet-tvm tune``).

:func:`tune` tunes the :class:`Task` s of a network (:func:`tasks_of_spec`) into a per-device JSON database;
:class:`TunedSchedules` reads it back for ``compile`` (``query_schedule``).
"""

from .database import TunedSchedules, open_database, read_manifest
from .tasks import Task, tasks_of_block, tasks_of_spec
from .tune import device_target, summary_table, tune

__all__ = ["Task", "TunedSchedules", "device_target", "open_database", "read_manifest", "summary_table",
           "tasks_of_block", "tasks_of_spec", "tune"]
