"""Bad input at the command line: one clear line on stderr, exit code 2, nothing written."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_main(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def assert_one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_unknown_flag_exits_2_with_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    assert_one_line_error(capsys, "--bogus")


def test_bad_mode_exits_2(tmp_path, capsys) -> None:
    assert main(["--headless", "--data-dir", str(tmp_path), "--modes", "pipeline,mining"]) == 2
    assert_one_line_error(capsys, "mining")


def test_bad_tracker_exits_2(tmp_path, capsys) -> None:
    assert main(["--headless", "--data-dir", str(tmp_path), "--tracker", "localhost"]) == 2
    assert_one_line_error(capsys, "HOST:PORT")


def test_unreadable_config_exits_2_and_keeps_the_file(tmp_path, capsys) -> None:
    (tmp_path / "config.toml").write_text("port = = 3")
    assert main(["--headless", "--data-dir", str(tmp_path)]) == 2
    assert_one_line_error(capsys, "config.toml")
    assert (tmp_path / "config.toml").read_text() == "port = = 3"


def test_unwritable_data_dir_exits_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--headless", "--data-dir", str(blocker / "dir")]) == 2
    assert_one_line_error(capsys, "not writable", "--data-dir")


def test_busy_port_exits_2(tmp_path, capsys) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["--headless", "--data-dir", str(tmp_path), "--port", str(port)]) == 2
    assert_one_line_error(capsys, f"port {port}", "--port")
    assert not (tmp_path / "config.toml").exists()


def test_negative_max_steps_exits_2(tmp_path, capsys) -> None:
    assert main(["--headless", "--data-dir", str(tmp_path), "--max-steps", "-3"]) == 2
    assert_one_line_error(capsys, "--max-steps")


def test_help_is_fast_and_lists_subcommands() -> None:
    result = run_main("--help")
    assert result.returncode == 0
    for name in ("tracker", "devnet", "arch", "ledger", "--headless", "--self-test"):
        assert name in result.stdout


def test_self_test_prints_versions_device_and_tier() -> None:
    result = run_main("--self-test")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["tier"] in {"T1", "T2", "T3", "T4", "T5"}
    assert report["device"]["type"] in {"cpu", "cuda", "mps"}
    assert set(report["checks"].values()) == {"ok"}
    assert report["versions"]["torch"].startswith("2.")
