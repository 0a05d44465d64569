"""The bridge module's logic, run in Lua 5.2 (the Lua VLC 3 links) without VLC: JSON,
URIs to paths, quoting for sh / Windows / PowerShell, settings, the engine's arguments,
and a real ``subplug generate --jsonl`` started, followed and read back by the job code."""

from __future__ import annotations

import base64
import json
import nturl2path
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lua52 import Lua, LuaError, literal
from vlc_session import LUA_ROOT

LUA_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TRICKY_NAMES = [
    "plain.mp4",
    "with space.mp4",
    "it's.mp4",
    'say "hi".mp4',
    "Кино сайн.mkv",
    "a$HOME`id`;rm -rf x&|<>*?.mp4",
    "back\\slash\\.mp4",
    "new\nline.mp4",
    "percent %20 %s.mp4",
    "-leading-dash.mp4",
    "tab\there.mp4",
    "emoji 🎬.mp4",
]
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def lua_list(values: list[str]) -> str:
    return "{" + ", ".join(literal(v) for v in values) + "}"


# ------------------------------------------------------------------------------ JSON

json_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4)
        | st.dictionaries(text.filter(bool), inner, min_size=1, max_size=4)
    ),
    max_leaves=12,
)


@LUA_SETTINGS
@given(value=json_values, ascii_only=st.booleans())
def test_json_round_trip_through_lua(lua: Lua, value: Any, ascii_only: bool) -> None:
    encoded = json.dumps(value, ensure_ascii=ascii_only)
    back = lua.json(f"bridge.json_decode({literal(encoded)})")
    assert back == value


def test_json_reads_the_documented_events(lua: Lua) -> None:
    lines = [
        '{"v": 1, "event": "job-start", "time": 0.0, "files": ["talk.mp4"], "version": "0.1.0"}',
        '{"v": 1, "event": "file-done", "time": 40.1, "media": "talk.mp4", "outputs": '
        '[{"path": "talk.en-mn.ass", "format": "ass", "langs": ["en", "mn"]}], '
        '"cues": {"en": 12, "mn": 12}, "source_lang": "en"}',
        '{"v": 1, "event": "warning", "media": null, "message": "\\u0421\\u0430\\u0439\\u043d '
        '\\ud83c\\udfac \\"q\\" \\\\ \\/ \\t"}',
    ]
    for line in lines:
        expected = {k: v for k, v in json.loads(line).items() if v is not None}
        assert lua.json(f"bridge.json_decode({literal(line)})") == expected


@pytest.mark.parametrize(
    "bad", ['{"a": 1', '{"a" 1}', "[1, 2,]", '"\\x"', '"\\u12"', "tru", "1 2", '{"a": "b\n"}', ""]
)
def test_json_rejects_malformed_lines_with_a_message(lua: Lua, bad: str) -> None:
    result = lua.json(f"pack(bridge.json_decode({literal(bad)}))")
    assert "value" not in result
    assert "at character" in result["error"] or result["error"] == "unexpected end at character 1"


def test_json_encode_escapes_what_json_needs(lua: Lua) -> None:
    raw = lua.run(
        'local b = require("subplug_bridge") '
        'return b.json_encode({s = "a\\"b\\\\c\\n\\1\\127Ж", n = 0.5, i = 3, t = true})'
    )
    assert raw is not None
    assert json.loads(raw) == {"s": 'a"b\\c\n\x01\x7fЖ', "n": 0.5, "i": 3, "t": True}


def test_line_reader_keeps_partial_lines_for_later(lua: Lua) -> None:
    result = lua.json(
        "{r('{\"a\":'), r('1}\\r\\n{\"b\"'), r(':2}\\n\\n'), r('')}",
        prelude="local r = bridge.line_reader()",
    )
    assert result == [{}, ['{"a":1}'], ['{"b":2}', ""], {}]


# ------------------------------------------------------------------------ URIs, paths


@LUA_SETTINGS
@given(
    parts=st.lists(
        text.filter(lambda s: s not in ("", ".", "..") and "/" not in s), min_size=1, max_size=3
    )
)
def test_posix_file_uris_give_the_exact_path(lua: Lua, parts: list[str]) -> None:
    path = Path("/", *parts)
    result = lua.json(f"pack(bridge.uri_to_path({literal(path.as_uri())}, false))")
    assert result == {"value": str(path)}


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_uri_as_vlc_writes_it(lua: Lua, name: str) -> None:
    """VLC 3 percent-encodes only what it must (vlc_path2uri); both forms decode."""
    from urllib.parse import quote

    path = "/home/user/" + name
    for uri in ("file://" + quote(path, safe="/"), "file://" + quote(path, safe="/'$&;=@!*(),~")):
        assert lua.json(f"bridge.uri_to_path({literal(uri)}, false)") == path


