"""EN/MN Subtitles (subplug): an OBS audio filter that shows live English and Mongolian
captions.

Load this file in OBS with Tools → Scripts → "+", then add the filter "EN/MN Subtitles
(subplug)" to any audio source (its Filters → "+"). ``subplug install obs`` puts this file
and its config (``subplug_obs.json``: the command that runs ``subplug``) in one folder.

How it works: OBS's Python scripting cannot register sources, so the filter is
registered through libobs' C ABI with ctypes (``obs_register_source_s`` with a
``struct obs_source_info`` declared up to ``filter_audio`` and passed with its size, the
ABI libobs keeps for plugins built against older headers). Each filter instance copies
the audio OBS hands it into a bounded queue (the audio thread never waits) and a writer
thread streams it as 32-bit float PCM to a ``subplug live`` child process. The child's
caption events (JSON lines, docs/live.md) go to the two chosen text sources and, for
English, to the stream as CEA-608 captions (which cannot carry Cyrillic). A child that
dies is restarted with back-off, and the failure is shown in the English text source.

This file runs inside OBS's own Python: standard library and ctypes only.
"""

from __future__ import annotations

import array
import collections
import contextlib
import ctypes
import ctypes.util
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import types

try:  # present inside OBS only; the pure helpers below are testable without it
    import obspython  # noqa: F401
except ImportError:
    obspython = None

SCRIPT_VERSION = "0.1.0"
FILTER_ID = "subplug_en_mn_filter"
FILTER_NAME = "EN/MN Subtitles (subplug)"
CONFIG_NAME = "subplug_obs.json"

#: Audio blocks (OBS hands ~1024 frames, 21 ms, per call) held for the writer: ~10 s.
AUDIO_QUEUE_BLOCKS = 480
#: No audio for this long (source stopped or hidden): send silence so utterances end.
SILENCE_AFTER = 0.5
MIN_SHOW = 2.0
MAX_SHOW = 10.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
HEALTHY_AFTER = 30.0
LINE_WIDTH = 42

OBS_SOURCE_TYPE_FILTER = 1
OBS_SOURCE_AUDIO = 1 << 1
OBS_COMBO_TYPE_LIST = 2
OBS_COMBO_FORMAT_STRING = 3
OBS_TEXT_DEFAULT = 0
OBS_TEXT_INFO = 3
LOG_ERROR, LOG_WARNING, LOG_INFO = 100, 200, 300
MAX_AV_PLANES = 8

SETTING_DEFAULTS = {
    "model": "",
    "translator": "",
    "source": "auto",
    "backend": "auto",
    "device": "auto",
    "en_source": "",
    "mn_source": "",
}
ENGINE_KEYS = ("model", "translator", "source", "backend", "device")

# ------------------------------------------------------------------ pure helpers


def interleave(planes, channels):
    """Planar float32 planes (bytes, one per channel) → interleaved float32 bytes."""
    if channels == 1:
        return bytes(planes[0])
    frames = len(planes[0]) // 4
    out = array.array("f", bytes(4 * frames * channels))
    for index, plane in enumerate(planes[:channels]):
        samples = array.array("f")
        samples.frombytes(plane[: 4 * frames])
        out[index::channels] = samples
    return out.tobytes()


def wrap(text, width=LINE_WIDTH):
    """Caption text broken into lines of at most ``width`` characters."""
    words = " ".join(str(text or "").split())
    return "\n".join(textwrap.wrap(words, width, break_on_hyphens=False)) if words else ""


def show_seconds(event):
    """How long a caption stays on screen: its speech duration, within limits."""
    try:
        duration = float(event["end"]) - float(event["start"])
    except (KeyError, TypeError, ValueError):
        duration = MIN_SHOW
    return max(MIN_SHOW, min(MAX_SHOW, duration))


def load_config(folder):
    """The config ``subplug install obs`` wrote next to this script (or defaults)."""
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        config = {}
    command = config.get("command")
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        config["command"] = ["subplug"]
    return config


