"""Helpers for subplug's tests and for plugin authors.

* :class:`FakeBackend` / :class:`FakeBackendPlugin`: a deterministic backend needing no
  model, registered as a real plugin.
* :func:`build_tiny_model`: a tiny random Gemma 3n with a real processor, built offline
  (``python -m subplug.testing tiny-model DIR``).
* :func:`speech_clip`: real speech synthesised with espeak-ng.

Importing this package does not import torch.
"""

from __future__ import annotations

from subplug.testing.fake import FakeBackend, FakeBackendPlugin, fake_answer

__all__ = ["FakeBackend", "FakeBackendPlugin", "fake_answer"]
