"""Deprecated location of the simulated OpenPhone API, kept for one release.

Everything moved to ``etl.testing`` (import from there); ``python -m etl.simulator``
still works and is ``python -m etl.testing``.
"""

import sys

from etl.testing import (
    API_PATH_PREFIX,
    STATUSES,
    FakeOpenPhone,
    Faults,
    Quirks,
    main,
    sample_summary,
    serve,
)

__all__ = ["API_PATH_PREFIX", "STATUSES", "FakeOpenPhone", "Faults", "Quirks", "main", "sample_summary", "serve"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m etl.simulator"))