@pytest.mark.parametrize(
    "uri",
    [
        "file:///C:/Users/%D0%91%D0%BE%D0%BB%D0%B4/My%20Videos/a%27b.mp4",
        "file:///D:/x%25y/film.mkv",
        "file://server/share/dir/film%20one.mp4",
    ],
)
def test_windows_file_uris(lua: Lua, uri: str) -> None:
    expected = nturl2path.url2pathname(uri[len("file:") :])
    if uri.startswith("file:///"):
        expected = nturl2path.url2pathname(uri[len("file:///") :])
    assert lua.json(f"bridge.uri_to_path({literal(uri)}, true)") == expected


def test_plain_paths_pass_through(lua: Lua) -> None:
    assert lua.json('bridge.uri_to_path("C:\\\\v\\\\a.mp4", true)') == "C:\\v\\a.mp4"
    assert lua.json('bridge.uri_to_path("/srv/a.mp4", false)') == "/srv/a.mp4"
    assert lua.json('bridge.uri_to_path("file://localhost/srv/a.mp4", false)') == "/srv/a.mp4"


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("http://example.com/live.m3u8", "local files only"),
        ("https://example.com/a.mp4", "'https' stream"),
        ("dvd:///dev/sr0", "'dvd' stream"),
        ("file://nas/share/a.mp4", "another computer"),
        ("", "Nothing is playing"),
    ],
)
def test_non_local_items_are_refused_with_a_message(lua: Lua, uri: str, words: str) -> None:
    result = lua.json(f"pack(bridge.uri_to_path({literal(uri)}, false))")
    assert "value" not in result
    assert words in result["error"]


@pytest.mark.parametrize(
    ("path", "windows", "folder", "name", "stem"),
    [
        ("/a/b/c.d.mp4", False, "/a/b", "c.d.mp4", "c.d"),
        ("/film.mp4", False, "/", "film.mp4", "film"),
        ("C:\\Videos\\x.mkv", True, "C:\\Videos", "x.mkv", "x"),
        ("C:\\x.mkv", True, "C:\\", "x.mkv", "x"),
        ("\\\\srv\\share\\x", True, "\\\\srv\\share", "x", "x"),
    ],
)
def test_path_parts(lua: Lua, path: str, windows: bool, folder: str, name: str, stem: str) -> None:
    p = literal(path)
    got = lua.json(f"{{bridge.dirname({p}), bridge.basename({p}), bridge.stem({p})}}")
    assert got == [folder, name, stem]
    joined = lua.json(f"bridge.join({literal(folder)}, 'n.ass', {str(windows).lower()})")
    sep = "" if folder.endswith(("\\", "/")) else ("\\" if windows else "/")
    assert joined == folder + sep + "n.ass"


# --------------------------------------------------------------------------- quoting


def sh_args(quoted: list[bytes]) -> list[bytes]:
    """What /bin/sh makes of words quoted by the bridge."""
    line = b"printf '%s\\0' " + b" ".join(quoted)
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, check=True)
    return done.stdout.split(b"\0")[:-1]


def test_posix_quoting_survives_the_shell_for_tricky_names(lua: Lua) -> None:
    quoted = [
        lua.run(f"return require('subplug_bridge').quote_posix({literal(n)})") for n in TRICKY_NAMES
    ]
    assert sh_args([q for q in quoted if q is not None]) == [n.encode() for n in TRICKY_NAMES]


@LUA_SETTINGS
@given(words=st.lists(text, min_size=1, max_size=4))
def test_posix_quoting_survives_the_shell(lua: Lua, words: list[str]) -> None:
    quoted = [lua.run(f"return require('subplug_bridge').quote_posix({literal(w)})") for w in words]
    assert sh_args([q for q in quoted if q is not None]) == [w.encode() for w in words]


