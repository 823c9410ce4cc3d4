"""``python -m sweeplab.cli``: the same as the ``sweeplab`` command."""
import os
import sys

from sweeplab.cli import main

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
