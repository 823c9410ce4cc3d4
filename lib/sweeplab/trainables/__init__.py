"""Every module in this package is imported here, so that its registrations take effect.

Adding a new module to `sweeplab/trainables/` is enough for it to be found by name.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
