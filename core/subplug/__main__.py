"""``python -m subplug`` runs the command line."""

from __future__ import annotations

import sys

from subplug.cli import main

sys.exit(main())
