"""``hypotheses:`` claims over a sweep's groups, written in the job file and judged after it.

A hypothesis compares two groups of trials, ``a`` and ``b``, on one metric::

    hypotheses:
      - id: derp_lowers_ks
        claim: DERP-VAE (5 probes) lowers the KS distance of the standard VAE
        metric: test_ks_eval
        a: {variant: derp5}
        b: {variant: standard}
        direction: A < B            # A < B | A > B | A ≈ B (with margin:, an equivalence claim)
        test: welch                 # welch (default) | mannwhitney | paired (by seed)
        alpha: 0.05

A group is a mapping ``column -> condition``: ``variant`` (a grid variant's name) or a
hyperparameter of the search space or of the variants, each condition a value, a list of values
(any of them) or a numeric range ``{low: x, high: y}`` (both ends included). Everything that can
be checked before Ray starts is checked here (:func:`hypothesis_problems`): the metric, the
columns, that each group can occur in the sweep, that no trial can fall in both groups, and that
pairing by seed is possible. Judging them is :mod:`sweeplab.results.verdicts`.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from sweeplab.spec.space import CategoricalParam, FloatParam, IntParam, _Strict

if TYPE_CHECKING:
    from sweeplab.spec.job import JobSpec

#: the canonical directions
DIRECTIONS = ("A < B", "A > B", "A ≈ B")
_DIRECTION_SYMBOLS = {"<": "A < B", ">": "A > B", "≈": "A ≈ B", "~": "A ≈ B", "~=": "A ≈ B", "==": "A ≈ B"}


class HypothesisSpec(_Strict):
    """One claim of ``hypotheses:`` (see the module's docstring)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="short unique name (letters, digits, _ . -)")
    claim: str = Field(min_length=1, description="the hypothesis as a sentence")
    metric: str = Field(description="the metric compared (each trial's last value, or at at_iteration)")
    a: dict[str, Any] = Field(min_length=1, description="group A: column -> value | [values] | {low, high}")
    b: dict[str, Any] = Field(min_length=1, description="group B, as A")
    direction: str = Field(description="A < B, A > B, or A ≈ B (equivalence within margin)")
    margin: float | None = Field(None, gt=0, description="A ≈ B: the largest |mean A - mean B| that "
                                                         "counts as equal, in the metric's unit")
    test: Literal["welch", "mannwhitney", "paired"] = "welch"
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level (after Holm's correction)")
    at_iteration: int | None = Field(None, ge=1, description="compare every trial's value at this "
                                     "training_iteration (default: completed trials' last values)")

    @field_validator("direction")
    @classmethod
    def _direction(cls, value: str) -> str:
        text = re.sub(r"\s+", "", value).upper()
        m = re.fullmatch(r"A(<|>|≈|~=|~|==)B", text)
        if not m:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (got {value!r})")
        return _DIRECTION_SYMBOLS[m.group(1)]

    @model_validator(mode="after")
    def _check(self) -> "HypothesisSpec":
        if self.direction == "A ≈ B" and self.margin is None:
            raise ValueError(f"hypothesis {self.id}: A ≈ B is an equivalence claim; give margin: the largest "
                             "difference that counts as equal, in the metric's unit")
        if self.direction != "A ≈ B" and self.margin is not None:
            raise ValueError(f"hypothesis {self.id}: margin: belongs to A ≈ B claims; remove it or use A ≈ B")
        for side in ("a", "b"):
            for key, cond in getattr(self, side).items():
                _check_condition(f"{side}.{key}", cond)
        return self


def _check_condition(where: str, cond: Any) -> None:
    """Raise ValueError for a condition that is neither a scalar, a list nor a {low, high} range."""
    if isinstance(cond, dict):
        if set(cond) != {"low", "high"} or not all(_is_number(cond[k]) for k in ("low", "high")):
            raise ValueError(f"{where}: a range is {{low: number, high: number}} (got {cond!r})")
        if cond["low"] > cond["high"]:
            raise ValueError(f"{where}: inverted range low={cond['low']} > high={cond['high']}")
    elif isinstance(cond, list):
        if not cond or not all(_is_scalar(v) for v in cond):
            raise ValueError(f"{where}: a list of values needs at least one number, string or boolean")
    elif not _is_scalar(cond):
        raise ValueError(f"{where}: give a value, a list of values or {{low, high}} (got {cond!r})")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def value_matches(cond: Any, value: Any) -> bool:
    """True if a trial's ``value`` of a column satisfies a group ``cond`` (a value, a list of
    values, or ``{low, high}``); numbers compare by value (``1 == 1.0``), a missing value
    (a conditional hyperparameter the trial did not sample) matches nothing but ``null``."""
    if isinstance(cond, dict):
        return _is_number(value) and cond["low"] <= value <= cond["high"]
    if isinstance(cond, list):
        return any(value_matches(c, value) for c in cond)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return cond is None
    if isinstance(cond, bool) or isinstance(value, bool):
        return cond is value or (isinstance(cond, bool) and isinstance(value, bool) and cond == value)
    if _is_number(cond) and _is_number(value):
        return math.isclose(float(cond), float(value), rel_tol=1e-12, abs_tol=0.0)
    return str(cond) == str(value)


def group_matches(group: dict[str, Any], values: dict[str, Any]) -> bool:
    """True if every condition of ``group`` holds for a trial's ``values`` (column -> value)."""
    return all(value_matches(cond, values.get(key)) for key, cond in group.items())


def describe_group(group: dict[str, Any]) -> str:
    """``variant=derp5``, ``norm=batch,instance``, ``dropout=0..0.2``: a group as a short label."""
    parts = []
    for key, cond in group.items():
        if isinstance(cond, dict):
            text = f"{cond['low']:g}..{cond['high']:g}"
        elif isinstance(cond, list):
            text = ",".join(str(c) for c in cond)
        else:
            text = str(cond)
        parts.append(f"{key}={text}")
    return " & ".join(parts)


# -- checks against the job ----------------------------------------------------------------------
def hypothesis_problems(spec: JobSpec, fam: Any) -> list[str]:
    """Every problem of ``spec.hypotheses`` as one line naming the field: unknown metric or
    column, a group the sweep cannot produce, groups that overlap, impossible pairing, an
    ``at_iteration`` beyond the trials' budget, duplicate ids."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, h in enumerate(spec.hypotheses):
        where = f"hypotheses[{i}] ({h.id})"
        if h.id in seen:
            problems.append(f"{where}.id: {h.id!r} is used twice; give each hypothesis its own id")
        seen.add(h.id)
        table = fam.metric_table()
        if h.metric not in table:
            problems.append(f"{where}.metric: {spec.trainable} does not report {h.metric!r}; it reports "
                            f"{', '.join(sorted(table))}")
        problems += _group_problems(spec, h, where)
        if h.at_iteration is not None and not problems:
            top = spec.max_iterations()
            if h.at_iteration > top:
                problems.append(f"{where}.at_iteration: {h.at_iteration} is beyond the {top} iterations a "
                                "trial runs; lower it")
    return problems


def _columns(spec: JobSpec) -> dict[str, Any]:
    """Group columns a job can vary: ``variant`` and the space's and the variants' keys."""
    cols: dict[str, Any] = {}
    if spec.search.variants:
        cols["variant"] = CategoricalParam(type="categorical", values=[v["name"] for v in spec.search.variants])
    for var in spec.search.variants:
        for key in var:
            if key != "name" and key not in spec.search.space:
                cols.setdefault(key, None)  # values: whatever the variants set
    cols.update(spec.search.space)
    return cols


def _group_problems(spec: JobSpec, h: HypothesisSpec, where: str) -> list[str]:
    cols = _columns(spec)
    problems = []
    for side in ("a", "b"):
        for key, cond in getattr(h, side).items():
            if key not in cols:
                varied = ", ".join(cols) or "nothing (the sweep varies no hyperparameter)"
                problems.append(f"{where}.{side}.{key}: the sweep does not vary {key!r}, so it cannot form a "
                                f"group; group on what it varies: {varied}")
            else:
                msg = _condition_problem(cols[key], cond)
                if msg:
                    problems.append(f"{where}.{side}.{key}: {msg}")
    if problems:
        return problems
    if set(h.a) != set(h.b) or not any(_disjoint(h.a[k], h.b[k]) for k in h.a):
        problems.append(f"{where}: groups a and b must name the same columns with values that exclude each "
                        f"other (got a: {h.a}, b: {h.b}), so that no trial falls in both")
    if spec.search.sampler == "grid":
        problems += _grid_problems(spec, h, where)
    elif h.test == "paired":
        problems.append(f"{where}.test: paired by seed needs a grid (sampler: grid with repeats), where both "
                        "groups run the same seeds; a sampler's trials differ in more than the groups")
    return problems


def _grid_problems(spec: JobSpec, h: HypothesisSpec, where: str) -> list[str]:
    """Each group must hold at least one grid point (exactly one when paired, with repeats >= 2)."""
    points = spec.search.grid_points() or [{}]
    problems = []
    for side in ("a", "b"):
        n = sum(group_matches(getattr(h, side), p) for p in points)
        if n == 0:
            problems.append(f"{where}.{side}: no configuration of the grid matches {getattr(h, side)}; the sweep "
                            "cannot produce this group")
        elif h.test == "paired" and n > 1:
            problems.append(f"{where}.test: paired by seed needs one configuration per group (each seed once); "
                            f"{side} matches {n} grid points; narrow the group or use welch")
    if h.test == "paired" and spec.repeats < 2:
        problems.append(f"{where}.test: paired by seed needs repeats >= 2 (one trial per seed and group)")
    return problems


def _condition_problem(param: Any, cond: Any) -> str | None:
    """Why ``cond`` can never hold for a parameter (None if it can)."""
    conds = cond if isinstance(cond, list) else [cond]
    if isinstance(param, CategoricalParam):
        if isinstance(cond, dict):
            if any(_is_number(v) and value_matches(cond, v) for v in param.values):
                return None
            return f"no value of {param.values} lies in {cond}"
        bad = [c for c in conds if not any(value_matches(c, v) for v in param.values)]
        return f"{bad[0]!r} is not one of its values {param.values}" if bad else None
    if isinstance(param, (FloatParam, IntParam)):
        if isinstance(cond, dict):
            if cond["high"] < param.low or cond["low"] > param.high:
                return f"the range {cond} lies outside the searched [{param.low}, {param.high}]"
            return None
        if isinstance(param, FloatParam):
            return (f"a float range is sampled continuously, so a trial takes {cond!r} with probability 0; "
                    "give a range {low: x, high: y}")
        bad = [c for c in conds if not (_is_number(c) and param.low <= c <= param.high)]
        return f"{bad[0]!r} lies outside the searched [{param.low}, {param.high}]" if bad else None
    return None  # a key only the variants set: checked against the grid points


def _disjoint(x: Any, y: Any) -> bool:
    """True if no value can satisfy both conditions."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x["high"] < y["low"] or y["high"] < x["low"]
    if isinstance(x, dict) or isinstance(y, dict):
        rng, other = (x, y) if isinstance(x, dict) else (y, x)
        others = other if isinstance(other, list) else [other]
        return not any(value_matches(rng, v) for v in others)
    xs = x if isinstance(x, list) else [x]
    ys = y if isinstance(y, list) else [y]
    return not any(value_matches(a, b) for a in xs for b in ys)
