"""The job spec: one YAML file a sweep, validated before Ray starts.

``load_spec(path, overrides)`` reads a job file with a safe YAML loader, applies dotted
``--set`` overrides, and returns a :class:`JobSpec` whose every field has been checked against
the registered model family (its hyperparameters and metrics) and dataset. Every problem becomes
one :class:`SpecError` line that names the file, the field, the bad value and what is allowed.
Nothing in a spec is ever evaluated as code. Every field: ``docs/job-spec.md``.

``space``: the search space; ``job``: the sections and :class:`JobSpec`; ``load``: reading and
checking.
"""
from sweeplab.spec.job import (CheckpointSpec, DataSpec, FailureSpec, JobSpec, LoggingSpec, ResourcesSpec,
                               SchedulerSpec)
from sweeplab.spec.load import SpecError, apply_overrides, load_spec, parse_overrides, read_yaml, validate_spec
from sweeplab.spec.space import (CategoricalParam, FloatParam, IntParam, Param, SearchSpec, _condition_holds,
                                 condition_holds)

__all__ = ["CategoricalParam", "CheckpointSpec", "DataSpec", "FailureSpec", "FloatParam", "IntParam", "JobSpec",
           "LoggingSpec", "Param", "ResourcesSpec", "SchedulerSpec", "SearchSpec", "SpecError", "apply_overrides",
           "condition_holds", "load_spec", "parse_overrides", "read_yaml", "validate_spec", "_condition_holds"]
