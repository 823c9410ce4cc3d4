"""Verdicts: each hypothesis of a job (:mod:`sweeplab.spec.hypotheses`) judged on the sweep's
trials as ``supported``, ``refuted`` or ``inconclusive``.

For each hypothesis the two groups' values are each trial's last value of the metric among the
*completed* trials (a trial an early-stopping scheduler ended has a shorter budget and is left
out), or every trial's value at ``at_iteration`` when the hypothesis names one. Then:

* ``A < B`` / ``A > B``: a one-sided test in the claimed direction (its p-value supports the
  claim) and one in the opposite direction (its p-value refutes it);
* ``A ≈ B`` within ``margin``: two one-sided tests (TOST) of ``|diff| < margin`` support it; a
  difference beyond the margin (either side, Bonferroni over the two) refutes it.

Both families of p-values are corrected across the job's hypotheses with Holm's step-down
method; a hypothesis is ``supported`` when its adjusted p-value is below its α, ``refuted``
when the adjusted p-value against it is, else ``inconclusive``, with the seeds a group that a
difference of the observed size would need (power 0.8 at α/m, the first step of Holm's method
over m tested hypotheses). Every verdict carries n per group, the means, the difference with a
bootstrap confidence interval (level 1 - α; 1 - 2α for equivalence, as the TOST) and Hedges' g.
Statistics: :mod:`sweeplab.results.effects`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from sweeplab.results import effects
from sweeplab.results.sweep import SweepError
from sweeplab.spec.hypotheses import HypothesisSpec, describe_group, group_matches

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep

#: the power that :func:`verdicts`' seed estimates aim for
POWER = 0.8
COLUMNS = ["id", "verdict", "metric", "A", "direction", "B", "n_a", "n_b", "mean_a", "mean_b", "diff",
           "ci_low", "ci_high", "ci_level", "hedges_g", "p_holm", "seeds_needed", "note", "test", "alpha",
           "p_holm_against", "p", "claim"]


def group_samples(sweep: Sweep, h: HypothesisSpec) -> dict[str, pd.DataFrame]:
    """The trials of groups ``a`` and ``b`` with a finite value of ``h.metric``: frames with
    ``trial_id``, ``seed`` and ``value`` columns (see the module's docstring for which trials)."""
    from sweeplab.results.tables import with_columns

    df = with_columns(sweep, sweep.dataframe(), sorted(set(h.a) | set(h.b)))
    if h.metric not in df.columns:
        df[h.metric] = np.nan
    if h.at_iteration is None:
        df = df[df["status"] == "completed"].assign(value=pd.to_numeric(df[h.metric], errors="coerce"))
    else:
        hist = sweep.history()
        at = hist[hist["training_iteration"] == h.at_iteration]
        at = at.set_index("trial_id")[h.metric] if h.metric in at else pd.Series(dtype=float)
        df = df.assign(value=pd.to_numeric(df["trial_id"].map(at), errors="coerce"))
    df = df[np.isfinite(df["value"].astype(float))]
    out = {}
    for side in ("a", "b"):
        group = getattr(h, side)
        keep = [group_matches(group, row) for row in df.to_dict("records")]
        out[side] = df.loc[keep, ["trial_id", "seed", "value"]].reset_index(drop=True)
    return out


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """Values of the seeds both groups ran, aligned; a note when a seed repeats or is unmatched."""
    if a["seed"].duplicated().any() or b["seed"].duplicated().any():
        return np.array([]), np.array([]), "paired: a seed occurs twice in one group, pairs are ambiguous"
    common = sorted(set(a["seed"]) & set(b["seed"]))
    note = "" if len(common) == max(len(a), len(b)) else f"paired: {len(common)} seeds in both groups"
    va = a.set_index("seed").loc[common, "value"].to_numpy(float)
    vb = b.set_index("seed").loc[common, "value"].to_numpy(float)
    return va, vb, note


def judge(a: np.ndarray, b: np.ndarray, h: HypothesisSpec, seed: int = 0) -> dict[str, Any]:
    """The statistics of one hypothesis on the two groups' values (aligned pairs for
    ``test: paired``), before any correction across hypotheses: ``p`` supports the claim,
    ``p_against`` refutes it (see the module's docstring). NaN p-values when a group has
    fewer than 2 values, with a ``note`` saying why."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    row: dict[str, Any] = {"n_a": len(a), "n_b": len(b),
                           "mean_a": a.mean() if len(a) else np.nan, "mean_b": b.mean() if len(b) else np.nan}
    row["diff"] = row["mean_a"] - row["mean_b"]
    row["hedges_g"] = effects.hedges_g(a, b)
    equivalence = h.direction == "A ≈ B"
    row["ci_level"] = 1 - 2 * h.alpha if equivalence else 1 - h.alpha
    row["ci_low"], row["ci_high"] = effects.bootstrap_diff_ci(a, b, row["ci_level"], paired=h.test == "paired",
                                                              seed=seed)
    small = [f"n = {n} in group {s}" for s, n in (("A", len(a)), ("B", len(b))) if n < 2]
    if small:
        row.update(p=np.nan, p_against=np.nan,
                   note=f"{' and '.join(small)}: no test (a group needs at least 2 trials to estimate its spread)")
        return row
    if equivalence:
        row["p"] = effects.tost_p(a, b, h.test, h.margin)
        beyond = min(effects.two_group_p(a, b, h.test, "greater", shift=h.margin),
                     effects.two_group_p(a, b, h.test, "less", shift=-h.margin))
        row["p_against"] = min(1.0, 2 * beyond)
    else:
        claimed = "less" if h.direction == "A < B" else "greater"
        opposite = "greater" if claimed == "less" else "less"
        row["p"] = effects.two_group_p(a, b, h.test, claimed)
        row["p_against"] = effects.two_group_p(a, b, h.test, opposite)
    row["note"] = ""
    return row


def _seeds(h: HypothesisSpec, a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[Any, str]:
    """Seeds a group for a difference of the observed size (power :data:`POWER`), and a note."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None, ""
    if h.test == "paired":
        effect = effects.cohens_dz(a, b)
        scale = float(np.std(a - b, ddof=1))
    else:
        scale = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        effect = (a.mean() - b.mean()) / scale if scale > 0 else float("nan")
    if not math.isfinite(effect):
        return None, "no spread in the values: no power estimate"
    if h.direction == "A ≈ B":
        n = effects.seeds_needed(effect, alpha, POWER, h.test, margin=h.margin / scale)
        why = "the observed difference is at or beyond the margin" if n is None else ""
        return n, why
    n = effects.seeds_needed(effect, alpha, POWER, h.test)
    against = (effect > 0) == (h.direction == "A < B") and effect != 0
    why = "the observed difference points against the claim" if against else ""
    if n is None:
        return None, (f"more than {effects.MAX_SEEDS:,} seeds a group (|d| = {abs(effect):.2g})" if effect
                      else "no difference observed")
    return n, why


def verdicts(sweep: Sweep, hypotheses: Iterable[HypothesisSpec] | None = None) -> pd.DataFrame:
    """Judge ``hypotheses`` (default: the job's ``hypotheses:``) on the sweep.

    Returns:
        One row per hypothesis with :data:`COLUMNS`: ``verdict`` (``supported`` |
        ``refuted`` | ``inconclusive``), the groups ``A`` and ``B`` as labels, ``n_a``,
        ``n_b`` (0 for an empty group), ``mean_a``, ``mean_b``, ``diff`` (A - B), the
        bootstrap interval ``ci_low``..``ci_high`` at ``ci_level``, ``hedges_g``, ``p`` (raw,
        for the claim), ``p_holm`` (Holm-adjusted across the hypotheses) and
        ``p_holm_against`` (adjusted, against the claim), ``seeds_needed`` (inconclusive
        only: seeds a group, ``None`` when none would do), ``note``, ``claim``.

    Raises:
        SweepError: the job has no hypotheses and none were given.
    """
    hs = list(sweep.spec.hypotheses if hypotheses is None else hypotheses)
    if not hs:
        raise SweepError(f"{sweep.path}: the job has no hypotheses: section; add one to the job file "
                         "(docs/verdicts.md) or pass --hypotheses FILE")
    samples, notes = [], []
    for h in hs:
        groups = group_samples(sweep, h)
        if h.test == "paired":
            a, b, pair_note = _paired(groups["a"], groups["b"])
        else:
            a, b, pair_note = groups["a"]["value"].to_numpy(float), groups["b"]["value"].to_numpy(float), ""
        samples.append((h, a, b))
        notes.append(pair_note)
    return judge_all(samples, notes)


def judge_all(samples: list[tuple[HypothesisSpec, np.ndarray, np.ndarray]],
              notes: list[str] | None = None) -> pd.DataFrame:
    """Verdicts of hypotheses on given values: ``samples`` holds ``(hypothesis, values of A,
    values of B)`` (pairs aligned for ``test: paired``); Holm's correction runs across them
    all. Returns the frame :func:`verdicts` describes."""
    rows = []
    for i, (h, a, b) in enumerate(samples):
        row = judge(a, b, h)
        row["note"] = "; ".join(x for x in (row["note"], (notes or [""] * len(samples))[i]) if x)
        rows.append({"id": h.id, "metric": h.metric, "A": describe_group(h.a), "B": describe_group(h.b),
                     "direction": h.direction + (f" (±{h.margin:g})" if h.margin else ""), "test": h.test,
                     "alpha": h.alpha, "claim": h.claim, **row})
    frame = pd.DataFrame(rows)
    for col in ("p", "p_against"):
        frame[col] = frame[col].astype(float)
    frame["p_holm"] = effects.holm(frame["p"].to_numpy(float))
    frame["p_holm_against"] = effects.holm(frame["p_against"].to_numpy(float))
    tested = int(np.isfinite(frame["p"].to_numpy(float)).sum())
    verdict, seeds, final_notes = [], [], []
    for (h, a, b), (_, r) in zip(samples, frame.iterrows()):
        note = r["note"]
        if r["p_holm"] < r["alpha"]:
            verdict.append("supported")
            seeds.append(None)
        elif r["p_holm_against"] < r["alpha"]:
            verdict.append("refuted")
            seeds.append(None)
        else:
            verdict.append("inconclusive")
            n, why = _seeds(h, a, b, r["alpha"] / max(tested, 1))
            seeds.append(n)
            note = "; ".join(x for x in (note, why) if x)
        final_notes.append(note)
    frame["verdict"], frame["seeds_needed"], frame["note"] = verdict, seeds, final_notes
    frame["seeds_needed"] = frame["seeds_needed"].astype(object)
    return frame[COLUMNS]


def read_hypotheses(path: str | Path, sweep: Sweep) -> list[HypothesisSpec]:
    """The ``hypotheses:`` of a job file (or a YAML list of hypotheses), checked against the
    sweep's job as :func:`sweeplab.spec.hypotheses.hypothesis_problems` checks a job's own.

    Raises:
        SpecError: unreadable file, no hypotheses, or a hypothesis the sweep cannot judge.
    """
    from pydantic import TypeAdapter, ValidationError

    from sweeplab.spec import SpecError
    from sweeplab.spec.hypotheses import hypothesis_problems
    from sweeplab.spec.load import _pydantic_lines
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"--hypotheses {p}: no such file")
    raw = yaml.safe_load(p.read_text())
    items = raw.get("hypotheses") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise SpecError(f"{p}: no hypotheses: list (a job file's section, or a YAML list of hypotheses)")
    try:
        hs = TypeAdapter(list[HypothesisSpec]).validate_python(items)
    except ValidationError as exc:
        raise SpecError("\n".join(f"{p}: hypotheses.{line}" for line in _pydantic_lines(exc))) from None
    problems = hypothesis_problems(sweep.spec.model_copy(update={"hypotheses": hs}), sweep.family)
    if problems:
        raise SpecError("\n".join(f"{p}: {line}" for line in problems))
    return hs


