"""NodeConfig: every setting of a node, its TOML file, and the data directory.

Precedence: built-in defaults < ``config.toml`` in the data dir < command-line flags. Sections
``[training]``, ``[economics]`` and ``[p2p]`` are passed through as dictionaries to those
packages' own config dataclasses, which validate them (a devnet shrinks 7-day governance windows
and 500-step DiLoCo rounds there; the code path stays the same).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w
from platformdirs import user_config_dir, user_data_dir

APP_NAME = "NeuroShard"
CONFIG_FILE = "config.toml"
DEFAULT_PORT = 7450
ALL_MODES = ("pipeline", "async", "data", "verify", "inference")


class ConfigError(ValueError):
    """A setting, the config file or the data dir is unusable; the message says how to fix it."""


def default_data_dir() -> Path:
    """Per-user data dir outside the install folder, so upgrades keep wallet, ledger, checkpoints."""
    return Path(os.environ.get("NEUROSHARD_DATA_DIR") or user_data_dir(APP_NAME, appauthor=False))


def start_data_dir(flag: Path | None) -> Path:
    """``--data-dir`` > ``NEUROSHARD_DATA_DIR`` > the folder the volunteer moved the data to in the
    app's Settings (location.json) > the per-user default. A remembered folder that is gone (an
    unplugged disk) is skipped rather than recreated empty, which would look like a new wallet."""
    if flag is not None:
        return flag
    if not os.environ.get("NEUROSHARD_DATA_DIR"):
        remembered = remembered_data_dir()
        if remembered is not None and remembered.is_dir():
            return remembered
    return default_data_dir()


LOCATION_FILE = "location.json"


def location_file() -> Path:
    """Outside every data dir (deleting the old one must not forget the new one): on macOS and
    Windows the platform's config folder is the default data dir itself, so use another."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Preferences" / APP_NAME / LOCATION_FILE
    return Path(user_config_dir(APP_NAME, appauthor=False, roaming=True)) / LOCATION_FILE


def remembered_data_dir() -> Path | None:
    """The data dir chosen in Settings, or None when the volunteer never moved it.

    Plain JSON, no Qt, so the command line could honour it for a headless node too.
    """
    try:
        value = json.loads(location_file().read_text(encoding="utf-8")).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(value) if isinstance(value, str) and value else None


def remember_data_dir(data_dir: Path) -> None:
    """Record the data dir for the next start (written atomically); OSError when it cannot be."""
    atomic_write_bytes(location_file(), json.dumps({"data_dir": str(data_dir)}).encode())


@dataclass(frozen=True, kw_only=True)
class UsageCaps:
    """How hard the node may work right now. ResourceLimits holds two sets: one for when the
    computer is idle (no keyboard or mouse input for ``idle_minutes``) and one for when the
    volunteer is using it, as BOINC and Folding@home offer; the app switches between them."""

    cpu_threads: int | None = None  # None: all but one core
    cpu_share: float = 1.0  # fraction of wall-clock time the node may compute (duty cycle)
    gpu_share: float = 1.0  # the same for the GPU
    upload_bytes_per_s: int | None = None  # None: unlimited
    download_bytes_per_s: int | None = None

    def validate(self, label: str = "limits") -> None:
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"{label}: cpu_threads must be at least 1")
        for name in ("cpu_share", "gpu_share"):
            if not 0.05 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{label}: {name} must be between 0.05 and 1")
        for name in ("upload_bytes_per_s", "download_bytes_per_s"):
            value = getattr(self, name)
            if value is not None and value < 64 * 1024:
                raise ConfigError(f"{label}: {name} must be at least 65536 (64 KiB/s) or unset")


@dataclass(kw_only=True)
class ResourceLimits:
    """What the volunteer allows; the engine throttles or pauses to honour it."""

    memory_fraction: float = 0.5  # of total RAM (or VRAM on a GPU) the node may use
    memory_bytes: int | None = None  # absolute cap; wins over the fraction when set
    cpu_threads: int | None = None  # None: all but one core
    gpu_ids: tuple[int, ...] = ()  # empty: all visible GPUs
    gpu_share: float = 1.0
    cpu_share: float = 1.0
    disk_bytes: int = 20 * 2**30
    upload_bytes_per_s: int | None = None
    download_bytes_per_s: int | None = None
    only_when_idle: bool = False
    idle_minutes: int = 5
    pause_on_battery: bool = True
    pause_when_running: tuple[str, ...] = ()  # process names
    pause_when_fullscreen: bool = False
    schedule: tuple[tuple[int, int, int], ...] = ()  # (weekday 0=Mon, start_hour, end_hour); empty = always
    # The fields cpu_threads .. download_bytes_per_s above are the caps while the computer is idle
    # (and on a headless server, which has no "in use"); these apply while the volunteer is at it.
    # None: the same caps either way. Ignored when only_when_idle (in use means paused then).
    in_use: UsageCaps | None = None

    def caps(self, in_use: bool = False) -> UsageCaps:
        """The caps in force: the idle set, or the in-use set while the volunteer uses the computer."""
        if in_use and self.in_use is not None:
            return self.in_use
        return UsageCaps(cpu_threads=self.cpu_threads, cpu_share=self.cpu_share, gpu_share=self.gpu_share,
                         upload_bytes_per_s=self.upload_bytes_per_s, download_bytes_per_s=self.download_bytes_per_s)

    def validate(self) -> None:
        if not 0.05 <= self.memory_fraction <= 0.95:
            raise ConfigError("memory_fraction must be between 0.05 and 0.95")
        self.caps(in_use=False).validate("limits")
        if self.in_use is not None:
            self.in_use.validate("limits.in_use")
        if self.disk_bytes < 2**30:
            raise ConfigError("disk_bytes must be at least 1 GiB (1073741824)")
        if not 1 <= self.idle_minutes <= 24 * 60:
            raise ConfigError("idle_minutes must be between 1 and 1440")
        for day, start, end in self.schedule:
            if not (0 <= day <= 6 and 0 <= start < end <= 24):
                raise ConfigError(f"schedule entry {(day, start, end)} is not (weekday 0-6, start < end <= 24)")


@dataclass(kw_only=True)
class NodeConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    advertise_host: str | None = None
    listen: bool = True
    trackers: tuple[str, ...] = ()
    max_steps: int | None = None  # None: train until stopped
    modes: tuple[str, ...] | None = None  # None: the policy in modes.py decides
    device: str = "auto"  # auto / cpu / cuda / mps
    log_level: str = "INFO"
    json_events: bool = False
    headless: bool = False
    devnet: bool = False
    seed: int | None = None
    on_corrupt_checkpoint: str | None = None  # ask / restart / stop; None: ask in the app, stop headless
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    training: dict[str, Any] = field(default_factory=dict)
    economics: dict[str, Any] = field(default_factory=dict)
    p2p: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not between 0 and 65535")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError("--max-steps must be 0 or more")
        if self.modes is not None:
            unknown = sorted(set(self.modes) - set(ALL_MODES))
            if unknown:
                raise ConfigError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(ALL_MODES)}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"device '{self.device}' is not one of auto, cpu, cuda, mps")
        for tracker in self.trackers:
            parse_host_port(tracker)
        if self.on_corrupt_checkpoint not in (None, "ask", "restart", "stop"):
            raise ConfigError(f"on_corrupt_checkpoint '{self.on_corrupt_checkpoint}' is not ask, restart or stop")
        self.limits.validate()

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raises ConfigError with the expected form."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"'{text}' is not HOST:PORT (for example 127.0.0.1:7450)")
    return host.strip("[]"), int(port_text)


_PERSISTED = ("host", "port", "advertise_host", "listen", "trackers", "modes", "device", "log_level")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read config.toml; a missing file is an empty config, a broken one a ConfigError."""
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}. Fix or delete the file to use defaults.") from exc


def apply_file_settings(config: NodeConfig, settings: dict[str, Any]) -> NodeConfig:
    """Return a copy of ``config`` with the file's values (unknown keys refused)."""
    node = dict(settings.get("node", {}))
    unknown = set(node) - set(_PERSISTED)
    if unknown:
        raise ConfigError(f"unknown setting(s) in [node]: {', '.join(sorted(unknown))}")
    for key in ("trackers", "modes"):
        if node.get(key) is not None:
            node[key] = tuple(node[key])
    limits_raw = dict(settings.get("limits", {}))
    limit_fields = {f.name for f in dataclasses.fields(ResourceLimits)}
    if set(limits_raw) - limit_fields:
        raise ConfigError(f"unknown setting(s) in [limits]: {', '.join(sorted(set(limits_raw) - limit_fields))}")
    for key in ("gpu_ids", "pause_when_running"):
        if key in limits_raw:
            limits_raw[key] = tuple(limits_raw[key])
    if "schedule" in limits_raw:
        limits_raw["schedule"] = tuple(tuple(entry) for entry in limits_raw["schedule"])
    if "in_use" in limits_raw:
        in_use = limits_raw["in_use"]
        cap_fields = {f.name for f in dataclasses.fields(UsageCaps)}
        if not isinstance(in_use, dict) or set(in_use) - cap_fields:
            raise ConfigError(f"[limits.in_use] takes only {', '.join(sorted(cap_fields))}")
        try:
            limits_raw["in_use"] = UsageCaps(**in_use)
        except TypeError as exc:
            raise ConfigError(f"bad value in [limits.in_use]: {exc}") from exc
    try:
        limits = dataclasses.replace(config.limits, **limits_raw)
        return dataclasses.replace(
            config, **node, limits=limits,
            training={**config.training, **settings.get("training", {})},
            economics={**config.economics, **settings.get("economics", {})},
            p2p={**config.p2p, **settings.get("p2p", {})},
        )
    except TypeError as exc:
        raise ConfigError(f"bad value in config file: {exc}") from exc


def to_toml_dict(config: NodeConfig) -> dict[str, Any]:
    node = {key: getattr(config, key) for key in _PERSISTED if getattr(config, key) is not None}
    node = {k: list(v) if isinstance(v, tuple) else v for k, v in node.items()}
    limits = {
        k: ([list(e) if isinstance(e, tuple) else e for e in v] if isinstance(v, tuple) else v)
        for k, v in dataclasses.asdict(config.limits).items() if v is not None and k != "in_use"
    }
    if config.limits.in_use is not None:  # a [limits.in_use] table; unset caps are left out
        limits["in_use"] = {k: v for k, v in dataclasses.asdict(config.limits.in_use).items() if v is not None}
    out: dict[str, Any] = {"node": node, "limits": limits}
    for section in ("training", "economics", "p2p"):
        if getattr(config, section):
            out[section] = getattr(config, section)
    return out


def save_config(config: NodeConfig) -> None:
    """Write config.toml atomically (temp file, fsync, rename): never half-written."""
    atomic_write_bytes(config.config_path, tomli_w.dumps(to_toml_dict(config)).encode())


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def ensure_data_dir(path: Path) -> Path:
    """Create the data dir and prove it is writable; ConfigError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"data dir {path} is not writable ({exc.strerror or exc}); choose another with --data-dir"
        ) from exc
    return path
