"""Wrap a one-folder bundle in what each platform's volunteers install.

Linux: a .tar.gz (the folder plus a desktop-entry installer), and an AppImage when
``appimagetool`` is available. macOS: the .app in a compressed .dmg made with ``hdiutil``, with
an /Applications link to drag onto. Windows: a per-user Inno Setup installer from
windows/neuroshard.iss. Each returns the files it produced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import bundle_layout as layout

HERE = Path(__file__).resolve().parent
# gzip level 6: every tar reads it; measured ~40 % smaller than the folder, zstd would be faster
# to unpack but older distributions' tar lacks --zstd.
TAR_COMPRESSLEVEL = 6
_ISCC_CANDIDATES = (
    r"C:\Program Files (x86)\Inno Setup 6\ISCC.exe",
    r"C:\Program Files\Inno Setup 6\ISCC.exe",
)


class InstallerError(Exception):
    """An installer tool is missing or failed; the message says which and how to get it."""


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallerError(f"{what} failed (exit {done.returncode}): {' '.join(command)}\n"
                             f"{(done.stdout + done.stderr)[-4000:]}")


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def linux_tarball(bundle: Path, icon_png: Path, out_dir: Path, stem: str) -> Path:
    """``<stem>.tar.gz`` holding ``NeuroShard/`` with the icon, .desktop template and install.sh."""
    target = out_dir / f"{stem}.tar.gz"
    extras = {
        "neuroshard.png": icon_png,
        "neuroshard.desktop": HERE / "linux" / "neuroshard.desktop",
        "install.sh": HERE / "linux" / "install.sh",
    }
    with tarfile.open(target, "w:gz", compresslevel=TAR_COMPRESSLEVEL) as tar:
        tar.add(bundle, arcname=layout.APP_NAME, filter=_root_owned)
        for name, source in extras.items():
            tar.add(source, arcname=f"{layout.APP_NAME}/{name}", filter=_root_owned)
    return target


def find_appimagetool() -> str | None:
    return os.environ.get("APPIMAGETOOL") or shutil.which("appimagetool") or shutil.which("appimagetool-x86_64.AppImage")


def linux_appimage(bundle: Path, icon_png: Path, out_dir: Path, stem: str, tool: str) -> Path:
    """An AppDir (AppRun, .desktop, icon, the bundle under usr/lib) packed by appimagetool."""
    target = out_dir / f"{stem}.AppImage"
    with tempfile.TemporaryDirectory(prefix="neuroshard-appdir-") as tmp:
        appdir = Path(tmp) / f"{layout.APP_NAME}.AppDir"
        shutil.copytree(bundle, appdir / "usr" / "lib" / layout.APP_NAME, symlinks=True)
        shutil.copy(HERE / "linux" / "AppRun", appdir / "AppRun")
        (appdir / "AppRun").chmod(0o755)
        shutil.copy(HERE / "linux" / "neuroshard.desktop", appdir / "neuroshard.desktop")
        shutil.copy(icon_png, appdir / "neuroshard.png")
        os.symlink("neuroshard.png", appdir / ".DirIcon")
        env_arch = {**os.environ, "ARCH": os.environ.get("ARCH", "x86_64")}
        done = subprocess.run([tool, "--no-appstream", str(appdir), str(target)], env=env_arch,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InstallerError(f"appimagetool failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return target


def macos_dmg(app_bundle: Path, out_dir: Path, stem: str, version: str) -> Path:
    """A UDZO (zlib-compressed, read-only) disk image with the .app and an /Applications link."""
    if shutil.which("hdiutil") is None:
        raise InstallerError("hdiutil not found: the .dmg can only be made on macOS")
    target = out_dir / f"{stem}.dmg"
    with tempfile.TemporaryDirectory(prefix="neuroshard-dmg-") as tmp:
        staging = Path(tmp) / layout.APP_NAME
        staging.mkdir()
        # ditto keeps the code signature, extended attributes and symlinks inside the .app.
        _run(["ditto", str(app_bundle), str(staging / app_bundle.name)], "ditto")
        os.symlink("/Applications", staging / "Applications")
        _run(["hdiutil", "create", "-volname", f"{layout.APP_NAME} {version}", "-srcfolder", str(staging),
              "-fs", "HFS+", "-format", "UDZO", "-ov", str(target)], "hdiutil create")
    return target


def find_iscc() -> str | None:
    found = os.environ.get("ISCC") or shutil.which("iscc") or shutil.which("ISCC")
    return found or next((c for c in _ISCC_CANDIDATES if Path(c).is_file()), None)


def windows_installer(bundle: Path, icon_ico: Path, out_dir: Path, stem: str, info: layout.ProjectInfo) -> Path:
    """Compile windows/neuroshard.iss with the version, folders and icon passed as /D defines."""
    iscc = find_iscc()
    if iscc is None:
        raise InstallerError("Inno Setup 6 (ISCC.exe) not found: install it (choco install innosetup) "
                             "or set ISCC to its path")
    numeric = ".".join(str(n) for n in info.version_tuple)
    _run([iscc, "/Qp", f"/DAppVersion={info.version}", f"/DAppVersionNumeric={numeric}",
          f"/DSourceDir={bundle}", f"/DOutputDir={out_dir}", f"/DOutputBaseFilename={stem}-setup",
          f"/DIconFile={icon_ico}", str(HERE / "windows" / "neuroshard.iss")], "Inno Setup")
    return out_dir / f"{stem}-setup.exe"
