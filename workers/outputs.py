"""What a trial keeps beyond its metrics, so that later questions need no retraining: the learned
prompt (the method's own parameters: CLIP is never part of a method's state) and the per-sample
outputs of every scored split (logits and labels, PIECE's proximity), written into a folder whose
files go to the driver as bytes with the trial's result (``orchestrator.tracking.trial_files``) to
be logged as MLflow artifacts, and read back to rescore or to score the prompt elsewhere.

Logits are kept whole while a split has at most ``FULL_LOGITS_MAX`` values (every dataset of the
paper but ImageNet's 500-class halves). Above that, each sample keeps its top ``TOP_K`` logits,
its true class's logit and the log-sum-exp of all of them: ``read_outputs`` rebuilds logits with
exactly the same softmax top-1 confidence, prediction and true-class probability, so accuracy,
ECE, ACE, MCE, NLL and PIECE recompute exactly; what needs the whole distribution (temperature
scaling) is refused on such a split (``SplitScores.complete`` is False).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from workers.errors import DorBenchError
from workers.evaluation import SplitScores
from workers.paths import atomic_write_bytes

PROMPT_FILE = "prompt.pt"
OUTPUTS_FILE = "outputs.npz"
#: Values (samples x classes) of a split kept as whole logits (4 MB of float32).
FULL_LOGITS_MAX = 1_000_000
#: Logits kept per sample above that.
TOP_K = 10


def keep(
    folder: Path,
    state: dict[str, torch.Tensor],
    splits: list[SplitScores],
    text: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the learned ``state``, the ``splits``' outputs and the class ``text`` features
    (``base/tuned``, ``base/zeroshot``, ``new/...``: what DAC needs) into ``folder``."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    atomic_write_bytes(folder / PROMPT_FILE, buffer.getvalue())
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, s in enumerate(splits):
        logits = s.logits.detach().float().cpu()
        n, classes = logits.shape
        arrays[f"{i}.labels"] = s.labels.cpu().numpy().astype(np.int32)
        if s.proximity is not None:
            arrays[f"{i}.proximity"] = s.proximity.detach().float().cpu().numpy()
        whole = n * classes <= FULL_LOGITS_MAX or classes <= TOP_K
        if whole:
            arrays[f"{i}.logits"] = logits.numpy()
        else:
            top = logits.topk(TOP_K, dim=1)
            arrays[f"{i}.top_values"] = top.values.numpy()
            arrays[f"{i}.top_indices"] = top.indices.numpy().astype(np.int32)
            arrays[f"{i}.true_logit"] = logits.gather(1, s.labels.long()[:, None]).squeeze(1).numpy()
            arrays[f"{i}.logsumexp"] = logits.logsumexp(dim=1).numpy()
        meta.append({"split": s.split, "classnames": s.classnames, "whole": whole})
    for key, features in (text or {}).items():
        arrays[f"text.{key}"] = features.detach().float().cpu().numpy()
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy stubs type allow_pickle as a kwarg too
    atomic_write_bytes(folder / OUTPUTS_FILE, buffer.getvalue())


def read_outputs(path: Path) -> list[SplitScores]:
    """The splits written by ``keep`` (logits rebuilt where only the top-k was kept)."""
    arrays = _arrays(path)
    meta = json.loads(arrays["meta"].tobytes())
    out = []
    for i, m in enumerate(meta):
        labels = torch.from_numpy(arrays[f"{i}.labels"]).long()
        if m["whole"]:
            logits = torch.from_numpy(arrays[f"{i}.logits"])
        else:
            logits = _rebuilt(arrays, i, labels, len(m["classnames"]))
        proximity = torch.from_numpy(arrays[f"{i}.proximity"]) if f"{i}.proximity" in arrays else None
        out.append(SplitScores(m["split"], logits, labels, m["classnames"], proximity, complete=m["whole"]))
    return out


def _rebuilt(arrays: dict[str, np.ndarray], i: int, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits with the kept top-k and true-class values, every other class at the one value that
    restores each sample's log-sum-exp (so its softmax top-1 and true-class probabilities)."""
    top_values = torch.from_numpy(arrays[f"{i}.top_values"]).double()
    top_indices = torch.from_numpy(arrays[f"{i}.top_indices"]).long()
    true_logit = torch.from_numpy(arrays[f"{i}.true_logit"]).double()
    lse = torch.from_numpy(arrays[f"{i}.logsumexp"]).double()
    true_in_top = (top_indices == labels[:, None]).any(dim=1)
    known = top_values.exp().sum(dim=1) + torch.where(true_in_top, 0.0, true_logit.exp())
    rest = classes - top_values.shape[1] - (~true_in_top).long()
    leftover = (lse.exp() - known).clamp(min=1e-300)
    fill = torch.where(rest > 0, (leftover / rest.clamp(min=1)).log(), torch.full_like(lse, -math.inf))
    fill = torch.minimum(fill, top_values[:, -1] - 1e-6)  # never above the kept top-k
    logits = fill[:, None].repeat(1, classes)
    logits.scatter_(1, labels[:, None], true_logit[:, None])
    logits.scatter_(1, top_indices, top_values)
    return logits.float()


def read_text_features(path: Path) -> dict[str, torch.Tensor]:
    """The class text features written by ``keep`` (empty when none were kept)."""
    return {k.removeprefix("text."): torch.from_numpy(v) for k, v in _arrays(path).items() if k.startswith("text.")}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if "meta" not in arrays:
            raise KeyError("meta")
    except (OSError, ValueError, KeyError) as err:
        raise DorBenchError(
            f"'{path}' is not a dor-bench outputs file ({type(err).__name__}: {err}).",
            "rescore runs recorded by this dor-bench (their outputs.npz artifact).",
        ) from None
    return arrays
