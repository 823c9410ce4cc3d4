"""The sweep's data: read once in the driver, handed to every trial through Ray's object store."""
from __future__ import annotations

from sweeplab.spec import JobSpec, SpecError


def prepare_data(spec: JobSpec):
    """Read (or generate, from ``data.data_seed``) the job's dataset once and cut it as ``data:``
    says (subset, validation split, both from ``data.subset_seed``).

    Returns:
        The :class:`~sweeplab.datasets.base.DataBundle` every trial receives.

    Raises:
        DatasetError: unreadable data; SpecError: data the family cannot use, or an objective
        measured on a validation split (``val_*``) when the data has none.
    """
    from sweeplab.datasets.base import load_dataset

    d = spec.data
    bundle = load_dataset(d.name, d.resolved_root(), download=d.download, options=d.options,
                          data_seed=d.data_seed)
    bundle = bundle.subset(d.train_fraction, d.test_fraction, seed=d.subset_seed)
    if d.val_fraction > 0 and bundle.x_val is None:
        bundle = bundle.split_validation(d.val_fraction, seed=d.subset_seed)
    _check_validation_split(spec, bundle)
    try:
        spec.family().check_data(bundle, spec.family_config())
    except ValueError as exc:
        raise SpecError(f"data: {spec.trainable} cannot use dataset {d.name!r}: {exc}") from None
    return bundle


def _check_validation_split(spec: JobSpec, bundle) -> None:
    """Refuse a ``val_*`` objective or checkpoint score on data without a validation split: Ray
    would stop the sweep at the first result with a traceback.

    Raises:
        SpecError: naming the metric and the two ways to fix it.
    """
    if bundle.x_val is not None:
        return
    wanted = list(spec.objectives()) + ([spec.checkpoint.score] if spec.checkpoint.score else [])
    for metric in wanted:
        if metric.startswith("val_"):
            raise SpecError(f"metric: {metric!r} is measured on a validation split, but dataset "
                            f"{spec.data.name!r} has none here; set data.val_fraction (e.g. 0.1) or "
                            "optimise a train_/test_ metric")
