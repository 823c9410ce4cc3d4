"""Hypotheses in the job file and their verdicts: the statistics against known answers and SciPy,
Holm's correction turning a borderline verdict, the spec's checks before Ray starts, and a tiny
real sweep with a planted difference, no difference and an equivalence judged end to end."""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special, stats

from sweeplab.cli import main
from sweeplab.results import effects
from sweeplab.results.verdicts import judge_all
from sweeplab.spec import SpecError, validate_spec
from sweeplab.spec.hypotheses import HypothesisSpec


def hyp(**kw) -> HypothesisSpec:
    base = {"id": "h", "claim": "A beats B", "metric": "val_accuracy", "a": {"variant": "x"},
            "b": {"variant": "y"}, "direction": "A > B"}
    return HypothesisSpec.model_validate({**base, **kw})


# -- statistics: known answers ------------------------------------------------------------------
def test_seeds_needed_matches_cohens_tables():
    # Cohen (1988) / G*Power, power 0.8: d = 0.5 one-sided α 0.05 -> 51, two-sided (α/2 a side) -> 64;
    # d = 0.8 two-sided -> 26; a paired d_z = 0.5 one-sided -> 27
    assert effects.seeds_needed(0.5, 0.05) == 51
    assert effects.seeds_needed(0.5, 0.025) == 64
    assert effects.seeds_needed(-0.8, 0.025) == 26
    assert effects.seeds_needed(0.5, 0.05, test="paired") == 27
    assert effects.seeds_needed(0.5, 0.05, test="mannwhitney") == math.ceil(51 * math.pi / 3)
    assert effects.seeds_needed(0.0, 0.05) is None
    # equivalence: the observed difference at the margin can never be shown inside it
    assert effects.seeds_needed(0.5, 0.05, margin=0.5) is None
    assert effects.seeds_needed(0.0, 0.05, margin=1.0) < effects.seeds_needed(0.0, 0.05, margin=0.5)


def test_hedges_g_holm_and_bh_against_hand_computations():
    a, b = np.array([1.0, 2, 3, 4, 5]), np.array([3.0, 4, 5, 6, 7])
    d = (3 - 5) / math.sqrt(2.5)  # both variances 2.5, pooled sd sqrt(2.5)
    j = special.gamma(4) / (math.sqrt(4) * special.gamma(3.5))  # df = 8
    assert effects.hedges_g(a, b) == pytest.approx(d * j, rel=1e-12)
    assert effects.hedges_g(a, b) == pytest.approx(d * (1 - 3 / (4 * 8 - 1)), rel=1e-3)  # Hedges' approximation
    assert math.isnan(effects.hedges_g(a[:1], b))
    # Holm: sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert np.allclose(effects.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = effects.holm([0.2, np.nan, 0.01])
    assert math.isnan(out[1]) and np.allclose(out[[0, 2]], [0.2, 0.02])  # NaN: not a test, m = 2
    # BH: p * m / rank = 0.03, 0.045, 0.04 -> step-up minimum 0.03, 0.04, 0.04
    assert np.allclose(effects.benjamini_hochberg([0.01, 0.04, 0.03]), [0.03, 0.04, 0.04])


