"""What goes into the frozen bundle and what stays out: read by the PyInstaller spec and build.py.

Kept free of PyInstaller imports so the lists are checked by the fast test suite without building.
The figures in the comments are from PLATFORM.md ("PyInstaller (one-folder)"): torch is ~630 MB of
a ~954 MB bundle, so every rule here either keeps the frozen app working or saves tens of MB.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 runners
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

APP_NAME = "NeuroShard"
BUNDLE_ID = "org.neuroshard.node"
CLI_NAME = "neuroshard"
# Windows folds case in file names, so the console twin of NeuroShard.exe needs its own name.
WINDOWS_CLI_NAME = "neuroshard-cli"
VARIANTS = ("cpu", "cuda")

# Packages imported by name at run time (cli.SUBCOMMANDS, keyring's entry points) that
# PyInstaller's static analysis cannot see; listing the whole `app` package also keeps the
# generated protobuf modules in even when no import path reaches them at analysis time.
HIDDEN_IMPORT_PACKAGES = ("app", "keyring.backends")

# grpc_tools (protoc, ~50 MB with its protobuf includes) is a build-time tool: the compiled
# modules in app/node/p2p/generated are bundled instead. The rest are never used by the node.
EXCLUDED_MODULES = (
    "grpc_tools",
    "tkinter",
    "_tkinter",
    "pytest",
    "_pytest",
    "hypothesis",
    "IPython",
    "matplotlib",
    "PyInstaller",
)

# Suffixes of non-Python files under app/ that are not run-time data.
_NOT_DATA_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyi"})
_NOT_DATA_NAMES = frozenset({".DS_Store", "Thumbs.db"})


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    version: str
    description: str

    @property
    def version_tuple(self) -> tuple[int, int, int, int]:
        """Four numbers for the Windows version resource and Inno Setup: each dotted part's leading
        digits, so "1.2.3rc1" gives (1, 2, 3, 0); missing parts are 0."""
        parts = [int(m.group()) if (m := re.match(r"\d+", p)) else 0 for p in self.version.split(".")[:4]]
        return tuple((parts + [0, 0, 0, 0])[:4])  # type: ignore[return-value]


class LayoutError(Exception):
    """The source tree lacks something the bundle needs."""


def project_info(root: Path = ROOT) -> ProjectInfo:
    """Name, version and description from pyproject.toml, the one place the version is written."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise LayoutError(f"cannot read [project] from {root / 'pyproject.toml'}: {exc}") from exc
    return ProjectInfo(name=project["name"], version=str(project["version"]),
                       description=str(project.get("description", "")))


def _files_under(folder: Path) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name not in _NOT_DATA_NAMES:
            yield path


def data_files(root: Path = ROOT) -> list[tuple[str, str]]:
    """(source file, destination folder) pairs in PyInstaller's ``datas`` form.

    The app finds its resources relative to its modules (``Path(__file__).parents[2] /
    "resources"`` in app/ui) and data beside modules (app/wallet/wordlist.txt); frozen,
    ``__file__`` lies under the bundle's root, so every file keeps its path relative to the repo.
    """
    resources = root / "resources"
    if not resources.is_dir():
        raise LayoutError(f"{resources} is missing: the bundle needs the icons, styles and genesis sample")
    pairs = []
    for folder in (resources, root / "app"):
        for path in _files_under(folder):
            if folder.name == "app" and path.suffix in _NOT_DATA_SUFFIXES:
                continue
            pairs.append((str(path), str(path.parent.relative_to(root).as_posix())))
    return pairs


# Binaries in torch/bin and torch/lib that only torch's own C++ test suite runs (~47 MB), and
# protoc, which torch ships for its build. torch/bin/torch_shm_manager stays: `import torch`
# fails frozen without it (PLATFORM.md).
_TORCH_TEST_LIBS = frozenset({"jitbackend_test", "torchbind_test", "backend_with_compiler", "aoti_custom_ops"})
# Qt's GTK platform theme drags GTK, cairo and pango into the bundle (PLATFORM.md); it is pruned
# and so are the libraries only it needed, which dependency analysis collected before pruning.
_GTK_STACK_PREFIXES = ("libgtk-3", "libgdk-3", "libatk-", "libcairo", "libgdk_pixbuf", "libpango",
                       "libthai", "libdatrie", "libfribidi", "libpixman", "libepoxy")