def engine_command(config, settings, rate, channels):
    """The ``subplug live`` command line for a filter's settings."""
    command = list(config["command"]) + [
        "live",
        "--format", "f32le",
        "--rate", str(int(rate)),
        "--channels", str(int(channels)),
        "--source", settings.get("source") or "auto",
        "--backend", settings.get("backend") or "auto",
        "--device", settings.get("device") or "auto",
    ]  # fmt: skip
    if settings.get("model"):
        command += ["--model", settings["model"]]
    if settings.get("translator"):
        command += ["--translator", settings["translator"]]
    return command


# ------------------------------------------------------------------------- libobs


class obs_audio_data(ctypes.Structure):  # noqa: N801 (libobs' name)
    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_uint8) * MAX_AV_PLANES),
        ("frames", ctypes.c_uint32),
        ("timestamp", ctypes.c_uint64),
    ]


GET_NAME = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
CREATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
DESTROY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
GET_DEFAULTS = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
GET_PROPERTIES = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
UPDATE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
VIDEO_TICK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_float)
FILTER_AUDIO = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
ENUM_PROC = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)


class obs_source_info(ctypes.Structure):  # noqa: N801 (libobs' name)
    """``struct obs_source_info`` (libobs/obs-source.h, OBS 29) up to ``filter_audio``.

    Fields are only ever appended to this struct, and ``obs_register_source_s`` copies
    ``size`` bytes and zeroes the rest, so this prefix is a complete registration."""

    _fields_ = [
        ("id", ctypes.c_char_p),
        ("type", ctypes.c_int),
        ("output_flags", ctypes.c_uint32),
        ("get_name", GET_NAME),
        ("create", CREATE),
        ("destroy", DESTROY),
        ("get_width", ctypes.c_void_p),
        ("get_height", ctypes.c_void_p),
        ("get_defaults", GET_DEFAULTS),
        ("get_properties", GET_PROPERTIES),
        ("update", UPDATE),
        ("activate", ctypes.c_void_p),
        ("deactivate", ctypes.c_void_p),
        ("show", ctypes.c_void_p),
        ("hide", ctypes.c_void_p),
        ("video_tick", VIDEO_TICK),
        ("video_render", ctypes.c_void_p),
        ("filter_video", ctypes.c_void_p),
        ("filter_audio", FILTER_AUDIO),
    ]


_SIGNATURES = {
    "obs_register_source_s": (None, [ctypes.c_void_p, ctypes.c_size_t]),
    "obs_data_get_string": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "obs_data_set_string": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    "obs_data_get_bool": (ctypes.c_bool, [ctypes.c_void_p, ctypes.c_char_p]),
    "obs_data_set_default_string": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    "obs_data_set_default_bool": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool]),
    "obs_data_create": (ctypes.c_void_p, []),
    "obs_data_release": (None, [ctypes.c_void_p]),
    "obs_properties_create": (ctypes.c_void_p, []),
    "obs_properties_add_list": (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int],
    ),
    "obs_property_list_add_string": (
        ctypes.c_size_t,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p],
    ),
    "obs_properties_add_text": (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int],
    ),
    "obs_properties_add_bool": (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p],
    ),
    "obs_property_set_long_description": (None, [ctypes.c_void_p, ctypes.c_char_p]),
    "obs_enum_sources": (None, [ENUM_PROC, ctypes.c_void_p]),
    "obs_source_get_name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "obs_source_get_unversioned_id": (ctypes.c_char_p, [ctypes.c_void_p]),
    "obs_get_source_by_name": (ctypes.c_void_p, [ctypes.c_char_p]),
    "obs_source_release": (None, [ctypes.c_void_p]),
    "obs_source_update": (None, [ctypes.c_void_p, ctypes.c_void_p]),
    "obs_get_audio": (ctypes.c_void_p, []),
    "audio_output_get_channels": (ctypes.c_size_t, [ctypes.c_void_p]),
    "audio_output_get_sample_rate": (ctypes.c_uint32, [ctypes.c_void_p]),
    "obs_output_output_caption_text2": (
        None,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_double],
    ),
    "obs_output_release": (None, [ctypes.c_void_p]),
    "obs_get_version_string": (ctypes.c_char_p, []),
}
_FRONTEND_SIGNATURES = {
    "obs_frontend_get_streaming_output": (ctypes.c_void_p, []),
}


def _open_library(candidates, symbol):
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, symbol):
            return lib
    return None


