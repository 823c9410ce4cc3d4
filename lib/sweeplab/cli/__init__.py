"""The ``sweeplab`` command: run, resume, validate, table, best, plot, compare, verdicts, info, report,
dashboard.

Every user error (bad job file, missing data, unknown sweep) prints one ``sweeplab: error:``
block naming the file/field and the fix, and exits with status 2; no stack trace.

Layout: :mod:`.parser` (the arguments), :mod:`.running` (run, resume, validate),
:mod:`.reading` (the commands that read sweep folders), :mod:`.dashboard` (Optuna's dashboard).
Nothing heavy is imported here.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from sweeplab.cli.parser import EXIT_USAGE, build_parser

__all__ = ["EXIT_USAGE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sweeplab`` command; returns the exit status.

    Arguments are parsed before anything heavy is imported: ``--help`` and usage errors answer
    at once, and ``validate`` imports only the job's own family (torch), never Ray.
    """
    args = build_parser().parse_args(argv)
    from sweeplab.datasets.base import DatasetError
    from sweeplab.runner import SweepError
    from sweeplab.spec import SpecError

    try:
        return _dispatch(args)
    except (SpecError, SweepError, DatasetError) as exc:
        print(f"sweeplab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:  # unknown trainable looked up outside the spec
        print(f"sweeplab: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `sweeplab info PATH | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside the trials (Ray Tune handles it during them)
        print(f"sweeplab: interrupted (Ctrl-C) during {args.command}", file=sys.stderr)
        return 128 + 2  # the shell's status for a process ended by SIGINT


def _dispatch(args: argparse.Namespace) -> int:
    from sweeplab.cli import dashboard, reading, running

    handlers = {"validate": running.validate, "run": running.run, "resume": running.resume,
                "table": reading.table, "best": reading.best, "plot": reading.plot, "compare": reading.compare,
                "verdicts": reading.verdicts, "info": reading.info, "report": reading.report,
                "dashboard": dashboard.dashboard}
    return handlers[args.command](args)