def render_verdicts(frame: pd.DataFrame, fmt: str = "markdown", digits: int = 3) -> str:
    """The verdicts as a table in one of :data:`sweeplab.results.tables.FORMATS`, numbers with
    ``digits`` significant digits, the claims listed under a markdown table."""
    from sweeplab.results.tables import fmt_number, render

    shown = frame.drop(columns=["claim", "ci_level", "p"]).copy()
    shown.insert(shown.columns.get_loc("ci_low"), "ci",
                 [f"[{fmt_number(lo, digits)}, {fmt_number(hi, digits)}] ({lvl:.0%})"
                  if np.isfinite(lo) else "" for lo, hi, lvl in zip(frame["ci_low"], frame["ci_high"],
                                                                      frame["ci_level"])])
    shown = shown.drop(columns=["ci_low", "ci_high"])
    for c in ("mean_a", "mean_b", "diff", "hedges_g", "p_holm", "p_holm_against", "alpha"):
        shown[c] = [fmt_number(float(v), digits) for v in shown[c]]
    shown["seeds_needed"] = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                             for v in shown["seeds_needed"]]
    text = render(shown, fmt)
    if fmt == "markdown":
        text += "\n\n" + "\n".join(f"- **{i}**: {c}" for i, c in zip(frame["id"], frame["claim"]))
    return text
