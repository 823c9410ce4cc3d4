"""Optimizers by name, learning-rate schedules, gradient clipping and parameter counts.

Families mix :class:`OptimizerConfig` and :class:`ScheduleConfig` into their Config (redeclaring
a field changes its default) and call :func:`build_optimizer`, :class:`LRSchedule`,
:func:`clip_gradients` and :func:`count_params` instead of writing their own.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Literal

import torch
from pydantic import BaseModel, Field, model_validator

OptimizerName = Literal["adam", "adamw", "sgd", "adadelta", "rmsprop", "lbfgs"]

#: Learning rate used when ``lr`` is not set: the common default of each optimizer
#: (PyTorch's for Adam, AdamW, Adadelta and LBFGS; Keras' 1e-3 for RMSprop, whose PyTorch
#: default 1e-2 is too large for these nets; 0.05 for SGD with momentum).
DEFAULT_LR: dict[str, float] = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.05, "adadelta": 1.0,
                                "rmsprop": 1e-3, "lbfgs": 1.0}
#: Weight decay used when ``weight_decay`` is not set (AdamW's PyTorch default; 0 otherwise).
DEFAULT_WEIGHT_DECAY: dict[str, float] = {"adamw": 1e-2}


class OptimizerConfig(BaseModel):
    """Optimizer hyperparameters (a mixin for a family's Config)."""

    optimizer: OptimizerName = Field("adam", description="adam | adamw | sgd | adadelta | rmsprop | lbfgs")
    lr: float | None = Field(None, gt=0.0, description="learning rate; default DEFAULT_LR[optimizer]")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (sgd only)")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd only; needs momentum > 0)")
    weight_decay: float | None = Field(
        None, ge=0.0, description="L2 penalty (decoupled for adamw); default 0.01 for adamw, else 0")
    grad_clip: float | None = Field(None, gt=0, description="max global gradient L2 norm; null = off")

    @model_validator(mode="after")
    def _check_nesterov(self) -> "OptimizerConfig":
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0 with optimizer sgd")
        return self

    @property
    def effective_lr(self) -> float:
        """``lr``, or the optimizer's default from :data:`DEFAULT_LR`."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def effective_weight_decay(self) -> float:
        """``weight_decay``, or the optimizer's default from :data:`DEFAULT_WEIGHT_DECAY`."""
        if self.weight_decay is not None:
            return self.weight_decay
        return DEFAULT_WEIGHT_DECAY.get(self.optimizer, 0.0)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig, *,
                    fused: bool = False, lbfgs_max_iter: int = 20) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with ``cfg``'s learning rate and weight decay.

    ``sgd`` uses ``momentum``/``nesterov``; the others use PyTorch's defaults for everything
    else. ``lbfgs`` (full-batch quasi-Newton, ``torch.optim.LBFGS``) needs a closure: step it
    with :func:`optimizer_step`; it takes no weight decay.

    Args:
        params: the parameters to optimise.
        cfg: the optimizer hyperparameters.
        fused: Adam/AdamW's fused kernel (one kernel for all parameters: several times faster
            on CPU for many small tensors); ignored by the other optimizers.
        lbfgs_max_iter: LBFGS iterations per ``step`` (PyTorch's ``max_iter``, default 20; the
            ANN course's optimizer 5 uses 1); ignored by the other optimizers.

    Raises:
        ValueError: an unknown optimizer name, or weight decay with ``lbfgs``.
    """
    lr, wd, name = cfg.effective_lr, cfg.effective_weight_decay, cfg.optimizer
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    if name == "lbfgs":
        if wd:
            raise ValueError("optimizer lbfgs takes no weight_decay; add an L2 term to the loss instead")
        return torch.optim.LBFGS(params, lr=lr, max_iter=int(lbfgs_max_iter), line_search_fn="strong_wolfe")
    raise ValueError(f"unknown optimizer {name!r}")


def optimizer_step(optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One optimisation step of any optimizer of :func:`build_optimizer`.

    Args:
        closure: zeroes the gradients, computes the loss, calls ``backward()`` and returns the
            loss (LBFGS calls it several times per step).

    Returns:
        The loss of the first evaluation (before the step), detached.
    """
    if isinstance(optimizer, torch.optim.LBFGS):
        first: list[torch.Tensor] = []

        def wrapped() -> torch.Tensor:
            loss = closure()
            if not first:
                first.append(loss.detach())
            return loss

        optimizer.step(wrapped)
        return first[0]
    loss = closure()
    optimizer.step()
    return loss.detach()


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> float | None:
    """Clip the global gradient L2 norm to ``max_norm`` (``torch.nn.utils.clip_grad_norm_``);
    ``None`` does nothing. Returns the norm before clipping, or ``None``."""
    if max_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(list(params), max_norm))


