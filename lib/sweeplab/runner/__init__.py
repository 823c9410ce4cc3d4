"""From a validated job to a Ray Tune sweep, and back (resume).

``run``: :func:`run_sweep` and :func:`resume_sweep`, the only code that builds a ``Tuner``.
``search``: samplers (Optuna, grids) and the ASHA scheduler. ``folder``: the sweep folder (job
file, locating sweeps, storage paths). ``data``: the dataset, read once in the driver.
``cluster``: starting or attaching to Ray, resource and storage checks. ``repairs``:
workarounds of Ray bugs on what Ray saved, pinned to one Ray minor version.

Every name below stays importable from ``sweeplab.runner`` (saved searcher states pickle
``sweeplab.runner.DefineByRunSpace``). Importing this package imports neither Ray nor torch.
"""
from sweeplab.runner.cluster import (check_resources, check_storage, init_ray, launchable_node_resources,
                                     prefer_loopback, ray_temp_root)
from sweeplab.runner.data import prepare_data
from sweeplab.runner.folder import (JOB_FILE, SweepError, default_storage_path, experiment_path, locate_sweep,
                                    read_job, resolve_storage, save_job)
from sweeplab.runner.repairs import (RAY_REPAIRS_VERSION, recover_driver_artifacts, record_lost_errors,
                                     repair_stale_checkpoints)
from sweeplab.runner.run import fault_injection, make_trainable, resume_sweep, run_sweep
from sweeplab.runner.search import DefineByRunSpace, build_scheduler, build_search

__all__ = ["DefineByRunSpace", "JOB_FILE", "RAY_REPAIRS_VERSION", "SweepError", "build_scheduler", "build_search",
           "check_resources", "check_storage", "default_storage_path", "experiment_path", "fault_injection",
           "init_ray", "launchable_node_resources", "locate_sweep", "make_trainable", "prefer_loopback",
           "prepare_data", "ray_temp_root", "read_job", "record_lost_errors", "recover_driver_artifacts",
           "repair_stale_checkpoints", "resolve_storage", "resume_sweep", "run_sweep", "save_job"]