def bind_libobs():
    """libobs and the frontend API of the running OBS, with their signatures set."""
    libobs = _open_library(
        [
            None,
            "libobs.so.0",
            "libobs.so",
            ctypes.util.find_library("obs"),
            "obs.dll",
            "libobs.framework/libobs",
        ],
        "obs_register_source_s",
    )
    if libobs is None:
        raise OSError("libobs is not loaded in this process (is this OBS?)")
    frontend = _open_library(
        [
            None,
            "libobs-frontend-api.so.0",
            "libobs-frontend-api.so",
            ctypes.util.find_library("obs-frontend-api"),
            "obs-frontend-api.dll",
            "obs-frontend-api.dylib",
        ],
        "obs_frontend_get_streaming_output",
    )
    api = types.SimpleNamespace()
    for table, lib in ((_SIGNATURES, libobs), (_FRONTEND_SIGNATURES, frontend)):
        for name, (restype, argtypes) in table.items():
            if lib is None or not hasattr(lib, name):
                setattr(api, name, None)
                continue
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
            setattr(api, name, function)
    blog = libobs.blog
    blog.restype = None
    api.log = lambda level, message: blog(
        level, b"[subplug] %s", str(message).encode("utf-8", "replace")
    )
    return api


# --------------------------------------------------------------- process state
# Kept in a module of its own in sys.modules: it outlives a reload of this script, so
# the C callbacks registered with libobs (which cannot be unregistered) stay valid and
# dispatch to the newest code.

_STATE_NAME = "_subplug_obs_state"
state = sys.modules.get(_STATE_NAME)
if state is None:
    state = types.ModuleType(_STATE_NAME)
    state.registered = False
    state.callbacks = None
    state.info = None
    state.name = ctypes.create_string_buffer(FILTER_NAME.encode("utf-8"))
    state.handlers = {}
    state.instances = {}
    state.next_id = 1
    state.api = None
    state.lock = threading.Lock()
    sys.modules[_STATE_NAME] = state


def _log(level, message):
    if state.api is not None:
        state.api.log(level, message)
    else:
        print(f"[subplug] {message}", file=sys.stderr)


def _dispatch(name, default):
    def call(*args):
        try:
            return state.handlers[name](*args)
        except Exception as exc:  # never let an exception cross into libobs
            _log(LOG_ERROR, f"{name} failed: {type(exc).__name__}: {exc}")
            return default(*args)

    return call


def _register():
    """Register the filter type once per OBS process."""
    if state.registered:
        return
    callbacks = {
        "get_name": GET_NAME(_dispatch("get_name", lambda *a: ctypes.addressof(state.name))),
        "create": CREATE(_dispatch("create", lambda *a: None)),
        "destroy": DESTROY(_dispatch("destroy", lambda *a: None)),
        "get_defaults": GET_DEFAULTS(_dispatch("get_defaults", lambda *a: None)),
        "get_properties": GET_PROPERTIES(_dispatch("get_properties", lambda *a: None)),
        "update": UPDATE(_dispatch("update", lambda *a: None)),
        "video_tick": VIDEO_TICK(_dispatch("video_tick", lambda *a: None)),
        "filter_audio": FILTER_AUDIO(_dispatch("filter_audio", lambda data, audio: audio)),
    }
    info = obs_source_info()
    state.id_bytes = FILTER_ID.encode("ascii")
    info.id = state.id_bytes
    info.type = OBS_SOURCE_TYPE_FILTER
    info.output_flags = OBS_SOURCE_AUDIO
    for field, callback in callbacks.items():
        setattr(info, field, callback)
    state.callbacks, state.info = callbacks, info
    state.api.obs_register_source_s(ctypes.byref(info), ctypes.sizeof(info))
    state.registered = True
    _log(LOG_INFO, f"registered audio filter {FILTER_NAME!r} (script {SCRIPT_VERSION})")


# ----------------------------------------------------------------- the filter


def _string(api, settings, key):
    value = api.obs_data_get_string(settings, key.encode())
    return value.decode("utf-8", "replace") if value else ""


def read_settings(api, settings):
    """A filter's settings as a plain dict."""
    values = {key: _string(api, settings, key) for key in SETTING_DEFAULTS}
    values["stream_captions"] = bool(api.obs_data_get_bool(settings, b"stream_captions"))
    return values


