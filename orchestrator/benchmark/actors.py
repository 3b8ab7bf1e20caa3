"""Ray scheduling: worker actors that keep CLIP warm, a pool of them that follows the cluster's
size while the grid runs, each trial's epochs streamed back to the driver as they end (a Ray
streaming generator), retries of trials whose worker process or node died (from their last
checkpoint, on storage every node reaches)."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
from ray.exceptions import RayActorError, WorkerCrashedError

from workers.spec import RunOptions, gpu_share


@dataclass(frozen=True)
class Shape:
    """What one trial reserves on a node (Ray resources; fractional GPUs share a device)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None

    def amounts(self) -> dict[str, float]:
        """It in Ray's resource names and units (memory in bytes), the zero ones left out."""
        memory = (self.memory_gb or 0) * 2**30
        return {key: float(v) for key, v in (("CPU", self.cpus), ("GPU", self.gpus), ("memory", memory)) if v}

    def options(self) -> dict[str, Any]:
        """The actor options that reserve it."""
        memory = self.amounts().get("memory")
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, **({"memory": int(memory)} if memory else {})}


def trial_options(options: dict[str, Any], shape: Shape) -> dict[str, Any]:
    """The RunOptions (JSON) of a trial that reserves ``shape``: ``options`` with the share of a GPU
    it shares with other trials (``gpu_share``: the fraction Ray schedules it with; None for a
    whole GPU or none), which the trial's memory is capped at."""
    return {**options, "gpu_share": gpu_share(shape.gpus)}


@dataclass
class Job:
    """One trial to run: its name, spec (JSON), what it reserves, and how often its worker has
    died so far."""

    name: str
    spec: dict[str, Any]
    shape: Shape = field(default_factory=Shape)
    attempt: int = 0
    where: str = ""  # the node running it: "<ip> <node id>"
    kill_at_epoch: int | None = None  # fault injection (tests): the worker dies after this epoch
    fail: bool = False  # fault injection (tests): the trial raises


@dataclass
class Outcome:
    job: Job
    result: dict[str, Any] | None = None  # TrialResult JSON
    error: str | None = None
    figures: dict[str, bytes] | None = None  # drawn by the worker (``tracking.trial_figures``)
    files: dict[str, bytes] | None = None  # the kept files, read by the worker (``tracking.trial_files``)