def count_params(module: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` by default)."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only))


class ScheduleConfig(BaseModel):
    """Learning-rate schedule hyperparameters (a mixin for a family's Config)."""

    lr_schedule: Literal["none", "plateau", "cosine"] = Field(
        "none", description="plateau: ReduceLROnPlateau once per iteration on the monitored loss; "
                            "cosine: CosineAnnealingLR over the run's optimizer steps")
    lr_warmup_steps: int = Field(0, ge=0, description="optimizer steps of a linear warmup from lr/steps "
                                                      "to lr (LinearLR), before any other schedule")
    plateau_patience: int = Field(1, ge=0, description="iterations without improvement before a cut")
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0, description="lr multiplier at a cut")
    min_lr_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="cosine: final lr as a fraction of lr")


class LRSchedule:
    """The schedule of :class:`ScheduleConfig` on one optimizer, from ``torch.optim.lr_scheduler``.

    Warmup (``LinearLR``) and cosine (``CosineAnnealingLR``, chained by ``SequentialLR``) step
    after every optimizer step: :meth:`after_step`. The plateau schedule
    (``ReduceLROnPlateau``) steps once per iteration on a monitored loss: :meth:`after_iteration`.
    With warmup, step ``k < lr_warmup_steps`` uses ``lr · (k + 1) / lr_warmup_steps``.

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        cfg: the schedule hyperparameters.
        total_steps: optimizer steps of the whole run (needed by ``cosine``).

    Raises:
        ValueError: ``cosine`` without ``total_steps`` above the warmup.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int | None = None):
        from torch.optim import lr_scheduler as S

        self.optimizer = optimizer
        per_step: list[Any] = []
        warm = cfg.lr_warmup_steps
        if warm > 1:
            per_step.append(S.LinearLR(optimizer, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1))
        if cfg.lr_schedule == "cosine":
            if not total_steps or total_steps <= warm:
                raise ValueError(f"lr_schedule cosine needs more optimizer steps ({total_steps}) than "
                                 f"lr_warmup_steps ({warm})")
            base = optimizer.param_groups[0]["initial_lr"] if "initial_lr" in optimizer.param_groups[0] \
                else optimizer.param_groups[0]["lr"]
            per_step.append(S.CosineAnnealingLR(optimizer, T_max=total_steps - warm,
                                                eta_min=base * cfg.min_lr_fraction))
        if len(per_step) == 2:
            self.per_step: Any = S.SequentialLR(optimizer, per_step, milestones=[warm - 1])
        else:
            self.per_step = per_step[0] if per_step else None
        self.plateau = (S.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                            patience=cfg.plateau_patience)
                        if cfg.lr_schedule == "plateau" else None)

    @property
    def current_lr(self) -> float:
        """The learning rate the next step uses (of the first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def after_step(self) -> None:
        """Advance the per-step schedules (call after every ``optimizer.step()``)."""
        if self.per_step is not None:
            self.per_step.step()

    def after_iteration(self, monitored: float) -> None:
        """Step the plateau schedule on ``monitored`` (a validation loss where there is one,
        never a test loss)."""
        if self.plateau is not None:
            self.plateau.step(monitored)

    def state_dict(self) -> dict[str, Any]:
        """The schedulers' states (for checkpoints)."""
        return {"per_step": None if self.per_step is None else self.per_step.state_dict(),
                "plateau": None if self.plateau is None else self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if self.per_step is not None and state.get("per_step") is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
