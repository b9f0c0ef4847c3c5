"""The worker pools of the daemon: a fixed set of threads per stage (uploads, the one submitter,
downloads), each running one job's next step at a time. They own no state of their own: the job
ids come from the main loop's dispatch, the outcome goes to the ledger through the pipeline.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from hotfolder.log import get_logger

log = get_logger("hotfolder.workers")


class StagePool:
    """A fixed set of daemon threads running ``work(job_id)`` for one stage."""

    def __init__(self, name: str, size: int, work: Callable[[int], None], running: set[int],
                 lock: threading.Lock) -> None:
        self.name = name
        self.work = work
        self.running = running
        self.lock = lock
        self.jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._loop, name=f"hotfolder-{name}-{i}", daemon=True)
                        for i in range(size)]
        for thread in self.threads:
            thread.start()

    def submit(self, job_id: int) -> None:
        self.jobs.put(job_id)

    def _loop(self) -> None:
        while (job_id := self.jobs.get()) is not None:
            try:
                self.work(job_id)
            except Exception:  # the pipeline handles job errors; this guards the thread itself
                log.exception("worker_crashed", stage=self.name, job_id=job_id)
            finally:
                with self.lock:
                    self.running.discard(job_id)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)

    def join(self, deadline: float) -> None:
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
