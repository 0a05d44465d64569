"""Jobs of many files: subtitling a folder, a glob or a manifest of an archive.

* :mod:`~subplug.jobs.inputs` turns folders, globs and manifests into :class:`JobFile` s
  (each with its output folder and per-file options);
* :mod:`~subplug.jobs.done` remembers finished files, so a rerun skips them;
* :mod:`~subplug.jobs.batching` runs the job on one machine: files are decoded and
  planned ahead in worker threads while the model takes batches of chunks from many
  files (cross-file batching);
* :mod:`~subplug.jobs.cluster` runs the same job on a Ray cluster (``--ray``);
* :mod:`~subplug.jobs.report` keeps one row per file (done, skipped, failed) and writes
  the ``--report`` file; :mod:`~subplug.jobs.display` shows the whole job as one bar.

Nothing here imports torch or ray at import time.
"""
