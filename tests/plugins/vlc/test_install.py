"""``subplug install|status|uninstall vlc`` into a temporary HOME, and doctor's VLC checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lua52 import Lua, literal
from subplug import __version__, doctor, plugins
from subplug.types import CheckStatus
from subplug_vlc import checks, install
from subplug_vlc.plugin import VlcHost

FILES = [
    "extensions/subplug.lua",
    "modules/subplug_bridge.lua",
    "intf/subplug_intf.lua",
    "modules/subplug_config.lua",
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with no XDG overrides, for this process and the CLI it starts."""
    home = tmp_path / "home of Бат"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "SUBPLUG_VLC_LUA_DIR", "APPDATA"):
        monkeypatch.delenv(name, raising=False)
    return home


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``subplug ARGS`` as a user would (this Python, the current environment)."""
    return subprocess.run(
        [sys.executable, "-m", "subplug", *args], capture_output=True, text=True, timeout=120
    )


def vlc_checks() -> dict[str, doctor.CheckOutcome]:
    """Doctor's checks registered by the VLC plugin, run the way ``subplug doctor`` runs them."""
    report = doctor.run_checks([c for c in plugins.doctor_checks() if c.group == "vlc"])
    return {outcome.name: outcome for outcome in report.outcomes}


def test_install_status_uninstall_from_the_command_line(home: Path) -> None:
    lua_dir = home / ".local" / "share" / "vlc" / "lua"
    done = cli("install", "vlc")
    assert done.returncode == 0, done.stderr
    assert str(lua_dir) in done.stdout
    assert "click View > Generate EN/MN subtitles" in " ".join(done.stdout.split())
    for name in FILES:
        text = (lua_dir / name).read_text("utf-8")
        assert f"subplug-version: {__version__}" in text
        assert install.VERSION_PLACEHOLDER not in text
    assert install.configured_command(lua_dir) == [sys.executable, "-m", "subplug"]

    status = cli("status", "vlc", "--json")
    assert json.loads(status.stdout) == {
        "host": "vlc",
        "action": "status",
        "installed": True,
        "location": str(lua_dir),
        "version": __version__,
        "message": "Up to date.",
    }

    (lua_dir / "extensions" / "other.lua").write_text("-- someone else's extension\n")
    done = cli("uninstall", "vlc")
    assert done.returncode == 0, done.stderr
    assert "Removed" in done.stdout
    remaining = sorted(str(p.relative_to(lua_dir)) for p in lua_dir.rglob("*") if p.is_file())
    assert remaining == ["extensions/other.lua"]
    status = json.loads(cli("status", "vlc", "--json").stdout)
    assert status["installed"] is False and "subplug install vlc" in status["message"]


def test_unwritable_folder_is_one_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = home / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SUBPLUG_VLC_LUA_DIR", str(blocker / "lua"))
    done = cli("install", "vlc")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "[vlc-install-failed]" in done.stderr and "hint:" in done.stderr
    assert blocker.read_text() == "not a folder"


def test_a_foreign_file_of_the_same_name_is_kept_as_backup(home: Path) -> None:
    lua_dir = home / "lua"
    own = lua_dir / "extensions" / "subplug.lua"
    own.parent.mkdir(parents=True)
    own.write_text("-- a different extension that happens to share the name\n")
    VlcHost(lua_dir).install()
    backup = own.with_name("subplug.lua.bak")
    assert backup.read_text() == "-- a different extension that happens to share the name\n"
    assert install.stamped_version(own) == __version__
    VlcHost(lua_dir).uninstall()
    assert not own.exists() and backup.exists()


def test_reinstall_replaces_older_files_without_backups(home: Path) -> None:
    lua_dir = home / "lua"
    VlcHost(lua_dir).install()
    bridge = lua_dir / "modules" / "subplug_bridge.lua"
    bridge.write_text(bridge.read_text().replace(__version__, "0.0.1"))
    VlcHost(lua_dir).install()
    assert install.stamped_version(bridge) == __version__
    assert not list(lua_dir.rglob("*.bak"))


