"""One module a model family: ``<name>.py`` registers the family ``<name>``
(:func:`sweeplab.kit.family.register_family`). Modules are imported on demand by
:func:`sweeplab.kit.family.get_family`, never all at once."""