def split_windows(line: str) -> list[str]:
    """Split a command line the way the Microsoft C runtime (and CommandLineToArgvW)
    splits arguments after the program name."""
    args: list[str] = []
    current: list[str] = []
    quoted = have = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            count = 0
            while i < len(line) and line[i] == "\\":
                count, i = count + 1, i + 1
            if i < len(line) and line[i] == '"':
                current.append("\\" * (count // 2))
                if count % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * count)
            have = True
        elif char == '"':
            if quoted and line[i + 1 : i + 2] == '"':
                current.append('"')
                i += 2
                continue
            quoted, have, i = not quoted, True, i + 1
        elif char in " \t" and not quoted:
            if have:
                args.append("".join(current))
                current, have = [], False
            i += 1
        else:
            current.append(char)
            have, i = True, i + 1
    if have:
        args.append("".join(current))
    return args


@LUA_SETTINGS
@given(words=st.lists(text, min_size=1, max_size=4))
def test_windows_quoting_splits_back_into_the_same_arguments(lua: Lua, words: list[str]) -> None:
    quoted = lua.json(
        "(function() local out = {} for i, w in ipairs(" + lua_list(words) + ") do "
        "out[i] = bridge.quote_windows_arg(w) end return out end)()"
    )
    assert split_windows(" ".join(quoted)) == words


def test_windows_launch_runs_powershell_with_the_exact_script(lua: Lua) -> None:
    args = [
        "C:\\Program Files\\Python\\python.exe",
        "-m",
        "subplug",
        "generate",
        'C:\\Фильмы\\it\'s "x" ‘q’.mp4',
    ]
    files = "{out='C:\\\\T\\\\o.jsonl', err='C:\\\\T\\\\e', pid='C:\\\\T\\\\p', rc='C:\\\\T\\\\r'}"
    env = "{PYTHONUTF8='1'}"
    script = lua.json(f"bridge.windows_launch_script({lua_list(args)}, {env}, {files})")
    command = lua.json(f"bridge.windows_launch_command({lua_list(args)}, {env}, {files})")
    prefix = (
        'start "" /B powershell -NoProfile -NonInteractive -WindowStyle Hidden -EncodedCommand '
    )
    assert command.startswith(prefix)
    assert base64.b64decode(command[len(prefix) :]).decode("utf-16-le") == script
    # PowerShell single-quoted literals: every kind of single quote is doubled.
    assert "-FilePath 'C:\\Program Files\\Python\\python.exe'" in script
    argument_list = script.split("-ArgumentList '", 1)[1].split("' -Redirect", 1)[0]
    unquoted = argument_list.replace("''", "'").replace("‘‘", "‘").replace("’’", "’")
    assert split_windows(unquoted) == args[1:]
    assert "$env:PYTHONUTF8 = '1';" in script


def test_cmd_escape_carets_every_metacharacter(lua: Lua) -> None:
    assert lua.json("bridge.cmd_escape('a & b | \"c\" <d> %e% (f) !g! ^h')") == (
        'a ^& b ^| ^"c^" ^<d^> ^%e^% ^(f^) ^!g^! ^^h'
    )


def test_utf16_and_base64_match_python(lua: Lua) -> None:
    sample = "Сайн 🎬 a'b"
    encoded = lua.json(f"bridge.base64(bridge.utf16le({literal(sample)}))")
    assert encoded == base64.b64encode(sample.encode("utf-16-le")).decode()


def test_posix_launch_command_runs_in_the_background_and_records_everything(
    lua: Lua, tmp_path: Path
) -> None:
    folder = tmp_path / "dir with 'quotes' и пробел"
    folder.mkdir()
    base = folder / "job"
    files = {k: f"{base}.{k}" for k in ("out", "err", "pid", "rc")}
    files_lua = "{" + ", ".join(f"{k} = {literal(v)}" for k, v in files.items()) + "}"
    args = [
        sys.executable,
        "-c",
        "import os, sys; print(sys.argv[1:]); print(os.environ['X'])",
        "a b",
        "it's",
        "Кино",
    ]
    command = lua.json(f"bridge.posix_launch_command({lua_list(args)}, {{X = 'y z'}}, {files_lua})")
    subprocess.run(["/bin/sh", "-c", command], check=True, timeout=30)
    lua.run("require('subplug_bridge').sleep(0.01)")
    for _ in range(200):
        if os.path.exists(files["rc"]):
            break
        lua.run("require('subplug_bridge').sleep(0.05)")
    assert Path(files["rc"]).read_text().strip() == "0"
    assert Path(files["out"]).read_text("utf-8").splitlines() == [
        str(["a b", "it's", "Кино"]),
        "y z",
    ]
    assert int(Path(files["pid"]).read_text()) > 0


# -------------------------------------------------------------------------- settings


def test_settings_parse_ignore_unknown_keys_and_bad_values(lua: Lua) -> None:
    got = lua.json(
        "bridge.parse_settings("
        + literal(
            "# comment\nsource = mn\ntargets=en\nformats=exe\nmodel = /m/tiny model \n"
            "device=cuda\nbottom=left\nfoo=bar\n"
        )
        + ")"
    )
    assert got == {
        "source": "mn",
        "targets": "en",
        "formats": "ass,srt",
        "model": "/m/tiny model",
        "device": "cuda",
        "bottom": "mn",
    }


def test_settings_save_and_load(lua: Lua, tmp_path: Path) -> None:
    path = tmp_path / "Настройки" / "subplug-settings.txt"
    path.parent.mkdir()
    saved = lua.json(
        f"bridge.save_settings(s, {literal(str(path))})",
        prelude="local s = bridge.default_settings(); s.source = 'en'; s.model = 'мой\\nmodel'",
    )
    assert saved is True
    assert not list(path.parent.glob("*.tmp"))
    assert lua.json(f"bridge.load_settings({literal(str(path))})") == {
        "source": "en",
        "model": "мой model",
        "formats": "ass,srt",
        "targets": "en,mn",
        "bottom": "mn",
        "device": "auto",
    }
    missing = lua.json(f"bridge.load_settings({literal(str(tmp_path / 'none.txt'))})")
    assert missing == lua.json("bridge.default_settings()")


def test_generate_args_follow_the_cli(lua: Lua) -> None:
    args = lua.json(
        "bridge.generate_args(cfg, s, '/v/a b.mp4', '/cache/subplug', true)",
        prelude=(
            "local cfg = {command = {'/py', '-m', 'subplug'}, extra_args = {'--backend', 'x'}}\n"
            "local s = bridge.default_settings(); s.model = '/m/tiny'; s.source = 'en'"
        ),
    )
    assert args == [
        "/py",
        "-m",
        "subplug",
        "generate",
        "--jsonl",
        "--source",
        "en",
        "--targets",
        "en,mn",
        "--format",
        "ass,srt",
        "--bottom",
        "mn",
        "--device",
        "auto",
        "--model",
        "/m/tiny",
        "--out",
        "/cache/subplug",
        "--overwrite",
        "--backend",
        "x",
        "/v/a b.mp4",
    ]
    from subplug.cli import build_parser

    parser, _ = build_parser()
    parsed = parser.parse_args(args[3:])
    assert parsed.model == "/m/tiny" and str(parsed.out) == "/cache/subplug"
    assert [str(m) for m in parsed.media] == ["/v/a b.mp4"]


def test_output_folder_and_expected_file(lua: Lua, tmp_path: Path) -> None:
    media = tmp_path / "Кино.mp4"
    assert lua.json(f"{{bridge.output_dir({literal(str(media))}, '/fallback')}}") == [
        str(tmp_path),
        False,
    ]
    assert lua.json("{bridge.output_dir('/no such folder/x.mp4', '/fb')}") == ["/fb/subplug", True]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".subplug-write-test")]
    s = "bridge.default_settings()"
    assert lua.json(f"bridge.expected_ass({literal(str(media))}, '/o', {s})") == "/o/Кино.en-mn.ass"