def test_config_round_trips_through_lua(lua: Lua, tmp_path: Path) -> None:
    command = ["C:\\Program Files\\Py\\python.exe", 'with "quotes"', "new\nline", "Кино\\"]
    env = {"SUBPLUG_HOME": "/x/y z", "A_B": "it's"}
    extra = ["--backend", "fake", "\x01\x7f"]
    path = tmp_path / "subplug_config.lua"
    path.write_text(install.render_config(command, env, extra), encoding="utf-8")
    got = lua.json(f"dofile({literal(str(path))})")
    assert got == {"version": __version__, "command": command, "env": env, "extra_args": extra}
    assert install.configured_command(tmp_path / "no such folder") is None
    with pytest.raises(ValueError):
        install.render_config(["x"], {"BAD NAME": "1"})


def test_installed_modules_load_in_lua(lua_library: str, tmp_path: Path) -> None:
    """The installed bridge finds the installed configuration, as in VLC."""
    lua_dir = tmp_path / "lua"
    VlcHost(lua_dir, env={"K": "v"}, extra_args=["--backend", "fake"]).install()
    state = Lua(lua_library, lua_dir / "modules")
    try:
        cfg = state.json("bridge.load_config()")
        version = state.json("bridge.VERSION")
    finally:
        state.close()
    assert cfg["command"] == [sys.executable, "-m", "subplug"]
    assert cfg["env"] == {"K": "v"} and cfg["extra_args"] == ["--backend", "fake"]
    assert version == __version__


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {}, "/home/u/.local/share/vlc/lua"),
        ("linux", {"XDG_DATA_HOME": "/data"}, "/data/vlc/lua"),
        ("darwin", {}, "/home/u/Library/Application Support/org.videolan.vlc/lua"),
        ("win32", {"APPDATA": "C:/Users/u/AppData/Roaming"}, "C:/Users/u/AppData/Roaming/vlc/lua"),
        ("linux", {"SUBPLUG_VLC_LUA_DIR": "/portable/lua"}, "/portable/lua"),
    ],
)
def test_vlc_lua_folder_per_platform(platform: str, env: dict[str, str], expected: str) -> None:
    assert install.vlc_lua_dir(platform, env, Path("/home/u")) == Path(expected)


def test_doctor_reports_vlc_and_the_extension_state(home: Path) -> None:
    if checks.find_vlc() is None:
        pytest.skip("VLC not installed (Debian: vlc-bin vlc-plugin-base)")
    lua_dir = home / ".local" / "share" / "vlc" / "lua"
    found = vlc_checks()
    program = found["vlc"]
    assert program.result.status in (CheckStatus.OK, CheckStatus.WARN)
    version = program.result.details["version"]
    assert version and int(version.split(".")[0]) >= 3
    assert version in program.result.summary
    if checks.qt_interface_present() is False:
        assert "vlc-plugin-qt" in (program.result.hint or "")
    missing = found["vlc-extension"].result
    assert missing.status is CheckStatus.WARN and missing.hint == "Run: subplug install vlc"

    VlcHost().install()
    assert vlc_checks()["vlc-extension"].result.status is CheckStatus.OK

    intf = lua_dir / "intf" / "subplug_intf.lua"
    intf.write_text(intf.read_text() + "-- edited\n")
    edited = vlc_checks()["vlc-extension"].result
    assert edited.status is CheckStatus.WARN and "subplug_intf.lua" in edited.summary

    bridge = lua_dir / "modules" / "subplug_bridge.lua"
    bridge.write_text(bridge.read_text().replace(__version__, "0.0.1"))
    old = vlc_checks()["vlc-extension"].result
    assert old.status is CheckStatus.WARN and "0.0.1" in old.summary

    bridge.unlink()
    incomplete = vlc_checks()["vlc-extension"].result
    assert incomplete.status is CheckStatus.FAIL and "subplug_bridge.lua" in incomplete.summary

    VlcHost(command=[str(home / "gone" / "python"), "-m", "subplug"]).install()
    gone = vlc_checks()["vlc-extension"].result
    assert gone.status is CheckStatus.FAIL and "gone" in gone.summary