class CaptionFilter:
    """One instance of the filter on one audio source."""

    def __init__(self, api, source, settings, folder):
        self.api = api
        self.source = source
        self.settings = settings
        self.config = load_config(folder)
        audio = api.obs_get_audio()
        self.channels = int(api.audio_output_get_channels(audio)) or 2
        self.rate = int(api.audio_output_get_sample_rate(audio)) or 48000
        self.audio = queue.Queue(maxsize=AUDIO_QUEUE_BLOCKS)
        self.events = collections.deque()
        self.lock = threading.Lock()
        self.closed = False
        self.proc = None
        self.generation = 0
        self.backoff = BACKOFF_FIRST
        self.restart_at = None
        self.ready_at = None
        self.clear_at = None
        self.last_error = None
        self.stderr_tail = collections.deque(maxlen=20)
        self.dropped_blocks = 0
        self.heard_audio = False
        self.start_engine()
        self.writer = threading.Thread(target=self._write_loop, name="subplug-obs-writer")
        self.writer.daemon = True
        self.writer.start()

    def log(self, level, message):
        """A line in OBS's log (Help → Log Files), prefixed ``[subplug]``."""
        self.api.log(level, message)

    # ------------------------------------------------------------- audio thread

    def filter_audio(self, audio_pointer):
        """Copy the block and return at once (OBS's audio thread must never wait)."""
        audio = ctypes.cast(audio_pointer, ctypes.POINTER(obs_audio_data)).contents
        size = int(audio.frames) * 4
        if size:
            planes = tuple(
                ctypes.string_at(audio.data[c], size) if audio.data[c] else bytes(size)
                for c in range(self.channels)
            )
            try:
                self.audio.put_nowait(planes)
            except queue.Full:
                self.dropped_blocks += 1
        return audio_pointer

    # ----------------------------------------------------------- writer thread

    def _write_loop(self):
        last = time.monotonic()
        while not self.closed:
            try:
                planes = self.audio.get(timeout=0.1)
            except queue.Empty:
                now = time.monotonic()
                if self.heard_audio and now - last >= SILENCE_AFTER:
                    frames = int(min(now - last, 1.0) * self.rate)
                    self._send(bytes(4 * frames * self.channels))
                    last = now
                continue
            self.heard_audio = True
            last = time.monotonic()
            self._send(interleave(planes, self.channels))

    def _send(self, data):
        with self.lock:
            proc = self.proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the reader thread sees the exit and schedules a restart

    # ---------------------------------------------------------- child process

    def start_engine(self):
        """Start ``subplug live`` for the current settings."""
        command = engine_command(self.config, self.settings, self.rate, self.channels)
        with self.lock:
            self.generation += 1
            generation = self.generation
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # Windows
            )
        except OSError as exc:
            self.events.append(
                {
                    "event": "_exit",
                    "generation": generation,
                    "code": None,
                    "message": f"cannot run {command[0]}: {exc.strerror or exc}",
                }
            )
            return
        self.log(LOG_INFO, f"started engine (pid {proc.pid}): {' '.join(command)}")
        with self.lock:
            self.proc = proc
        errors = threading.Thread(target=self._read_stderr, args=(proc, generation))
        errors.daemon = True
        errors.start()
        events = threading.Thread(target=self._read_events, args=(proc, generation, errors))
        events.daemon = True
        events.start()

    def _read_events(self, proc, generation, errors):
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                event["generation"] = generation
                self.events.append(event)
        code = proc.wait()
        errors.join(2.0)  # so the exit is reported with the engine's last words
        self.events.append({"event": "_exit", "generation": generation, "code": code})

    def _read_stderr(self, proc, generation):
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)

    def stop_engine(self, wait=False):
        """Close the child's stdin (it captions what it heard and exits), then make sure
        it is gone, in the background unless ``wait``."""
        with self.lock:
            proc, self.proc = self.proc, None
            self.generation += 1
        if proc is None:
            return

        def finish():
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()

        if wait:
            finish()
        else:
            threading.Thread(target=finish, daemon=True).start()

    # -------------------------------------------------------- graphics thread

    def tick(self):
        """Apply the child's events (text sources, stream captions) and restarts."""
        now = time.monotonic()
        while self.events:
            event = self.events.popleft()
            if event.get("generation") != self.generation:
                continue
            self.handle(event, now)
        if self.restart_at is not None and now >= self.restart_at and not self.closed:
            self.restart_at = None
            self.start_engine()
        if self.clear_at is not None and now >= self.clear_at:
            self.clear_at = None
            self.show("", "")
        if self.ready_at is not None and now - self.ready_at >= HEALTHY_AFTER:
            self.backoff = BACKOFF_FIRST

    def handle(self, event, now):
        kind = event.get("event")
        if kind == "ready":
            self.ready_at = now
            if self.last_error:
                self.last_error = None
                self.show("", "")
            self.log(LOG_INFO, "engine ready")
        elif kind == "caption":
            en, mn = event.get("en") or "", event.get("mn") or ""
            seconds = show_seconds(event)
            self.show(wrap(en), wrap(mn))
            self.clear_at = now + seconds
            if en and self.settings.get("stream_captions"):
                self.stream_caption(en, seconds)
        elif kind == "error":
            error = event.get("error") or {}
            self.last_error = error.get("message") or "unknown error"
            self.log(LOG_WARNING, f"engine error: {self.last_error}")
        elif kind == "dropped":
            self.log(LOG_INFO, f"engine dropped {event.get('seconds')} s ({event.get('reason')})")
        elif kind == "_exit":
            self.engine_exited(event, now)

    def engine_exited(self, event, now):
        with self.lock:
            self.proc = None
        if self.closed:
            return
        self.ready_at = None
        reason = (
            event.get("message")
            or self.last_error
            or (self.stderr_tail[-1] if self.stderr_tail else None)
            or f"exit code {event.get('code')}"
        )
        self.last_error = reason
        delay = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.restart_at = now + delay
        self.log(LOG_WARNING, f"engine stopped ({reason}); restarting in {delay:.0f} s")
        self.show(wrap(f"subplug stopped: {reason} (restarting in {delay:.0f} s)"), "")
        self.clear_at = None

    def show(self, en, mn):
        for key, text in (("en_source", en), ("mn_source", mn)):
            name = self.settings.get(key)
            if name:
                set_text(self.api, name, text)

    def stream_caption(self, text, seconds):
        get_output = self.api.obs_frontend_get_streaming_output
        if get_output is None:
            return
        output = get_output()
        if not output:
            return
        try:
            latin = text.encode("ascii", "ignore")
            self.api.obs_output_output_caption_text2(output, latin, float(seconds))
        finally:
            self.api.obs_output_release(output)

    # ----------------------------------------------------------------- control

    def update(self, settings):
        old, self.settings = self.settings, settings
        if any(old.get(key) != settings.get(key) for key in ENGINE_KEYS):
            self.stop_engine()
            self.backoff = BACKOFF_FIRST
            self.restart_at = None
            self.start_engine()

    def destroy(self):
        self.closed = True
        self.stop_engine()


