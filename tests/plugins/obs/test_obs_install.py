"""``subplug install|uninstall|status obs`` and the OBS doctor checks, on real folders
and through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from subplug import __version__, plugins
from subplug.types import CheckStatus
from subplug_obs import checks, install
from subplug_obs.install import CONFIG_NAME, SCRIPT_NAME
from subplug_obs.plugin import ObsHost


def test_install_copies_the_shipped_script_and_writes_its_command(tmp_path: Path) -> None:
    status = ObsHost(folder=tmp_path / "obs").install()
    script = tmp_path / "obs" / SCRIPT_NAME
    assert status.installed and status.location == str(script)
    assert status.version == __version__
    assert script.read_text(encoding="utf-8") == install.packaged_script()
    config = json.loads((tmp_path / "obs" / CONFIG_NAME).read_text(encoding="utf-8"))
    assert config == {"version": __version__, "command": [sys.executable, "-m", "subplug"]}
    assert "Tools → Scripts" in status.message and str(script) in status.message


def test_installed_command_really_runs_subplug(tmp_path: Path) -> None:
    ObsHost(folder=tmp_path).install()
    command = install.installed(tmp_path).command
    assert command is not None
    done = subprocess.run([*command, "live", "--help"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and "--rate" in done.stdout


def test_install_keeps_a_foreign_file_as_backup(tmp_path: Path) -> None:
    (tmp_path / SCRIPT_NAME).write_text("# someone else's script\n", encoding="utf-8")
    ObsHost(folder=tmp_path).install()
    assert (tmp_path / f"{SCRIPT_NAME}.bak").read_text() == "# someone else's script\n"
    ObsHost(folder=tmp_path).install()  # our own file is replaced without a new backup
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [SCRIPT_NAME, f"{SCRIPT_NAME}.bak", CONFIG_NAME]
    )


def test_status_and_uninstall(tmp_path: Path) -> None:
    host = ObsHost(folder=tmp_path / "obs")
    assert not host.status().installed
    host.install()
    assert host.status().installed and "Up to date" in host.status().message
    (tmp_path / "obs" / SCRIPT_NAME).write_text("# edited\n", encoding="utf-8")
    assert "differs" in host.status().message
    (tmp_path / "obs" / "notes.txt").write_text("mine", encoding="utf-8")
    removed = host.uninstall()
    assert not removed.installed
    # The edited script is not subplug's any more; the user's notes stay too.
    assert sorted(p.name for p in (tmp_path / "obs").iterdir()) == ["notes.txt", SCRIPT_NAME]
    host.install()  # the edited script is kept as a backup
    host.uninstall()
    assert sorted(p.name for p in (tmp_path / "obs").iterdir()) == [
        "notes.txt",
        f"{SCRIPT_NAME}.bak",
    ]
    for path in (tmp_path / "obs").iterdir():
        path.unlink()
    host.install()
    host.uninstall()
    assert not (tmp_path / "obs").exists()


def test_install_into_an_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    env = {**os.environ, "SUBPLUG_OBS_SCRIPT_DIR": str(blocker / "obs")}
    done = subprocess.run([sys.executable, "-m", "subplug", "install", "obs"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert "obs-install-failed" in done.stderr + done.stdout
    assert "SUBPLUG_OBS_SCRIPT_DIR" in done.stderr + done.stdout


def test_cli_install_status_uninstall(tmp_path: Path) -> None:
    env = {**os.environ, "SUBPLUG_OBS_SCRIPT_DIR": str(tmp_path / "obs")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "subplug", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    done = run("install", "obs")
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "obs" / SCRIPT_NAME) in done.stdout
    status = json.loads(run("status", "obs", "--json").stdout)
    assert status["installed"] and status["version"] == __version__
    assert run("uninstall", "obs").returncode == 0
    assert not (tmp_path / "obs").exists()


def test_obs_config_dir_per_platform(tmp_path: Path) -> None:
    home = tmp_path
    assert install.obs_config_dir("linux", {}, home) == home / ".config" / "obs-studio"
    assert install.obs_config_dir("linux", {"XDG_CONFIG_HOME": "/x"}, home) == Path("/x/obs-studio")
    flatpak = home / ".var" / "app" / install.FLATPAK_ID / "config" / "obs-studio"
    flatpak.mkdir(parents=True)
    assert install.obs_config_dir("linux", {}, home) == flatpak
    assert install.obs_config_dir("win32", {"APPDATA": "C:/A"}, home) == Path("C:/A/obs-studio")
    assert install.obs_config_dir("darwin", {}, home) == (
        home / "Library" / "Application Support" / "obs-studio"
    )
    assert install.script_dir({"SUBPLUG_OBS_SCRIPT_DIR": str(tmp_path / "s")}) == tmp_path / "s"


# ----------------------------------------------------------------------- doctor


def test_doctor_registers_both_obs_checks() -> None:
    names = {check.name: check.group for check in plugins.doctor_checks()}
    assert names.get("obs") == "obs" and names.get("obs-script") == "obs"


def test_script_check_follows_the_installed_state(tmp_path: Path) -> None:
    folder = tmp_path / "obs"
    missing = checks.check_obs_script(folder)
    assert missing.status in (CheckStatus.WARN, CheckStatus.SKIP)
    assert missing.hint == "Run: subplug install obs"

    ObsHost(folder=folder).install()
    assert checks.check_obs_script(folder).status is CheckStatus.OK

    script = folder / SCRIPT_NAME
    script.write_text(
        script.read_text(encoding="utf-8").replace(
            f'SCRIPT_VERSION = "{__version__}"', 'SCRIPT_VERSION = "0.0.1"'
        ),
        encoding="utf-8",
    )
    old = checks.check_obs_script(folder)
    assert old.status is CheckStatus.WARN and "0.0.1" in old.summary

    ObsHost(folder=folder).install()
    (folder / CONFIG_NAME).write_text(
        json.dumps({"command": [str(tmp_path / "gone" / "python"), "-m", "subplug"]}),
        encoding="utf-8",
    )
    gone = checks.check_obs_script(folder)
    assert gone.status is CheckStatus.FAIL and "gone" in gone.summary


@pytest.mark.skipif(install.find_obs() is None, reason="OBS Studio not installed")
def test_program_check_reads_obs_version() -> None:
    result = checks.check_obs_program()
    assert result.status in (CheckStatus.OK, CheckStatus.WARN)
    version = result.details["version"]
    assert version and tuple(int(p) for p in version.split(".")[:2]) >= (20, 0)


def test_doctor_command_shows_the_obs_checks(tmp_path: Path) -> None:
    env = {**os.environ, "SUBPLUG_OBS_SCRIPT_DIR": str(tmp_path / "obs")}
    subprocess.run([sys.executable, "-m", "subplug", "install", "obs"], env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "subplug", "doctor", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    by_name = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert by_name["obs-script"]["status"] == "ok", by_name["obs-script"]
    assert str(tmp_path / "obs" / SCRIPT_NAME) in by_name["obs-script"]["summary"]
    assert by_name["obs"]["status"] in ("ok", "warn", "skip")