# ------------------------------------------------------------- events and progress


def test_progress_from_events(lua: Lua) -> None:
    events = [
        {"v": 1, "event": "job-start", "version": "9.9"},
        {"v": 1, "event": "stage", "stage": "transcribe"},
        {"v": 1, "event": "progress", "done": 2, "total": 5, "percent": 40.0},
    ]
    prelude = "local st = bridge.new_state()\n" + "\n".join(
        f"bridge.apply_event(st, bridge.json_decode({literal(json.dumps(e))}))" for e in events
    )
    got = lua.json(
        "{bridge.progress_text(st), st.version, bridge.progress_bar(st.percent, 10)}",
        prelude=prelude,
    )
    assert got == ["Transcribing and translating (part 3 of 5)… 40%", "9.9", "████░░░░░░"]
    failed = lua.json(
        "{st.failed, st.error.message, st.error.hint, bridge.progress_text(st)}",
        prelude=prelude + "\nbridge.apply_event(st, {event='file-error', error={message='No "
        "audio.', hint='Pick another file.'}})",
    )
    assert failed[:3] == [True, "No audio.", "Pick another file."]


def test_parts_show_once_the_model_works_on_them(lua: Lua) -> None:
    """The engine says "transcribe" (with the parts planned), then "model-load", and no
    stage after it: the first finished part switches the text from loading the model to
    "part N of M", N being the part under way."""
    events = [
        {"v": 1, "event": "stage", "stage": "transcribe", "chunks": 3, "resumed": 0},
        {"v": 1, "event": "progress", "done": 0, "total": 3, "percent": 0.0, "resumed": 0},
        {"v": 1, "event": "stage", "media": None, "stage": "model-load", "backend": "gemma3n"},
        {"v": 1, "event": "progress", "done": 1, "total": 3, "percent": 33.3, "resumed": 0},
        {"v": 1, "event": "progress", "done": 3, "total": 3, "percent": 100.0, "resumed": 0},
    ]
    texts = lua.json(
        "texts",
        prelude="local st, texts = bridge.new_state(), {}\n"
        + "\n".join(
            f"bridge.apply_event(st, bridge.json_decode({literal(json.dumps(e))}))\n"
            "texts[#texts + 1] = bridge.progress_text(st)"
            for e in events
        ),
    )
    assert texts == [
        "Transcribing and translating… 0%",
        "Transcribing and translating (part 1 of 3)… 0%",
        "Loading the model… 0%",
        "Transcribing and translating (part 2 of 3)… 33%",
        "Transcribing and translating (part 3 of 3)… 100%",
    ]


