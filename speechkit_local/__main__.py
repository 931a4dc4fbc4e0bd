"""`python -m speechkit_local`: run the local SpeechKit-compatible server (see cli)."""

from __future__ import annotations

import sys

from speechkit_local import cli

sys.exit(cli.main())
