"""The smoke-test harness judges a frozen app correctly. Small Python scripts play the frozen
executable here (the real one is exercised by the slow test_build.py)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

GOOD_SELF_TEST = {"frozen": True, "ok": True, "checks": {"autograd": "ok"}, "versions": {"torch": "2"}, "tier": "T4"}


def _fake_app(folder: Path, body: str) -> Path:
    """An executable script in ``folder`` that behaves as ``body`` says for each mode."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "neuroshard"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\nfrom pathlib import Path\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


TRAIN_TWO_STEPS = 'data.mkdir(parents=True); (data / "run_summary.json").write_text(json.dumps({"steps": 2}))'


STAY_UP = "import time; time.sleep(60)"


KNOWN_SUBCOMMANDS = 'print("usage: neuroshard " + sys.argv[1]) if sys.argv[1] == "arch" else sys.exit(2)'


def _app_printing(folder: Path, self_test: dict, headless: str = TRAIN_TWO_STEPS, gui: str = STAY_UP,
                  cli: str = KNOWN_SUBCOMMANDS) -> Path:
    return _fake_app(folder, f"""
if "--help" in sys.argv:
    {cli}
elif "--headless" not in sys.argv and "--self-test" not in sys.argv:
    {gui}
elif sys.argv[1] == "--self-test":
    print("qt.qpa: some log line")
    print(json.dumps({self_test!r}))
    sys.exit(0 if {self_test!r}.get("ok") else 1)
else:
    data = Path(sys.argv[sys.argv.index("--data-dir") + 1])
    assert os.environ["NEUROSHARD_DATA_DIR"] == str(data)
    {headless}
""")


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake app is a shebang script")


@pytest.fixture(autouse=True)
def _short_window_check(smoke, monkeypatch) -> None:
    monkeypatch.setattr(smoke, "GUI_SECONDS", 2)


def test_passing_app_reports_every_run(smoke, tmp_path: Path) -> None:
    app = _app_printing(tmp_path / "bundle", GOOD_SELF_TEST)
    report = smoke.run_smoke_tests(app, tmp_path / "bundle")
    assert report.self_test["tier"] == "T4"
    assert report.self_test_seconds > 0 and report.headless_seconds > 0 and report.gui_seconds == 2


def test_failed_check_fails_with_its_name(smoke, tmp_path: Path) -> None:
    broken = {**GOOD_SELF_TEST, "ok": False, "checks": {"qt_offscreen": "FAILED: no platform plugin"}}
    app = _app_printing(tmp_path / "bundle", broken)
    with pytest.raises(smoke.SmokeTestFailed, match="qt_offscreen: FAILED: no platform plugin"):
        smoke.run_smoke_tests(app, tmp_path / "bundle")


def test_unfrozen_app_is_refused(smoke, tmp_path: Path) -> None:
    app = _app_printing(tmp_path / "bundle", {**GOOD_SELF_TEST, "frozen": False})
    with pytest.raises(smoke.SmokeTestFailed, match="frozen=False"):
        smoke.run_smoke_tests(app, tmp_path / "bundle")


def test_failing_headless_run_fails_with_its_output(smoke, tmp_path: Path) -> None:
    app = _app_printing(tmp_path / "bundle", GOOD_SELF_TEST,
                        headless='print("fatal error: no genesis data"); sys.exit(1)')
    with pytest.raises(smoke.SmokeTestFailed, match="no genesis data"):
        smoke.run_smoke_tests(app, tmp_path / "bundle")


def test_headless_run_that_trained_too_little_fails(smoke, tmp_path: Path) -> None:
    one_step = TRAIN_TWO_STEPS.replace('"steps": 2', '"steps": 1')
    app = _app_printing(tmp_path / "bundle", GOOD_SELF_TEST, headless=one_step)
    with pytest.raises(smoke.SmokeTestFailed, match="records 1 training steps, expected 2"):
        smoke.run_smoke_tests(app, tmp_path / "bundle")
    silent = _app_printing(tmp_path / "bundle2", GOOD_SELF_TEST, headless="sys.exit(0)")
    with pytest.raises(smoke.SmokeTestFailed, match="no readable"):
        smoke.run_smoke_tests(silent, tmp_path / "bundle2")


def test_app_writing_into_its_install_folder_fails(smoke, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    app = _app_printing(bundle, GOOD_SELF_TEST,
                        headless=TRAIN_TWO_STEPS + '; Path(sys.argv[0]).with_name("ledger.sqlite").write_text("x")')
    with pytest.raises(smoke.SmokeTestFailed, match="ledger.sqlite"):
        smoke.run_smoke_tests(app, bundle)


def test_window_that_quits_at_start_fails(smoke, tmp_path: Path) -> None:
    app = _app_printing(tmp_path / "bundle", GOOD_SELF_TEST, gui='print("No module named PySide6.QtCharts"); sys.exit(1)')
    with pytest.raises(smoke.SmokeTestFailed, match="QtCharts"):
        smoke.run_smoke_tests(app, tmp_path / "bundle")


def test_subcommand_missing_from_the_bundle_fails(smoke, tmp_path: Path) -> None:
    app = _app_printing(tmp_path / "bundle", GOOD_SELF_TEST)
    assert smoke.run_smoke_tests(app, tmp_path / "bundle", subcommands=["arch"]).self_test["ok"]
    with pytest.raises(smoke.SmokeTestFailed, match="sub-command 'devnet'"):
        smoke.run_smoke_tests(app, tmp_path / "bundle", subcommands=["arch", "devnet"])


def test_missing_executable_says_so(smoke, tmp_path: Path) -> None:
    with pytest.raises(smoke.SmokeTestFailed, match="does not exist"):
        smoke.run_smoke_tests(tmp_path / "nothing", tmp_path)


def test_self_test_json_is_found_after_log_lines(smoke) -> None:
    out = "Qt: warning\n{not json\n" + json.dumps(GOOD_SELF_TEST) + "\n"
    assert smoke.parse_self_test(out) == GOOD_SELF_TEST
    with pytest.raises(smoke.SmokeTestFailed, match="no JSON"):
        smoke.parse_self_test("only logs\n")