def test_tests_are_scipys_and_tost_shifts_the_margin():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 1, 8), rng.normal(0, 1, 9)
    assert effects.two_group_p(a, b, "welch", "greater") == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    assert effects.two_group_p(a, b, "mannwhitney", "less") == pytest.approx(
        stats.mannwhitneyu(a, b, alternative="less").pvalue)
    assert effects.two_group_p(a, b[:8], "paired", "two-sided") == pytest.approx(stats.ttest_rel(a, b[:8]).pvalue)
    lower = stats.ttest_ind(a + 0.5, b, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(a - 0.5, b, equal_var=False, alternative="less").pvalue
    assert effects.tost_p(a, b, "welch", 0.5) == pytest.approx(max(lower, upper))
    low, high = effects.bootstrap_diff_ci(a, b, 0.95)
    assert low < a.mean() - b.mean() < high
    assert effects.bootstrap_diff_ci(a, b, 0.95) == (low, high)  # seeded: reproducible


def test_planted_difference_no_difference_and_holm_on_a_borderline_claim():
    rng = np.random.default_rng(1)
    planted = (hyp(id="planted"), rng.normal(1.0, 0.1, 5), rng.normal(0.0, 0.1, 5))
    same = (hyp(id="same"), rng.normal(0.0, 1.0, 4), rng.normal(0.0, 1.0, 4))
    wrong = (hyp(id="wrong", direction="A < B"), planted[1], planted[2])
    out = judge_all([planted, same, wrong]).set_index("id")
    assert out.loc["planted", "verdict"] == "supported"
    assert out.loc["wrong", "verdict"] == "refuted"
    # no difference: inconclusive, with how many seeds a difference as small as the one seen would need
    assert out.loc["same", "verdict"] == "inconclusive" and abs(out.loc["same", "hedges_g"]) < 0.2
    assert out.loc["same", "seeds_needed"] > 100 and "points against the claim" in out.loc["same", "note"]
    assert out.loc["planted", "n_a"] == 5 and out.loc["planted", "hedges_g"] > 3
    # a borderline claim: raw one-sided p = 0.029 is supported alone, not beside a second test (Holm x 2)
    a = np.array([0.67, 0.96, 0.11, 1.78, 1.67, -0.08])
    b = np.array([-1.09, -0.07, 0.59, 1.11, -1.13, -0.62])
    border = (hyp(id="border"), a, b)
    alone = judge_all([border]).iloc[0]
    assert alone["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    assert alone["verdict"] == "supported" and alone["p_holm"] == pytest.approx(alone["p"])
    with_other = judge_all([border, (hyp(id="other"), b, a)]).set_index("id").loc["border"]
    assert with_other["p_holm"] == pytest.approx(min(1, 2 * alone["p"]))
    assert with_other["verdict"] == "inconclusive"
    assert with_other["seeds_needed"] is not None and with_other["seeds_needed"] > 6
    # n = 1: no test, a reason, never a verdict beyond inconclusive
    lone = judge_all([(hyp(id="lone"), a[:1], b)]).iloc[0]
    assert lone["verdict"] == "inconclusive" and "n = 1 in group A" in lone["note"] and lone["n_a"] == 1


def test_equivalence_within_a_margin():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.0, 0.05, 10), rng.normal(0.01, 0.05, 10)
    out = judge_all([(hyp(id="eq", direction="A ≈ B", margin=0.2), a, b),
                     (hyp(id="far", direction="A≈B", margin=0.01), a + 1.0, b)]).set_index("id")
    assert out.loc["eq", "verdict"] == "supported" and out.loc["eq", "direction"] == "A ≈ B (±0.2)"
    assert out.loc["far", "verdict"] == "refuted"
    assert out.loc["eq", "ci_level"] == pytest.approx(0.9)  # the TOST's 1 - 2α interval


# -- the spec ------------------------------------------------------------------------------------
GRID = {
    "name": "verdicts",
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.25},
    "train": {"epochs": 2, "batch_size": 64, "filters": 4, "n_blocks": 1, "threads": 1, "optimizer": "adam"},
    "search": {"sampler": "grid", "max_concurrent": 2, "variants": [
        {"name": "good", "lr": 0.01}, {"name": "twin", "lr": 0.0099}, {"name": "useless", "lr": 1.0e-6}]},
    "metric": "val_accuracy",
    "scheduler": {"type": "none"},
    "repeats": 3,
    "checkpoint": {"every": 2, "keep": 1},
    "hypotheses": [
        {"id": "planted", "claim": "a working learning rate beats a useless one", "metric": "val_accuracy",
         "a": {"variant": "good"}, "b": {"variant": "useless"}, "direction": "A > B"},
        {"id": "paired_loss", "claim": "and lowers the loss, seed by seed", "metric": "val_loss",
         "a": {"variant": "good"}, "b": {"variant": "useless"}, "direction": "A < B", "test": "paired"},
        {"id": "null", "claim": "a 1 % smaller learning rate is better", "metric": "val_accuracy",
         "a": {"variant": "twin"}, "b": {"variant": "good"}, "direction": "A > B", "test": "mannwhitney"},
        {"id": "equal", "claim": "a 1 % smaller learning rate changes nothing", "metric": "val_accuracy",
         "a": {"variant": "twin"}, "b": {"variant": "good"}, "direction": "A ≈ B", "margin": 0.15},
    ],
}


@pytest.mark.parametrize("change, fragments", [
    ({"a": {"variant": "nope"}}, ["hypotheses[0] (planted).a.variant", "'nope'", "good"]),
    ({"b": {"variant": "good"}}, ["exclude each other"]),
    ({"a": {"lr": 0.01}, "b": {"lr": 0.5}}, ["hypotheses[0] (planted).b", "cannot produce"]),
    ({"a": {"norm": "batch"}, "b": {"norm": "none"}}, ["does not vary 'norm'", "variant"]),
    ({"metric": "val_accurcy"}, ["hypotheses[0] (planted).metric", "val_accuracy"]),
    ({"direction": "A ≈ B"}, ["margin"]),
    ({"direction": "A >> B"}, ["direction must be one of"]),
    ({"at_iteration": 9}, ["at_iteration", "beyond"]),
    ({"alpha": 1.5}, ["alpha"]),
])
def test_bad_hypotheses_fail_before_ray_naming_the_field(change, fragments):
    raw = copy.deepcopy(GRID)
    raw["hypotheses"][0].update(change)
    with pytest.raises(SpecError) as err:
        validate_spec(raw)
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


