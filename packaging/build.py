"""Build NeuroShard Node for the platform this runs on, smoke-test it, wrap it in an installer.

    .venv/bin/python packaging/build.py                  # one-folder CPU build + installer
    .venv/bin/python packaging/build.py --variant cuda   # venv must hold a CUDA torch
    .venv/bin/python packaging/build.py --smoke-only     # re-test an existing dist/NeuroShard

Steps: check the venv's torch matches the variant; compile the protobuf modules; render icons
and the Windows version resource; run PyInstaller on neuroshard.spec; check grpc_tools stayed
out; run the frozen app's ``--self-test``, a solo ``--headless --max-steps 2`` and the window
offscreen for a few seconds; make the installer. Any failure exits 1 with the reason. A JSON
report (sizes, seconds, artefacts) is printed last and written to ``dist/build-report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_layout as layout  # noqa: E402
import icon_maker  # noqa: E402
import installers  # noqa: E402
import smoke  # noqa: E402

SPEC = Path(__file__).resolve().parent / "neuroshard.spec"


class BuildError(Exception):
    """A build step failed; the message names the step and what to do."""


def _log(message: str) -> None:
    print(f"build: {message}", file=sys.stderr, flush=True)


def check_torch_variant(variant: str) -> str:
    """Refuse to bundle a CUDA torch as 'cpu' (a multi-GB surprise) or a CPU torch as 'cuda'."""
    code = "import torch; print(torch.__version__, torch.version.cuda or '')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"torch is not importable in {sys.executable}: {done.stderr.strip()[-500:]}")
    version, _, cuda = done.stdout.strip().partition(" ")
    if variant == "cpu" and cuda:
        raise BuildError(f"the venv holds torch {version} built for CUDA {cuda}; reinstall the CPU build "
                         "(scripts/bootstrap.sh) or pass --variant cuda")
    if variant == "cuda" and not cuda:
        raise BuildError(f"--variant cuda needs a CUDA torch; the venv holds {version} "
                         "(NEUROSHARD_TORCH=cuda scripts/bootstrap.sh packaging)")
    return version


def prepare_inputs(work_dir: Path, info: layout.ProjectInfo) -> icon_maker.IconSet:
    """Generated protobuf modules, icons and the Windows version file, all before PyInstaller."""
    done = subprocess.run([sys.executable, "-m", "app.node.p2p.build_proto"], cwd=layout.ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"compiling neuroshard.proto failed:\n{done.stderr[-2000:]}")
    work_dir.mkdir(parents=True, exist_ok=True)
    icons = icon_maker.make_icons(layout.ROOT / "resources" / "icons" / "neuroshard.svg", work_dir)
    (work_dir / "version_info.txt").write_text(layout.windows_version_info(info), encoding="utf-8")
    return icons


def run_pyinstaller(args: argparse.Namespace, work_dir: Path) -> float:
    env = {**os.environ, "NEUROSHARD_BUILD_DIR": str(work_dir), "NEUROSHARD_TORCH_VARIANT": args.variant,
           "NEUROSHARD_ONEFILE": "1" if args.onefile else "0"}
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", args.log_level,
               "--distpath", str(args.dist), "--workpath", str(work_dir / "pyinstaller"), str(SPEC)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=layout.ROOT, check=False)
    if done.returncode != 0:
        raise BuildError(f"PyInstaller failed (exit {done.returncode}); its log is above")
    return time.perf_counter() - started


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def check_bundle(bundle: Path) -> None:
    """grpc_tools must stay out: the frozen app uses the pre-generated modules."""
    leaked = [str(p.relative_to(bundle)) for p in bundle.rglob("grpc_tools*")]
    if leaked:
        raise BuildError(f"grpc_tools was bundled ({leaked[:3]}); check EXCLUDED_MODULES in bundle_layout.py")


def make_installers(args: argparse.Namespace, bundle: Path, icons: icon_maker.IconSet, info: layout.ProjectInfo,
                    stem: str) -> list[Path]:
    if sys.platform == "win32":
        return [installers.windows_installer(bundle, icons.ico, args.dist, stem, info)]
    if sys.platform == "darwin":
        return [installers.macos_dmg(bundle, args.dist, stem, info.version)]
    made = [installers.linux_tarball(bundle, icons.png, args.dist, stem)]
    tool = installers.find_appimagetool()
    if tool:
        made.append(installers.linux_appimage(bundle, icons.png, args.dist, stem, tool))
    else:
        _log("appimagetool not found (set APPIMAGETOOL): skipping the AppImage, the tarball is made")
    return made


def _platform_tag() -> str:
    return {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")


def build(args: argparse.Namespace) -> dict[str, Any]:
    info = layout.project_info()
    stem = layout.artifact_stem(info.version, _platform_tag(), platform.machine(), args.variant)
    work_dir = args.work / "packaging"
    executable = layout.cli_executable(args.dist)
    bundle = executable.parents[2] if sys.platform == "darwin" else executable.parent
    report: dict[str, Any] = {"version": info.version, "variant": args.variant, "platform": _platform_tag(),
                              "onefile": args.onefile}
    if not args.smoke_only:
        report["torch"] = check_torch_variant(args.variant)
        _log("compiling protobuf modules, rendering icons")
        icons = prepare_inputs(work_dir, info)
        _log(f"running PyInstaller on {SPEC.name} (a few minutes)")
        report["pyinstaller_seconds"] = round(run_pyinstaller(args, work_dir), 1)
    if args.onefile:
        executable = args.dist / (executable.name)
        bundle = executable
    else:
        check_bundle(bundle)
    report["bundle"] = str(bundle)
    report["bundle_bytes"] = folder_size(bundle)
    _log(f"smoke-testing {executable}")
    from app.cli import SUBCOMMANDS  # the build venv has the app installed (pip install -e .)

    smoke_report = smoke.run_smoke_tests(executable, bundle if bundle.is_dir() else bundle.parent,
                                         subcommands=sorted(SUBCOMMANDS))
    report["self_test_seconds"] = round(smoke_report.self_test_seconds, 1)
    report["headless_seconds"] = round(smoke_report.headless_seconds, 1)
    report["gui_seconds"] = round(smoke_report.gui_seconds, 1)
    report["tier"] = smoke_report.self_test.get("tier")
    report["smoke_ok"] = True
    if not args.smoke_only and not args.onefile and not args.no_installer:
        _log("making the installer")
        made = make_installers(args, bundle, icons, info, stem)
        report["artifacts"] = {str(p): p.stat().st_size for p in made}
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=layout.VARIANTS, default="cpu", help="torch build to bundle")
    parser.add_argument("--onefile", action="store_true", help="one self-extracting executable (no installer)")
    parser.add_argument("--smoke-only", action="store_true", help="only smoke-test the existing bundle")
    parser.add_argument("--no-installer", action="store_true", help="stop after the smoke tests")
    parser.add_argument("--dist", type=Path, default=layout.ROOT / "dist", help="output folder")
    parser.add_argument("--work", type=Path, default=layout.ROOT / "build", help="intermediate files")
    parser.add_argument("--log-level", default="WARN", choices=("DEBUG", "INFO", "WARN", "ERROR"),
                        help="PyInstaller's log level")
    args = parser.parse_args(argv)
    args.dist, args.work = args.dist.resolve(), args.work.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        report = build(args)
    except (BuildError, smoke.SmokeTestFailed, installers.InstallerError, layout.LayoutError) as exc:
        print(f"build: FAILED: {exc}", file=sys.stderr)
        return 1
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.dist.mkdir(parents=True, exist_ok=True)
    (args.dist / "build-report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
