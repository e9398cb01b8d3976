"""The progress bar of a block-by-block Spark search: queries done (with their
rate and the time left), blocks done, and the tasks of the running stages, so a
long block shows it moves."""

from __future__ import annotations

import threading
from typing import Any

#: Seconds between two looks at the running stages.
TICK = 1.0


def running_tasks(tracker: Any) -> tuple[int, int]:
    """(tasks completed, tasks) over the stages running now (Spark's status tracker)."""
    completed = total = 0
    for stage in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage)
        if info is not None:
            completed += info.numCompletedTasks
            total += info.numTasks
    return completed, total


class BlockProgress:
    """A tqdm bar over the queries, with the blocks and running tasks beside it."""

    def __init__(
        self, spark: Any, queries: int, done: int, blocks: int, blocks_done: int, enabled: bool
    ) -> None:
        from tqdm import tqdm

        self.blocks, self.blocks_done = blocks, blocks_done
        self.bar = tqdm(
            total=queries,
            initial=done,
            unit="query",
            desc="spark find",
            disable=not enabled,
            dynamic_ncols=True,
        )
        self.tracker = spark.sparkContext.statusTracker() if enabled else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="spark find progress", daemon=True)
        self.bar.set_postfix_str(self._blocks())

    def __enter__(self) -> BlockProgress:
        if self.tracker is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.bar.close()

    def block_done(self, queries: int) -> None:
        self.blocks_done += 1
        self.bar.set_postfix_str(self._blocks(), refresh=False)
        self.bar.update(queries)

    def _blocks(self) -> str:
        return f"block {self.blocks_done}/{self.blocks}"

    def _tick(self) -> None:
        while not self.stop.wait(TICK):
            try:
                completed, total = running_tasks(self.tracker)
            except Exception:  # the context stopping under us: no tasks to show
                return
            tasks = f", tasks {completed}/{total}" if total else ""
            self.bar.set_postfix_str(self._blocks() + tasks)
