"""Per-device auto-tuning with MetaSchedule (``lasnet-tvm tune``).

:func:`tune` tunes the tasks of a network (:func:`tasks_of_spec`: LAS and static kernels;
:func:`static_op_tasks`: stem, pooling, classifier) into a per-device JSON database and chooses, per task,
the tuned or the default schedule; :class:`TunedSchedules` applies the choice in ``compile``
(:func:`shipped_schedules`: the databases shipped under ``schedules/``).
"""

from .database import open_database, read_manifest
from .report import tuning_report
from .schedules import TunedSchedules, device_dir_name, schedules_for, shipped_dir, shipped_schedules
from .static_ops import StaticTask, static_op_tasks
from .tasks import Task, tasks_of_block, tasks_of_spec
from .tune import device_target, summary_table, tune

__all__ = ["StaticTask", "Task", "TunedSchedules", "device_dir_name", "device_target", "open_database",
           "read_manifest", "schedules_for", "shipped_dir", "shipped_schedules", "static_op_tasks", "summary_table",
           "tasks_of_block", "tasks_of_spec", "tune", "tuning_report"]
