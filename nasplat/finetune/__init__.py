"""Fine-tuning finalists stand-alone: picking them, the Ray Tune trainable and schedulers (among them
:class:`MultiObjectiveASHA`, usable in any Ray Tune run), and writing the results back to the study.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._finetune import (
        FinetuneInterrupted,
        FinetuneSettings,
        load_module,
        off_front_trials,
        prepare_finalists,
        run_finetune,
        select_trials,
    )
    from ._mo_asha import MultiObjectiveASHA

__all__ = [
    "FinetuneInterrupted",
    "FinetuneSettings",
    "MultiObjectiveASHA",
    "load_module",
    "off_front_trials",
    "prepare_finalists",
    "run_finetune",
    "select_trials",
]

__getattr__, __dir__ = exports(__name__)
