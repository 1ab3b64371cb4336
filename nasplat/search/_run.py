"""A search run: from a run file to a study full of evaluated architectures.

Steps: load and check the space and data; train the supernet (or take a checkpoint), resuming where a
previous run stopped; then ask/tell batches of architectures through the study until it holds the wanted
number of completed trials. Running the same run file again continues the same study.
"""

from __future__ import annotations

import bisect
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasplat import registry
from nasplat.errors import NasplatError, SpecError
from nasplat.space import SearchSpace, load_space

from ._runfile import Constraint, Objective, RunSpec

if TYPE_CHECKING:
    import optuna

    from nasplat.measure import CostModel, Estimator
    from nasplat.space import Architecture


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    storage_url: str
    run_dir: Path
    checkpoint: Path | None
    completed: int
    evaluated_now: int
    seconds: float


Log = Callable[[str], None]


def check_dataset_fits(space: SearchSpace, input_shape: tuple[int, ...], num_classes: int, dataset: str) -> None:
    """The space's declared input shape and class count must match the dataset's."""
    want_shape = getattr(space.macro, "input_shape", None)
    if want_shape is not None and tuple(want_shape) != tuple(input_shape):
        raise NasplatError(
            f"space '{space.name}' declares input_shape {list(want_shape)} but dataset '{dataset}' has "
            f"{list(input_shape)}; pick a space made for this dataset"
        )
    want_classes = getattr(space.macro, "num_classes", None)
    if want_classes is not None and want_classes != num_classes:
        raise NasplatError(
            f"space '{space.name}' declares num_classes {want_classes} but dataset '{dataset}' has {num_classes}"
        )


