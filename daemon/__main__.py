"""`python -m daemon` is the same as the `speechkit-watch` console script."""

from __future__ import annotations

import sys

from daemon import cli

sys.exit(cli.main())
