"""Hook implementations of subplug_obs, registered through the ``subplug`` entry-point group."""

from __future__ import annotations
