"""Dashboard data extraction and figures, without a browser, on storages written by real small searches."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dash")

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.pareto import hypervolume, non_dominated_mask
from nasplat_dashboards import data as D
from nasplat_dashboards import figures as F
from nasplat_dashboards.demo import DemoStudy, write_demo_search

NSGA2 = DemoStudy("demo-nsga2", "nsga2", 16, (("population_size", 8),))
RANDOM = DemoStudy("demo-random", "random", 8, seed=1)
ONESHOT = DemoStudy("demo-oneshot", "random", 8, supernet_epochs=2)


def fast_dir(prefix: str) -> Path:
    """A scratch folder, in memory when possible: SQLite syncs every Optuna commit, slow on some disks."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


def file_digest(url: str) -> str:
    return hashlib.sha256(Path(url.removeprefix("sqlite:///")).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    """Two real tabular searches (NSGA-II and random) in one SQLite storage."""
    folder = fast_dir("nasplat-dash-data-")
    try:
        yield write_demo_search(folder, [NSGA2, RANDOM])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def oneshot() -> Iterator[tuple[str, Path]]:
    """A real one-shot search: a tiny supernet trained one epoch on digits, then 8 inherited-weight trials."""
    folder = fast_dir("nasplat-dash-oneshot-")
    try:
        yield write_demo_search(folder, [ONESHOT]), folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load(url: str, study: str) -> Any:
    import optuna

    return optuna.load_study(study_name=study, storage=url)


def add_study(url: str, name: str, attrs: dict[str, Any], *, n_trials: int = 3, directions: int = 2,
              trial_attrs: Any = None) -> None:  # fmt: skip
    """A study written directly through Optuna (to imitate other writers and other versions)."""
    import optuna

    kinds: list[Any] = ["maximize", "minimize"][:directions]
    study = optuna.create_study(storage=url, study_name=name, directions=kinds)
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    for i in range(n_trials):
        t = study.ask()
        t.suggest_categorical("x", ["a", "b"])
        values = [0.5 + i / 10, 100.0 - i][:directions]
        for k, v in (trial_attrs(i, values) if trial_attrs else {}).items():
            t.set_user_attr(k, v)
        study.tell(t, values)


# ------------------------------------------------------------------------------------------------ reading
def test_read_only_storage(demo: str) -> None:
    before = file_digest(demo)
    st = D.open_storage(demo)
    assert "mode=ro" in st.readonly_url
    D.studies_frame(st)
    for name in D.study_names(st):
        D.trials_frame(st, name, states=None)
        D.pareto_frame(st, name, ["val_acc", "macs"])
        D.architecture_record(st, name, 0)
    with pytest.raises(D.StorageError, match="reads storages only"):
        D._rows(st, "DELETE FROM trials")
    import sqlalchemy

    with pytest.raises(D.StorageError, match="reads storages only"), st.engine.connect() as conn:
        conn.execute(sqlalchemy.text("UPDATE studies SET study_name = 'x'"))
    assert file_digest(demo) == before


def test_trials_frame_matches_core(demo: str) -> None:
    from nasplat.study import trials_frame

    for name in ("demo-nsga2", "demo-random"):
        mine = D.trials_frame(demo, name)
        core = trials_frame(load(demo, name)).sort_values("trial").reset_index(drop=True)
        assert len(mine) == len(core) == {"demo-nsga2": 16, "demo-random": 8}[name]
        for col in core.columns:
            if col == "seconds":
                np.testing.assert_allclose(mine[col], core[col], atol=1e-3)
            elif pd.api.types.is_float_dtype(core[col]):
                np.testing.assert_allclose(mine[col].to_numpy(float), core[col].to_numpy(float), err_msg=col)
            else:
                assert mine[col].tolist() == core[col].tolist(), col
    frame = D.trials_frame(demo, "demo-nsga2", params=False, metrics=[])
    assert "params_count" not in frame and not any(c.startswith("param:") for c in frame.columns)
    assert D.available_metrics(demo, "demo-nsga2")[:2] == ["val_acc", "macs"]
    assert "params_count" in D.available_metrics(demo, "demo-nsga2")


def test_studies_frame_and_latest(demo: str) -> None:
    frame = D.studies_frame(demo).set_index("study")
    assert list(frame.index) == ["demo-nsga2", "demo-random"]
    row = frame.loc["demo-nsga2"]
    assert row["space"] == "demo-cell" and row["family"] == "cell" and row["sampler"] == "nsga2"
    assert row["objectives"] == "val_acc (max), macs (min)"
    assert (row["complete"], row["target"], row["status"]) == (16, 16, "finished")
    trials = D.trials_frame(demo, "demo-nsga2")
    assert row["best val_acc"] == trials["val_acc"].max() and row["best macs"] == trials["macs"].min()
    values = trials[["val_acc", "macs"]].to_numpy(float)
    ref = [values[:, 0].min(), values[:, 1].max()]
    assert row["hypervolume"] == pytest.approx(hypervolume(values, ref, ["maximize", "minimize"]))
    assert str(row["hv_reference"]).startswith("worst observed")
    # the last study written is the most recently updated one
    assert D.latest_study(demo) == "demo-random"


def test_latest_study_follows_updates(demo: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(demo.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    assert D.latest_study(url) == "demo-random"
    study = load(url, "demo-nsga2")
    t = study.ask()
    study.tell(t, [0.5, 1000.0])
    assert D.latest_study(url) == "demo-nsga2"
    # a study nasplat cannot show is not landed on, even when it is the newest
    add_study(url, "foreign", {})
    D.clear_cache()
    assert "foreign" in D.study_names(url)
    assert D.latest_study(url) == "demo-nsga2"


def test_reads_while_a_search_writes() -> None:
    """Reading in a loop while a real search writes the same SQLite file: no error, counts only grow."""
    import threading

    folder = fast_dir("nasplat-dash-live-")
    url = f"sqlite:///{folder / 'study.db'}"
    errors: list[BaseException] = []

    def search() -> None:
        try:
            write_demo_search(folder, [DemoStudy("live", "random", 24)], storage_url=url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=search)
    try:
        writer.start()
        seen: list[int] = []
        while writer.is_alive():
            try:
                seen.append(len(D.trials_frame(url, "live")))
                D.pareto_frame(url, "live", ["val_acc", "macs"])
            except (D.StorageError, D.StudyError) as exc:
                # the search creates the storage, then the study, then its attributes one by one (until its
                # objectives are written, it reads as a plain Optuna study's: objective_0, objective_1)
                transient = ("unreachable", "empty", "creating it", "no study", "has no metric", "'objectives'")
                assert any(w in str(exc) for w in transient), exc
        writer.join()
        assert not errors, errors
        D.clear_cache()
        assert len(D.trials_frame(url, "live")) == 24
        assert seen == sorted(seen) and len(set(seen)) > 1  # it saw the study grow
    finally:
        writer.join()
        shutil.rmtree(folder, ignore_errors=True)


def test_pareto_frame_matches_core(demo: str) -> None:
    from nasplat.study import pareto_frame

    for name in ("demo-nsga2", "demo-random"):
        core, _ = pareto_frame(load(demo, name))
        mine = D.pareto_frame(demo, name, ["val_acc", "macs"])
        assert sorted(mine.loc[mine["front"], "trial"]) == sorted(core["trial"])
        assert mine.attrs["directions"] == ["maximize", "minimize"]
        assert mine["feasible"].all()


def test_constraints_and_front(demo: str) -> None:
    full = D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs"])
    limit = float(full["macs"].median())
    cut = D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs"], {"macs": (None, limit), "val_acc": (0.5, None)})
    expected = (full["macs"] <= limit) & (full["val_acc"] >= 0.5)
    assert cut["feasible"].tolist() == expected.tolist()
    assert 0 < cut["feasible"].sum() < len(cut)
    assert not (cut["front"] & ~cut["feasible"]).any()  # the front only holds feasible trials
    feasible = cut[cut["feasible"]].drop_duplicates("arch")
    mask = non_dominated_mask(feasible[["val_acc", "macs"]].to_numpy(float), ["maximize", "minimize"])
    assert sorted(feasible.loc[mask, "trial"]) == sorted(cut.loc[cut["front"], "trial"])
    three = D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs", "params_count"])
    assert three["front"].sum() >= full["front"].sum()
    with pytest.raises(NasplatError, match="no metric 'latency_ms'"):
        D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs"], {"latency_ms": (None, 1.0)})


@pytest.mark.parametrize("n_obj", [2, 3])
@pytest.mark.parametrize("directions", [("maximize", "minimize", "minimize"), ("minimize", "maximize", "maximize")])
def test_front_mask_is_exact(n_obj: int, directions: tuple[str, ...]) -> None:
    rng = np.random.default_rng(n_obj)
    values = rng.normal(size=(3000, n_obj)).round(1)  # many ties and duplicates
    values[::97, 0] = np.nan
    dirs = list(directions[:n_obj])
    assert (D.front_mask(values, dirs) == non_dominated_mask(values, dirs)).all()


def test_hypervolume_frame(demo: str) -> None:
    hv = D.hypervolume_frame(demo, ["demo-nsga2", "demo-random"], ["val_acc", "macs"])
    assert set(hv["study"]) == {"demo-nsga2", "demo-random"}
    ref = hv.attrs["reference"]
    for name, part in hv.groupby("study"):
        assert (np.diff(part["hypervolume"]) >= -1e-9).all()  # never decreases
        assert (np.diff(part["elapsed_s"]) >= 0).all()
        assert part["trials"].iloc[-1] == len(D.trials_frame(demo, str(name)))
        values = D.trials_frame(demo, str(name))[["val_acc", "macs"]].to_numpy(float)
        assert part["hypervolume"].iloc[-1] == pytest.approx(hypervolume(values, ref, ["maximize", "minimize"]))


def test_fronts_frame_overlay(demo: str) -> None:
    fronts = D.fronts_frame(demo, ["demo-nsga2", "demo-random"], ["val_acc", "macs"])
    assert set(fronts["study"]) == {"demo-nsga2", "demo-random"}
    skipped = D.fronts_frame(demo, ["demo-nsga2", "nope"], ["val_acc", "macs"])
    assert set(skipped["study"]) == {"demo-nsga2"} and "nope" in skipped.attrs["skipped"]


def test_architecture_record_cell(demo: str) -> None:
    front = D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs"])
    number = int(front.loc[front["front"], "trial"].iloc[0])
    rec = D.architecture_record(demo, "demo-nsga2", number)
    assert rec.on_front and rec.state == "COMPLETE" and rec.family == "cell"
    assert rec.arch and rec.arch.count("~") == 6
    assert len(rec.choices) == 6 and set(rec.choices["label"]) == {
        f"cell.edge_{i}_{j}" for i in (1, 2, 3) for j in range(i)
    }
    assert rec.description is not None and len(rec.description["edges"]) == 6 and len(rec.description["nodes"]) == 4
    measured = rec.metrics.set_index("metric")
    assert measured.loc["val_acc", "objective"] and measured.loc["macs", "direction"] == "minimize"
    assert rec.provenance["estimator"] == "tabular" and rec.provenance["space"] == "demo-cell"
    fig = F.graph_figure(rec.description, "cell")
    assert fig is not None and sum(1 for t in fig.data if t.mode == "lines") == 6
    with pytest.raises(D.StudyError, match="has no trial 999"):
        D.architecture_record(demo, "demo-nsga2", 999)


def test_architecture_record_generic_family(demo: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(demo.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    spec = {"name": "mystery", "version": 1, "family": "not-installed", "dimensions": [], "macro": {}}
    objectives = [{"metric": "acc", "direction": "maximize"}, {"metric": "cost", "direction": "minimize"}]
    add_study(url, "mystery", {"nasplat_format": 1, "space": "mystery", "space_spec": spec, "objectives": objectives})
    rec = D.architecture_record(url, "mystery", 1)
    assert rec.description is None and rec.note and "choices only" in rec.note
    assert rec.choices.to_dict("records") == [{"label": "x", "value": load(url, "mystery").trials[1].params["x"]}]


def test_training_predictor_and_predicted_frames(demo: str, tmp_path: Path) -> None:
    assert D.training_frame(demo, "demo-nsga2").empty
    assert D.predictor_frame(demo, "demo-nsga2").empty
    assert D.predicted_frame(demo, "demo-nsga2").empty
    for frame, fig in ((pd.DataFrame(), F.training_figure), (pd.DataFrame(), F.predictor_figure)):
        assert "no data yet" in fig(frame).layout.annotations[0].text
    # what supernet training and predictors record (study and trial attributes), read back
    copy = tmp_path / "copy.db"
    shutil.copy(demo.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    objectives = [{"metric": "acc", "direction": "maximize"}, {"metric": "cost", "direction": "minimize"}]
    attrs = {
        "nasplat_format": 1,
        "objectives": objectives,
        **{f"supernet:epoch:{e:04d}": {"epoch": e, "loss": 2.0 / e, "accuracy": 0.2 * e} for e in (3, 1, 2)},
        "predictor_quality": [
            {"trials": n, "model": "gbdt", "metric": "acc", "kendall_tau": n / 40, "spearman": n / 30} for n in (8, 16)
        ],
    }
    add_study(url, "guided", attrs, n_trials=5,
              trial_attrs=lambda i, v: {"predicted:acc": v[0] + 0.01})  # fmt: skip
    training = D.training_frame(url, "guided")
    assert training["epoch"].tolist() == [1, 2, 3] and "supernet:epoch" in training.attrs["source"]
    quality = D.predictor_frame(url, "guided")
    assert quality["trials"].tolist() == [8, 16] and quality["kendall_tau"].tolist() == [0.2, 0.4]
    predicted = D.predicted_frame(url, "guided")
    assert len(predicted) == 5 and np.allclose(predicted["predicted"] - predicted["measured"], 0.01)
    assert len(F.training_figure(training).data) == 2
    assert len(F.predictor_figure(quality).data) == 2
    assert len(F.predicted_figure(predicted).data) == 2  # the points and the ideal line
    rec = D.architecture_record(url, "guided", 0)
    metrics = rec.metrics.set_index("metric")
    assert metrics.loc["acc", "predicted"] == pytest.approx(metrics.loc["acc", "measured"] + 0.01)
    assert F.metrics_compare_figure(rec.metrics) is not None
    assert rec.description is None and rec.note  # no space stored: the choices only


def test_oneshot_training_history_and_export(oneshot: tuple[str, Path], tmp_path: Path) -> None:
    url, _folder = oneshot
    training = D.training_frame(url, "demo-oneshot")
    assert training["epoch"].tolist() == [1, 2] and (training["loss"] > 0).all()
    assert "supernet:epoch" in training.attrs["source"]  # rows written while the supernet trained
    before = file_digest(url)
    front = D.pareto_frame(url, "demo-oneshot", ["accuracy", "macs"])
    number = int(front.loc[front["front"], "trial"].iloc[0])
    out = tmp_path / "bundle"
    command = D.export_command(url, "demo-oneshot", number, out)
    assert command == f"nasplat export --storage {url} --study demo-oneshot --trial {number} --out {out}"
    bundle = D.run_export(url, "demo-oneshot", number, out)
    assert bundle == out and (out / "load.py").is_file() and (out / "metrics.json").is_file()
    assert json.loads((out / "metrics.json").read_text())
    assert file_digest(url) == before  # exporting read the storage only


def test_export_errors_are_readable(demo: str, tmp_path: Path) -> None:
    with pytest.raises(NasplatError, match="no supernet checkpoint"):
        D.run_export(demo, "demo-nsga2", 0, tmp_path / "b")
    with pytest.raises(NasplatError, match="no study 'nope'"):
        D.run_export(demo, "nope", 0, tmp_path / "b")
    assert "'my study'" in D.export_command("sqlite:///a b.db", "my study", 3, Path("out dir"))


def test_postgresql_storage(postgres_url: str) -> None:
    """The same reading against a real PostgreSQL server (a throw-away one from conftest), read-only there too."""
    from nasplat.study import trials_frame

    folder = fast_dir("nasplat-dash-pg-")
    try:
        url = write_demo_search(
            folder, [DemoStudy("dash-pg", "nsga2", 8, (("population_size", 8),))], storage_url=postgres_url
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mine = D.trials_frame(url, "dash-pg")
    core = trials_frame(load(url, "dash-pg")).sort_values("trial").reset_index(drop=True)
    assert mine["trial"].tolist() == core["trial"].tolist() and mine["arch"].tolist() == core["arch"].tolist()
    np.testing.assert_allclose(mine[["val_acc", "macs", "params_count"]], core[["val_acc", "macs", "params_count"]])
    assert mine["param:cell.edge_3_2"].tolist() == core["param:cell.edge_3_2"].tolist()
    st = D.open_storage(url)
    assert D._rows(st, "SHOW default_transaction_read_only") == [("on",)]
    plain = url.replace("postgresql+psycopg2://", "postgresql://")  # no driver named: whichever is installed
    assert D.trials_frame(plain, "dash-pg")["trial"].tolist() == mine["trial"].tolist()
    with pytest.raises(D.StorageError, match="reads storages only"):
        D._rows(st, "DELETE FROM trials")
    assert "dash-pg" in set(D.studies_frame(url)["study"])
    assert D.pareto_frame(url, "dash-pg", ["val_acc", "macs"])["front"].any()
    assert D.architecture_record(url, "dash-pg", 0).description is not None
    assert not D.hypervolume_frame(url, ["dash-pg"], ["val_acc", "macs"]).empty


# ------------------------------------------------------------------------------------------------ bad input
def test_unreachable_and_malformed_urls(tmp_path: Path) -> None:
    with pytest.raises(D.StorageError, match="unreachable: no SQLite file"):
        D.storage_signature(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()  # nothing created
    with pytest.raises(D.StorageError, match="is not a URL"):
        D.open_storage("results.db")
    with pytest.raises(D.StorageError, match="give a SQLite file"):
        D.open_storage("sqlite://")
    with pytest.raises(D.StorageError) as info:  # no server there (or no driver): one line either way
        D.storage_signature("postgresql://nobody:secret@127.0.0.1:9/none")
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


def test_empty_and_foreign_storages(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(D.StorageError, match="is empty"):
        D.studies_frame(f"sqlite:///{empty}")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (id INTEGER)")
    with pytest.raises(D.StorageError, match="not an Optuna storage"):
        D.studies_frame(f"sqlite:///{other}")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(D.StorageError, match=r"unreachable|cannot be read"):
        D.studies_frame(f"sqlite:///{garbage}")


def test_old_optuna_schema(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # Optuna 2's trial_values had no value_type
        conn.executescript(
            "CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name TEXT);"
            "CREATE TABLE study_directions (study_id INTEGER, objective INTEGER, direction TEXT);"
            "CREATE TABLE study_user_attributes (study_id INTEGER, key TEXT, value_json TEXT);"
            "CREATE TABLE trials (trial_id INTEGER, number INTEGER, study_id INTEGER, state TEXT, "
            "datetime_start TEXT, datetime_complete TEXT);"
            "CREATE TABLE trial_values (trial_id INTEGER, objective INTEGER, value REAL);"
            "CREATE TABLE trial_params (trial_id INTEGER, param_name TEXT, param_value REAL, distribution_json TEXT);"
            "CREATE TABLE trial_user_attributes (trial_id INTEGER, key TEXT, value_json TEXT);"
            "CREATE TABLE version_info (schema_version INTEGER, library_version TEXT);"
            "INSERT INTO version_info VALUES (9, '2.10.0');"
        )
    with pytest.raises(D.StorageError, match=r"older or unknown Optuna version \(Optuna 2.10.0, schema 9\)"):
        D.studies_frame(f"sqlite:///{old}")


def test_unknown_study_and_study_formats(demo: str, tmp_path: Path) -> None:
    with pytest.raises(D.StudyError, match="no study 'nope' in this storage; its studies: demo-nsga2, demo-random"):
        D.trials_frame(demo, "nope")
    copy = tmp_path / "copy.db"
    shutil.copy(demo.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    objectives = [{"metric": "acc", "direction": "maximize"}, {"metric": "cost", "direction": "minimize"}]
    add_study(url, "legacy", {"nasplat_format": 0, "nasplat_version": "0.0.1", "objectives": objectives})
    add_study(url, "future", {"nasplat_format": 99, "objectives": objectives})
    add_study(url, "plain-optuna", {})
    add_study(url, "mismatch", {"nasplat_format": 1, "objectives": objectives[:1]})
    with pytest.raises(D.StudyError, match=r"written by an older nasplat \(nasplat 0.0.1\) in study format 0"):
        D.pareto_frame(url, "legacy", ["acc", "cost"])
    with pytest.raises(D.StudyError, match="newer nasplat"):
        D.trials_frame(url, "future")
    plain = D.architecture_record(url, "plain-optuna", 0)  # a study nasplat did not write is shown too
    assert plain.choices.set_index("label").loc["x", "value"] in ("a", "b") and plain.description is None
    assert D.studies_frame(url).set_index("study").loc["plain-optuna", "nasplat"] is np.False_
    with pytest.raises(D.StudyError, match="does not match its 2 Optuna direction"):
        D.training_frame(url, "mismatch")
    overview = D.studies_frame(url).set_index("study")
    assert overview.loc["legacy", "status"] == "unreadable" and "older nasplat" in overview.loc["legacy", "problem"]
    assert overview.loc["demo-nsga2", "status"] == "finished" and pd.isna(overview.loc["demo-nsga2", "problem"])


# ------------------------------------------------------------------------------------------------ tables and figures
def test_query_trials_filter_sort_page(demo: str) -> None:
    frame = D.trials_frame(demo, "demo-nsga2")
    page, total = D.query_trials(
        frame, filter_query="{val_acc} >= 0.7", sort_by=[{"column_id": "macs", "direction": "desc"}]
    )
    assert total == int((frame["val_acc"] >= 0.7).sum()) and (page["val_acc"] >= 0.7).all()
    assert page["macs"].is_monotonic_decreasing
    page, total = D.query_trials(frame, filter_query='{arch} icontains "skip" && {trial} s< 10', page=0, page_size=3)
    expected = frame[frame["arch"].str.contains("skip") & (frame["trial"] < 10)]
    assert total == len(expected) and page["trial"].tolist() == expected["trial"].head(3).tolist()
    page, total = D.query_trials(frame, filter_query="{param:cell.edge_1_0} = none")
    assert total == int((frame["param:cell.edge_1_0"] == "none").sum())
    assert D.query_trials(frame, page=1, page_size=10)[0]["trial"].tolist() == frame["trial"].iloc[10:].tolist()
    with pytest.raises(NasplatError, match="holds numbers"):
        D.query_trials(frame, filter_query="{val_acc} > high")
    with pytest.raises(NasplatError, match="no column 'nope'"):
        D.query_trials(frame, filter_query="{nope} > 1")


def test_figures(demo: str) -> None:
    frame = D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs"], {"macs": (None, 60_000.0)})
    fronts = D.fronts_frame(demo, ["demo-random"], ["val_acc", "macs"], {"macs": (None, 60_000.0)})
    fig = F.pareto_figure(frame, fronts)
    counts = {t.name: len(t.x) for t in fig.data}
    assert counts[F.TRACE_FEASIBLE] == int(frame["feasible"].sum())
    assert counts[F.TRACE_EXCLUDED] == int((~frame["feasible"]).sum())
    assert counts["front: demo-nsga2"] == int(frame["front"].sum())
    assert counts["front: demo-random"] == len(fronts)
    shown = F.trace_studies(fig)
    assert shown == ["demo-nsga2"] * 3 + ["demo-random"]
    front_trace = fig.data[shown.index("demo-random")]
    assert sorted(front_trace.customdata) == sorted(fronts["trial"])
    fig3 = F.pareto_figure(D.pareto_frame(demo, "demo-nsga2", ["val_acc", "macs", "params_count"]))
    assert {t.type for t in fig3.data} == {"scatter3d"}
    trials = D.trials_frame(demo, "demo-nsga2")
    par = F.parallel_figure(trials, D.choice_columns(trials), "val_acc", "maximize")
    assert len(par.data[0].dimensions) == 7
    hv = F.hypervolume_figure(D.hypervolume_frame(demo, ["demo-nsga2"], ["val_acc", "macs"]), "elapsed_s")
    assert len(hv.data) == 1 and "reference" in hv.layout.title.text
    empty = F.pareto_figure(frame.iloc[0:0])
    assert "no completed trials yet" in empty.layout.annotations[0].text


def large_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """A :func:`.data.pareto_frame`-like frame of ``n`` trials: accuracy (max) against MACs (min, wide)."""
    rng = np.random.default_rng(seed)
    macs = 10 ** rng.uniform(4, 7, n)
    acc = np.clip(0.3 + 0.1 * np.log10(macs) + rng.normal(0, 0.05, n), 0, 1)
    frame = pd.DataFrame({"trial": np.arange(n), "arch": [f"a{i}" for i in range(n)], "val_acc": acc, "macs": macs})
    frame["feasible"] = frame["macs"] < 3e6
    frame["front"] = False
    ok = frame["feasible"].to_numpy()
    frame.loc[ok, "front"] = non_dominated_mask(frame.loc[ok, ["val_acc", "macs"]].to_numpy(), ["maximize", "minimize"])
    frame.attrs.update(study="big", axes=["val_acc", "macs"], directions=["maximize", "minimize"], n_trials=n)
    return frame


def test_large_study_draws_a_density_with_the_trials_nearest_the_front_as_points() -> None:
    frame = large_frame(5000)
    n_ok = int(frame["feasible"].sum())
    fig = F.pareto_figure(frame)
    kinds = {t.name: t.type for t in fig.data}
    assert kinds == {
        F.TRACE_EXCLUDED + F.DENSITY_SUFFIX: "heatmap",
        F.TRACE_FEASIBLE + F.DENSITY_SUFFIX: "heatmap",
        F.TRACE_NEAR: "scatter",  # SVG: no WebGL on the landing view
        "front: big": "scatter",
    }
    by_name = {t.name: t for t in fig.data}
    counts = {k: int(np.nansum(np.asarray(t.z, dtype=float))) for k, t in by_name.items() if t.type == "heatmap"}
    near = by_name[F.TRACE_NEAR]
    # every trial is counted once: outside the constraints in one density, within in the other or as a point
    assert counts[F.TRACE_EXCLUDED + F.DENSITY_SUFFIX] == len(frame) - n_ok
    assert counts[F.TRACE_FEASIBLE + F.DENSITY_SUFFIX] + len(near.x) == n_ok
    assert F.shown_trials(fig) == len(frame)
    assert F.NEAR_FRONT_POINTS <= len(near.x) < 2 * F.NEAR_FRONT_POINTS
    # the points are whole non-dominated layers: the whole front, and whoever is left is dominated by a point
    points = frame.set_index("trial").loc[list(near.customdata)]
    assert points["feasible"].all() and set(frame.loc[frame["front"], "trial"]) <= set(near.customdata)
    rest = frame[frame["feasible"] & ~frame["trial"].isin(near.customdata)]
    p = points[["val_acc", "macs"]].to_numpy() * [-1, 1]
    r = rest[["val_acc", "macs"]].to_numpy() * [-1, 1]
    dominated = np.any(np.all(p[None] <= r[:, None], axis=2) & np.any(p[None] < r[:, None], axis=2), axis=1)
    assert dominated.all()
    assert near.hovertemplate.startswith("trial %{customdata}")
    assert fig.layout.yaxis.type == "log"  # MACs span three decades: the density's cells follow the log axis
    edges = np.log10(np.asarray(by_name[F.TRACE_EXCLUDED + F.DENSITY_SUFFIX].y, dtype=float))
    assert np.allclose(np.diff(edges), edges[1] - edges[0])
    # every trial as a point, on request: WebGL above 2,000
    every = F.pareto_figure(frame, points="all")
    assert {t.name: (t.type, len(t.x)) for t in every.data if t.name.startswith("trials")} == {
        F.TRACE_EXCLUDED: ("scatter", len(frame) - n_ok),  # 872
        F.TRACE_FEASIBLE: ("scattergl", n_ok),
    }
    assert F.shown_trials(every) == len(frame)
    # tighter constraints move trials from one density to the other
    tight = frame.copy()
    tight["feasible"] = tight["macs"] < 1e5
    counts_tight = {
        t.name: int(np.nansum(np.asarray(t.z, dtype=float))) for t in F.pareto_figure(tight).data if t.type == "heatmap"
    }
    assert (
        counts_tight[F.TRACE_EXCLUDED + F.DENSITY_SUFFIX]
        == int((~tight["feasible"]).sum())
        > counts[F.TRACE_EXCLUDED + F.DENSITY_SUFFIX]
    )
    # small studies keep every trial as a point
    assert F.TRACE_FEASIBLE in {t.name for t in F.pareto_figure(large_frame(300)).data}
    with pytest.raises(ValueError, match="points must be one of"):
        F.pareto_figure(frame, points="some")


def test_page_loads_the_partial_plotly_bundle_and_only_the_chunks_it_uses(demo: str) -> None:
    from plotly.offline import get_plotlyjs_version

    from nasplat_dashboards import scripts as S
    from nasplat_dashboards.app import make_app

    # the shipped bundle is built from the plotly.js that plotly.py writes figures for (else: rebuild it)
    assert S.bundle_version() == get_plotlyjs_version() and S.use_bundle()
    head = S.BUNDLE.read_text(encoding="utf-8")[:400]
    assert "MIT license" in head and "Plotly, Inc." in head
    client = make_app(demo, refresh_s=2).server.test_client()
    html = client.get("/").get_data(as_text=True)
    scripts = re.findall(r'<script src="([^"]+)"', html)
    route = S.ROUTE.format(version=S.bundle_version())
    assert route in scripts
    for chunk in S.CHUNKS:
        name = Path(chunk).stem
        assert any(name in src and chunk.split("/")[0] in src for src in scripts), chunk
    for unused in ("async-mathjax", "async-markdown", "async-datepicker", "async-upload", "async-export"):
        assert not any(unused in src for src in scripts), unused
    assert not any("package_data/plotly" in src or "/plotly/" in src for src in scripts)
    for src in scripts:  # every script is served
        assert client.get(src).status_code == 200, src
    bundle = client.get(route)
    assert bundle.data == S.BUNDLE.read_bytes() and bundle.cache_control.max_age == 31_536_000
    # every trace type the figures draw is in the bundle
    for kind in S.TRACE_TYPES:
        assert f'moduleType:"trace",name:"{kind}"' in S.BUNDLE.read_text(encoding="utf-8"), kind


def test_family_drawings_by_content() -> None:
    """Drawings are chosen by what a family's describe() holds: a grid (e.g. bit-widths) or blocks."""
    grid = {"rows": ["conv1", "conv2", "fc"], "columns": ["weight bits", "activation bits"],
            "values": [[8, 8], [4, 8], [2, 4]], "unit": "bits"}  # fmt: skip
    heat = F.graph_figure({"grid": grid}, "policy")
    assert heat is not None and heat.data[0].type == "heatmap" and list(heat.data[0].y) == ["conv1", "conv2", "fc"]
    blocks = [{"label": "down1", "kind": "full", "active": True}, {"label": "down2", "kind": "light", "active": False}]
    strip = F.graph_figure({"blocks": blocks}, "control blocks")
    assert strip is not None and list(strip.data[0].x) == ["down1", "down2"] and "(off)" in strip.data[0].text[1]
    assert F.graph_figure({"string": "x", "choices": {"a": 1}}) is None


def test_registered_and_cli(demo: str) -> None:
    from typer.testing import CliRunner

    import nasplat_dashboards
    from nasplat.cli import app

    assert registry.get("dashboard", "dash") is nasplat_dashboards.serve
    result = CliRunner().invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0 and "--storage" in result.output and "--host" in result.output


def test_app_serves_pages(demo: str) -> None:
    from nasplat_dashboards.app import make_app

    client = make_app(demo, refresh_s=2).server.test_client()
    page = client.get("/")
    assert page.status_code == 200 and b"nasplat dashboard" in page.data
    layout = client.get("/_dash-layout").get_json()
    assert D.safe_url(demo) in json.dumps(layout)


def test_training_frame_reads_the_epoch_rows_supernet_training_writes(tmp_path: Path) -> None:
    from nasplat.space import load_space
    from nasplat.study import record_supernet_epochs

    space = load_space(Path(__file__).parent / "spaces" / "cell-digits.yaml")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    objectives = [{"metric": "accuracy", "direction": "maximize", "cost_model": None, "device": None}]
    for epoch, loss in ((2, 1.5), (1, 2.0)):  # written out of order, read in epoch order
        record = {"epoch": epoch, "loss": loss, "images_per_s": 100.0 * epoch, "subnet_accuracy": 10.0 * epoch}
        record_supernet_epochs(url, "train", space_record=space.to_record(),
                               objectives=objectives, records=[record], checkpoint=tmp_path / "ckpt")  # fmt: skip
    frame = D.training_frame(url, "train")
    assert frame["epoch"].tolist() == [1, 2] and frame["loss"].tolist() == [2.0, 1.5]
    fig = F.training_figure(frame)
    assert {t.name for t in fig.data} == {"loss", "subnet_accuracy"}


@pytest.mark.filterwarnings("ignore:.*set_metric_names is experimental")
def test_any_optuna_study_reads(tmp_path: Path) -> None:
    """A plain Optuna study (no nasplat attribute): objectives by Optuna's metric names, its parameters, its
    trials' user attributes, its front; a study without metric names gets objective_0, objective_1."""
    import optuna

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(storage=url, study_name="plain", directions=["minimize", "minimize"])
    study.set_metric_names(["loss", "latency_ms"])
    study.set_user_attr("owner", "someone")
    for i in range(6):
        t = study.ask()
        width = t.suggest_int("width", 8, 64, step=8)
        t.set_user_attr("note", f"run {i}")
        t.set_user_attr("gpu_hours", 0.5 * i)
        study.tell(t, [1.0 / width + 0.01 * i, float(width)])
    unnamed = optuna.create_study(storage=url, study_name="unnamed", directions=["maximize", "minimize"])
    unnamed.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=4)
    info = D.study_info(url, "plain")
    assert info.objectives == ("loss", "latency_ms") and not info.nasplat and info.problem is None
    assert D.study_info(url, "unnamed").objectives == ("objective_0", "objective_1")
    frame = D.trials_frame(url, "plain", attributes=True)
    assert frame["param:width"].tolist() == [study.trials[i].params["width"] for i in range(6)]
    assert frame["attr:note"].tolist() == [f"run {i}" for i in range(6)]
    assert frame["attr:gpu_hours"].tolist() == [0.5 * i for i in range(6)]
    assert "attr:note" not in D.trials_frame(url, "plain")  # only when asked for
    front = D.pareto_frame(url, "plain", ["loss", "latency_ms"])
    core = [t.number for t in study.best_trials]
    assert sorted(front.loc[front["front"], "trial"]) == sorted(core)
    attrs = D.study_attributes(url, "plain").set_index("key")["value"]
    assert attrs["objective 0"] == "loss (minimize)" and attrs["owner"] == "someone"
    rec = D.architecture_record(url, "plain", 2)
    assert rec.attributes == {"note": "run 2", "gpu_hours": 1.0} and rec.family == "?"
    assert D.training_frame(url, "plain").empty and D.predictor_frame(url, "plain").empty
    overview = D.studies_frame(url).set_index("study")
    assert overview.loc["plain", "status"] == "stopped" and overview.loc["plain", "hypervolume"] is not None


def test_core_reader_sees_a_write_at_once(tmp_path: Path) -> None:
    """nasplat.study.trials_frame reads through the cached set-wise reader, yet sees every write made just
    before (fresh signatures): a new trial, an attribute added to a finished trial, and one changed in place."""
    import optuna

    from nasplat.study import pareto_frame, set_finished_trial_attrs, trials_frame

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    study = optuna.create_study(storage=url, study_name="fresh", directions=["maximize", "minimize"])
    study.set_user_attr(
        "objectives", [{"metric": "acc", "direction": "maximize"}, {"metric": "cost", "direction": "minimize"}]
    )
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=3)
    assert len(trials_frame(study)) == 3
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=1)
    assert len(trials_frame(study)) == 4
    set_finished_trial_attrs(study, 0, {"finetune:acc": 0.5})
    assert trials_frame(study).loc[0, "finetune:acc"] == 0.5
    set_finished_trial_attrs(study, 0, {"finetune:acc": 0.6})  # the same row, updated in place, same length
    front, _ = pareto_frame(study, by="finetuned")
    assert front["acc"].tolist() == [0.6] and "inherited:acc" in front
