"""Hook implementations of subplug_training, registered through the ``subplug`` entry-point group."""

from __future__ import annotations