# The virtual-keyboard input plugin is for touch kiosks; it alone pulls in QtQuick and QtQml
# (~17 MB). They stay when the app itself imports PySide6.QtQml or QtQuick.
_QML_MARKERS = ("qt6quick", "qt6qml", "qt6virtualkeyboard", "qtvirtualkeyboardplugin",
                "qtquick.framework", "qtqml", "qtvirtualkeyboard")


def _stem(name: str) -> str:
    stem = name.split(".")[0]
    return stem[3:] if stem.startswith("lib") else stem


def is_pruned(dest: str, variant: str = "cpu", *, keep_qml: bool = False) -> bool:
    """True for a collected file (its path inside the bundle) that the frozen app never needs.

    The CPU variant also refuses CUDA runtime libraries, in case the build venv holds a CUDA
    torch by mistake (build.py checks that too, with a clearer message).
    """
    parts = PurePosixPath(dest.replace("\\", "/")).parts
    if not parts:
        return False
    name, lowered = parts[-1], dest.replace("\\", "/").lower()
    if parts[:2] == ("torch", "bin"):
        stem = name.split(".")[0]
        return stem.startswith(("test_", "protoc")) or stem.endswith("Test") or name.endswith((".pt", ".ptl"))
    if parts[0] == "torch" and (
        parts[1:2] in (("include",), ("share",), ("test",))
        or name.endswith((".h", ".hpp", ".cuh", ".cmake", ".lib"))
        or _stem(name) in _TORCH_TEST_LIBS
    ):
        return True
    if ("platformthemes" in parts and "gtk" in name.lower()) or name.startswith(_GTK_STACK_PREFIXES):
        return True
    if not keep_qml and any(marker in lowered for marker in _QML_MARKERS):
        return True
    return variant == "cpu" and (parts[0] == "nvidia" or name.startswith(("libcudnn", "libcublas", "libnccl")))


def uses_qml(dests: Iterable[str]) -> bool:
    """Whether the app's own imports brought in PySide6.QtQml or QtQuick (then Qml stays)."""
    return any(PurePosixPath(d.replace("\\", "/")).parts[:1] == ("PySide6",)
               and PurePosixPath(d.replace("\\", "/")).name.startswith(("QtQml", "QtQuick"))
               for d in dests)


def prune(entries: list[tuple[str, ...]], variant: str) -> list[tuple[str, ...]]:
    """PyInstaller TOC entries (destination first) minus what :func:`is_pruned` refuses."""
    keep_qml = uses_qml(entry[0] for entry in entries)
    return [entry for entry in entries if not is_pruned(entry[0], variant, keep_qml=keep_qml)]


def artifact_stem(version: str, platform_tag: str, machine: str, variant: str) -> str:
    """File name stem shared by every installer: NeuroShard-0.1.0-linux-x86_64-cpu."""
    if variant not in VARIANTS:
        raise LayoutError(f"unknown torch variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return f"{APP_NAME}-{version}-{platform_tag}-{machine.lower()}-{variant}"


def cli_executable(dist_dir: Path, platform: str = sys.platform) -> Path:
    """The frozen console executable that the smoke tests run, per platform."""
    if platform == "win32":
        return dist_dir / APP_NAME / f"{WINDOWS_CLI_NAME}.exe"
    if platform == "darwin":
        return dist_dir / f"{APP_NAME}.app" / "Contents" / "MacOS" / APP_NAME
    return dist_dir / APP_NAME / CLI_NAME


def windows_version_info(info: ProjectInfo) -> str:
    """Text of a PyInstaller version file (a VSVersionInfo expression) for the .exe resources."""
    numbers = info.version_tuple
    strings = {
        "CompanyName": "NeuroShard volunteers",
        "FileDescription": f"{APP_NAME} Node",
        "FileVersion": info.version,
        "InternalName": CLI_NAME,
        "OriginalFilename": f"{APP_NAME}.exe",
        "ProductName": APP_NAME,
        "ProductVersion": info.version,
    }
    entries = ",\n          ".join(f"StringStruct({k!r}, {v!r})" for k, v in strings.items())
    return f"""VSVersionInfo(
  ffi=FixedFileInfo(filevers={numbers}, prodvers={numbers}, mask=0x3f, flags=0x0, OS=0x40004,
                    fileType=0x1, subtype=0x0, date=(0, 0)),
  kids=[
    StringFileInfo([StringTable('040904B0', [
          {entries}])]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""
