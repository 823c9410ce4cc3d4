"""Fault injection, for testing sweeps' fault tolerance (locally and on real clusters)."""
from __future__ import annotations

from typing import Any

#: Environment variable read by the driver (``sweeplab run`` / ``resume``) and handed to every
#: trial: ``KIND@ITERATION[:KEY=VALUE[,KEY=VALUE...]]`` rules separated by ``;``.
FAULT_ENV = "SWEEPLAB_FAULT_INJECT"
FAULT_KINDS = ("raise", "nan", "exit")


class InjectedFault(RuntimeError):
    """The error a ``raise`` rule of ``SWEEPLAB_FAULT_INJECT`` raises inside a trial."""


def parse_fault_rules(text: str | None) -> list[tuple[str, int, dict[str, str]]]:
    """Parse ``SWEEPLAB_FAULT_INJECT``: faults injected into matching trials, for testing.

    Each rule is ``KIND@ITERATION[:KEY=VALUE,...]``; rules are separated by ``;``.

    * ``raise@2``: the trial raises :class:`InjectedFault` in its 2nd iteration (1-based, Ray's
      ``training_iteration``), after training and before reporting (Ray Tune retries it up to
      ``failure.max_failures`` times from its last checkpoint, then marks it errored).
    * ``nan@1``: the training loss of iteration 1 is reported as NaN (the trial is "diverged").
    * ``exit@3``: the trial's worker process dies at once (``os._exit``), like an OOM kill.
    * ``:norm=batch,variant=big``: only trials whose config has these values (compared as text).

    Returns:
        ``[(kind, iteration, {key: value})]``.

    Raises:
        ValueError: a malformed rule (the message shows the expected form).
    """
    rules = []
    for raw in (text or "").split(";"):
        rule = raw.strip()
        if not rule:
            continue
        head, _, cond = rule.partition(":")
        kind, at, it = head.partition("@")
        match: dict[str, str] = {}
        for item in filter(None, (c.strip() for c in cond.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                kind = ""  # malformed condition
                break
            match[key.strip()] = value.strip()
        if kind.strip() not in FAULT_KINDS or not at or not it.strip().isdigit() or int(it) < 1:
            raise ValueError(f"{FAULT_ENV}: {rule!r} is not KIND@ITERATION[:KEY=VALUE,...] with KIND one of "
                             f"{', '.join(FAULT_KINDS)} and ITERATION >= 1 (e.g. raise@2:norm=batch)")
        rules.append((kind.strip(), int(it), match))
    return rules


def fault_for(rules: list[tuple[str, int, dict[str, str]]], config: dict[str, Any],
               iteration: int) -> str | None:
    """The fault kind to inject in 1-based ``iteration`` of the trial with ``config``, if any."""
    for kind, at, match in rules:
        if at == iteration and all(str(config.get(k)) == v for k, v in match.items()):
            return kind
    return None
