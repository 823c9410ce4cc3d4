"""Reading a job file: YAML (never evaluated as code), dotted ``--set`` overrides, and every check
against the registered family and dataset, each problem one :class:`SpecError` line that names
the file, the field, the bad value and what is allowed."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sweeplab.spec.job import JobSpec
from sweeplab.spec.space import CategoricalParam


class SpecError(ValueError):
    """A job file is invalid. ``str(err)`` is a ready-to-print message, one problem a line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (no tags, no code) that refuses a key given twice in one
    mapping: PyYAML keeps the last silently, so a second ``train:`` would drop the first."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    """SafeLoader's mapping constructor, after checking no key occurs twice (raises a
    ``ConstructorError`` marking the second, which :func:`read_yaml` reports with its line)."""
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges are not duplicates
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            line = first.get(key)
        except TypeError:  # an unhashable key: SafeLoader says so below
            continue
        if line is not None:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first at line {line}); "
                                                    "keep one of them", key_node.start_mark)
        first[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_overrides(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """Parse ``--set a.b=c`` items; values are read as YAML scalars/lists (``4``, ``1e-3``,
    ``true``, ``[a, b]``), never evaluated as code.

    Raises:
        SpecError: an item without ``=``, with an empty key or an empty part of it (``a..b``).
    """
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write it as dotted.field=value, e.g. --set train.epochs=2")
        if not all(part.strip() for part in key.split(".")):
            raise SpecError(f"--set {item!r}: {key.strip()!r} has an empty part between dots; "
                            "write it as dotted.field=value, e.g. --set train.epochs=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {item!r}: the value is not valid YAML ({exc.problem})") from None
        out.append(([part.strip() for part in key.split(".")], value))
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
    """Read a job file with ``yaml.safe_load``'s loader (no tags, no code), refusing duplicate keys.

    Raises:
        SpecError: missing file or a folder, not UTF-8 text, malformed YAML or a key given twice
            (with line and column), or not a mapping.
    """
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"{p}: is a folder, not a job file; give one of its .yaml files")
    if not p.is_file():
        raise SpecError(f"{p}: no such job file")
    try:
        text = p.read_bytes().decode("utf-8-sig")  # a BOM some editors write is not a field
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); a job file "
                        "is YAML text: re-save it as UTF-8 (iconv -f latin1 -t utf-8), or check the path") from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the job file ({exc.strerror or exc})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
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
        The validated :class:`JobSpec` (``name`` defaults to the file's stem, every run of
        characters other than letters, digits, ``_ . -`` replaced by ``_``).

    Raises:
        SpecError: with one line per problem, each naming the file and the field.
    """
    raw = apply_overrides(read_yaml(path), parse_overrides(overrides))
    # the file's stem, made a folder name: "fashion cnn (v2).yaml" runs as fashion_cnn_v2_
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(path).stem).strip(".") or "sweep")
    return validate_spec(raw, source=str(path), check_data=check_data)


def validate_spec(raw: dict[str, Any], *, source: str = "<spec>", check_data: bool = True) -> JobSpec:
    """Validate a raw job dict (see :func:`load_spec`).

    Raises:
        SpecError: one line per problem.
    """
    _renamed_metric(raw, source)
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
        if err["type"] == "list_type" and isinstance(got, str) and "," in got:  # --set x=a,b
            msg += "; write a list in brackets: [a, b] (quoted in a shell: --set 'x=[a, b]')"
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
    from sweeplab.kit.family import family_names

    if spec.trainable not in family_names():
        return [f"trainable: unknown trainable {spec.trainable!r}; known: {', '.join(family_names())}"]
    fam = spec.family()
    problems = _unknown_fields(spec, fam)
    if problems:
        return problems
    problems = _value_problems(spec, fam)
    problems += _objective_problems(spec, fam, ready=not problems)
    if check_data:
        problems += _data_problems(spec)
    return problems


def _unknown_fields(spec: JobSpec, fam: Any) -> list[str]:
    """Hyperparameter names under train:, search.space: and search.variants that the family lacks."""
    fields = fam.Config.model_fields
    known = ", ".join(sorted(fields))
    problems = [f"train.{key}: {spec.trainable} has no hyperparameter {key!r}; known: {known}"
                for key in spec.train if key not in fields]
    for key in spec.search.space:
        if key not in fields:
            problems.append(f"search.space.{key}: {spec.trainable} has no hyperparameter {key!r}; known: {known}")
        elif key in spec.train:
            problems.append(f"search.space.{key}: also fixed under train.{key}; keep only one of them")
    for i, var in enumerate(spec.search.variants):
        problems += [f"search.variants[{i}].{key}: {spec.trainable} has no hyperparameter {key!r}"
                     for key in var if key != "name" and key not in fields]
    return problems


