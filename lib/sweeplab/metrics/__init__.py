"""Metrics as plain functions on tensors/arrays, each with its definition and source.

``classification``: accuracy. ``vae``: the DERP-VAE metrics (``../shared/specs/derp_vae.md``).
``clustering``: NMI, cluster accuracy, active clusters (``../shared/specs/variational_mnist.md``).
"""
