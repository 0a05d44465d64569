"""Gemma 3n backend (transformers + peft). Heavy imports happen inside the factory."""

from __future__ import annotations
