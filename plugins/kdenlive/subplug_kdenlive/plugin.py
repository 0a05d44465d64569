"""Hook implementations of subplug_kdenlive, registered through the ``subplug`` entry-point group."""

from __future__ import annotations
