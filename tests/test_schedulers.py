"""More of Optuna and Ray (GP and QMC samplers, HyperBand and median stopping) on tiny sweeps, and
sound statistics by default on a sweep whose scheduler stopped trials at other budgets: the
means say so, the CLI compares completed trials, n = 1 is never a test's reference, an empty
group has n = 0, corrections are applied, LaTeX compiles."""
from __future__ import annotations

import copy
import io
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.results.stats import welch_against_best
from sweeplab.runner import build_scheduler, build_search, run_sweep
from sweeplab.spec import SpecError, validate_spec

BASE = {
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.25},
    "train": {"epochs": 3, "batch_size": 64, "filters": 4, "n_blocks": 1, "threads": 1, "optimizer": "adam"},
    "metric": "val_accuracy",
    "checkpoint": {"every": 1, "keep": 1},
}
SPACE = {"lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
         "norm": {"type": "categorical", "values": ["none", "batch"]}}


def job(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return validate_spec(raw)


@pytest.mark.parametrize("sampler, scheduler, cls", [
    ("gp", {"type": "hyperband", "max_t": 3, "reduction_factor": 3}, "HyperBandScheduler"),
    ("qmc", {"type": "median", "grace_period": 1, "min_samples_required": 2}, "MedianStoppingRule"),
])
@pytest.mark.timeout(180)
def test_gp_qmc_hyperband_median_on_tiny_sweeps(ray_session, storage, sampler, scheduler, cls):
    import optuna

    limit = {} if scheduler["type"] == "hyperband" else {"max_concurrent": 2}  # HyperBand: no limit (see below)
    spec = job(name=f"{sampler}_{scheduler['type']}", scheduler=scheduler,
               search={"sampler": sampler, "seed": 3, "num_samples": 4, **limit, "space": SPACE})
    alg, n = build_search(spec)
    expected = {"gp": optuna.samplers.GPSampler, "qmc": optuna.samplers.QMCSampler}[sampler]
    assert isinstance(alg._sampler, expected) and n == 4
    assert type(build_scheduler(spec)).__name__ == cls
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    df = load_sweep(path).dataframe()
    assert len(df) == 4 and set(df["status"]) <= {"completed", "stopped"}
    assert df["lr"].between(1e-5, 3e-2).all() and df["lr"].nunique() == 4  # four distinct proposals
    assert (df["training_iteration"] >= 1).all() and df["val_accuracy"].max() > 0.3


def test_scheduler_settings_are_checked():
    with pytest.raises(SpecError, match="scheduler.grace_period: not a setting of scheduler type 'hyperband'"):
        job(scheduler={"type": "hyperband", "grace_period": 2}, search={"sampler": "tpe", "space": SPACE})
    with pytest.raises(SpecError, match="the median scheduler would stop the seeds"):
        job(scheduler={"type": "median"}, repeats=2, search={"sampler": "tpe", "space": SPACE})
    assert job(scheduler={"type": "hyperband"}, search={"sampler": "tpe", "space": SPACE}).max_iterations() == 3
    # paused trials count against a concurrency limit, and HyperBand waits for whole brackets: a deadlock
    with pytest.raises(SpecError, match="search.max_concurrent: Ray's synchronous HyperBand"):
        job(scheduler={"type": "hyperband"}, search={"sampler": "tpe", "max_concurrent": 2, "space": SPACE})


# -- sound statistics on a sweep with trials stopped early ---------------------------------------
@pytest.fixture(scope="module")
def stopped_sweep(ray_session, tmp_path_factory):
    """ASHA, one trial at a time: two identical good configurations complete, two with a useless
    learning rate are stopped at the first rung (their last values come from 1 iteration, not 3)."""
    good = {"lr": 0.01}
    spec = job(name="stopped", scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
               search={"sampler": "grid", "max_concurrent": 1, "variants": [
                   {"name": "good_a", **good}, {"name": "good_b", **good},
                   {"name": "useless_a", "lr": 1e-6}, {"name": "useless_b", "lr": 1e-6}]})
    path, _ = run_sweep(spec, storage_path=str(tmp_path_factory.mktemp("stopped")), verbose=0)
    return load_sweep(path)


def test_grouped_means_never_mix_budgets_silently(stopped_sweep, capsys):
    df = stopped_sweep.dataframe().set_index("variant")
    assert list(df.loc[["good_a", "good_b"], "status"]) == ["completed"] * 2
    assert list(df.loc[["useless_a", "useless_b"], "status"]) == ["stopped"] * 2
    mixed = stopped_sweep.summary(group_by=["lr"])
    assert mixed.attrs["mixed_budgets"] == (1, 3)
    assert mixed.loc["1e-06", ("iterations", "")] == "1" and mixed.loc["0.01", ("iterations", "")] == "3"
    assert "mix trials stopped at different budgets (1-3 iterations" in stopped_sweep.table(group_by=["lr"])
    done = stopped_sweep.summary(group_by=["lr"], include=["completed"])
    assert done.attrs["mixed_budgets"] is None
    assert done.loc["1e-06", ("val_accuracy", "n")] == 0  # an empty group: 0, not NaN
    assert done.loc["1e-06", ("excluded", "")] == 2
    at1 = stopped_sweep.summary(group_by=["lr"], at_iteration=1)
    assert (at1[("val_accuracy", "n")] == 2).all() and at1.attrs["mixed_budgets"] is None
    hist = stopped_sweep.history()
    first = hist[hist["training_iteration"] == 1].set_index("trial_id")["val_accuracy"]
    good_ids = df.loc[["good_a", "good_b"], "trial_id"]
    assert at1.loc["0.01", ("val_accuracy", "mean")] == pytest.approx(first[good_ids].mean())
    # the CLI defaults to completed trials and says so
    assert main(["table", stopped_sweep.path, "--group-by", "lr", "--format", "csv"]) == 0
    out = capsys.readouterr()
    table = pd.read_csv(io.StringIO(out.out))
    assert "2 trial(s) stopped early" in out.err
    assert dict(zip(table["lr"].astype(str), table["n"])) == {"0.01": 2, "1e-06": 0}
    assert main(["compare", stopped_sweep.path, "--group-by", "lr"]) == 0
    out = capsys.readouterr()
    assert "stopped early" in out.err and "no test: n = 0" in out.out
    assert main(["compare", stopped_sweep.path, "--group-by", "lr", "--status", "completed,stopped"]) == 0
    assert "no test" not in capsys.readouterr().out
    # --metrics naming a column twice, or an identity or group column, shows it once (it crashed)
    assert main(["table", stopped_sweep.path, "--metrics", "seed,val_accuracy,val_accuracy", "--format", "csv"]) == 0
    cols = list(pd.read_csv(io.StringIO(capsys.readouterr().out)).columns)
    assert cols.count("seed") == 1 and cols.count("val_accuracy") == 1
    assert main(["table", stopped_sweep.path, "--group-by", "lr", "--metrics", "lr,val_accuracy", "--format", "csv"]) == 0
    cols = list(pd.read_csv(io.StringIO(capsys.readouterr().out)).columns)
    assert cols.count("lr") == 1 and "val_accuracy" in cols
    # in Python the default keeps every usable trial, and warns when that mixes budgets
    from sweeplab.results.stats import MixedBudgetWarning

    with pytest.warns(MixedBudgetWarning, match="1-3 iterations"):
        stopped_sweep.compare(group_by=["lr"])


def test_one_value_is_never_the_reference_and_tests_are_corrected():
    values = {"lucky": np.array([0.99]), "solid": np.array([0.90, 0.91, 0.92]),
              "weak": np.array([0.50, 0.52]), "weaker": np.array([0.40, 0.45, 0.43]), "empty": np.array([])}
    out = welch_against_best(values, "max").set_index("group")
    assert out.attrs["best"] == "solid"  # the highest mean of a group that can be tested
    assert np.isnan(out.loc["lucky", "p_value"]) and "n = 1" in out.loc["lucky", "note"]
    assert out.loc["empty", "n"] == 0 and "n = 0" in out.loc["empty", "note"]
    from scipy import stats

    p = [stats.ttest_ind(values[g], values["solid"], equal_var=False).pvalue for g in ("weak", "weaker")]
    assert out.loc[["weak", "weaker"], "p_value"].tolist() == pytest.approx(p)
    assert out.loc[["weak", "weaker"], "p_holm"].tolist() == pytest.approx(
        [min(1, 2 * min(p)) if p[0] < p[1] else max(p), min(1, 2 * min(p)) if p[1] < p[0] else max(p)])
    assert out.loc[["weak", "weaker"], "p_bh"].tolist() == pytest.approx(
        stats.false_discovery_control(p, method="bh"))
    alone = welch_against_best({"a": np.array([1.0]), "b": np.array([0.5])}, "max")
    assert alone.attrs["best"] == "a" and "reference 'a' has n = 1" in alone.loc[0, "note"]


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (Debian: apt-get install texlive-latex-recommended)")
def test_latex_tables_compile(stopped_sweep, tmp_path):
    body = stopped_sweep.table(group_by=["lr"], fmt="latex") + stopped_sweep.table(fmt="latex")
    assert "val\\_accuracy" in body and "$\\pm$" in body
    doc = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage{geometry}"
           "\\geometry{paperwidth=80cm,paperheight=30cm}\\begin{document}" + body + "\\end{document}")
    (tmp_path / "t.tex").write_text(doc)
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_variants_with_their_own_budgets_are_not_mixed_budgets(ray_session, tmp_path):
    # two grid variants that set different epoch counts, no scheduler: every trial completes its
    # own budget, so grouped means are sound and no mixed-budget note is printed (it was)
    spec = job(name="budgets", scheduler={"type": "none"},
               search={"sampler": "grid", "variants": [{"name": "short", "epochs": 1}, {"name": "long", "epochs": 2}]})
    path, _ = run_sweep(spec, storage_path=str(tmp_path), verbose=0)
    sweep = load_sweep(path)
    assert set(sweep.dataframe()["status"]) == {"completed"}
    summary = sweep.summary(group_by=["variant"])
    assert summary.loc["short", ("iterations", "")] == "1" and summary.loc["long", ("iterations", "")] == "2"
    assert summary.attrs["mixed_budgets"] is None
    assert "mix trials stopped" not in sweep.table(group_by=["variant"])


def test_variants_run_once_print_one_table(ray_session, tmp_path, capsys):
    # one seed per variant: the grouped table would repeat the per-trial numbers, so the run's
    # summary prints the per-trial table only; a second seed brings the grouped one back
    from sweeplab.cli.running import _finish

    variants = [{"name": "small", "lr": 0.01}, {"name": "large", "lr": 0.05}]
    for repeats, grouped in ((1, False), (2, True)):
        spec = job(name=f"once{repeats}", scheduler={"type": "none"}, repeats=repeats,
                   search={"sampler": "grid", "variants": variants})
        path, _ = run_sweep(spec, storage_path=str(tmp_path), verbose=0)
        capsys.readouterr()
        assert _finish(path) == 0
        out = capsys.readouterr().out
        table = load_sweep(path).table(group_by=["variant"], digits=4)
        assert (table in out) is grouped, out
        assert load_sweep(path).table(digits=4) in out
