"""``--self-test``: import every dependency, exercise each briefly, print one JSON object.

Packaging runs it on the frozen app, so each check uses the library the way the node does
(autograd, a signature round trip, a gRPC call on loopback, an offscreen Qt render) rather than
only importing it. Exit 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

DEPENDENCIES = (
    "torch", "numpy", "PySide6", "grpc", "google.protobuf", "keyring", "ecdsa", "platformdirs",
    "cryptography", "tokenizers", "safetensors", "psutil",
)


_DISTRIBUTIONS = {"PySide6": "pyside6-essentials", "grpc": "grpcio", "google.protobuf": "protobuf"}


def _version(module_name: str) -> str:
    module = importlib.import_module(module_name)
    found = getattr(module, "__version__", None)
    if found is None:
        try:
            found = importlib.metadata.version(_DISTRIBUTIONS.get(module_name, module_name))
        except importlib.metadata.PackageNotFoundError:
            found = "unknown"  # frozen apps may carry no distribution metadata
    return str(found)


def _check_autograd() -> str:
    import torch

    x = torch.arange(4.0, requires_grad=True)
    (x * x).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, 2 * torch.arange(4.0))
    return "ok"


def _check_signature() -> str:
    from app.crypto.keys import PrivateKey, verify

    key = PrivateKey.generate()
    signature = key.sign(b"self-test")
    assert verify(key.public_key.data, b"self-test", signature)
    assert not verify(key.public_key.data, b"tampered", signature)
    return "ok"


def _check_grpc() -> str:
    """Echo bytes through a generic-handler server on 127.0.0.1 (no generated code needed)."""
    from concurrent import futures

    import grpc

    def echo(request: bytes, _context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "selftest.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/selftest.Echo/Echo")
            assert call(b"ping", timeout=5) == b"ping"
    finally:
        server.stop(0)
    return "ok"


def _check_qt() -> str:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QApplication

    # QApplication, not QGuiApplication: widgets made later in the same process need it.
    app = QApplication.instance() or QApplication([sys.argv[0]])
    image = QImage(32, 32, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.white)
    painter = QPainter(image)
    painter.fillRect(0, 0, 16, 16, QColor("#2a7"))
    painter.end()
    assert image.pixelColor(4, 4) == QColor("#2a7") and app is not None
    return "ok"


def _check_tokenizer() -> str:
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    assert tokenizer.encode("ab", add_special_tokens=False).ids == [2]
    return "ok"


CHECKS: dict[str, Callable[[], str]] = {
    "autograd": _check_autograd,
    "signature": _check_signature,
    "grpc_loopback": _check_grpc,
    "qt_offscreen": _check_qt,
    "tokenizers": _check_tokenizer,
}


def collect() -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                              "frozen": bool(getattr(sys, "frozen", False)), "versions": {}, "checks": {}}
    ok = True
    for name in DEPENDENCIES:
        try:
            result["versions"][name] = _version(name)
        except Exception as exc:  # report every missing dependency, not just the first
            result["versions"][name] = f"MISSING: {exc}"
            ok = False
    for name, check in CHECKS.items():
        try:
            result["checks"][name] = check()
        except Exception as exc:
            result["checks"][name] = f"FAILED: {exc.__class__.__name__}: {exc}"
            ok = False
    try:
        from app.node.hardware import measure

        report = measure()
        result["device"] = {"type": report.device.device, "name": report.device.name,
                            "memory_bytes": report.device.memory_bytes}
        result["ms_per_layer"] = round(report.ms_per_layer, 1)
        result["tier"] = report.tier.value
    except Exception as exc:
        result["device"] = f"FAILED: {exc}"
        ok = False
    result["ok"] = ok
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_self_test() -> int:
    result = collect()
    print(json.dumps(result, indent=None, sort_keys=False))
    return 0 if result["ok"] else 1
