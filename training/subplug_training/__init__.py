"""subplug_training: reproduce, evaluate and install the English/Mongolian LoRA adapter.

A subplug plugin package: it adds ``subplug train`` and ``subplug eval``. The pieces are
usable on their own:

* :mod:`~subplug_training.recipe`: the readable TOML recipes (``recipes/``).
* :mod:`~subplug_training.data`: the four public sources and our JSON-lines manifest,
  the seed's splits, bad rows counted and reported.
* :mod:`~subplug_training.instructions`: which instruction each sample gets, and its target.
* :mod:`~subplug_training.collator`: chat template with audio, completion-only labels.
* :mod:`~subplug_training.lora`: the LoRA configuration.
* :mod:`~subplug_training.trainer`: the transformers ``Trainer`` run, resume, cache install.
* :mod:`~subplug_training.evaluation`: WER/CER, BLEU/chrF++ per instruction, reports.

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations
