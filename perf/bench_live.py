"""The driver's cost of live MLflow runs against writing each run once at the end (one run).

Writes the same child runs (synthetic rows shaped like a trial's: 7 metrics per epoch, 60 final
metrics, the same artifacts) into a fresh sqlite store two ways through ``LiveRuns``: *live*
(start, one write per epoch as it ends, end) and *at the end* (start and end with the whole
history, what ``dor-bench run`` did before runs were live). Reports the driver's milliseconds per
trial and per epoch for each, and their ratio.

Usage: python perf/bench_live.py [--trials 20] [--epochs 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from orchestrator.tracking import Ending, LiveRuns, Tracker

ROW = {"train/loss": 1.0, "train/acc": 50.0, "lr": 0.002, "train/dor": 0.1, "val/acc": 40.0, "val/ece": 5.0, "x": 1}


def timed(tracker: Tracker, trials: int, epochs: int, live: bool) -> float:
    runs = LiveRuns(tracker, tracker.start_parent("perf", {}))
    history = [{**ROW, "lr": 0.002 * (e + 1)} for e in range(epochs)]
    final = {f"m{i}": float(i) for i in range(60)}
    start = time.perf_counter()
    for t in range(trials):
        runs.start(f"t{t}", f"t{t}", {"dor_bench.run_key": f"{live}{t}"}, {"method": "coop", "seed": str(t)})
        if live:
            for epoch, row in enumerate(history, start=1):
                runs.epoch(f"t{t}", epoch, row)
        runs.end(f"t{t}", Ending("FINISHED", final, history, {"result.json": {"history": history}}))
    tracker.flush()  # the writes themselves, not only their queueing
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "perf")
        timed(tracker, 2, 2, True)  # warm up: tables, connections
        end = timed(tracker, args.trials, args.epochs, live=False)
        live = timed(tracker, args.trials, args.epochs, live=True)
    n, e = args.trials, args.epochs
    print(f"{n} trials x {e} epochs, sqlite store")
    print(f"{'writes':24} {'ms/trial':>9} {'ms/epoch':>9}")
    print(f"{'once, at the end':24} {1000 * end / n:9.1f} {1000 * end / n / e:9.2f}")
    print(f"{'live, an epoch at a time':24} {1000 * live / n:9.1f} {1000 * live / n / e:9.2f}")
    print(
        f"live / at the end: {live / end:.2f}x; the driver's extra cost per epoch: {1000 * (live - end) / n / e:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
