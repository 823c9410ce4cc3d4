"""The job spec: one YAML file a sweep, validated before Ray starts.

``load_spec(path, overrides)`` reads a job file with a safe YAML loader, applies dotted
``--set`` overrides, and returns a :class:`JobSpec` whose every field has been checked against
the registered model family (its hyperparameters and metrics) and dataset. Every problem becomes
one :class:`SpecError` line that names the file, the field, the bad value and what is allowed.
Nothing in a spec is ever evaluated as code.

The format is documented with a full annotated example in README.md.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SpecError(ValueError):
    """A job file is invalid. ``str(err)`` is a ready-to-print message, one problem a line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Search space
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


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
class DataSpec(_Strict):
    """``data:`` which dataset, where, and which share of it."""

    name: str
    root: str | None = Field(None, description="folder with the dataset's files (~ and $VARS expand)")
    download: bool = False
    train_fraction: float = Field(1.0, gt=0, le=1)
    test_fraction: float = Field(1.0, gt=0, le=1)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    subset_seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved_root(self, base: Path | None = None) -> Path | None:
        """The root with ``~`` and environment variables expanded; relative roots are taken
        from ``base`` (the current directory by default)."""
        if self.root is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(self.root)))
        return p if p.is_absolute() else (base or Path.cwd()) / p


class SearchSpec(_Strict):
    """``search:`` the space, the sampler and the budget."""

    sampler: Literal["tpe", "random", "cmaes", "grid"] = Field("tpe", description="Optuna sampler; grid (ours) is the default when the space is empty")
    seed: int = 0
    num_samples: int = Field(8, ge=1, description="distinct configurations (each run `repeats` times)")
    max_concurrent: int | None = Field(None, ge=1)
    time_budget_s: float | None = Field(None, gt=0, description="stop sampling after this many seconds")
    space: dict[str, Param] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default_factory=list)

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
                if _condition_holds(p.when, point):
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


def _condition_holds(when: dict[str, Any] | None, values: dict[str, Any]) -> bool:
    """True if every ``when`` entry matches the values sampled so far."""
    for dep, want in (when or {}).items():
        wants = want if isinstance(want, list) else [want]
        if dep not in values or values[dep] not in wants:
            return False
    return True


class SchedulerSpec(_Strict):
    """``scheduler:`` ASHA (asynchronous successive halving, Li et al. 2020) or none."""

    type: Literal["asha", "none"] = "asha"
    max_t: int | None = Field(None, ge=1, description="iterations a trial may run (default: the family's)")
    grace_period: int = Field(1, ge=1, description="iterations before ASHA may stop a trial")
    reduction_factor: float = Field(3.0, gt=1)