@given(
    text=st.text(
        st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" /.-"), max_size=300
    ),
    width=st.integers(min_value=5, max_value=80),
)
@LUA_SETTINGS
def test_wrap_keeps_every_word_in_lines_that_fit(lua: Lua, text: str, width: int) -> None:
    lines = lua.json(f"bridge.wrap({literal(text)}, {width})")
    assert all(len(line) <= width for line in lines), lines
    assert "".join("".join(lines).split()) == "".join(text.split())
    assert " ".join(" ".join(lines).split()) == " ".join(text.split()) or any(
        len(word) > width for word in text.split()
    )


def test_wrap_makes_the_error_of_a_long_path_fit(lua: Lua) -> None:
    message = (
        "The model in /home/me/very/long/folder/name/that/goes/on/models/gemma3n-en-mn "
        "is damaged: model.safetensors has the wrong size."
    )
    lines = lua.json(f"bridge.wrap({literal(message)}, 60)")
    assert len(lines) == 3 and all(len(line) <= 60 for line in lines)
    assert lines[0] == "The model in"


def test_hints_name_the_settings_dialog(lua: Lua) -> None:
    hint = lua.json("bridge.vlc_hint('model-not-found', 'Run: subplug models pull')")
    assert hint == (
        "Run: subplug models pull In VLC: View > Generate EN/MN subtitles > Settings… (Model)."
    )
    assert lua.json("bridge.vlc_hint('no-cuda', nil)").endswith("Settings… (Run on).")
    assert lua.json("bridge.vlc_hint('media-unreadable', 'Try another file.')") == (
        "Try another file."
    )


def test_job_files_live_in_a_private_folder(lua: Lua, tmp_path: Path) -> None:
    """Not names from os.tmpname() in the shared /tmp (deleted, then reused: a race):
    a folder of its own, mode 0700, removed with the files."""
    got = lua.json(
        "{base, folder, base2, folder2}",
        prelude="local base, folder = bridge.temp_base()\n"
        "local base2, folder2 = bridge.temp_base()",
    )
    base, folder, base2, folder2 = got
    assert folder != folder2 and base.startswith(folder + "/") and base2.startswith(folder2 + "/")
    for path in (folder, folder2):
        info = os.stat(path)
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.geteuid()
    command = lua_list([sys.executable, "-c", "print(1)"])
    job = lua.json(
        "kept",
        prelude=(
            f"local job = bridge.start_job({{config = {{command = {command}, env = {{}}, "
            "extra_args = {}}, settings = bridge.default_settings(), media = '/x.mp4'})\n"
            "while not job.finished do job:poll(); bridge.sleep(0.05) end\n"
            "local kept = {job.folder, job.files.out}\n"
            "job:cleanup()"
        ),
    )
    assert job[1].startswith(job[0] + "/")
    assert not os.path.exists(job[0])
    for path in (folder, folder2):
        os.rmdir(path)


def test_pick_subtitle_prefers_the_bilingual_ass(lua: Lua) -> None:
    outputs = '{{path="a.en.srt", format="srt"}, {path="a.en-mn.ass", format="ass"}}'
    assert lua.json(f"bridge.pick_subtitle({outputs})") == "a.en-mn.ass"
    assert lua.json('bridge.pick_subtitle({{path="a.mn.srt", format="srt"}})') == "a.mn.srt"


