"""The shared training kit every family uses instead of its own copy.

``family``: the :class:`ModelFamily` base class and the registry. ``loop``: the one Ray Tune
trial loop (``run_trial``). ``optim``: optimizers by name, learning-rate schedules, gradient
clipping, parameter counts. ``evaluation``: evaluation cadence and evaluation seeds.
``tensors``: the tensor batch path (no DataLoader). ``checkpoint``: atomic, weights-only
checkpoints. ``device``: CPU/GPU placement and mixed precision. ``faults``: fault injection for
testing fault tolerance. ``media``: TensorBoard image grids.

Nothing here is imported by ``import sweeplab``: the CLI's ``--help`` and ``validate`` stay fast.
"""
