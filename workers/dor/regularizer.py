"""The DOR term: keep tuned outlier text features close to their frozen zero-shot features.

Every step draws B fresh outliers from the pool (uniform, without replacement), as the authors'
code does; ``dor.resample`` can instead keep one draw for a whole epoch, or for the whole training
(one seeded draw at the first step). The trial loop
encodes the drawn words through the method's own learned prompt, in the same text-encoder pass as
the class prompts, and adds ``lam * dor_loss(tuned, zero_shot)`` to the method's loss. The
zero-shot side is indexed from the pool's precomputed features: nothing is encoded per step.
"""

from __future__ import annotations

import typing
from typing import Any, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F

from workers.dor.pool import OutlierPool
from workers.errors import DorBenchError, did_you_mean
from workers.spec import Resample


def dor_loss(tuned: torch.Tensor, zero_shot: torch.Tensor) -> torch.Tensor:
    """``1 - mean cos(tuned, zero_shot)`` over the outliers (both re-normalised, float32).

    ``tuned`` is [B, D], or [N, B, D] when image-conditioned (CoCoOp): ``zero_shot`` [B, D] is then
    broadcast over N and the mean is over all N * B pairs. ``zero_shot`` gets no gradient.
    """
    if zero_shot.dim() != 2 or tuned.dim() not in (2, 3) or tuned.shape[-2:] != zero_shot.shape:
        raise DorBenchError(
            f"DOR loss got tuned features of shape {tuple(tuned.shape)} and zero-shot features of "
            f"shape {tuple(zero_shot.shape)}.",
            "pass tuned [B, D] or [N, B, D] and zero-shot [B, D] features of the same B outliers.",
        )
    tuned = F.normalize(tuned.float(), dim=-1)
    target = F.normalize(zero_shot.detach().to(tuned.device, torch.float32), dim=-1)
    return 1 - (tuned * target).sum(dim=-1).mean()


RESAMPLE: tuple[str, ...] = typing.get_args(Resample)


class OutlierSampler:
    """Draws ``per_step`` distinct pool indices from its own seeded generator: fresh at every
    step (``resample="step"``), once per epoch (``"epoch"``), or once for good (``"never"``)."""

    def __init__(self, pool_size: int, per_step: int, seed: int, resample: str = "step"):
        if not 1 <= per_step <= pool_size:
            raise DorBenchError(
                f"Cannot draw {per_step} outliers per step from a pool of {pool_size} words.",
                "use a per-step outlier count (B) between 1 and the pool size (K): lower B or raise K.",
            )
        if resample not in RESAMPLE:
            raise DorBenchError(
                f"Unknown DOR resampling '{resample}'.{did_you_mean(resample, RESAMPLE)}",
                f"set dor.resample to one of: {', '.join(RESAMPLE)}.",
            )
        self.pool_size, self.per_step, self.seed, self.resample = pool_size, per_step, seed, resample
        self.generator = torch.Generator().manual_seed(seed)
        self.held: torch.Tensor | None = None  # the draw reused until the next epoch ("epoch") or always ("never")

    def draw(self) -> torch.Tensor:
        """``per_step`` distinct indices in ``[0, pool_size)`` (a LongTensor): fresh each call, or
        the held draw while ``resample`` keeps it."""
        if self.resample == "step":
            return self._fresh()
        if self.held is None:
            self.held = self._fresh()
        return self.held

    def next_epoch(self) -> None:
        """A training epoch begins: with ``resample="epoch"`` its first step draws afresh."""
        if self.resample == "epoch":
            self.held = None

    def _fresh(self) -> torch.Tensor:
        return torch.randperm(self.pool_size, generator=self.generator)[: self.per_step]

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool_size": self.pool_size,
            "per_step": self.per_step,
            "seed": self.seed,
            "generator": self.generator.get_state(),
            "resample": self.resample,
            "held": self.held,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the saved sampler stopped (same pool size and B required)."""
        saved = (state["pool_size"], state["per_step"])
        if saved != (self.pool_size, self.per_step):
            raise DorBenchError(
                f"The saved outlier sampler drew {saved[1]} of {saved[0]} words per step, this one "
                f"draws {self.per_step} of {self.pool_size}.",
                "resume with the same pool size (K) and per-step outlier count (B) as the saved trial.",
            )
        resample = state.get("resample", "step")  # checkpoints from before dor.resample drew per step
        if resample != self.resample:
            raise DorBenchError(
                f"The saved outlier sampler resampled per {resample}, this one per {self.resample}.",
                "resume with the same dor.resample as the saved trial.",
            )
        self.seed = state["seed"]
        self.generator.set_state(state["generator"])
        self.held = state.get("held")


class ZeroShotPool(Protocol):
    """What a regulariser draws from: a pool's size, strategy and zero-shot features [K, D]."""

    strategy: str

    @property
    def zero_shot(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...


Pool = TypeVar("Pool", bound=ZeroShotPool)


class OutlierRegularizer(Generic[Pool]):
    """Per-step draws from a pool's zero-shot features plus the weighted DOR loss on the tuned
    features of the drawn outliers (words or images: the subclasses say which)."""

    def __init__(
        self,
        pool: Pool,
        lam: float,
        per_step: int,
        seed: int,
        device: torch.device | str = "cpu",
        resample: str = "step",
    ):
        if lam < 0:
            raise DorBenchError(
                f"The DOR weight lambda must be >= 0, got {lam}.",
                "set lambda to 0 (off) or a positive weight, e.g. 8 for CoOp.",
            )
        self.pool, self.lam = pool, lam
        self.sampler = OutlierSampler(len(pool), per_step, seed, resample)
        self._features = pool.zero_shot.to(device)
        self._last: torch.Tensor | None = None

    def draw_index(self) -> tuple[list[int], torch.Tensor]:
        """This step's pool indices and their zero-shot features [B, D] (on ``device``)."""
        index = self.sampler.draw()
        self._last = self._features[index.to(self._features.device)]
        return index.tolist(), self._last

    def next_epoch(self) -> None:
        """A training epoch begins (the sampler may draw afresh: ``dor.resample``)."""
        self.sampler.next_epoch()

    def loss(self, tuned: torch.Tensor, zero_shot: torch.Tensor | None = None) -> torch.Tensor:
        """``lam * dor_loss(tuned, zero_shot)``; ``zero_shot`` defaults to the last draw's features."""
        if zero_shot is None:
            if self._last is None:
                raise DorBenchError(
                    "The DOR loss was asked for before any outliers were drawn.",
                    "call draw() each step and encode the words it returns first.",
                )
            zero_shot = self._last
        return self.lam * dor_loss(tuned, zero_shot)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class DynamicOutlierRegularizer(OutlierRegularizer[OutlierPool]):
    """DOR on outlier words: the trial encodes the drawn words through the method's prompt."""

    def draw(self) -> tuple[list[str], torch.Tensor]:
        """This step's outlier words and their zero-shot features [B, D] (on ``device``)."""
        index, zero_shot = self.draw_index()
        return [self.pool.words[i] for i in index], zero_shot
