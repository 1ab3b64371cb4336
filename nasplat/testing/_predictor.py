"""The predictor and encoder suites: shapes, seeded determinism, refusals, saving; fixed-width encodings."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nasplat.errors import NasplatError

from ._common import Check, expect, fail, run_checks, sample_archs

if TYPE_CHECKING:
    from nasplat.measure import Encoder, Predictor
    from nasplat.space import Architecture, SearchSpace

PredictorFactory = Callable[[], "Predictor"]
EncoderFactory = Callable[[], "Encoder"]


def synthetic_target(space: SearchSpace, archs: Sequence[Architecture], seed: int = 0) -> np.ndarray:
    """A seeded, positive, non-constant target: ``1 + one-hot(a) @ w`` with ``w ~ U(0, 1)`` (float64)."""
    w = np.random.default_rng(seed).uniform(0.0, 1.0, space.encoding_width)
    return np.asarray([1.0 + float(space.encode(a) @ w) for a in archs], dtype=np.float64)


def _data(space: SearchSpace, seed: int) -> tuple[list[Architecture], np.ndarray, list[Architecture]]:
    archs = sample_archs(space, 28, seed)
    train, test = archs[:20], archs[20:]
    return train, synthetic_target(space, train, seed), test


def _what(p: object, space: SearchSpace, role: str = "predictor") -> str:
    return f"{role} '{getattr(p, 'name', type(p).__name__)}' (space '{space.name}')"


def _same_spread(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


def _refuses(call: Callable[[], object]) -> bool:
    try:
        call()
    except NasplatError:
        return True
    return False


def check_fit_predict(make: PredictorFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """``fit`` returns the predictor; ``predict`` gives a finite float mean per architecture, and a spread
    (finite, >= 0, same length) only where the class says ``provides_std``; ``params()`` is JSON-able and
    rebuilds the predictor."""
    p = make()
    what, check = _what(p, space), "fit/predict"
    train, y, test = _data(space, seed)
    expect(p.fit(space, train, y, seed=seed) is p, what, check, "fit() must return the predictor itself")
    mean, std = p.predict(space, test)
    expect(isinstance(mean, np.ndarray) and mean.shape == (len(test),), what, check,
           f"mean must be an array of shape ({len(test)},), got {getattr(mean, 'shape', type(mean))}")  # fmt: skip
    expect(np.issubdtype(mean.dtype, np.floating) and np.all(np.isfinite(mean)), what, check,
           "mean must be finite floats")  # fmt: skip
    if std is not None:
        expect(type(p).provides_std, what, check, "returns a spread but provides_std is False")
        expect(isinstance(std, np.ndarray) and std.shape == (len(test),), what, check,
               f"std must be an array of shape ({len(test)},)")  # fmt: skip
        expect(np.all(np.isfinite(std)) and np.all(std >= 0), what, check, "std must be finite and >= 0")
    params = p.params()
    json.dumps(params)
    try:
        type(p)(**params)
    except (TypeError, ValueError, NasplatError) as exc:
        fail(what, check, f"params() {params} does not rebuild the predictor: {exc}")


def check_seeded(make: PredictorFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """Two predictors fitted on the same data with the same seed predict the same numbers."""
    a, b = make(), make()
    what, check = _what(a, space), "seeded"
    train, y, test = _data(space, seed)
    ma, sa = a.fit(space, train, y, seed=seed).predict(space, test)
    mb, sb = b.fit(space, train, y, seed=seed).predict(space, test)
    expect(np.array_equal(ma, mb), what, check, f"means differ by up to {float(np.abs(ma - mb).max()):.3g}")
    expect(_same_spread(sa, sb), what, check, "spreads differ")


def check_bad_input(make: PredictorFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """A NasplatError (not a crash) for: predicting before fitting, fewer targets than architectures, non-finite
    targets, and ``extra`` features with the wrong number of rows."""
    p = make()
    what, check = _what(p, space), "bad input"
    train, y, test = _data(space, seed)
    expect(_refuses(lambda: p.predict(space, test)), what, check, "predict() before fit() is not a NasplatError")
    expect(_refuses(lambda: make().fit(space, train, y[:-1], seed=seed)), what, check,
           f"fit() of {len(train)} architectures with {len(y) - 1} targets is not a NasplatError")  # fmt: skip
    bad = y.copy()
    bad[0] = math.nan
    expect(_refuses(lambda: make().fit(space, train, bad, seed=seed)), what, check,
           "fit() with a NaN target is not a NasplatError")  # fmt: skip
    extra = np.ones((len(train) - 1, 1))
    expect(_refuses(lambda: make().fit(space, train, y, seed=seed, extra=extra)), what, check,
           f"fit() with {len(train) - 1} rows of extra features for {len(train)} archs: no NasplatError")  # fmt: skip


def check_save_load(make: PredictorFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """A fitted predictor saved into a folder (with a nasplat manifest naming it) loads back, through the
    registry (:func:`nasplat.measure.load_predictor`) when it is registered, and predicts the same."""
    from nasplat import registry
    from nasplat.measure import load_predictor, read_manifest

    p = make()
    what, check = _what(p, space), "save/load"
    train, y, test = _data(space, seed)
    mean, std = p.fit(space, train, y, seed=seed).predict(space, test)
    with tempfile.TemporaryDirectory(prefix="nasplat-testing-") as tmp:
        folder = Path(tmp) / "predictor"
        p.save(folder)
        manifest = read_manifest(folder)
        expect(manifest.get("model") == p.name, what, check, f"the manifest names model {manifest.get('model')!r}")
        registered = p.name in registry.available("predictor")
        again = load_predictor(folder) if registered else type(p).load(folder)
        m2, s2 = again.predict(space, test)
    expect(np.array_equal(mean, m2), what, check, "the loaded predictor predicts other means")
    expect(_same_spread(std, s2), what, check, "the loaded predictor predicts other spreads")


#: Every predictor check, in the order :func:`check_predictor` runs them.
PREDICTOR_CHECKS: dict[str, Check] = {
    "fit_predict": check_fit_predict,
    "seeded": check_seeded,
    "bad_input": check_bad_input,
    "save_load": check_save_load,
}


def check_predictor(make: PredictorFactory, space: SearchSpace, *, seed: int = 0, skip: Sequence[str] = ()) -> None:
    """Run every predictor check (:data:`PREDICTOR_CHECKS`, but those in ``skip``): ``make()`` builds a fresh,
    unfitted predictor; training data are 20 seeded samples of ``space`` with :func:`synthetic_target`."""
    run_checks(PREDICTOR_CHECKS, skip, make, space, seed=seed)


# --------------------------------------------------------------------------------------------------------------
# encoders


def _encode(what: str, check: str, enc: Encoder, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
    x = enc.encode(space, archs)
    expect(isinstance(x, np.ndarray) and x.ndim == 2 and len(x) == len(archs), what, check,
           f"encode() of {len(archs)} architectures must give a ({len(archs)}, width) array, "
           f"got {getattr(x, 'shape', type(x))}")  # fmt: skip
    expect(x.dtype == np.float32, what, check, f"encodings must be float32, got {x.dtype}")
    expect(bool(np.all(np.isfinite(x))), what, check, "encodings must be finite")
    return x


def check_fixed_width(make: EncoderFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """Every batch (an empty one too) encodes to rows of one width > 0, with one feature name per column;
    an encoder that does not support the space says what it needs instead."""
    enc = make()
    what, check = _what(enc, space, "encoder"), "fixed width"
    if not enc.supports(space):
        expect(isinstance(enc.requirement(), str) and enc.requirement(), what, check,
               "an encoder that does not support a space must say what it needs (requirement())")  # fmt: skip
        return
    archs = sample_archs(space, 6, seed)
    x = _encode(what, check, enc, space, archs)
    width = x.shape[1]
    expect(width > 0, what, check, "encodings have no columns")
    for part in (archs[:1], archs[2:5], []):
        got = enc.encode(space, part).shape
        expect(
            got == (len(part), width), what, check, f"a batch of {len(part)} encodes to shape {got}, not width {width}"
        )
    names = enc.feature_names(space)
    expect(len(names) == width and all(isinstance(n, str) for n in names), what, check,
           f"{len(names)} feature names for {width} columns")  # fmt: skip


def check_encoder_deterministic(make: EncoderFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """Encoding again, with a second instance, or one architecture at a time gives the same rows; with
    ``canonical`` (the default) an architecture and its canonical form encode alike."""
    enc = make()
    if not enc.supports(space):
        return
    what, check = _what(enc, space, "encoder"), "deterministic"
    archs = sample_archs(space, 6, seed)
    x = _encode(what, check, enc, space, archs)
    expect(np.array_equal(enc.encode(space, archs), x), what, check, "encoding again gives other rows")
    expect(np.array_equal(make().encode(space, archs), x), what, check, "a second instance gives other rows")
    for i, arch in enumerate(archs):
        expect(np.array_equal(enc.encode(space, [arch])[0], x[i]), what, check,
               f"{space.to_string(arch)} encodes differently alone than in a batch")  # fmt: skip
    if enc.canonical:
        reps = [space.family.canonical(space, a) for a in archs]
        expect(np.array_equal(enc.encode(space, reps), x), what, check,
               "an architecture and its canonical form encode differently (canonical=True)")  # fmt: skip


def check_distinct(make: EncoderFactory, space: SearchSpace, *, seed: int = 0) -> None:
    """Architectures that compute different networks (different canonical forms) mostly get different rows:
    at least half as many distinct rows as distinct canonical forms among 12 seeded samples."""
    enc = make()
    if not enc.supports(space):
        return
    what, check = _what(enc, space, "encoder"), "distinct encodings"
    archs = sample_archs(space, 12, seed)
    classes = len({space.family.canonical(space, a) for a in archs})
    rows = len({r.tobytes() for r in _encode(what, check, enc, space, archs)})
    expect(2 * rows >= classes, what, check, f"{classes} different networks encode to only {rows} different rows")


#: Every encoder check, in the order :func:`check_encoder` runs them.
ENCODER_CHECKS: dict[str, Check] = {
    "fixed_width": check_fixed_width,
    "deterministic": check_encoder_deterministic,
    "distinct": check_distinct,
}


def check_encoder(make: EncoderFactory, space: SearchSpace, *, seed: int = 0, skip: Sequence[str] = ()) -> None:
    """Run every encoder check (:data:`ENCODER_CHECKS`, but those in ``skip``); ``make()`` builds the encoder
    (the class itself, when it takes no arguments). On a space it does not support, only that it says what it
    needs is checked."""
    run_checks(ENCODER_CHECKS, skip, make, space, seed=seed)
