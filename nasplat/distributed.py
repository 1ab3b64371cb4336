"""Evaluation on Ray actors: each actor builds its estimator once (loads the checkpoint, the data, the table)
and then evaluates whole batches of architectures, so a search pays the set-up once per worker, never per
subnet.

``connect_ray`` starts a local Ray cluster sized to the machine, or joins one at ``address``. Local clusters
run with token authentication off (``RAY_AUTH_MODE=disabled``) unless the caller set it otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from nasplat.architecture import Architecture
from nasplat.errors import NasplatError
from nasplat.estimator import Estimator
from nasplat.space import SearchSpace


def connect_ray(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = False) -> Any:
    """Initialise Ray once per process (a no-op when it already is). ``log_to_driver`` shows workers' output."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=log_to_driver)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "locally"
        raise NasplatError(f"cannot start or join a Ray cluster {where}: {str(exc).splitlines()[0]}") from None
    return ray


class _EvaluatorActor:
    """Holds one estimator; evaluates batches of architectures given as label -> value mappings."""

    def __init__(self, space_record: dict[str, Any], name: str, options: dict[str, Any], threads: int) -> None:
        import torch

        from nasplat import registry
        from nasplat.space import space_from_record

        torch.set_num_threads(threads)
        self.space = space_from_record(space_record)
        self.estimator: Estimator = registry.build("estimator", name, self.space, options=options)

    def describe(self) -> tuple[dict[str, str], dict[str, Any]]:
        return self.estimator.metrics(), self.estimator.provenance()

    def evaluate(self, choices: list[dict[str, Any]]) -> list[dict[str, float]]:
        return self.estimator.evaluate([self.space.make(c) for c in choices])


class RayPoolEstimator(Estimator):
    """An Estimator whose work is spread over ``workers`` Ray actors, each holding its own estimator."""

    name = "ray-pool"

    def __init__(
        self, space: SearchSpace, estimator: str, options: dict[str, Any], *, workers: int,
        address: str | None = None, cpus_per_worker: float = 1.0,
    ) -> None:  # fmt: skip
        if workers < 1:
            raise NasplatError(f"workers must be at least 1, got {workers}")
        ray = connect_ray(address)
        threads = max(1, int(cpus_per_worker))
        actor_cls = ray.remote(num_cpus=cpus_per_worker)(_EvaluatorActor)
        record = space.to_record()
        self.space = space
        self.inner_name = estimator
        self._actors = [actor_cls.remote(record, estimator, options, threads) for _ in range(workers)]
        try:
            self._metrics, self._provenance = ray.get(self._actors[0].describe.remote())
        except ray.exceptions.RayActorError as exc:
            raise NasplatError(f"Ray evaluation worker failed to start: {exc}") from None
        self._ray = ray

    def metrics(self) -> dict[str, str]:
        return dict(self._metrics)

    def provenance(self) -> dict[str, Any]:  # type: ignore[override]
        return {**self._provenance, "workers": len(self._actors)}

    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        if not archs:
            return []
        n = len(self._actors)
        chunks = [list(archs[i::n]) for i in range(n)]  # round robin: similar work per actor
        futures = [a.evaluate.remote([x.as_dict() for x in c]) for a, c in zip(self._actors, chunks, strict=True) if c]
        results = self._ray.get(futures)
        out: list[dict[str, float] | None] = [None] * len(archs)
        for i, chunk_result in enumerate(results):
            for j, metrics in enumerate(chunk_result):
                out[i + j * n] = metrics
        return [m for m in out if m is not None]

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
