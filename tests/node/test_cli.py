"""Bad input at the command line: one clear line on stderr, exit code 2, nothing written."""

import json
import os
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


# --- exit codes as promised: 2 for every kind of bad input, checked before anything slow

def fast_wallet(data_dir: Path, password: str) -> str:
    from app.wallet.keystore import Keystore

    data_dir.mkdir(parents=True, exist_ok=True)
    return Keystore(data_dir, use_keyring=False, scrypt_n=2**10).create(password).address


def run_node(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSHARD_PASSWORD")}
    return subprocess.run([sys.executable, str(REPO / "main.py"), "--headless", "--data-dir", str(data_dir),
                           "--port", "0", *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**environment, **(env or {})})


def assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    err = result.stderr.strip()
    assert result.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_wrong_wallet_password_exits_2_before_the_benchmark(tmp_path) -> None:
    fast_wallet(tmp_path, "right password")
    result = run_node(tmp_path, env={"NEUROSHARD_PASSWORD": "wrong password"})
    assert_one_line(result, 2, "wrong wallet password")
    assert not (tmp_path / "hardware.json").exists()  # the benchmark never ran
    assert not (tmp_path / "ledger.sqlite").exists()


def test_protected_wallet_without_a_password_exits_2(tmp_path) -> None:
    fast_wallet(tmp_path, "right password")
    assert_one_line(run_node(tmp_path), 2, "password-protected", "NEUROSHARD_PASSWORD")


def test_damaged_wallet_is_a_failure_not_bad_input(tmp_path) -> None:
    (tmp_path / "wallet.json").write_text("{not json")
    assert_one_line(run_node(tmp_path), 1, "wallet", "restore it from a backup")


def test_password_checked_early_is_not_asked_for_again(tmp_path, monkeypatch) -> None:
    from app.node import identity
    from app.node.config import NodeConfig
    from app.wallet.keystore import Keystore

    address = fast_wallet(tmp_path, "right password")
    config = NodeConfig(data_dir=tmp_path)
    store = Keystore(tmp_path, use_keyring=False, scrypt_n=2**10)
    monkeypatch.setenv(identity.PASSWORD_ENV, "right password")
    assert identity.unlock_before_start(config, store) == address
    monkeypatch.setenv(identity.PASSWORD_ENV, "wrong password")
    assert identity.load_node_key(config, store).address == address  # the key unlocked at start
    with pytest.raises(identity.IdentityError, match="wrong wallet password"):
        identity.load_node_key(config, store)  # handed over once, not remembered


def test_first_start_creates_no_wallet_before_the_node_holds_its_data_dir(tmp_path) -> None:
    from app.node import identity
    from app.node.config import NodeConfig

    assert identity.unlock_before_start(NodeConfig(data_dir=tmp_path)) is None
    assert not (tmp_path / "wallet.json").exists()


@pytest.mark.parametrize("argv, needles", [
    (["--port", "99999"], ("--port", "99999", "at most 65535")),
    (["--port", "-1"], ("--port", "-1", "at least 0")),
    (["--port", "abc"], ("--port", "abc")),
    (["--max-steps", "x"], ("--max-steps",)),
    (["--device", "tpu"], ("--device", "tpu")),
    (["--modes", "pipeline,mining"], ("--modes", "mining")),
])
def test_bad_node_flags_exit_2_with_one_line(tmp_path, capsys, argv, needles) -> None:
    try:
        code = main(["--headless", "--data-dir", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    assert_one_line_error(capsys, *needles)


@pytest.mark.parametrize("argv, needles", [
    (["tracker", "--port", "99999"], ("--port", "99999", "0-65535")),
    (["tracker", "--port", "-5"], ("--port", "-5")),
    (["tracker", "--heartbeat-timeout", "-1"], ("--heartbeat-timeout", "-1", "positive")),
    (["devnet", "--timeout", "nan"], ("--timeout", "nan")),
    (["devnet", "--nodes", "0"], ("--nodes", "at least 1")),
    (["devnet", "--steps", "-1"], ("--steps",)),
    (["devnet", "--base-port", "70000"], ("--base-port", "70000")),
    (["arch", "--nodes", "0"], ("--nodes",)),
    (["ledger", "history", "--limit", "0"], ("--limit", "at least 1")),
    (["ledger", "frobnicate"], ("frobnicate",)),
])
def test_bad_subcommand_flags_exit_2_with_one_line(capsys, argv, needles) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert_one_line_error(capsys, *needles)




def test_tracker_out_of_range_port_never_listens() -> None:
    result = run_main("tracker", "--port", "99999", timeout=60)
    assert result.returncode == 2
    assert "listening" not in result.stdout and len(result.stderr.strip().splitlines()) == 1


def test_ledger_reads_a_broken_config_as_the_node_does(tmp_path, capsys) -> None:
    (tmp_path / "config.toml").write_text('[economics]\npreset = "x"\n')
    assert main(["ledger", "--data-dir", str(tmp_path), "verify"]) == 2
    assert_one_line_error(capsys, "preset", "'x'")
