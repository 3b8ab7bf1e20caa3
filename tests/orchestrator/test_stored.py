"""What is done with recorded runs: a kept prompt scored on another dataset (`dor-bench eval`)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import EVAL_OF, Tracker
from workers.identity import normalise
from workers.spec import TrialSpec
from workers.trial import run_trial


def test_eval_of_a_kept_prompt_gives_the_numbers_of_the_original_process(tmp_path, capsys):
    spec = normalise(
        TrialSpec(
            method="coop",
            dataset="shapes",
            model="micro-clip",
            pretrained="shapes",
            shots=2,
            method_options={"epochs": 2, "batch_size": 8},
            targets=["shapes-split1"],  # the original process scores the prompt on it too
            test_per_class=3,
        )
    )
    result = run_trial(spec, {"progress": False, "device": "cpu", "keep_dir": str(tmp_path / "kept")})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "transfer")
    source = tracker.record(tracker.start_parent("run", {}), "coop/shapes/seed1", spec, result)

    assert main(["eval", "--run", source, "--dataset", "shapes-split1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr()
    client = MlflowClient(uri)
    [evaluated] = [r for r in client.search_runs([tracker.experiment_id]) if r.data.tags.get(EVAL_OF) == source]
    original = {k: v for k, v in result.metrics.items() if k.startswith("target/shapes-split1/")}
    assert len(original) >= 6 and evaluated.data.metrics == pytest.approx(original, abs=1e-9)
    assert evaluated.data.params["eval.dataset"] == "shapes-split1" and "dor_bench.run_key" not in evaluated.data.tags
    assert f"recorded as run {evaluated.info.run_id}" in out.err and "all" in out.out

    assert main(["eval", "--run", source, "--dataset", "shapes-splt1", "--tracking-uri", uri]) == 2
    assert "Did you mean 'shapes-split1'" in capsys.readouterr().err
    assert main(["eval", "--run", "0123abc", "--dataset", "shapes", "--tracking-uri", uri]) == 2
    assert "No run '0123abc'" in capsys.readouterr().err
