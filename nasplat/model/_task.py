"""Task: the loss a family trains with and the metrics it reports, kept out of the generic loops."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Batch = tuple[torch.Tensor, ...]


class Task(ABC):
    """What to optimise and what to report.

    ``metrics`` maps each reported metric to ``"maximize"`` or ``"minimize"``; ``primary`` names the one a
    search uses as "accuracy" by default.
    """

    metrics: ClassVar[dict[str, str]]
    primary: ClassVar[str]

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss of ``model`` on one batch (the model's active path, for a supernet)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        """Every metric in ``metrics`` over the batches, in eval mode and without gradients."""

    def model_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The network's inputs built from a data batch (an example for export and tracing; default: the images)."""
        return (batch[0],)

    # in-place distillation (the sandwich rule): the largest path teaches the others on the same batch
    def loss_and_output(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training loss and the output a student would be distilled towards (None: no distillation)."""
        return self.loss(model, batch, generator), None

    def distill_loss(
        self, model: nn.Module, batch: Batch, teacher: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Loss of a student path against the teacher's (detached) output; default: the plain loss."""
        return self.loss(model, batch, generator)


class ClassificationTask(Task):
    """Cross-entropy training; top-1 accuracy (%) and mean loss reported."""

    metrics: ClassVar[dict[str, str]] = {"accuracy": "maximize", "loss": "minimize"}
    primary: ClassVar[str] = "accuracy"

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        x, y = batch[0], batch[1]
        return F.cross_entropy(model(x), y)

    def loss_and_output(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = model(batch[0])
        return F.cross_entropy(logits, batch[1]), logits

    def distill_loss(
        self, model: nn.Module, batch: Batch, teacher: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """KL divergence from the teacher's soft predictions (temperature 1), as in BigNAS's in-place distillation."""
        log_p = F.log_softmax(model(batch[0]), dim=1)
        return F.kl_div(log_p, F.log_softmax(teacher.detach(), dim=1), reduction="batchmean", log_target=True)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        was_training = model.training
        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        try:
            for batch in batches:
                x, y = batch[0], batch[1]
                logits = model(x)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                total += int(y.numel())
        finally:
            model.train(was_training)
        if total == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        return {"accuracy": 100.0 * correct / total, "loss": loss_sum / total}
