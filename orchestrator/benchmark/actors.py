"""Ray scheduling: worker actors that keep CLIP warm, a queue that keeps them busy, retries of
trials whose worker process died (from their last checkpoint)."""

from __future__ import annotations

import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


@ray.remote(max_restarts=0, max_task_retries=0)
class TrialWorker:
    """Runs trials one at a time in one process; ``run_trial`` memoises CLIP across them."""

    def run(self, job: Job, options: dict[str, Any]) -> dict[str, Any]:
        from workers.trial import TrialError, run_trial

        def on_epoch(epoch: int, _row: dict[str, float]) -> None:
            if job.kill_at_epoch is not None and job.attempt == 0 and epoch == job.kill_at_epoch:
                os._exit(1)  # simulate a worker process dying mid-trial

        try:
            if job.fail:
                raise TrialError(f"injected failure for trial '{job.name}' (testing.fail_trials)")
            return {"result": run_trial(job.spec, options, on_epoch=on_epoch).model_dump(mode="json")}
        except Exception as err:  # the trial's own failure: reported, the grid goes on
            return {"error": f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}"}


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
    *,
    cpus: float,
    gpus: float,
    max_concurrency: int | None,
    retries: int,
    on_outcome: Callable[[Outcome], None],
    on_progress: Callable[[str], None],
) -> GridCounts:
    """Run every job on worker actors; each outcome is handed to ``on_outcome`` as it arrives.

    A worker process that dies is replaced and its trial re-queued (resuming from its checkpoint)
    up to ``retries`` times; then it is reported as failed.
    """
    progress = GridCounts(total=len(jobs))
    if not jobs:
        return progress
    queue = deque(jobs)
    make = TrialWorker.options(num_cpus=cpus, num_gpus=gpus)  # type: ignore[attr-defined]  # a Ray actor class
    idle = [make.remote() for _ in range(actor_count(len(jobs), cpus, gpus, max_concurrency))]
    running: dict[ray.ObjectRef, tuple[Job, Any]] = {}
    opts = options.model_dump()
    last_line = 0.0
    try:
        while queue or running:
            while idle and queue:
                job, actor = queue.popleft(), idle.pop()
                running[actor.run.remote(job, opts)] = (job, actor)
            progress.running = len(running)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                job, actor = running.pop(ref)
                try:
                    reply = ray.get(ref)
                    idle.append(actor)
                except (RayActorError, WorkerCrashedError) as err:
                    ray.kill(actor)
                    idle.append(make.remote())
                    if job.attempt < retries:
                        job.attempt += 1
                        queue.appendleft(job)
                        on_progress(
                            f"[dor-bench] worker died during '{job.name}'; "
                            f"retry {job.attempt}/{retries} from its last checkpoint"
                        )
                        continue
                    reply = {"error": f"the worker process died {job.attempt + 1} times: {err}"}
                outcome = Outcome(job, reply.get("result"), reply.get("error"))
                if outcome.result is not None:
                    progress.done += 1
                else:
                    progress.failed += 1
                on_outcome(outcome)
            progress.running = len(running)
            if time.monotonic() - last_line >= 1.0:
                last_line = time.monotonic()
                on_progress(progress.line())
    finally:
        for _, actor in running.values():
            ray.kill(actor)
        for actor in idle:
            ray.kill(actor)
    return progress
