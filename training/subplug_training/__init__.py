"""subplug_training: reproduce, evaluate and install the English/Mongolian LoRA adapter.

A subplug plugin package: it adds ``subplug train`` and ``subplug eval``. The pieces are
usable on their own:

* :mod:`~subplug_training.recipe`: the readable TOML recipes (``recipes/``).
* :mod:`~subplug_training.data`: the four public sources and our JSON-lines manifest,
  the seed's splits, bad rows counted and reported.
* :mod:`~subplug_training.instructions`: which instruction each sample gets, and its target.
* :mod:`~subplug_training.collator`: chat template with audio, completion-only labels.
* :mod:`~subplug_training.lora`: the LoRA configuration.
* :mod:`~subplug_training.data_check`: every row checked, the samples planned, the report.
* :mod:`~subplug_training.batch`: the recipe's effective batch over any number of processes.
* :mod:`~subplug_training.distributed`: the processes of a run (torchrun, accelerate launch).
* :mod:`~subplug_training.run_folder`: run.json, checkpoints, finished runs, what is kept.
* :mod:`~subplug_training.progress`: the progress display (a bar, or plain lines in logs).
* :mod:`~subplug_training.trainer`: the transformers ``Trainer`` run, resume, cache install.
* :mod:`~subplug_training.preview`: ``--print-recipe`` and ``--dry-run``.
* :mod:`~subplug_training.evaluation`: WER/CER, BLEU/chrF++ per instruction, reports.

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations
