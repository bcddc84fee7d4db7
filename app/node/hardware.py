"""Measure the machine: device, memory, and a speed tier from a reference micro-benchmark.

The tier is the median time of forward+backward through one *reference layer*: a pre-norm
transformer block of GPT-2-small width (768 hidden, 12 heads, SwiGLU FFN 2048) on 4 x 256
tokens, fp32 on CPU, bf16 autocast on CUDA. The block is defined here, not taken from the live
model, on purpose: tiers must stay comparable across model versions and between nodes running
different releases. With it, this project's 2-core AVX-512 CI machine lands in T4 (as seed 001
places a CPU), a Raspberry Pi in T5 and current GPUs in T1-T2. The original implementation's
fault - a benchmark that fell back to T5 on every CPU - is avoided by measuring, never guessing.
"""

from __future__ import annotations

import enum
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

CACHE_FILE = "hardware.json"
CACHE_VERSION = 1


class SpeedTier(str, enum.Enum):
    T1 = "T1"
    T2 = "T2"
    T3 = "T3"
    T4 = "T4"
    T5 = "T5"


# Upper bounds in ms per reference layer (DESIGN.md §4, seed 001): T1 < 10, T2 10-50,
# T3 50-200, T4 200-1000, T5 > 1000 (async only).
TIER_UPPER_MS: tuple[tuple[SpeedTier, float], ...] = (
    (SpeedTier.T1, 10.0),
    (SpeedTier.T2, 50.0),
    (SpeedTier.T3, 200.0),
    (SpeedTier.T4, 1000.0),
)


def tier_for_ms(ms_per_layer: float) -> SpeedTier:
    """Map a measured ms/layer to its tier; a boundary value belongs to the slower tier."""
    if ms_per_layer != ms_per_layer or ms_per_layer < 0:  # NaN or negative: unusable measurement
        raise ValueError(f"ms per layer must be a non-negative number, got {ms_per_layer}")
    for tier, upper in TIER_UPPER_MS:
        if ms_per_layer < upper:
            return tier
    return SpeedTier.T5


TIER_MEANING = {
    SpeedTier.T1: "data-centre GPU class: joins fast pipeline quorums and can hold many layers",
    SpeedTier.T2: "fast consumer GPU: joins fast pipeline quorums",
    SpeedTier.T3: "mid-range GPU or strong CPU: joins slow pipeline quorums",
    SpeedTier.T4: "CPU class: joins slow pipeline quorums with a few layers",
    SpeedTier.T5: "too slow for live pipelines: trains asynchronously and submits pseudo-gradients",
}


@dataclass(frozen=True)
class DeviceInfo:
    device: str  # "cuda", "mps" or "cpu"
    name: str
    memory_bytes: int  # memory training on this device can use (VRAM on GPU, RAM on CPU)
    system_memory_bytes: int
    cpu_count: int
    index: int = 0  # which CUDA device (limits.gpu_ids); 0 elsewhere

    @property
    def torch_device(self) -> str:
        """The torch device string: ``cuda:N`` for the chosen GPU, else ``cpu`` / ``mps``."""
        return f"cuda:{self.index}" if self.device == "cuda" else self.device


def choose_cuda_device(gpu_ids: tuple[int, ...], device_count: int) -> int | None:
    """The CUDA device the node uses: the first of ``gpu_ids`` (the volunteer's choice, in
    torch's numbering after CUDA_VISIBLE_DEVICES), or device 0 when none is listed; None when
    there is no CUDA device and none was asked for. A listed id torch does not see is a
    ConfigError: silently training on another card than the one the volunteer allowed is worse."""
    from app.node.config import ConfigError

    if not gpu_ids:
        return 0 if device_count > 0 else None
    if device_count <= 0:
        raise ConfigError(f"limits.gpu_ids lists {list(gpu_ids)} but torch sees no CUDA device; "
                          "clear gpu_ids, set device = \"cpu\", or install the CUDA build of torch")
    bad = [i for i in gpu_ids if not 0 <= i < device_count]
    if bad:
        raise ConfigError(f"limits.gpu_ids lists {bad} but torch sees {device_count} CUDA device(s), "
                          f"numbered 0 to {device_count - 1}")
    return gpu_ids[0]


@dataclass(frozen=True)
class HardwareReport:
    device: DeviceInfo
    ms_per_layer: float
    tier: SpeedTier
    torch_version: str
    measured_at: float
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tier"] = self.tier.value
        return out


def detect_device(preference: str = "auto", gpu_ids: tuple[int, ...] = ()) -> DeviceInfo:
    """Pick CUDA (the GPU ``gpu_ids`` names), then MPS, then CPU (or the one asked for); imports torch."""
    import torch

    system_memory = psutil.virtual_memory().total
    cpus = os.cpu_count() or 1
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if preference in ("auto", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        # gpu_ids name CUDA devices: on a Mac (MPS, never CUDA) they do not apply.
        index = choose_cuda_device(gpu_ids, count) if count or preference == "cuda" or not mps_ok else None
        if index is not None:
            props = torch.cuda.get_device_properties(index)
            return DeviceInfo("cuda", props.name, int(props.total_memory), system_memory, cpus, index)
    if preference == "cuda":
        raise RuntimeError("CUDA was asked for but torch sees no CUDA device (is this the CPU build of torch?)")
    if preference in ("auto", "mps") and mps_ok:
        # Apple unified memory: the GPU shares system RAM.
        return DeviceInfo("mps", "Apple GPU (MPS)", system_memory, system_memory, cpus)
    if preference == "mps":
        raise RuntimeError("MPS was asked for but is not available on this machine")
    return DeviceInfo("cpu", _cpu_name(), system_memory, system_memory, cpus)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _reference_layer(torch: Any, device: str) -> tuple[Any, Any]:
    """The fixed reference block and its input (see module docstring)."""
    nn, functional = torch.nn, torch.nn.functional
    hidden, heads, ffn, batch, seq = 768, 12, 2048, 4, 256

    class ReferenceBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.RMSNorm(hidden)
            self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
            self.out = nn.Linear(hidden, hidden, bias=False)
            self.norm2 = nn.RMSNorm(hidden)
            self.gate_up = nn.Linear(hidden, 2 * ffn, bias=False)
            self.down = nn.Linear(ffn, hidden, bias=False)

        def forward(self, x: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, heads, hidden // heads).unbind(2)
            att = functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            x = x + self.out(att.transpose(1, 2).reshape(b, t, hidden))
            gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
            return x + self.down(functional.silu(gate) * up)

    generator = torch.Generator().manual_seed(0)
    block = ReferenceBlock().to(device)
    sample = torch.randn(batch, seq, hidden, generator=generator).to(device)
    return block, sample


def measure_ms_per_layer(device: str = "cpu", *, repeats: int = 3, budget_s: float = 8.0) -> float:
    """Median ms of forward+backward through the reference layer after one warm-up pass."""
    import torch

    block, sample = _reference_layer(torch, device)
    on_cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else None

    def one_pass() -> float:
        start = time.perf_counter()
        x = sample.detach().requires_grad_(True)
        if autocast is not None:
            with autocast:
                out = block(x)
        else:
            out = block(x)
        out.float().pow(2).mean().backward()
        if on_cuda:
            torch.cuda.synchronize(device)
        elif device == "mps":
            torch.mps.synchronize()
        return (time.perf_counter() - start) * 1000.0

    began = time.perf_counter()
    one_pass()  # warm-up: kernels, allocator, autotuning
    timings = []
    for _ in range(max(1, repeats)):
        timings.append(one_pass())
        if time.perf_counter() - began > budget_s:
            break  # a very slow machine (T5) needs no more samples to be placed
    return statistics.median(timings)


def measure(preference: str = "auto", gpu_ids: tuple[int, ...] = ()) -> HardwareReport:
    import torch

    info = detect_device(preference, gpu_ids)
    ms = measure_ms_per_layer(info.torch_device)
    return HardwareReport(info, ms, tier_for_ms(ms), torch.__version__, time.time())


def load_cached(data_dir: Path, preference: str = "auto") -> HardwareReport | None:
    """The cached report if it was measured on this device with this torch; else None."""
    path = data_dir / CACHE_FILE
    try:
        raw = json.loads(path.read_text())
        if raw.get("cache_version") != CACHE_VERSION:
            return None
        info = DeviceInfo(**raw["device"])
        report = HardwareReport(
            info, float(raw["ms_per_layer"]), SpeedTier(raw["tier"]), raw["torch_version"],
            float(raw["measured_at"]), cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if preference not in ("auto", info.device):
        return None
    return report


def save_cache(data_dir: Path, report: HardwareReport) -> None:
    from app.node.config import atomic_write_bytes

    payload = {**report.to_dict(), "cache_version": CACHE_VERSION}
    payload.pop("cached", None)
    atomic_write_bytes(data_dir / CACHE_FILE, json.dumps(payload, indent=2).encode())


def measure_or_cached(data_dir: Path, preference: str = "auto", *, force: bool = False,
                      gpu_ids: tuple[int, ...] = ()) -> HardwareReport:
    """Use the cache when it matches this device and torch version, else measure and cache."""
    import torch

    if not force:
        cached = load_cached(data_dir, preference)
        if cached is not None and cached.torch_version == torch.__version__:
            current = detect_device(preference, gpu_ids)
            if (current.device, current.name, current.index) == (cached.device.device, cached.device.name,
                                                                 cached.device.index):
                return cached
    report = measure(preference, gpu_ids)
    save_cache(data_dir, report)
    return report


def memory_budget_bytes(info: DeviceInfo, fraction: float, cap_bytes: int | None = None) -> int:
    """Bytes the node may use for training on its device, from the volunteer's limits."""
    budget = int(info.memory_bytes * fraction)
    return min(budget, cap_bytes) if cap_bytes is not None else budget


def layers_that_fit(budget_bytes: int, bytes_per_layer: int, *, reserved_bytes: int = 0) -> int:
    """How many whole layers fit in ``budget_bytes`` after ``reserved_bytes`` (embedding, head)."""
    if bytes_per_layer <= 0:
        raise ValueError("bytes_per_layer must be positive")
    return max(0, (budget_bytes - reserved_bytes) // bytes_per_layer)