class ResourcesSpec(_Strict):
    """``resources:`` per trial."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class CheckpointSpec(_Strict):
    """``checkpoint:`` how often and how many."""

    every: int = Field(1, ge=1, description="iterations between checkpoints (and always at the end)")
    keep: int | None = Field(2, ge=1, description="checkpoints kept per trial (null: all)")


class FailureSpec(_Strict):
    """``failure:`` retries of a failed trial from its last checkpoint."""

    max_failures: int = Field(0, ge=-1, description="-1: retry forever")


class LoggingSpec(_Strict):
    """``logging:`` extra TensorBoard output."""

    media_every: int = Field(0, ge=0, description="iterations between image grids (0 = never)")


class JobSpec(_Strict):
    """A whole job file. See README.md for the annotated example."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    trainable: str
    data: DataSpec
    train: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    metric: str
    mode: Literal["min", "max"] | None = None
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    repeats: int = Field(1, ge=1)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    storage_path: str | None = None

    # -- derived ---------------------------------------------------------------------------------
    def family(self):
        """The registered :class:`~sweeplab.trainables.base.ModelFamily` class."""
        from sweeplab.trainables.base import get_family

        return get_family(self.trainable)

    def resolved_mode(self) -> str:
        """``mode`` or the metric's natural mode declared by the family."""
        return self.mode or self.family().metrics[self.metric][0]

    def family_config(self, extra: dict[str, Any] | None = None):
        """The family's Config for the fixed ``train`` values (plus ``extra``), validated."""
        return self.family().Config.model_validate({**self.train, **(extra or {})})

    def max_iterations(self) -> int:
        """Iterations of one full trial: ``scheduler.max_t`` or the family's count for ``train``."""
        if self.scheduler.type == "asha" and self.scheduler.max_t:
            return self.scheduler.max_t
        return self.family().num_iterations_of(self.family_config())

    def total_trials(self) -> int:
        """Trials the sweep will run (grid: points × repeats; else num_samples × repeats)."""
        n = len(self.search.grid_points()) if self.search.sampler == "grid" else self.search.num_samples
        return n * self.repeats


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def parse_overrides(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """Parse ``--set a.b=c`` items; values are read as YAML scalars/lists (``4``, ``1e-3``,
    ``true``, ``[a, b]``), never evaluated as code.

    Raises:
        SpecError: an item without ``=`` or with an empty key.
    """
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write it as dotted.field=value, e.g. --set train.epochs=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {item!r}: the value is not valid YAML ({exc.problem})") from None
        out.append((key.strip().split("."), value))
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set dotted paths in a raw job dict (creating intermediate mappings).

    Raises:
        SpecError: when a path goes through a value that is not a mapping.
    """
    for path, value in overrides:
        node = raw
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                where = ".".join(path[: i + 1])
                raise SpecError(f"--set {'.'.join(path)}: {where} is {nxt!r}, not a mapping")
            node = nxt
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a job file with ``yaml.safe_load`` (no tags, no code).

    Raises:
        SpecError: missing file, malformed YAML (with line and column), or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such job file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{p}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: a job file must be a mapping of fields (trainable:, data:, ...), "
                        f"not {type(raw).__name__}")
    return raw


def load_spec(path: str | Path, overrides: list[str] | None = None, *, check_data: bool = True) -> JobSpec:
    """Read, override and validate a job file.

    Args:
        path: the YAML job file.
        overrides: ``["search.num_samples=4", "train.epochs=2"]`` style items.
        check_data: also check that the dataset is registered and that its root exists.

    Returns:
        The validated :class:`JobSpec` (``name`` defaults to the file's stem).

    Raises:
        SpecError: with one line per problem, each naming the file and the field.
    """
    raw = apply_overrides(read_yaml(path), parse_overrides(overrides))
    raw.setdefault("name", Path(path).stem)
    return validate_spec(raw, source=str(path), check_data=check_data)


def validate_spec(raw: dict[str, Any], *, source: str = "<spec>", check_data: bool = True) -> JobSpec:
    """Validate a raw job dict (see :func:`load_spec`).

    Raises:
        SpecError: one line per problem.
    """
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError("\n".join(f"{source}: {line}" for line in _pydantic_lines(exc))) from None
    problems = _semantic_problems(spec, check_data=check_data)
    if problems:
        raise SpecError("\n".join(f"{source}: {p}" for p in problems))
    return spec


def _pydantic_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"] if not _is_union_tag(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling against README.md's job format"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            msg = "type must be one of float, int, categorical"
        elif err["type"] == "union_tag_not_found":
            msg = "needs a type: float, int or categorical"
        got = err.get("input")
        suffix = f" (got {got!r})" if err["type"] not in ("missing", "extra_forbidden") and _short(got) else ""
        if err["type"] == "extra_forbidden":
            suffix = ""
        if loc and msg.startswith(loc + "."):
            lines.append(f"{msg}{suffix}")  # a section validator already named the full field
        else:
            lines.append(f"{loc or '<top>'}: {msg}{suffix}")
    return lines


def _is_union_tag(part: Any) -> bool:
    return part in ("float", "int", "categorical")


def _short(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or len(repr(value)) < 80


def _semantic_problems(spec: JobSpec, *, check_data: bool) -> list[str]:
    """Checks that need the registries: trainable, its hyperparameters and metrics, dataset."""
    from sweeplab.trainables.base import family_names, get_family

    problems: list[str] = []
    if spec.trainable not in family_names():
        return [f"trainable: unknown trainable {spec.trainable!r}; known: {', '.join(family_names())}"]
    fam = get_family(spec.trainable)
    fields = fam.Config.model_fields

    def field_problem(where: str, values: dict[str, Any]) -> str | None:
        try:
            fam.Config.model_validate({**spec.train, **values})
        except ValidationError as exc:
            errs = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                if err["type"] == "missing":
                    errs.append(f"{key} is required by {spec.trainable} (set it under train: or search.space:)")
                else:
                    got = err.get("input")
                    errs.append(f"{key}: {err['msg'].removeprefix('Value error, ')} (got {got!r})")
            if where == "train":
                return "; ".join(f"train.{e}" for e in errs)
            return f"{where}: " + "; ".join(errs)
        return None

    for key in spec.train:
        if key not in fields:
            problems.append(f"train.{key}: {spec.trainable} has no hyperparameter {key!r}; "
                            f"known: {', '.join(sorted(fields))}")
    for key in spec.search.space:
        if key not in fields:
            problems.append(f"search.space.{key}: {spec.trainable} has no hyperparameter {key!r}; "
                            f"known: {', '.join(sorted(fields))}")
        elif key in spec.train:
            problems.append(f"search.space.{key}: also fixed under train.{key}; keep only one of them")
    for i, var in enumerate(spec.search.variants):
        for key in var:
            if key != "name" and key not in fields:
                problems.append(f"search.variants[{i}].{key}: {spec.trainable} has no hyperparameter {key!r}")
    if problems:
        return problems

    # the fixed values, then each end of every range and each categorical value, validate
    base = field_problem("train", {})
    probe_values: dict[str, list[Any]] = {}
    for key, p in spec.search.space.items():
        if isinstance(p, CategoricalParam):
            probe_values[key] = list(p.values)
        else:
            probe_values[key] = [p.low, p.high]  # type: ignore[union-attr]
    defaults = {k: v[0] for k, v in probe_values.items()}
    if base and not probe_values:
        problems.append(base)
    for key, values in probe_values.items():
        for v in values:
            msg = field_problem(f"search.space.{key}", {**defaults, key: v})
            if msg and key in msg.split(":", 1)[1]:
                problems.append(msg)
                break
    for i, var in enumerate(spec.search.variants):
        msg = field_problem(f"search.variants[{i}] ({var['name']})",
                            {**defaults, **{k: v for k, v in var.items() if k != "name"}})
        if msg:
            problems.append(msg)
    if not problems and probe_values:
        msg = field_problem("train", defaults)
        if msg:
            problems.append(msg)

    if spec.metric not in fam.metrics:
        problems.append(f"metric: {spec.trainable} does not report {spec.metric!r}; "
                        f"it reports: {', '.join(sorted(fam.metrics))}")
    if spec.repeats > 1 and spec.scheduler.type == "asha":
        problems.append("repeats: ASHA would stop the seeds of one configuration at different budgets, "
                        "so their mean ± std would mix budgets; set scheduler: {type: none} or repeats: 1")
    if spec.scheduler.type == "asha" and not problems:
        max_t = spec.max_iterations()
        if spec.scheduler.grace_period > max_t:
            problems.append(f"scheduler.grace_period: {spec.scheduler.grace_period} is above max_t={max_t} "
                            "(the iterations a trial runs); lower it")
    if spec.resources.gpu > 1 and spec.resources.gpu != int(spec.resources.gpu):
        problems.append(f"resources.gpu: {spec.resources.gpu} GPUs: use a fraction below 1 or a whole number")

    if check_data:
        from sweeplab.datasets.base import dataset_names, dataset_info

        if spec.data.name not in dataset_names():
            problems.append(f"data.name: unknown dataset {spec.data.name!r}; known: {', '.join(dataset_names())}")
        else:
            info = dataset_info(spec.data.name)
            root = spec.data.resolved_root()
            if info.needs_root and root is None:
                problems.append(f"data.root: dataset {spec.data.name!r} needs the folder that holds its files")
            elif info.needs_root and not root.is_dir() and not spec.data.download:
                problems.append(f"data.root: {str(root)!r} does not exist; fill it with "
                                "shared/data/materialize.sh, fix the path (--set data.root=...), "
                                "or set data.download: true where there is internet")
    return problems
