"""Ray scheduling: worker actors that keep CLIP warm, a queue that keeps them busy, each trial's
epochs streamed back to the driver as they end (a Ray streaming generator), retries of trials
whose worker process died (from their last checkpoint)."""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
from ray.exceptions import RayActorError, WorkerCrashedError

from workers.spec import RunOptions


@dataclass
class Job:
    """One trial to run: its name, spec (JSON) and how often its worker has died so far."""

    name: str
    spec: dict[str, Any]
    attempt: int = 0
    kill_at_epoch: int | None = None  # fault injection (tests): the worker dies after this epoch
    fail: bool = False  # fault injection (tests): the trial raises


@dataclass
class Outcome:
    job: Job
    result: dict[str, Any] | None = None  # TrialResult JSON
    error: str | None = None


class TrialEvents(Protocol):
    """What the queue tells its caller as trials run (the driver records them as they happen)."""

    def started(self, job: Job) -> None:
        """A worker has been handed the job (again, after its worker died: ``job.attempt`` > 0)."""

    def epoch(self, job: Job, epoch: int, row: dict[str, float]) -> None:
        """The job finished an epoch (1-based) with this row of metrics."""

    def ended(self, outcome: Outcome) -> None:
        """The job is done: a result, or an error after its last attempt."""

    def retrying(self, job: Job, retries: int) -> None:
        """The job's worker died; it is queued again (attempt ``job.attempt`` of ``retries``)."""

    def progress(self, counts: GridCounts) -> None:
        """The grid's counts (about once a second)."""


@ray.remote(max_restarts=0, max_task_retries=0)
class TrialWorker:
    """Runs trials one at a time in one process; ``run_trial`` memoises CLIP across them."""

    def run(self, job: Job, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A streaming generator: ``{"epoch": n, "row": {...}}`` as each epoch ends, then
        ``{"result": TrialResult JSON}`` or ``{"error": text}``. The trial runs in a thread of
        this worker so that its epoch callback can hand rows to the generator."""
        from workers.trial import TrialError, run_trial

        events: queue.Queue[dict[str, Any]] = queue.Queue()

        def work() -> None:
            try:
                if job.fail:
                    raise TrialError(f"injected failure for trial '{job.name}' (testing.fail_trials)")
                on_epoch = lambda epoch, row: events.put({"epoch": epoch, "row": row})
                events.put({"result": run_trial(job.spec, options, on_epoch=on_epoch).model_dump(mode="json")})
            except Exception as err:  # the trial's own failure: reported, the grid goes on
                events.put({"error": f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}"})

        threading.Thread(target=work, name=f"trial {job.name}", daemon=True).start()
        while True:
            event = events.get()
            yield event
            if "epoch" not in event:
                return
            if job.kill_at_epoch == event["epoch"] and job.attempt == 0:
                time.sleep(0.5)  # let the row reach the driver, then die as a crashed worker would
                os._exit(1)


@dataclass
class GridCounts:
    """How many trials of a run are done, failed, running and queued, as one progress line."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        queued = self.total - self.done - self.failed - self.running
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.started
        eta = f"{elapsed / finished * (self.total - finished):.0f}s" if finished else "?"
        return (
            f"[dor-bench] {self.done}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, {queued} queued, ETA {eta}"
        )


def actor_count(total_jobs: int, cpus: float, gpus: float, max_concurrency: int | None) -> int:
    """How many worker actors fit the cluster (and the concurrency cap), at least one."""
    available = ray.cluster_resources()
    fits = [int(available.get("CPU", 1) // cpus)] if cpus else []
    if gpus:
        fits.append(int(available.get("GPU", 0) // gpus))
    n = min([*fits, total_jobs] + ([max_concurrency] if max_concurrency else []))
    return max(1, n)


def run_jobs(
    jobs: list[Job],
    options: RunOptions,
    events: TrialEvents,
    *,
    cpus: float,
    gpus: float,
    max_concurrency: int | None,
    retries: int,
) -> GridCounts:
    """Run every job on worker actors, telling ``events`` as each starts, ends an epoch and ends.

    A worker process that dies is replaced and its trial re-queued (resuming from its checkpoint)
    up to ``retries`` times; then it is reported as failed.
    """
    progress = GridCounts(total=len(jobs))
    if not jobs:
        return progress
    queue_ = deque(jobs)
    make = TrialWorker.options(num_cpus=cpus, num_gpus=gpus)  # type: ignore[attr-defined]  # a Ray actor class
    idle = [make.remote() for _ in range(actor_count(len(jobs), cpus, gpus, max_concurrency))]
    running: dict[Any, tuple[Job, Any]] = {}  # a trial's stream of events -> its job and worker
    opts = options.model_dump()
    last_line = 0.0
    try:
        while queue_ or running:
            while idle and queue_:
                job, actor = queue_.popleft(), idle.pop()
                running[actor.run.options(num_returns="streaming").remote(job, opts)] = (job, actor)
                events.started(job)
            progress.running = len(running)
            ready: list[Any] = ray.wait(list(running), num_returns=1, timeout=1.0)[0]  # streams with an event
            for stream in ready:
                job, actor = running[stream]
                try:
                    reply: dict[str, Any] = ray.get(next(stream))
                except (RayActorError, WorkerCrashedError, StopIteration) as err:
                    del running[stream]
                    ray.kill(actor)
                    idle.append(make.remote())
                    if job.attempt < retries:
                        job.attempt += 1
                        queue_.appendleft(job)
                        events.retrying(job, retries)
                        continue
                    reply = {"error": f"the worker process died {job.attempt + 1} times: {err}"}
                else:
                    if "epoch" in reply:
                        events.epoch(job, int(reply["epoch"]), reply["row"])
                        continue
                    del running[stream]
                    idle.append(actor)
                outcome = Outcome(job, reply.get("result"), reply.get("error"))
                if outcome.result is not None:
                    progress.done += 1
                else:
                    progress.failed += 1
                events.ended(outcome)
            progress.running = len(running)
            if time.monotonic() - last_line >= 1.0:
                last_line = time.monotonic()
                events.progress(progress)
    finally:
        for _, actor in running.values():
            ray.kill(actor)
        for actor in idle:
            ray.kill(actor)
    return progress