def set_text(api, name, text):
    """Set the ``text`` of the text source called ``name`` (if it exists)."""
    source = api.obs_get_source_by_name(name.encode("utf-8"))
    if not source:
        return
    data = api.obs_data_create()
    try:
        api.obs_data_set_string(data, b"text", text.encode("utf-8"))
        api.obs_source_update(source, data)
    finally:
        api.obs_data_release(data)
        api.obs_source_release(source)


def text_source_names(api):
    """Names of every text source (FreeType 2, GDI+, Pango…) in the current collection."""
    names = []

    def visit(param, source):
        kind = (api.obs_source_get_unversioned_id(source) or b"").decode()
        if kind.startswith("text"):
            names.append((api.obs_source_get_name(source) or b"").decode("utf-8", "replace"))
        return True

    api.obs_enum_sources(ENUM_PROC(visit), None)
    return sorted(names)


# ------------------------------------------------------------ the C callbacks


def _folder():
    return os.path.dirname(os.path.abspath(__file__))


def _on_create(settings, source):
    instance = CaptionFilter(state.api, source, read_settings(state.api, settings), _folder())
    with state.lock:
        key = state.next_id
        state.next_id += 1
        state.instances[key] = instance
    return key


def _instance(data):
    return state.instances.get(data) if data else None


def _on_destroy(data):
    with state.lock:
        instance = state.instances.pop(data, None) if data else None
    if instance is not None:
        instance.destroy()


