"""The search space of a job: parameters, ``when:`` conditions, grids and variants."""
from __future__ import annotations

import itertools
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
class _ParamBase(_Strict):
    when: dict[str, Any] | None = Field(
        None,
        description="conditional parameter: exists only when each named earlier parameter takes "
                    "the given value (or one of a list of values)")


class FloatParam(_ParamBase):
    """A float in ``[low, high]``, optionally log-uniform or on a ``step`` grid."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "FloatParam":
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna does not support it)")
        return self


class IntParam(_ParamBase):
    """An integer in ``[low, high]`` (both included) with a ``step``, optionally log-uniform."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> "IntParam":
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step > 1 cannot be combined (Optuna does not support it)")
        return self

    def grid(self) -> list[int]:
        """Every value, for the grid sampler."""
        return list(range(self.low, self.high + 1, self.step))


class CategoricalParam(_ParamBase):
    """One of a list of ``values`` (numbers, strings, booleans or null)."""

    type: Literal["categorical"]
    values: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "CategoricalParam":
        for v in self.values:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise ValueError(f"values must be numbers, strings, booleans or null, not {v!r}")
        if len({repr(v) for v in self.values}) != len(self.values):
            raise ValueError(f"values has duplicates: {self.values}")
        return self


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite numbers (got low={low}, high={high})")
    if low > high:
        raise ValueError(f"inverted range: low={low} is above high={high}; swap them")
    if low == high:
        raise ValueError(f"empty range: low = high = {low}; put a fixed value under train: instead")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0 (got low={low})")


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


def _check_storage_url(url: str, sampler: str) -> None:
    """``search.storage``: an SQLAlchemy database URL, and a sampler with an Optuna study."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"search.storage: {url!r} is not a database URL; give an SQLAlchemy URL such as "
                         "postgresql://user@host:5432/db or sqlite:////abs/path/study.db") from None
    if sampler == "grid":
        raise ValueError("search.storage: a grid has no Optuna study (its configurations are fixed); "
                         "drop storage or use an Optuna sampler")


class SearchSpec(_Strict):
    """``search:`` the space, the sampler and the budget."""

    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc", "nsga2", "grid"] = Field(
        "tpe", description="Optuna sampler (tpe, random, cmaes, gp: Gaussian process, qmc: quasi-Monte Carlo "
                           "Sobol, nsga2: NSGA-II); grid (ours) is the default when the space is empty")
    seed: int = 0
    num_samples: int = Field(8, ge=1, description="distinct configurations (each run `repeats` times)")
    max_concurrent: int | None = Field(None, ge=1)
    time_budget_s: float | None = Field(
        None, gt=0, description="Ray Tune stops the sweep, running trials included, after this many seconds")
    space: dict[str, Param] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default_factory=list)
    storage: str | None = Field(
        None, description="database of the Optuna study, an SQLAlchemy URL (postgresql://user@host:5432/db); "
                          "default: a journal file in the sweep folder (runner/study.py)")

    @model_validator(mode="after")
    def _check(self) -> "SearchSpec":
        for name, p in self.space.items():
            for dep, want in (p.when or {}).items():
                if dep not in self.space:
                    raise ValueError(f"search.space.{name}.when names {dep!r}, which is not a parameter "
                                     f"of the space ({', '.join(self.space)})")
                dep_p = self.space[dep]
                wants = want if isinstance(want, list) else [want]
                if isinstance(dep_p, CategoricalParam):
                    bad = [w for w in wants if w not in dep_p.values]
                    if bad:
                        raise ValueError(f"search.space.{name}.when: {dep}={bad[0]!r} is not one of "
                                         f"{dep_p.values}")
        # conditions first: a parameter is sampled after every parameter its `when` names
        ordered: dict[str, Any] = {}
        pending = dict(self.space)
        while pending:
            ready = [n for n, p in pending.items() if all(d in ordered for d in (p.when or {}))]
            if not ready:
                raise ValueError(f"search.space: the when: conditions of {', '.join(pending)} form a cycle")
            for n in ready:
                ordered[n] = pending.pop(n)
        self.space = ordered
        if not self.space and "sampler" not in self.model_fields_set:
            self.sampler = "grid"  # nothing to sample: run the train: section (once per seed)
        if not self.space and self.sampler != "grid":
            raise ValueError(f"search.space: sampler {self.sampler!r} needs at least one parameter to "
                             "sample; to run fixed configurations use sampler: grid (with no space and "
                             "no variants it runs the train: section once per seed)")
        if self.variants and self.sampler != "grid":
            raise ValueError("search.variants need sampler: grid (they are an explicit list of configurations)")
        seen = set()
        for i, v in enumerate(self.variants):
            if "name" not in v or not isinstance(v["name"], str):
                raise ValueError(f"search.variants[{i}] needs a string name: (it labels the table rows)")
            if v["name"] in seen:
                raise ValueError(f"search.variants[{i}]: the name {v['name']!r} is used twice")
            seen.add(v["name"])
        if self.sampler == "grid":
            for name, p in self.space.items():
                if isinstance(p, FloatParam):
                    raise ValueError(
                        f"search.space.{name}: a float range cannot be gridded; use type: categorical with values")
        if self.storage is not None:
            _check_storage_url(self.storage, self.sampler)
        return self

    def grid_points(self) -> list[dict[str, Any]]:
        """Every configuration of a grid search: the product of the space's values (a
        conditional parameter only where its condition holds) crossed with the variants.

        Returns:
            A list of dicts; a variant's ``name`` becomes the ``variant`` key.
        """
        points: list[dict[str, Any]] = [{}]
        for name, p in self.space.items():
            values = p.values if isinstance(p, CategoricalParam) else p.grid()  # type: ignore[union-attr]
            new: list[dict[str, Any]] = []
            for point in points:
                if condition_holds(p.when, point):
                    new.extend({**point, name: v} for v in values)
                else:
                    new.append(point)
            points = new
        if self.variants:
            points = [{**p, **{k: v for k, v in var.items() if k != "name"}, "variant": var["name"]}
                      for var, p in itertools.product(self.variants, points)]
        unique: dict[str, dict[str, Any]] = {}
        for p in points:
            unique.setdefault(repr(sorted(p.items(), key=lambda kv: kv[0])), p)
        return list(unique.values())


def condition_holds(when: dict[str, Any] | None, values: dict[str, Any]) -> bool:
    """True if every ``when`` entry matches the values sampled so far."""
    for dep, want in (when or {}).items():
        wants = want if isinstance(want, list) else [want]
        if dep not in values or values[dep] not in wants:
            return False
    return True


_condition_holds = condition_holds  # the name older code (and pickled sweep states) use
