"""``python -m etl.testing``: the simulated API as its own process (see ``etl.testing._cli``)."""

import sys

from etl.testing._cli import main

sys.exit(main())
