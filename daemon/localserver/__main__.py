"""`python -m daemon.localserver`: run the local SpeechKit-compatible server (see cli)."""

from __future__ import annotations

import sys

from daemon.localserver import cli

sys.exit(cli.main())
