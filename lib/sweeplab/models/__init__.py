"""PyTorch modules of the model families (no training code here: see ``sweeplab.families``)."""
