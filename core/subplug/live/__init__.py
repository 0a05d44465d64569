"""Streaming mode: raw PCM in, caption events (JSON lines) out. Used by the OBS filter.

::

    stdin ──reader thread──▶ input buffer (bounded; oldest audio dropped on overflow)
          ──segmenter thread: downmix, resample to 16 kHz, silero-vad──▶ utterances
          ──backlog (drop what is too old, merge what waits)──▶ model thread
          ──▶ one ``caption`` line per utterance on stdout

The producer is never blocked: the reader thread always drains stdin. When the model is
slower than speech, utterances queue in the backlog; the model thread then merges every
waiting utterance that fits into one request (``merged``) and drops those that ended
more than ``max_lag`` seconds before the newest input (``dropped``, ``dropped_seconds``),
so captions never fall ever further behind. Several merged groups that wait go to the
model together as one batch (up to the backend's batch size), each its own caption: on a
CPU a batch of 8 decodes in about 1.6 times the time of one, so a busy stream is worked
off several times faster than one group at a time. Times in events are on the input clock:
seconds of audio read since the stream started. The event contract is docs/live.md.

The modules, each importing only those above it in this list:

* :mod:`~subplug.live.pcm` — sample formats, :class:`PcmDecoder`, :class:`InputBuffer`;
* :mod:`~subplug.live.options` — :class:`LiveOptions` and :func:`validate`;
* :mod:`~subplug.live.utterances` — :class:`UtteranceDetector` (pure) and the
  segmenter that turns PCM into :class:`Utterance` s;
* :mod:`~subplug.live.backlog` — :func:`plan_work` and :func:`merge_chunk` (pure);
* :mod:`~subplug.live.session` — :class:`LiveSession` (threads, events) and
  :func:`run_live`.

The pure parts (:class:`UtteranceDetector`, :func:`plan_work`) are testable without a
model or threads.
"""

from __future__ import annotations

from subplug.live.backlog import MERGE_GAP, WorkPlan, merge_chunk, plan_work
from subplug.live.options import MODEL_LIMIT, SOURCES, LiveOptions, validate
from subplug.live.pcm import PCM_FORMATS, InputBuffer, PcmBlock, PcmDecoder
from subplug.live.session import EventWriter, JsonLines, LiveSession, LiveStats, run_live
from subplug.live.utterances import WINDOW, Utterance, UtteranceDetector, VadSettings

__all__ = [
    "MERGE_GAP",
    "MODEL_LIMIT",
    "PCM_FORMATS",
    "SOURCES",
    "WINDOW",
    "EventWriter",
    "InputBuffer",
    "JsonLines",
    "LiveOptions",
    "LiveSession",
    "LiveStats",
    "PcmBlock",
    "PcmDecoder",
    "Utterance",
    "UtteranceDetector",
    "VadSettings",
    "WorkPlan",
    "merge_chunk",
    "plan_work",
    "run_live",
    "validate",
]