def _on_get_defaults(settings):
    api = state.api
    for key, value in SETTING_DEFAULTS.items():
        api.obs_data_set_default_string(settings, key.encode(), value.encode())
    api.obs_data_set_default_bool(settings, b"stream_captions", True)


def _add_list(api, props, key, label, options):
    prop = api.obs_properties_add_list(
        props, key.encode(), label.encode("utf-8"), OBS_COMBO_TYPE_LIST, OBS_COMBO_FORMAT_STRING
    )
    for text, value in options:
        api.obs_property_list_add_string(prop, text.encode("utf-8"), value.encode("utf-8"))


def _describe(api, prop, text):
    """A tooltip for a property (where this libobs has the call)."""
    if prop and api.obs_property_set_long_description is not None:
        api.obs_property_set_long_description(prop, text.encode("utf-8"))


def _on_get_properties(data):
    api = state.api
    props = api.obs_properties_create()
    texts = [("(none)", "")] + [(name, name) for name in text_source_names(api)]
    _add_list(api, props, "en_source", "English text source", texts)
    _add_list(api, props, "mn_source", "Mongolian text source", texts)
    _add_list(
        api, props, "source", "Spoken language",
        [("Detect (English or Mongolian)", "auto"), ("English", "en"), ("Mongolian", "mn")],
    )  # fmt: skip
    model = api.obs_properties_add_text(props, b"model", b"Model", OBS_TEXT_DEFAULT)
    _describe(
        api, model, "A model name from 'subplug models list', or a model folder. Empty: the "
        "default model.",
    )  # fmt: skip
    translator = api.obs_properties_add_text(props, b"translator", b"Translator", OBS_TEXT_DEFAULT)
    _describe(
        api, translator, "For a model that gives one language only (e.g. mms-1b-all, "
        "whisper-small): a text translator such as nllb-200-distilled-600m. Empty: none.",
    )  # fmt: skip
    _add_list(
        api, props, "device", "Device",
        [("Automatic", "auto"), ("GPU (CUDA)", "cuda"), ("CPU", "cpu")],
    )  # fmt: skip
    captions = api.obs_properties_add_bool(props, b"stream_captions", b"Stream captions")
    _describe(
        api, captions, "Send English into the stream as CEA-608 closed captions (Latin "
        "letters only, so not Mongolian).",
    )  # fmt: skip
    backend = api.obs_properties_add_text(props, b"backend", b"Backend", OBS_TEXT_DEFAULT)
    _describe(
        api, backend, "Advanced: auto runs each model with its own backend; or a backend's "
        "name (gemma3n, whisper, ctc, qwen3-asr, seamless, remote-code, or a plugin's).",
    )  # fmt: skip
    instance = _instance(data)
    if instance is not None and instance.last_error:
        api.obs_properties_add_text(
            props, b"status", f"Engine: {instance.last_error}".encode(), OBS_TEXT_INFO
        )
    return props


def _on_update(data, settings):
    instance = _instance(data)
    if instance is not None:
        instance.update(read_settings(state.api, settings))


def _on_video_tick(data, seconds):
    instance = _instance(data)
    if instance is not None:
        instance.tick()


def _on_filter_audio(data, audio):
    instance = _instance(data)
    if instance is not None:
        return instance.filter_audio(audio)
    return audio


HANDLERS = {
    "get_name": lambda type_data: ctypes.addressof(state.name),
    "create": _on_create,
    "destroy": _on_destroy,
    "get_defaults": _on_get_defaults,
    "get_properties": _on_get_properties,
    "update": _on_update,
    "video_tick": _on_video_tick,
    "filter_audio": _on_filter_audio,
}


# ------------------------------------------------------------ OBS script API


def script_description():
    return (
        "<b>EN/MN Subtitles (subplug)</b> " + SCRIPT_VERSION + "<br>"
        "Adds the audio filter <i>" + FILTER_NAME + "</i>: add it to a microphone or "
        "media source (right-click → Filters → +), then pick an English and a Mongolian "
        "text source in its settings. Captions come from <code>subplug live</code> "
        "running next to OBS; English is also sent as stream captions."
    )


def script_load(settings):
    if state.api is None:
        state.api = bind_libobs()
    state.handlers = dict(HANDLERS)
    _register()


def script_unload():
    pass
