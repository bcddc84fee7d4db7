"""Start-at-login: the XDG autostart entry (run for real in a temp config dir) and the macOS
LaunchAgent's file contents (in a temp HOME)."""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

EXE = "/opt/Neuro Shard/neuroshard"


def test_xdg_enable_writes_an_entry_whose_command_round_trips(autostart, tmp_path: Path) -> None:
    entry = autostart.XdgAutostart(tmp_path)
    args = ["--minimized", "--data-dir", "/home/v/My Data/$HOME 100%", 'say "hi"', "back\\slash"]
    entry.enable(EXE, args)
    assert entry.path == tmp_path / "autostart" / "neuroshard.desktop"
    text = entry.path.read_text(encoding="utf-8")
    assert text.startswith("[Desktop Entry]\n") and "Type=Application\n" in text
    assert "X-GNOME-Autostart-enabled=true\n" in text
    assert entry.is_enabled()
    assert entry.command() == [EXE, *args]


def test_quote_exec_follows_desktop_entry_spec(autostart) -> None:
    assert autostart.quote_exec(["/usr/bin/neuroshard", "--minimized"]) == "/usr/bin/neuroshard --minimized"
    assert autostart.quote_exec(["/opt/a b/x"]) == '"/opt/a b/x"'
    assert autostart.quote_exec(["/x", "50%"]) == "/x 50%%"
    # Inside quotes: \" \` \$ \\ ; then the string escape doubles every backslash.
    assert autostart.quote_exec(["/x", 'a"b']) == '/x "a\\\\"b"'
    assert autostart.quote_exec(["/x", "a\\b"]) == '/x "a\\\\\\\\b"'
    assert autostart.quote_exec(["/x", ""]) == '/x ""'


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",))),
                max_size=5))
def test_exec_quoting_round_trips_any_arguments(autostart, args: list[str]) -> None:
    command = ["/opt/neuroshard", *args]
    assert autostart.split_exec(autostart.quote_exec(command)) == command


def test_xdg_disable_removes_the_entry(autostart, tmp_path: Path) -> None:
    entry = autostart.XdgAutostart(tmp_path)
    entry.enable(EXE, [])
    entry.disable()
    assert not entry.path.exists()
    assert not entry.is_enabled() and entry.command() is None
    entry.disable()  # idempotent: switching off twice is not an error


@pytest.mark.parametrize("switch_off", ["Hidden=true", "X-GNOME-Autostart-enabled=false"])
def test_xdg_entry_switched_off_by_the_desktop_reads_as_disabled(autostart, tmp_path: Path, switch_off) -> None:
    entry = autostart.XdgAutostart(tmp_path)
    entry.enable(EXE, [])
    key = switch_off.split("=")[0]
    lines = [line for line in entry.path.read_text().splitlines() if not line.startswith(key + "=")]
    entry.path.write_text("\n".join([*lines, switch_off, ""]))
    assert not entry.is_enabled()


def test_module_functions_use_xdg_config_home_on_linux(autostart, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert not autostart.is_enabled()
    autostart.enable(EXE, ["--minimized"])
    assert (tmp_path / "autostart" / "neuroshard.desktop").is_file()
    assert autostart.is_enabled()
    autostart.disable()
    assert not autostart.is_enabled()


def test_unreadable_entry_raises_a_typed_error_not_a_crash(autostart, tmp_path: Path) -> None:
    entry = autostart.XdgAutostart(tmp_path)
    entry.path.parent.mkdir(parents=True)
    entry.path.write_bytes(b"\xff\xfe not utf-8 [Desktop Entry")
    with pytest.raises(autostart.AutostartError, match="delete it"):
        entry.is_enabled()


@pytest.mark.parametrize("bad", [("relative/neuroshard", []), (EXE, ["two\nlines"]), ("", [])])
def test_enable_refuses_commands_that_cannot_start_at_login(autostart, tmp_path: Path, bad) -> None:
    with pytest.raises(autostart.AutostartError):
        autostart.XdgAutostart(tmp_path).enable(*bad)
    with pytest.raises(autostart.AutostartError):
        autostart.MacLaunchAgent(tmp_path).enable(*bad)


def test_launch_agent_runs_the_app_once_at_login_in_the_gui_session(autostart, tmp_path: Path) -> None:
    agent = autostart.MacLaunchAgent(home=tmp_path)
    app = "/Applications/NeuroShard.app/Contents/MacOS/NeuroShard"
    agent.enable(app, ["--minimized"])
    assert agent.path == tmp_path / "Library" / "LaunchAgents" / "org.neuroshard.node.plist"
    plist = plistlib.loads(agent.path.read_bytes())
    assert plist == {
        "Label": "org.neuroshard.node",
        "ProgramArguments": [app, "--minimized"],
        "RunAtLoad": True,
        "KeepAlive": False,
        "ProcessType": "Interactive",
        "LimitLoadToSessionType": "Aqua",
    }
    assert agent.path.read_bytes().startswith(b"<?xml")  # launchd reads XML plists
    assert agent.is_enabled() and agent.command() == [app, "--minimized"]
    agent.disable()
    assert not agent.path.exists() and not agent.is_enabled()


def test_launch_agent_marked_disabled_reads_as_disabled(autostart, tmp_path: Path) -> None:
    agent = autostart.MacLaunchAgent(home=tmp_path)
    agent.enable(EXE, [])
    plist = plistlib.loads(agent.path.read_bytes())
    agent.path.write_bytes(plistlib.dumps({**plist, "Disabled": True}))
    assert not agent.is_enabled()


def test_corrupt_launch_agent_raises_a_typed_error(autostart, tmp_path: Path) -> None:
    agent = autostart.MacLaunchAgent(home=tmp_path)
    agent.path.parent.mkdir(parents=True)
    agent.path.write_bytes(b"<?xml version='1.0'?><plist><dict><key>Label")
    with pytest.raises(autostart.AutostartError):
        agent.is_enabled()


def test_launch_command_from_source_runs_main_py(autostart) -> None:
    executable, args = autostart.launch_command()
    assert executable == sys.executable
    assert len(args) == 1 and Path(args[0]).name == "main.py" and Path(args[0]).is_file()


def test_launch_command_names_the_appimage_not_its_mount_point(autostart, monkeypatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/tmp/.mount_NeuroXYZ/usr/lib/NeuroShard/neuroshard")
    monkeypatch.setenv("APPIMAGE", "/home/v/Apps/NeuroShard.AppImage")
    assert autostart.launch_command() == ("/home/v/Apps/NeuroShard.AppImage", [])
    monkeypatch.delenv("APPIMAGE")
    assert autostart.launch_command() == ("/tmp/.mount_NeuroXYZ/usr/lib/NeuroShard/neuroshard", [])