def _config_errors(spec: JobSpec, fam: Any, values: dict[str, Any]) -> list[tuple[str, str]]:
    """``(hyperparameter, "name: problem")`` for each error of the family's Config on ``train``
    updated with ``values``; the hyperparameter is ``""`` for a check across fields."""
    try:
        fam.Config.model_validate({**spec.train, **values})
    except ValidationError as exc:
        errs = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "missing":
                errs.append((key, f"{key} is required by {spec.trainable} (set it under train: or search.space:)"))
            elif key:
                errs.append((key, f"{key}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"))
            else:  # a check across fields: its input is every field
                errs.append((key, err["msg"].removeprefix("Value error, ")))
        return [(key.split(".")[0], msg) for key, msg in errs]
    return []


def _value_problems(spec: JobSpec, fam: Any) -> list[str]:
    """The fixed values, then each end of every range and each categorical value, and each
    variant, validated by the family's Config. Each problem is reported under the field that
    holds the value (``train.X``, ``search.space.X``, ``search.variants[i]``), whatever else
    is wrong at the same time; a problem across fields only when nothing else is."""
    probe_values: dict[str, list[Any]] = {
        key: list(p.values) if isinstance(p, CategoricalParam) else [p.low, p.high]  # type: ignore[union-attr]
        for key, p in spec.search.space.items()}
    defaults = {k: v[0] for k, v in probe_values.items()}
    base = _config_errors(spec, fam, defaults)
    problems = [f"train.{msg}" for key, msg in base if key in spec.train and key not in probe_values]
    for key, values in probe_values.items():
        for v in values:
            # a cross-field error counts here only if this value, not the first ones, brings it
            errs = [msg for k, msg in _config_errors(spec, fam, {**defaults, key: v})
                    if k == key or (not k and (k, msg) not in base)]
            if errs:
                problems.append(f"search.space.{key}: " + "; ".join(errs))
                break
    for i, var in enumerate(spec.search.variants):
        values = {k: v for k, v in var.items() if k != "name"}
        errs = [msg for k, msg in _config_errors(spec, fam, {**defaults, **values})
                if k in values or (not k and (k, msg) not in base)]
        if errs:
            problems.append(f"search.variants[{i}] ({var['name']}): " + "; ".join(errs))
    if not problems and base:  # missing fields, checks across fields
        problems.append("; ".join(f"train.{msg}" if key else f"train: {msg}" for key, msg in base))
    return problems


def _objective_problems(spec: JobSpec, fam: Any, *, ready: bool) -> list[str]:
    """The objectives and their modes, the scheduler, checkpoints by score, resources, mixed
    precision and the hypotheses."""
    from sweeplab.spec.hypotheses import hypothesis_problems

    problems: list[str] = []
    table = fam.metric_table()
    modes = spec.mode if isinstance(spec.mode, list) else [spec.mode] * len(spec.objectives())
    for metric, mode in zip(spec.objectives(), modes):
        if metric not in table:
            problems.append(f"metric: {spec.trainable} does not report {metric!r}; "
                            f"it reports: {', '.join(sorted(table))}")
        elif mode is None and table[metric].mode is None:
            problems.append(f"metric: {metric!r} ({table[metric].description}) has no better "
                            "direction; say which you want with mode: min or mode: max")
    problems += _scheduler_problems(spec, ready=ready and not problems)
    problems += _sampler_problems(spec)
    if spec.checkpoint.score is not None:
        score = spec.checkpoint.score
        if score not in table:
            problems.append(f"checkpoint.score: {spec.trainable} does not report {score!r}; "
                            f"it reports: {', '.join(sorted(table))}")
        elif score not in spec.objectives() and table[score].mode is None:
            problems.append(f"checkpoint.score: {score!r} has no better direction; score by an objective")
    if spec.resources.gpu > 1 and spec.resources.gpu != int(spec.resources.gpu):
        problems.append(f"resources.gpu: {spec.resources.gpu} GPUs: use a fraction below 1 or a whole number")
    if not fam.supports_amp and _may_set(spec, "amp", True):
        problems.append(f"train.amp: {spec.trainable} has no mixed-precision path (it would train in float32 "
                        "and say nothing); remove amp: true")
    if ready and not problems:
        problems += hypothesis_problems(spec, fam)
    return problems


