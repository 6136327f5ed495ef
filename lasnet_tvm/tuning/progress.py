"""A tqdm progress bar fed by MetaSchedule after every measured batch."""

from __future__ import annotations

from tvm.s_tir import meta_schedule as ms
from tvm.ir.utils import derived_object


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Measure callback showing trials done, tasks touched and the best latency so far.

    Parameters
    ----------
    trials : int
        Total trial budget (the bar's length).
    num_tasks : int
        Number of tasks.
    enabled : bool
        False: count silently (no bar).
    """

    def __init__(self, trials: int, num_tasks: int, enabled: bool = True):
        from tqdm import tqdm

        self.num_tasks = num_tasks
        self.touched: set = set()
        self.best: dict = {}
        self.done = 0  # trials measured (a disabled tqdm bar does not count)
        self.bar = tqdm(total=trials, unit="trial", desc="tuning", disable=not enabled, leave=True)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        self.touched.add(int(task_id))
        for r in runner_results:
            if r.error_msg is None and r.run_secs:
                t = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                self.best[int(task_id)] = min(t, self.best.get(int(task_id), float("inf")))
        self.done += len(measure_candidates)
        self.bar.update(len(measure_candidates))
        best = self.best.get(int(task_id))
        self.bar.set_postfix_str(f"task {int(task_id) + 1}/{self.num_tasks}, tasks started {len(self.touched)}"
                                 + ("" if best is None else f", best {best:.3f} ms"))

    def close(self) -> None:
        self.bar.close()
