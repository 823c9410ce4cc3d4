"""The Optuna study behind a sweep lives in storage (runner/study.py): the embedded journal in the
sweep folder, an RDB URL (a real PostgreSQL server started here), resume continuing
the same study, and ``sweeplab dashboard`` serving it over HTTP on 127.0.0.1."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.runner import SweepError, build_search, resume_sweep, run_sweep
from sweeplab.runner.study import JOURNAL_FILE, STUDY_FILE, FolderJournalStorage, open_rdb
from sweeplab.spec import SpecError, validate_spec

JOB = {"trainable": "analytic", "data": {"name": "none"}, "train": {"function": "branin", "budget": 3},
       "search": {"sampler": "random", "seed": 5, "num_samples": 3, "space": {
           "x1": {"type": "float", "low": -5.0, "high": 10.0}, "x2": {"type": "float", "low": 0.0, "high": 15.0}}},
       "metric": "val_value", "mode": "min", "scheduler": {"type": "none"}, "checkpoint": {"every": 3, "keep": 1}}


def job(name: str, **search) -> dict:
    return {**JOB, "name": name, "search": {**JOB["search"], **search}}


def study_of(exp: str) -> optuna.Study:
    record = json.loads((Path(exp) / STUDY_FILE).read_text())
    storage = FolderJournalStorage(exp) if record["storage"] == "journal" else open_rdb(record["storage"])
    return optuna.load_study(study_name=record["study_name"], storage=storage)


@pytest.fixture(scope="module")
def embedded(ray_session, tmp_path_factory):
    """A sweep (4 trials one at a time, embedded study) interrupted by Ctrl-C once a trial has
    finished, then resumed: ``(sweep folder, study name and finished trials before resuming)``."""
    storage = tmp_path_factory.mktemp("emb")
    jobfile = storage / "stud.yaml"
    raw = job("stud", num_samples=4, max_concurrent=1)
    raw["train"] = {**JOB["train"], "sleep_seconds": 0.3}
    jobfile.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "TUNE_DISABLE_SIGINT_HANDLER"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeplab.cli", "run", str(jobfile), "--quiet",
                             "--storage-path", str(storage), "--num-cpus", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = str(storage / "stud")
    done = lambda: [t for t in study_of(exp).trials if t.state.is_finished()]  # noqa: E731
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (Path(exp, STUDY_FILE).exists() and done()):
        time.sleep(0.2)
    if proc.poll() is not None or not done():
        proc.kill()
        pytest.fail(f"the sweep did not get going:\n{proc.communicate()[0][-3000:]}")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.communicate(timeout=120)
    before = study_of(exp)
    finished = {t.number: t.params for t in before.trials if t.state.is_finished()}
    assert len(finished) < 4, "interrupted too late to test anything"
    resume_sweep(exp)
    return exp, before.study_name, finished


def test_embedded_study_holds_every_trial_with_its_values(embedded):
    embedded, _, _ = embedded
    record = json.loads((Path(embedded) / STUDY_FILE).read_text())
    assert record["storage"] == "journal" and record["study_name"].startswith("stud-")
    assert (Path(embedded) / JOURNAL_FILE).stat().st_size > 0
    study = study_of(embedded)
    assert study.metric_names == ["val_value"] and study.user_attrs["sweep_folder"] == embedded
    sweep = load_sweep(embedded)
    df, hist = sweep.dataframe(), sweep.history()
    assert len(study.trials) == len(df) == 4
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        row = df[(df["x1"] == t.params["x1"]) & (df["x2"] == t.params["x2"])]
        assert len(row) == 1, (t.params, df[["x1", "x2"]])
        assert t.value == pytest.approx(float(row["val_value"].iloc[0]), rel=1e-12)
        curve = hist[hist["trial_id"] == row["trial_id"].iloc[0]].sort_values("training_iteration")
        # Ray's OptunaSearch reports each iteration's objective: the learning curve in the study
        assert t.intermediate_values == pytest.approx(dict(zip(curve["training_iteration"], curve["val_value"])))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_on_localhost(embedded):
    embedded, _, _ = embedded
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sweeplab.cli", "dashboard", embedded, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    name = json.loads((Path(embedded) / STUDY_FILE).read_text())["study_name"]
    body = detail = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    body = json.loads(resp.read())
            except OSError:
                time.sleep(0.3)
        if body is not None:
            (summary,) = [s for s in body["study_summaries"] if s["study_name"] == name]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0") as resp:
                detail = json.loads(resp.read())
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert body is not None, f"the dashboard did not answer:\n{out}"
    assert len(detail["trials"]) == 4 and detail["directions"] == ["minimize"]
    assert f"http://127.0.0.1:{port}/dashboard/studies/" in out


def test_dashboard_errors_are_one_line(embedded, tmp_path, monkeypatch, capsys):
    embedded, _, _ = embedded
    old = tmp_path / "old"  # a sweep folder without a stored study (e.g. run before studies were stored)
    old.mkdir()
    shutil.copy(Path(embedded) / "sweeplab_job.yaml", old)
    assert main(["dashboard", str(old)]) == 2
    assert "no stored Optuna study" in capsys.readouterr().err
    grid = tmp_path / "grid"  # a grid samples nothing: it has no study
    grid.mkdir()
    (grid / "sweeplab_job.yaml").write_text(yaml.safe_dump({**JOB, "name": "g", "search": {"sampler": "grid"}}))
    assert main(["dashboard", str(grid)]) == 2
    assert "a grid sweep has no Optuna study" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    assert main(["dashboard", embedded]) == 2
    assert "pip install optuna-dashboard" in capsys.readouterr().err


def test_journal_pickles_as_its_folder_and_follows_a_moved_sweep(tmp_path, monkeypatch):
    import pickle

    from sweeplab.runner import study as study_mod

    monkeypatch.setattr(study_mod, "_moved", {})
    first = tmp_path / "a" / "sw"
    name, storage = study_mod.new_study("sw", str(first), None)
    study = optuna.create_study(study_name=name, storage=storage)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.25}, value=1.5,
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    saved = pickle.dumps(study)  # as Ray saves the searcher: the storage is its folder, not its trials
    assert str(first).encode() in saved and b"0.25" not in saved
    moved = tmp_path / "b" / "sw"
    shutil.move(str(first.parent), str(moved.parent))  # the sweep folder copied elsewhere, then resumed
    study_mod.prepare_resume(str(moved))
    back = pickle.loads(saved)
    assert back._storage.folder == str(moved)
    assert [(t.params, t.value) for t in back.trials] == [({"x": 0.25}, 1.5)]


def test_storage_url_is_checked():
    with pytest.raises(SpecError, match="search.storage: 'not a url' is not a database URL"):
        validate_spec(job("x", storage="not a url"))
    with pytest.raises(SpecError, match="search.storage: a grid has no Optuna study"):
        validate_spec({**JOB, "search": {"sampler": "grid", "storage": "sqlite:///s.db",
                                         "space": {"x1": {"type": "categorical", "values": [0.0]}}}})
    with pytest.raises(SweepError, match=r"search.storage: cannot open postgresql://u:\*\*\*@127.0.0.1:1/db"):
        open_rdb("postgresql://u:secret@127.0.0.1:1/db")


def test_resume_continues_the_same_study_and_numbering(embedded):
    exp, name_before, finished_before = embedded
    after = study_of(exp)
    assert after.study_name == name_before
    assert optuna.get_all_study_names(FolderJournalStorage(exp)) == [name_before]  # no second study
    assert [t.number for t in after.trials] == [0, 1, 2, 3]
    for number, params in finished_before.items():
        assert after.trials[number].params == params


# -- databases ---------------------------------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, trust auth, 127.0.0.1 on a free port, in a
    temporary folder; run as the ``postgres`` user when the tests run as root), torn down after."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl not found: apt-get install postgresql (Debian) to run this test")
    pytest.importorskip("psycopg", reason="psycopg (SQLAlchemy's PostgreSQL driver) not installed: "
                                          "pip install 'psycopg[binary]'")
    folder = Path(__import__("tempfile").mkdtemp(prefix="sweeplab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data, log = folder / "data", folder / "log"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "sweeplab", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, text=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, KeyError) as exc:
        why = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()[-1:] or [""]
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"could not start a throwaway PostgreSQL: {why[0]}")
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="sweeplab", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE studies")
        yield f"postgresql://sweeplab@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_study_and_two_sweeps_of_one_name_get_their_own(ray_session, tmp_path, postgres_url):
    spec = validate_spec(job("shared", storage=postgres_url, num_samples=2, max_concurrent=2))
    exp, _ = run_sweep(spec, storage_path=str(tmp_path / "s0"), verbose=0)
    # a second sweep of the same name on the same database (its searcher is all that matters here)
    build_search(spec, str(tmp_path / "s1" / "shared"))
    names = [json.loads((tmp_path / s / "shared" / STUDY_FILE).read_text())["study_name"] for s in ("s0", "s1")]
    assert names[0] != names[1] and all(n.startswith("shared-") for n in names)
    assert sorted(optuna.get_all_study_names(postgres_url)) == sorted(names)
    assert not (Path(exp) / JOURNAL_FILE).exists()  # the database holds it
    study = optuna.load_study(study_name=names[0], storage=postgres_url)
    df = load_sweep(exp).dataframe()
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(df["val_value"]), rel=1e-12)
    assert optuna.load_study(study_name=names[1], storage=postgres_url).trials == []
    from sweeplab.cli.dashboard import _study_storage  # what `sweeplab dashboard` serves

    name, served, study_id = _study_storage(exp)
    assert name == names[0] and len(served.get_all_trials(study_id)) == 2