def _scheduler_problems(spec: JobSpec, *, ready: bool) -> list[str]:
    """Early stopping against repeats and several objectives; ASHA's grace period against max_t."""
    sched = spec.scheduler
    problems = []
    if spec.repeats > 1 and sched.type != "none":
        name = "ASHA" if sched.type == "asha" else f"the {sched.type} scheduler"
        problems.append(f"repeats: {name} would stop the seeds of one configuration at different budgets, "
                        "so their mean ± std would mix budgets; set scheduler: {type: none} or repeats: 1")
    if sched.type == "hyperband" and spec.search.max_concurrent is not None:
        problems.append("search.max_concurrent: Ray's synchronous HyperBand pauses trials until their whole bracket "
                        "has reached a rung, and paused trials count against the limit, so a limit below a bracket "
                        "deadlocks the sweep; remove max_concurrent (resources.cpu bounds the trials at once) or use "
                        "scheduler: {type: asha}, the asynchronous variant")
    if spec.multi_objective and sched.type != "none":
        problems.append(f"scheduler: {sched.type} ranks trials on one metric at each rung, which cannot rank a "
                        f"Pareto front of {', '.join(spec.objectives())}; set scheduler: {{type: none}} for a "
                        "multi-objective job")
    if sched.type == "asha" and ready and not problems:
        max_t = spec.max_iterations()
        if sched.grace_period > max_t:
            problems.append(f"scheduler.grace_period: {sched.grace_period} is above max_t={max_t} "
                            "(the iterations a trial runs); lower it")
    return problems


def _sampler_problems(spec: JobSpec) -> list[str]:
    """Samplers that cannot take several objectives."""
    if spec.multi_objective and spec.search.sampler == "cmaes":
        return ["search.sampler: cmaes optimises one objective; for several use nsga2, tpe, gp, qmc or random"]
    return []


def _may_set(spec: JobSpec, key: str, value: Any) -> bool:
    """True if some trial of the job can run with hyperparameter ``key`` equal to ``value``."""
    p = spec.search.space.get(key)
    return (spec.train.get(key) == value or any(v.get(key) == value for v in spec.search.variants)
            or (isinstance(p, CategoricalParam) and value in p.values))


def _data_problems(spec: JobSpec) -> list[str]:
    """The dataset is registered, its root exists when it needs one, data_seed only for generators."""
    from sweeplab.datasets.base import dataset_info, dataset_names

    if spec.data.name not in dataset_names():
        return [f"data.name: unknown dataset {spec.data.name!r}; known: {', '.join(dataset_names())}"]
    info = dataset_info(spec.data.name)
    root = spec.data.resolved_root()
    problems = []
    if info.needs_root and root is None:
        problems.append(f"data.root: dataset {spec.data.name!r} needs the folder that holds its files")
    elif info.needs_root and root.exists() and not root.is_dir():
        problems.append(f"data.root: {str(root)!r} is a file; give the folder that holds the dataset's files")
    elif info.needs_root and not root.is_dir() and not spec.data.download:
        problems.append(f"data.root: {str(root)!r} does not exist; fill it with "
                        "shared/data/materialize.sh, fix the path (--set data.root=...), "
                        "or set data.download: true where there is internet")
    if spec.data.data_seed and not info.seeded:
        problems.append(f"data.data_seed: dataset {spec.data.name!r} is read from files, not generated; remove "
                        "data_seed (data.subset_seed picks subsets and the validation split)")
    return problems


def _renamed_metric(raw: dict[str, Any], source: str) -> None:
    """Map an objective named before the metric convention (a family's ``renamed``) to its
    current name, so sweep folders and job files written before the rename still load."""
    import logging

    from sweeplab.kit.family import family_names, get_family

    name, metric = raw.get("trainable"), raw.get("metric")
    if not isinstance(name, str) or not isinstance(metric, str) or name not in family_names():
        return
    fam = get_family(name)
    if metric in fam.renamed and metric not in fam.metric_table():
        raw["metric"] = fam.renamed[metric]
        logging.getLogger(__name__).warning("%s: metric %r is now named %r (the metric convention); reading "
                                            "it as %r", source, metric, raw["metric"], raw["metric"])
