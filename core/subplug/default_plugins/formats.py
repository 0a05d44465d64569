"""Default formats plugin."""

from __future__ import annotations
