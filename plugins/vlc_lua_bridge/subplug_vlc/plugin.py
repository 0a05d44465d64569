"""Hook implementations of subplug_vlc, registered through the ``subplug`` entry-point group."""

from __future__ import annotations
