"""What the spec bundles and prunes, checked without running PyInstaller."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.cli import SUBCOMMANDS
from app.selftest import DEPENDENCIES

ROOT = Path(__file__).resolve().parents[2]


def test_version_and_name_come_from_pyproject(layout, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.3rc1"\n')
    info = layout.project_info(tmp_path)
    assert (info.name, info.version) == ("x", "1.2.3rc1")
    assert info.version_tuple == (1, 2, 3, 0)
    assert layout.project_info(ROOT).name == "neuroshard-node"


def test_unreadable_pyproject_raises_layout_error(layout, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.x]\n")
    with pytest.raises(layout.LayoutError, match=r"\[project\]"):
        layout.project_info(tmp_path)


def test_data_files_keep_repo_relative_paths_and_skip_python(layout) -> None:
    pairs = layout.data_files(ROOT)
    by_source = {Path(src).relative_to(ROOT).as_posix(): dest for src, dest in pairs}
    assert by_source["resources/icons/neuroshard.svg"] == "resources/icons"
    assert by_source["app/wallet/wordlist.txt"] == "app/wallet"
    for src, dest in pairs:
        assert Path(src).suffix not in {".py", ".pyc", ".pyi"}, src
        assert "__pycache__" not in src
        assert Path(src).parent.relative_to(ROOT).as_posix() == dest
    every_resource = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resources").rglob("*")
                      if p.is_file() and p.name != ".DS_Store"}
    assert every_resource <= set(by_source)


def test_data_files_without_resources_folder_is_an_error(layout, tmp_path: Path) -> None:
    with pytest.raises(layout.LayoutError, match="resources"):
        layout.data_files(tmp_path)


@pytest.mark.parametrize("dest", [
    "torch/include/ATen/ATen.h",
    "torch/share/cmake/Torch/TorchConfig.cmake",
    "torch/lib/c10.lib",
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
    "nvidia/cudnn/lib/libcudnn.so.9",
    "torch/bin/test_api",
    "torch/bin/TCPStoreTest",
    "torch/bin/protoc-3.13.0.0",
    "torch/lib/libtorchbind_test.so",
    r"torch\lib\jitbackend_test.dll",
    "libcairo.so.2",
    "libpangocairo-1.0.so.0",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so",
    "libQt6Quick.so.6",
    "PySide6/Qt/lib/libQt6QmlModels.so.6",
    "PySide6/Qt/lib/QtQuick.framework/Versions/A/QtQuick",
    r"PySide6\Qt6VirtualKeyboard.dll",
])
def test_dead_weight_is_pruned_from_the_cpu_bundle(layout, dest: str) -> None:
    assert layout.is_pruned(dest, "cpu")


@pytest.mark.parametrize("dest", [
    "torch/bin/torch_shm_manager",  # import torch fails frozen without it (PLATFORM.md)
    "torch/lib/libtorch_cpu.so",
    "torch/_C.cpython-311-x86_64-linux-gnu.so",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/plugins/platforms/libqxcb.so",
    "PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so",
    "resources/icons/neuroshard.svg",
    "app/node/p2p/neuroshard.proto",
    "libQt6Charts.so.6",
    "libQt6Widgets.so.6",
    "libfontconfig.so.1",
    "libjpeg.so.62",
    "PySide6/Qt/plugins/platforminputcontexts/libcomposeplatforminputcontextplugin.so",
])
def test_runtime_files_are_kept(layout, dest: str) -> None:
    assert not layout.is_pruned(dest, "cpu")


def test_qml_stays_when_the_app_imports_qtquick(layout) -> None:
    toc = [("PySide6/Qt/lib/libQt6Quick.so.6", "src", "BINARY"), ("PySide6/QtWidgets.abi3.so", "src", "EXTENSION")]
    assert layout.prune(toc, "cpu") == toc[1:]
    with_quick = [*toc, ("PySide6/QtQuick.abi3.so", "src", "EXTENSION")]
    assert layout.prune(with_quick, "cpu") == with_quick


def test_cuda_variant_keeps_cuda_runtime_libraries(layout) -> None:
    assert not layout.is_pruned("nvidia/cudnn/lib/libcudnn.so.9", "cuda")
    assert not layout.is_pruned(r"torch\lib\cublas64_12.dll", "cuda")
    assert layout.is_pruned(r"torch\include\c10\core\Device.h", "cuda")


def test_build_time_tools_are_excluded_but_no_runtime_dependency(layout) -> None:
    assert "grpc_tools" in layout.EXCLUDED_MODULES
    for excluded in layout.EXCLUDED_MODULES:
        assert not any(dep == excluded or dep.startswith(excluded + ".") for dep in DEPENDENCIES), excluded


def test_hidden_imports_reach_every_lazily_imported_subcommand(layout) -> None:
    for module, _ in SUBCOMMANDS.values():
        assert any(module == pkg or module.startswith(pkg + ".") for pkg in layout.HIDDEN_IMPORT_PACKAGES), module


@pytest.mark.parametrize(("platform", "expected"), [
    ("linux", "NeuroShard/neuroshard"),
    ("win32", "NeuroShard/neuroshard-cli.exe"),
    ("darwin", "NeuroShard.app/Contents/MacOS/NeuroShard"),
])
def test_smoke_tests_run_the_console_executable(layout, platform: str, expected: str) -> None:
    assert layout.cli_executable(Path("dist"), platform).as_posix() == f"dist/{expected}"


def test_artifact_names_carry_version_platform_and_variant(layout) -> None:
    assert layout.artifact_stem("0.1.0", "linux", "X86_64", "cpu") == "NeuroShard-0.1.0-linux-x86_64-cpu"
    with pytest.raises(layout.LayoutError, match="variant"):
        layout.artifact_stem("0.1.0", "linux", "x86_64", "rocm")


def test_windows_version_resource_carries_the_version(layout, tmp_path: Path) -> None:
    info = layout.ProjectInfo(name="neuroshard-node", version="2.5.1", description="")
    text = layout.windows_version_info(info)
    call = ast.parse(text, mode="eval").body
    assert isinstance(call, ast.Call) and call.func.id == "VSVersionInfo"
    assert "filevers=(2, 5, 1, 0)" in text and "StringStruct('ProductVersion', '2.5.1')" in text
    try:  # PyInstaller's own reader needs pefile, installed on Windows only
        from PyInstaller.utils.win32 import versioninfo
    except ImportError:
        return
    path = tmp_path / "version_info.txt"
    path.write_text(text, encoding="utf-8")
    parsed = versioninfo.load_version_info_from_text_file(str(path))
    assert parsed.ffi.fileVersionMS == (2 << 16) | 5 and parsed.ffi.fileVersionLS == 1 << 16


def test_spec_is_valid_python_and_reads_the_layout_module() -> None:
    source = (ROOT / "packaging" / "neuroshard.spec").read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "bundle_layout" in imported
    assert "layout.prune(a.binaries" in source and "layout.data_files(ROOT)" in source