class TrialEvents(Protocol):
    """What the queue tells its caller as trials run (the driver records them as they happen)."""

    def started(self, job: Job) -> None:
        """A worker (on node ``job.where``) has been handed the job (again, after its worker
        died: ``job.attempt`` > 0)."""

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

    def where(self) -> str:
        """The node this worker runs on (it has started once this answers)."""
        return f"{ray.util.get_node_ip_address()} {ray.get_runtime_context().get_node_id()[:12]}"

    def run(self, job: Job, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A streaming generator: ``{"epoch": n, "row": {...}}`` as each epoch ends, then
        ``{"result": TrialResult JSON, "figures": PNG files, "files": kept files}`` or ``{"error": text}``. The trial
        runs in a thread of this worker so that its epoch callback can hand rows to the generator."""
        from orchestrator.tracking import trial_figures, trial_files
        from workers.trial import TrialError, run_trial

        events: queue.Queue[dict[str, Any]] = queue.Queue()
        gpus = ray.get_gpu_ids()

        def work() -> None:
            try:
                if job.fail:
                    raise TrialError(f"injected failure for trial '{job.name}' (testing.fail_trials)")
                if gpus:
                    options["device"] = granted_device(gpus, options["device"])
                on_epoch = lambda epoch, row: events.put({"epoch": epoch, "row": row})
                result = run_trial(job.spec, options, on_epoch=on_epoch)
                # drawn here, not on the driver: a figure costs more CPU than the rest of a run's record;
                # the kept files go with the result (the driver may not reach this node's disk), and
                # their folder here goes once they are read
                figures, files = trial_figures(job.name, result), trial_files(result, take=True)
                events.put({"result": result.model_dump(mode="json"), "figures": figures, "files": files})
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


def granted_device(gpus: list[Any], device: str) -> str:
    """The device of a trial that Ray granted ``gpus``: CUDA (Ray hides the others), never a
    silent fall-back to the CPU."""
    import torch

    from workers.trial import TrialError

    if not torch.cuda.is_available():
        raise TrialError(
            f"Ray granted this trial GPU {', '.join(map(str, gpus))} on {socket.gethostname()}, but torch "
            f"{torch.__version__} sees no CUDA device there.",
            "install a torch build for that node's CUDA driver (docker/README.md, 'CUDA'), or set "
            "resources.gpus: 0 to train on CPUs.",
        )
    return "cuda" if device == "auto" else device


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


class Pool:
    """The worker actors, one kind per ``Shape``, sized to the cluster while the grid runs:
    actors are added while jobs wait and the cluster has room (so a node that joins gets work),
    a job goes only to an actor that has started, and the idle actors of a shape that no job
    waits for are let go (their resources go to the other shapes)."""

    RECHECK_S = 2.0  # how often the cluster's size is read again

    def __init__(self, limit: int | None):
        self.limit = limit
        self.starting: dict[Any, tuple[Any, Shape]] = {}  # the actor's first reply -> it
        self.idle: dict[Shape, list[tuple[Any, str]]] = {}  # actors and the node each runs on
        self.busy: dict[Any, tuple[Shape, str]] = {}
        self.checked = -self.RECHECK_S

    def shapes(self) -> list[Shape]:
        """The shape of every actor, one entry each."""
        idle = [shape for shape, actors in self.idle.items() for _ in actors]
        return [s for _, s in self.starting.values()] + [s for s, _ in self.busy.values()] + idle

    def grow(self, waiting: deque[Job]) -> None:
        """Start actors for the waiting jobs that the cluster's unclaimed resources fit."""
        if time.monotonic() - self.checked < self.RECHECK_S:
            return
        self.checked = time.monotonic()
        free = Counter(ray.cluster_resources())
        for shape in self.shapes():
            free.subtract(shape.amounts())
        for shape, count in Counter(job.shape for job in waiting).items():
            have = len(self.idle.get(shape, [])) + sum(s == shape for _, s in self.starting.values())
            while have < count and (self.limit is None or len(self.shapes()) < self.limit):
                if any(free[key] < amount for key, amount in shape.amounts().items()):
                    break
                actor = TrialWorker.options(**shape.options()).remote()  # type: ignore[attr-defined]
                self.starting[actor.where.remote()] = (actor, shape)
                free.subtract(shape.amounts())
                have += 1

    def started(self, reply: Any) -> None:
        """An actor answered its first call (it runs) or died before it could."""
        actor, shape = self.starting.pop(reply)
        try:
            self.idle.setdefault(shape, []).append((actor, ray.get(reply)))
        except RayActorError:
            pass

    def take(self, shape: Shape) -> tuple[Any, str] | None:
        """A started idle actor of this shape (now busy) and its node, if there is one."""
        if not self.idle.get(shape):
            return None
        actor, where = self.idle[shape].pop()
        self.busy[actor] = (shape, where)
        return actor, where

    def give_back(self, actor: Any) -> None:
        shape, where = self.busy.pop(actor)
        self.idle.setdefault(shape, []).append((actor, where))

    def lose(self, actor: Any) -> None:
        """Forget an actor whose process (or node) died."""
        self.busy.pop(actor, None)
        ray.kill(actor)

    def release(self, waiting: deque[Job]) -> None:
        """Let go the idle actors of shapes that no waiting job needs."""
        needed = {job.shape for job in waiting}
        for shape in [s for s in self.idle if s not in needed]:
            for actor, _ in self.idle.pop(shape):
                ray.kill(actor)

    def close(self) -> None:
        for actor in [a for a, _ in self.starting.values()] + list(self.busy):
            ray.kill(actor)
        self.release(deque())
        self.starting, self.busy = {}, {}


def run_jobs(
    jobs: list[Job],
    options: RunOptions,
    events: TrialEvents,
    *,
    max_concurrency: int | None,
    retries: int,
) -> GridCounts:
    """Run every job on worker actors, telling ``events`` as each starts, ends an epoch and ends.

    A worker process (or node) that dies is let go and its trial re-queued (resuming from its
    checkpoint) up to ``retries`` times; then it is reported as failed.
    """
    progress = GridCounts(total=len(jobs))
    waiting = deque(jobs)
    pool = Pool(max_concurrency)
    running: dict[Any, tuple[Job, Any]] = {}  # a trial's stream of events -> its job and worker
    opts = options.model_dump()
    last_line = 0.0
    try:
        while waiting or running:
            pool.grow(waiting)
            pool.release(waiting)
            for job in list(waiting):
                taken = pool.take(job.shape)
                if taken is None:
                    continue
                waiting.remove(job)
                actor, job.where = taken
                stream = actor.run.options(num_returns="streaming").remote(job, trial_options(opts, job.shape))
                running[stream] = (job, actor)
                events.started(job)
            progress.running = len(running)
            # streams with an event, or actors that have started
            ready: list[Any] = ray.wait([*running, *pool.starting], num_returns=1, timeout=1.0)[0]
            for ref in ready:
                if ref in pool.starting:
                    pool.started(ref)
                    continue
                job, actor = running[ref]
                try:
                    reply: dict[str, Any] = ray.get(next(ref))
                except (RayActorError, WorkerCrashedError, StopIteration) as err:
                    del running[ref]
                    pool.lose(actor)
                    if job.attempt < retries:
                        job.attempt += 1
                        waiting.appendleft(job)
                        events.retrying(job, retries)
                        continue
                    reply = {"error": f"the worker process died {job.attempt + 1} times: {err}"}
                else:
                    if "epoch" in reply:
                        events.epoch(job, int(reply["epoch"]), reply["row"])
                        continue
                    del running[ref]
                    pool.give_back(actor)
                outcome = Outcome(
                    job, reply.get("result"), reply.get("error"), reply.get("figures"), reply.get("files")
                )
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
        pool.close()
    return progress