def prepare_supernet(
    run: RunSpec,
    space: SearchSpace,
    log: Log,
    *,
    progress: bool = True,
    run_file: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> Path:
    """The checkpoint the estimator uses: the run file's, or one trained (and resumed) in the run dir.

    Training runs on Ray Train with ``workers`` workers (default: the run file's ``supernet.workers``), or in
    this process when neither says how many.
    """
    from nasplat.datasets import load_splits
    from nasplat.train import train_supernet

    if run.supernet.checkpoint:
        ckpt = Path(run.supernet.checkpoint)
        if not ckpt.exists():
            raise NasplatError(f"supernet checkpoint {ckpt} does not exist")
        return ckpt
    train, val = load_splits(run.dataset)
    check_dataset_fits(space, train.input_shape, len(train.classes), run.dataset.name)
    settings = run.supernet.train
    if settings is None:
        raise SpecError(run_file, "supernet", "give 'checkpoint' (a trained supernet) or 'train' (with 'epochs')")
    run_dir = Path(run.run_dir) / "supernet"
    workers = workers if workers is not None else run.supernet.workers
    ray_address = ray_address or run.supernet.ray_address
    objectives = [o.model_dump() for o in run.objectives]
    from nasplat.study import record_supernet_epochs
    from nasplat.train import progress_line

    def record(records: Sequence[dict[str, Any]], checkpoint: Path) -> None:
        record_supernet_epochs(
            run.storage_url, run.study, space_record=space.to_record(), objectives=objectives, records=records,
            checkpoint=checkpoint,
        )  # fmt: skip

    if workers is not None or ray_address:
        from nasplat.train import train_supernet_ray

        n = workers or 1
        log(
            f"training supernet of '{space.name}' on {run.dataset.name} ({len(train)} images) with Ray Train, {n} worker(s), in {run_dir}"
        )
        ray_result = train_supernet_ray(
            space, run.dataset, settings, run_dir, workers=n, ray_address=ray_address,
            max_failures=run.supernet.max_failures, storage=run.storage_url, study=run.study, objectives=objectives,
        )  # fmt: skip
        record(ray_result.history, ray_result.checkpoint)  # rows a killed run checkpointed but did not write
        return ray_result.checkpoint

    def on_epoch(row: dict[str, Any]) -> None:
        log(progress_line(settings, row))
        record([row], run_dir / "checkpoints")

    supernet = space.family.build_supernet(space, seed=settings.seed)
    task = space.family.task(space)
    log(f"training supernet of '{space.name}' on {run.dataset.name} ({len(train)} images) in {run_dir}")
    result = train_supernet(
        supernet, task, train, settings, run_dir, progress=progress, on_epoch=on_epoch, eval_data=val
    )
    record(result.history, run_dir / "checkpoints")  # rows a killed run checkpointed but did not write
    return result.checkpoint


def make_estimator(
    run: RunSpec, space: SearchSpace, checkpoint: Path | None, *, workers: int = 1, ray_address: str | None = None
) -> Estimator:
    """The run's estimator: in this process, or spread over ``workers`` Ray actors."""
    options = dict(run.estimator.options)
    if needs_supernet(run.estimator.name):
        options.setdefault("checkpoint", checkpoint)
        options.setdefault("data", run.dataset)
        options.setdefault("seed", run.seed)
        if "cache_dir" in (registry.option_names(registry.get("estimator", run.estimator.name)) or []):
            options.setdefault("cache_dir", str(Path(run.run_dir) / "estimator"))  # what it measured once, kept
    return build_estimator(space, run.estimator.name, options, workers=workers, ray_address=ray_address)


def needs_supernet(name: str) -> bool:
    """Whether the registered estimator ``name`` is built from a trained supernet (the search trains one first)."""
    return bool(getattr(registry.get("estimator", name), "needs_supernet", False))


def build_estimator(
    space: SearchSpace, name: str, options: dict[str, Any], *, workers: int = 1, ray_address: str | None = None
) -> Estimator:
    """The estimator ``name`` with ``options`` (unknown ones are refused, naming the allowed): in this process,
    or spread over ``workers`` Ray actors. What a search run and ``nasplat evaluate`` both build through."""
    registry.check_options("estimator", name, options, fixed=("space",))
    if workers > 1 or ray_address:
        from nasplat.measure import RayPoolEstimator

        return RayPoolEstimator(space, name, options, workers=workers, address=ray_address)
    return registry.build("estimator", name, space, options=options)  # type: ignore[no-any-return]


def _cost_models(run: RunSpec) -> dict[tuple[str, str | None], CostModel]:
    """The cost models (with their device) the objectives and constraints name."""
    models: dict[tuple[str, str | None], CostModel] = {}
    sources: list[Objective | Constraint] = [*run.objectives, *run.constraints]
    for o in sources:
        if o.cost_model and (o.cost_model, o.device) not in models:
            model = registry.build("cost_model", o.cost_model)
            model.check_device(o.device)
            models[(o.cost_model, o.device)] = model
    return models


def check_objectives(run: RunSpec, estimator: Estimator, cost_models: dict[tuple[str, str | None], CostModel]) -> None:
    """Every objective's and constraint's metric must be one its source produces; say which ones it does."""
    est_metrics = estimator.metrics()
    named: list[tuple[str, int, Objective | Constraint]] = [("objectives", i, o) for i, o in enumerate(run.objectives)]
    named += [("constraints", i, c) for i, c in enumerate(run.constraints)]
    for section, i, o in named:
        allowed = list(cost_models[(o.cost_model, o.device)].metrics) if o.cost_model else list(est_metrics)
        if o.metric not in allowed:
            src = f"cost model '{o.cost_model}'" if o.cost_model else f"estimator '{run.estimator.name}'"
            raise NasplatError(f"{section}[{i}]: {src} has no metric '{o.metric}'; it has: {', '.join(allowed)}")


def _metric_key(o: Objective | Constraint) -> str:
    """Where a metric is stored: plain for the estimator and device-free cost models, else ``metric@device``."""
    return f"{o.metric}@{o.device}" if o.cost_model and o.device else o.metric


def run_search(
    run: RunSpec,
    *,
    run_file: Path | None = None,
    log: Log = print,
    progress: bool = True,
    trials: int | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> SearchResult:
    """Run (or continue) the search a run file declares; returns where the results are."""
    import optuna

    from nasplat.study import (
        make_storage,
        mark_driver,
        open_study,
        quiet_optuna,
        recover_stale_trials,
        requeue,
        suggest_architecture,
    )

    from ._check import require_valid_run
    from ._samplers import driver_sampler, make_sampler

    require_valid_run(run, run_file=run_file)  # every problem of the run file at once, before any work
    t0 = time.perf_counter()
    space = load_space(run.space)
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = (
        prepare_supernet(run, space, log, progress=progress, run_file=str(run_file) if run_file else None)
        if needs_supernet(run.estimator.name)
        else None
    )
    workers = workers if workers is not None else run.workers
    estimator = make_estimator(run, space, checkpoint, workers=workers, ray_address=ray_address or run.ray_address)
    cost_models = _cost_models(run)
    check_objectives(run, estimator, cost_models)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = [o.model_dump() for o in run.objectives]
    storage = make_storage(run.storage_url, heartbeat_s=run.heartbeat_s, grace_s=run.grace_s)
    sampler = driver_sampler(  # proposals follow trial numbers: resumed and parallel drivers do not replay
        make_sampler(
            run.sampler.name, seed=run.seed, n_objectives=len(objectives), space=space, options=run.sampler.options
        ),
        run.seed,
    )
    study = open_study(
        storage, run.study, space=space, objectives=objectives, sampler=sampler,
        attrs={
            "run_dir": str(run_dir.resolve()),
            "storage_dir": _sqlite_folder(run.storage_url),
            "run_file": str(run_file.resolve()) if run_file else None,
            "run_spec": run.model_dump(mode="json"),
            "checkpoint": str(checkpoint.resolve()) if checkpoint else None,
            "dataset": run.dataset.name,
            "estimator": run.estimator.name,
            "sampler": run.sampler.name,
        },
    )  # fmt: skip
    want = trials if trials is not None else run.trials
    cache: dict[str, dict[str, Any]] = {}
    done, _running = _progress(study, cache)
    rejected = 0
    provenance = {
        **estimator.provenance(),
        "space": space.name,
        "space_hash": space.hash,
        "dataset": run.dataset.name,
        "seed": run.seed,
        "code_version": _code_version(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    log(f"study '{run.study}' in {run.storage_url}: {done} of {want} trials done")
    evaluated_now = 0
    started, done_at_start = time.perf_counter(), done
    chance_checked = False
    while True:
        # Several workers may share the study (a PostgreSQL storage): count what the others are running,
        # and take what they finished into the cache, so the study ends at `want` without repeats.
        with quiet_optuna():
            recover_stale_trials(study, run.grace_s)  # trials of dead workers: queued again, then failed
        done, running = _progress(study, cache)
        if done >= want:
            break
        n = min(run.batch_size, want - done - running)
        if n <= 0:  # the others hold the rest of the budget: wait for them (or for their trials to go stale)
            time.sleep(min(run.heartbeat_s, 2))
            continue
        asked: list[tuple[optuna.Trial, Architecture]] = []
        pending: list[optuna.Trial] = []  # asked and not told yet: what an interrupt must not leave running
        told: set[int] = set()
        beat: Heartbeat | None = None
        try:
            with quiet_optuna():
                for _i in range(n):
                    trial = study.ask()
                    pending.append(trial)
                    # beat at once: a trial that never beat is never found stale (Optuna's rule), so a worker
                    # killed right here would otherwise hold that trial's budget for ever
                    storage.record_heartbeat(trial._trial_id)
                    mark_driver(storage, trial)
                    arch = suggest_architecture(trial, space)
                    if not space.satisfies(arch.as_dict()):  # outside the space's constraints: never evaluated
                        trial.set_user_attr("rejected", "breaks the space's constraints")
                        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                        pending.remove(trial)
                        rejected += 1
                        if rejected > 100 * max(want, 1):
                            raise NasplatError(
                                f"the sampler proposed {rejected} architectures outside space '{space.name}''s "
                                "constraints; loosen the constraints or use a sampler that respects them (evolution)"
                            )
                        continue
                    asked.append((trial, arch))
            asked = _within_budget(study, asked, want)
            pending = [t for t, _ in asked]
            beat = Heartbeat(storage, pending, run.heartbeat_s)
            for trial, arch in asked:  # the claim other drivers read before evaluating the same architecture
                storage.set_trial_system_attr(trial._trial_id, ARCH_CLAIM_ATTR, arch.key)
            # each architecture is measured once (by key, not by the family's canonical form: a table or an
            # estimator may tell equivalent networks apart, as NAS-Bench-201's separately trained cells do), across
            # drivers too: one that another driver's earlier running trial claims is waited for, not measured again.
            # Claims are read before results, so a claim that completes in between is found among the results.
            mine: dict[str, int] = {}
            for trial, arch in asked:
                mine.setdefault(arch.key, trial.number)
            others = _claimed_elsewhere(study, {k: n for k, n in mine.items() if k not in cache}, set(mine.values()))
            _progress(study, cache)  # what other drivers finished while this batch was asked for
            fresh = list(dict.fromkeys(a for _, a in asked if a.key not in cache))
            unique = [a for a in fresh if a.key not in others]
            _measure(estimator, cost_models, space, unique, cache)
            # this driver's own results are told first, so a driver waiting on one of them is not kept waiting
            waiting = [(t, a) for t, a in asked if a.key not in cache]
            for trial, arch in asked:
                if arch.key in cache:
                    _tell(study, trial, space, arch, cache[arch.key], provenance, run)
                    told.add(trial.number)
            if waiting:
                _wait_for_claims(study, cache, {others[a.key] for _, a in waiting}, run.heartbeat_s, run.grace_s)
                late = list(dict.fromkeys(a for _, a in waiting if a.key not in cache))  # their trial failed
                _measure(estimator, cost_models, space, late, cache)
                unique += late
                for trial, arch in waiting:
                    _tell(study, trial, space, arch, cache[arch.key], provenance, run)
                    told.add(trial.number)
        except BaseException as exc:  # a failed or interrupted batch leaves no trial running
            interrupted = isinstance(exc, KeyboardInterrupt)
            unfinished = [t for t in pending if t.number not in told]
            for trial in unfinished:
                try:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                    continue  # it was told just before the interrupt (Optuna: "Cannot tell a COMPLETE trial")
                if interrupted and trial.params:  # Ctrl+C: the architecture is queued again for the next run
                    requeue(study, trial.number)
            if interrupted:
                kept, _ = _progress(study, cache)
                log(
                    f"interrupted: {kept} of {want} trials are kept in study '{run.study}'; "
                    f"{len(unfinished)} unfinished architecture(s) queued again. Run the same command to continue."
                )
            raise
        finally:
            if beat is not None:
                beat.stop()
        evaluated_now += len(unique)
        now_done = _progress(study, cache)[0]
        elapsed = time.perf_counter() - started
        rate = (now_done - done_at_start) / elapsed if elapsed > 0 else 0.0
        eta = f"ETA {_clock((want - now_done) / rate)}" if rate > 0 and now_done < want else "ETA -"
        log(
            f"  {now_done}/{want} trials · {_clock(elapsed)} elapsed · {eta} "
            f"({evaluated_now} architectures evaluated in this run)"
        )
        if not chance_checked and unique:
            chance_checked = True
            warning = _near_chance(space, [cache[a.key] for a in unique])
            if warning:
                log(warning)
    return SearchResult(
        study_name=run.study,
        storage_url=run.storage_url,
        run_dir=run_dir,
        checkpoint=checkpoint,
        completed=done,
        evaluated_now=evaluated_now,
        seconds=time.perf_counter() - t0,
    )


class Heartbeat:
    """Records a heartbeat for running trials every ``interval_s`` on a daemon thread, until stopped."""

    def __init__(self, storage: Any, trials: list[optuna.Trial], interval_s: int) -> None:
        import threading

        self._storage = storage
        self._ids = [t._trial_id for t in trials]
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True, name="nasplat-heartbeat")
        self._thread.start()

    def _beat(self) -> None:
        for trial_id in self._ids:
            self._storage.record_heartbeat(trial_id)

    def _run(self, interval_s: int) -> None:
        while not self._stop.wait(interval_s):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _sqlite_folder(url: str) -> str | None:
    """The folder of a SQLite storage's file (what a copied study's paths are relocated against)."""
    from ._check import sqlite_path

    path = sqlite_path(url)
    return None if path is None else str(path.resolve().parent)


def _clock(seconds: float) -> str:
    """``1:05:07`` / ``4:12`` / ``9 s``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _near_chance(space: SearchSpace, measured: list[dict[str, float]]) -> str | None:
    """A warning when the first batch's accuracies sit near chance (100 / classes %): an undertrained
    supernet, or data that does not fit it; the front would then rank noise."""
    classes = getattr(space.macro, "num_classes", None)
    accs = [m["accuracy"] for m in measured if isinstance(m.get("accuracy"), (int, float))]
    if not classes or not accs:
        return None
    chance = 100.0 / float(classes)
    best = max(accs)
    if best > 1.5 * chance:
        return None
    return (
        f"warning: the best accuracy of the first batch is {best:.1f} %, near chance ({chance:.1f} % for {classes} "
        "classes): the supernet is undertrained (more supernet.train.epochs) or the data does not fit it, so the "
        "front ranks noise"
    )


OVER_BUDGET = "over the study's budget: other drivers hold the rest of it"


def _within_budget(
    study: optuna.Study, asked: list[tuple[optuna.Trial, Architecture]], want: int
) -> list[tuple[optuna.Trial, Architecture]]:
    """The asked trials that fit in the budget; the others are given back (pruned, marked over budget).

    The storage numbers trials atomically, so the numbers order every driver's claims: a trial holds budget
    slot k when k trials (complete, running or queued, its own included) have a number up to its own. Slots
    past ``want`` go back, so several drivers that ask at once do not overshoot the budget."""
    import optuna

    from nasplat.study import REJECTED

    if not asked:
        return asked
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    live = sorted(t.number for t in study.get_trials(deepcopy=False, states=states))
    keep = []
    for trial, arch in asked:
        slot = bisect.bisect_right(live, trial.number)
        if slot <= want:
            keep.append((trial, arch))
            continue
        trial.set_user_attr(REJECTED, OVER_BUDGET)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return keep


def _measure(
    estimator: Any, cost_models: dict[Any, Any], space: SearchSpace, archs: list[Architecture],
    cache: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    """Metrics of ``archs`` (the estimator's, every cost model's, the seconds each took) into ``cache``."""
    if not archs:
        return
    t_eval = time.perf_counter()
    measured = estimator.evaluate(archs)
    per_arch_s = (time.perf_counter() - t_eval) / len(archs)
    for arch, metrics in zip(archs, measured, strict=True):
        for (_name, dev), model in cost_models.items():
            costs = model.estimate(space, arch, dev)
            metrics.update({f"{k}@{dev}" if dev else k: v for k, v in costs.items()})
        metrics["eval_seconds"] = per_arch_s
        cache[arch.key] = metrics


def _tell(
    study: optuna.Study, trial: optuna.Trial, space: SearchSpace, arch: Architecture, metrics: dict[str, Any],
    provenance: dict[str, Any], run: RunSpec,
) -> None:  # fmt: skip
    from nasplat.study import record_result

    metrics = dict(metrics)
    record_result(trial, space, arch, metrics, provenance)
    for c in run.constraints:
        trial.set_constraint(c.name, c.violation(metrics[_metric_key(c)]))
    study.tell(trial, [metrics[_metric_key(o)] for o in run.objectives])


#: trial system attribute: the key of the architecture a running trial is measuring (read by the other drivers)
ARCH_CLAIM_ATTR = "nasplat:arch"


def _claimed_elsewhere(study: optuna.Study, keys: dict[str, int], mine: set[int]) -> dict[str, int]:
    """key -> number of another driver's running trial that claimed the key with a lower trial number than this
    driver's first trial of it (``keys``): the lowest number measures, so two drivers never wait on each other."""
    import optuna

    if not keys:
        return {}
    found: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        key = t.system_attrs.get(ARCH_CLAIM_ATTR)
        if key in keys and t.number not in mine and t.number < min(keys[key], found.get(key, keys[key])):
            found[key] = t.number
    return found


def _wait_for_claims(
    study: optuna.Study, cache: dict[str, dict[str, Any]], numbers: set[int], heartbeat_s: float, grace_s: int
) -> None:
    """Wait until the other drivers' trials ``numbers`` are no longer running (told, failed, or found stale and
    failed by :func:`recover_stale_trials`), taking their results into ``cache``."""
    import optuna

    from nasplat.study import quiet_optuna, recover_stale_trials

    running = optuna.trial.TrialState.RUNNING
    while True:
        _progress(study, cache)
        states = {t.number: t.state for t in study.get_trials(deepcopy=False) if t.number in numbers}
        if not any(state == running for state in states.values()):
            return
        with quiet_optuna():
            recover_stale_trials(study, grace_s)
        time.sleep(min(heartbeat_s, 0.5))


def _progress(study: optuna.Study, cache: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(completed, running) trial counts; completed trials' metrics are added to ``cache``."""
    import optuna

    from nasplat.study import METRIC_PREFIX

    done = running = 0
    for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    ):
        if t.state == optuna.trial.TrialState.RUNNING:
            running += 1
            continue
        done += 1
        key = t.user_attrs.get("arch_key")
        if key and key not in cache:
            cache[key] = {k[len(METRIC_PREFIX) :]: v for k, v in t.user_attrs.items() if k.startswith(METRIC_PREFIX)}
    return done, running


def _code_version() -> str:
    import nasplat

    return nasplat.__version__