def test_pairing_and_float_groups_are_checked_against_the_design():
    raw = copy.deepcopy(GRID)
    raw["repeats"] = 1
    with pytest.raises(SpecError, match="paired by seed needs repeats >= 2"):
        validate_spec(raw)
    tpe = copy.deepcopy(GRID)
    tpe["search"] = {"sampler": "tpe", "num_samples": 4, "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "norm": {"type": "categorical", "values": ["none", "batch", "instance"]}}}
    tpe["repeats"] = 1
    tpe["hypotheses"] = [{"id": "n", "claim": "instance beats batch", "metric": "val_accuracy",
                          "a": {"norm": "instance"}, "b": {"norm": "batch"}, "direction": "A > B"}]
    assert validate_spec(tpe).hypotheses[0].a == {"norm": "instance"}
    tpe["hypotheses"][0].update(a={"lr": 0.01}, b={"lr": 0.001})
    with pytest.raises(SpecError, match="probability 0; give a range"):
        validate_spec(tpe)
    tpe["hypotheses"][0].update(a={"lr": {"low": 0.01, "high": 0.1}}, b={"lr": {"low": 1e-4, "high": 1e-3}})
    assert validate_spec(tpe).hypotheses[0].b == {"lr": {"low": 1e-4, "high": 1e-3}}
    tpe["hypotheses"][0]["test"] = "paired"
    with pytest.raises(SpecError, match="paired by seed needs a grid"):
        validate_spec(tpe)


# -- a tiny real sweep ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def verdict_sweep(ray_session, tmp_path_factory):
    from sweeplab import load_sweep
    from sweeplab.runner import run_sweep

    path, _ = run_sweep(validate_spec(copy.deepcopy(GRID)), storage_path=str(tmp_path_factory.mktemp("v")), verbose=0)
    return load_sweep(path)


def test_verdicts_of_a_real_sweep(verdict_sweep, tmp_path, capsys):
    out = verdict_sweep.verdicts().set_index("id")
    df = verdict_sweep.dataframe()
    assert (df["status"] == "completed").all() and len(df) == 9
    good = df.loc[df["variant"] == "good"].sort_values("seed")
    useless = df.loc[df["variant"] == "useless"].sort_values("seed")
    assert out.loc["planted", "verdict"] == "supported"
    assert out.loc["planted", "p"] == pytest.approx(stats.ttest_ind(
        good["val_accuracy"], useless["val_accuracy"], equal_var=False, alternative="greater").pvalue)
    assert out.loc["paired_loss", "p"] == pytest.approx(stats.ttest_rel(
        good["val_loss"], useless["val_loss"], alternative="less").pvalue)
    assert out.loc["paired_loss", "verdict"] == "supported"
    assert out.loc["null", "verdict"] in ("inconclusive", "refuted")
    assert out.loc["equal", "verdict"] == "supported"
    assert (out["n_a"] == 3).all() and (out["n_b"] == 3).all()
    raw = out["p"].to_numpy(float)  # Holm over the four hypotheses, by hand
    order = np.argsort(raw)
    expected = np.minimum(1, np.maximum.accumulate((4 - np.arange(4)) * raw[order]))
    assert np.allclose(out["p_holm"].to_numpy(float)[order], expected)
    # the command prints the same verdicts; --hypotheses judges others on the same sweep
    assert main(["verdicts", verdict_sweep.path]) == 0
    printed = capsys.readouterr().out
    assert "| planted" in printed and "supported" in printed and "**equal**" in printed
    other = tmp_path / "h.yaml"
    other.write_text(yaml.safe_dump([{"id": "flip", "claim": "useless wins", "metric": "val_accuracy",
                                      "a": {"variant": "useless"}, "b": {"variant": "good"}, "direction": "A > B"}]))
    assert main(["verdicts", verdict_sweep.path, "--hypotheses", str(other), "--format", "csv"]) == 0
    flip = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert flip.loc[0, "verdict"] == "refuted"
    other.write_text(yaml.safe_dump([{"id": "x", "claim": "c", "metric": "val_accuracy", "a": {"variant": "nope"},
                                      "b": {"variant": "good"}, "direction": "A > B"}]))
    assert main(["verdicts", verdict_sweep.path, "--hypotheses", str(other)]) == 2
    assert "a.variant" in capsys.readouterr().err
    assert "\\_" in verdict_sweep.table(group_by=["variant"], fmt="latex")  # val\_accuracy