# ---------------------------------------------------------------- the job, for real


def run_job(
    lua: Lua,
    media: Path,
    out_dir: Path | None,
    env: dict[str, str],
    extra: list[str],
    timeout: float = 240,
) -> dict[str, Any]:
    """Start ``subplug generate`` through the bridge and poll it as VLC would."""
    cfg = (
        f"local cfg = {{command = {lua_list([sys.executable, '-m', 'subplug'])}, "
        "env = {" + ", ".join(f"{k} = {literal(v)}" for k, v in env.items()) + "}, "
        f"extra_args = {lua_list(extra)}}}"
    )
    out = literal(str(out_dir)) if out_dir else "nil"
    code = (
        f"{cfg}\n"
        "local job = bridge.start_job({config = cfg, settings = bridge.default_settings(), "
        f"media = {literal(str(media))}, out_dir = {out}}})\n"
        "local texts, polls, deadline = {}, 0, os.time() + " + str(int(timeout)) + "\n"
        "while not job.finished and os.time() < deadline do\n"
        "  job:poll(); polls = polls + 1\n"
        "  local t = bridge.progress_text(job.state)\n"
        "  if texts[#texts] ~= t then texts[#texts + 1] = t end\n"
        "  if not job.finished then bridge.sleep(0.1) end\n"
        "end\n"
        "local result = {state = job.state, exit_code = job.exit_code, stderr = job:stderr(),\n"
        "  finished = job.finished, texts = texts, args = job.args}\n"
        "job:cleanup()\n"
    )
    return lua.json("result", prelude=code)


def engine_error(args: list[str]) -> tuple[int, dict[str, Any]]:
    """Run ``args`` directly and return the exit code and the error its JSON lines carry."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    errors = [e["error"] for e in events if e.get("error")]
    assert errors, done.stdout + done.stderr
    return done.returncode, {k: v for k, v in errors[0].items() if v is not None}


@pytest.mark.slow
def test_job_reports_the_engines_error(lua: Lua, tmp_path: Path) -> None:
    """A job that fails (no model in the cache, or no such file): the bridge's state holds
    exactly the error subplug printed, for the dialog to show."""
    media = tmp_path / "нет такого 'file'.mp4"
    result = run_job(lua, media, None, {}, [], timeout=120)
    assert result["finished"] is True
    state = result["state"]
    assert state["failed"] is True and state["job_done"] is True
    assert result["args"][-1] == str(media)
    code, error = engine_error(result["args"])
    assert result["exit_code"] == code != 0
    assert state["error"] == error
    assert error["message"] and error["hint"] and error["reference"]


@pytest.mark.slow
def test_job_follows_a_real_run_to_the_written_files(lua: Lua, tmp_path: Path) -> None:
    """Engine plumbing with the test backend: events are read while the job runs, and
    the outputs it names exist."""
    from subplug.testing.media import speech_clip

    folder = tmp_path / "фильмы 'x'"
    folder.mkdir()
    clip = speech_clip(folder / "a b.wav", ("Hello world.",))
    out_dir = tmp_path / "out dir"
    result = run_job(
        lua, clip.path, out_dir, {"SUBPLUG_PLUGINS": "subplug.testing.fake"}, ["--backend", "fake"]
    )
    state = result["state"]
    assert result["exit_code"] == 0, result["stderr"]
    assert state["job_done"] is True and state["failed"] is False and state["percent"] == 100
    assert result["texts"][-1] == "Done."
    assert any("…" in t for t in result["texts"][:-1])
    ass = [o["path"] for o in state["outputs"] if o["format"] == "ass"]
    assert ass == [str(out_dir / "a b.en-mn.ass")] and Path(ass[0]).is_file()
    assert len(state["outputs"]) == 3


def test_extension_descriptor_and_menu(lua: Lua) -> None:
    extension = LUA_ROOT / "extensions" / "subplug.lua"
    got = lua.json(
        "{descriptor(), menu()}",
        prelude=f"dofile({literal(str(extension))})",
    )
    descriptor, menu = got
    assert descriptor["capabilities"] == ["menu"]
    assert "EN/MN" in descriptor["title"]
    assert menu == ["Generate EN/MN subtitles", "Settings…"]


def test_lua_errors_surface(lua: Lua) -> None:
    with pytest.raises(LuaError, match="boom"):
        lua.run("error('boom')")
