"""NodeConfig: every setting of a node, its TOML file, and the data directory.

Precedence: built-in defaults < ``config.toml`` in the data dir < command-line flags. Every
section is read through one schema, :class:`ConfigFile` (app/node/schema.py says how): ``[node]``,
``[limits]`` with ``[limits.in_use]``, ``[migration]``, ``[inference]`` (inference_limits.py), and the
``[training]``, ``[economics]`` and ``[p2p]`` sections whose dataclasses live in those packages (a devnet shrinks 7-day governance windows and
500-step DiLoCo rounds there; the code path stays the same). A wrong type, an unknown key or
section, an out-of-range number or a bad choice is one ConfigError line naming the key, what it
got and what it expects. :func:`validate_settings` is the same check for the Settings page.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w
from annotated_types import Ge, Interval
from platformdirs import user_config_dir, user_data_dir
from typing_extensions import TypedDict

from app.node.economics.constants import from_settings
from app.node.inference_limits import InferenceLimits
from app.node.p2p.config import P2PConfig
from app.node.p2p.invite import InvalidInvite, parse_invite
from app.node.schema import STRICT, ConfigError, check, parse, rule
from app.node.training.config import TrainingConfig

APP_NAME = "NeuroShard"
CONFIG_FILE = "config.toml"
DEFAULT_PORT = 7450


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


def _is_host_port(text: str) -> bool:
    try:
        parse_host_port(text)
    except ConfigError:
        return False
    return True


def _is_slot(entry: tuple[int, int, int]) -> bool:
    day, start, end = entry
    return 0 <= day <= 6 and 0 <= start < end <= 24


def _is_pace(rate: int) -> bool:
    return rate >= 64 * 1024


Mode = Literal["pipeline", "async", "data", "verify", "inference"]
ALL_MODES: tuple[str, ...] = get_args(Mode)
Device = Literal["auto", "cpu", "cuda", "mps"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Port = Annotated[int, Interval(ge=0, le=65535)]
Tracker = Annotated[str, rule("HOST:PORT (for example 127.0.0.1:7450)")(_is_host_port)]
def _is_invite(text: str) -> bool:
    try:
        parse_invite(text)
    except InvalidInvite:
        return False
    return True


InviteCode = Annotated[str, rule("an invite code (ns1- and 69 letters and digits)")(_is_invite)]
"""A friend's node to join through (p2p/invite.py): its address and the identity it must prove."""
Reach = Literal["this_computer", "home_network", "internet"]
"""Who may connect to the node, as the volunteer chose in the wizard or Settings: only programs on
this computer (loopback), computers on the same home or office network (every interface, no
router port opened), or anyone on the internet (every interface, UPnP asked to open the port)."""
REACH_CHOICES: tuple[str, ...] = get_args(Reach)
Share = Annotated[float, Interval(ge=0.05, le=1.0)]
"""A fraction of wall-clock time; below 5 % the node could not finish a step before peers give up."""
Rate = Annotated[int, rule("at least 65536 (64 KiB/s) or unset")(_is_pace)]
"""Bytes per second; the bandwidth pacer cannot hold a slower rate smoothly."""
Slot = Annotated[tuple[int, int, int], rule("[weekday 0-6, start hour, end hour] with start < end <= 24")(_is_slot)]


@dataclass(frozen=True, kw_only=True)
class UsageCaps:
    """How hard the node may work right now. ResourceLimits holds two sets: one for when the
    computer is idle (no keyboard or mouse input for ``idle_minutes``) and one for when the
    volunteer is using it, as BOINC and Folding@home offer; the app switches between them."""

    __pydantic_config__ = STRICT
    cpu_threads: Annotated[int, Ge(1)] | None = None  # None: all but one core
    cpu_share: Share = 1.0  # fraction of wall-clock time the node may compute (duty cycle)
    gpu_share: Share = 1.0  # the same for the GPU
    upload_bytes_per_s: Rate | None = None  # None: unlimited
    download_bytes_per_s: Rate | None = None

    def validate(self, label: str = "limits") -> None:
        """ConfigError naming the first bad field, as ``<label>: <field> must be ...``."""
        check(self, prefix=label)


@dataclass(kw_only=True)
class ResourceLimits:
    """What the volunteer allows; the engine throttles or pauses to honour it."""

    __pydantic_config__ = STRICT
    memory_fraction: Annotated[float, Interval(ge=0.05, le=0.95)] = 0.5  # of total RAM (or VRAM on a GPU)
    memory_bytes: Annotated[int, Ge(1)] | None = None  # absolute cap; wins over the fraction when set
    cpu_threads: Annotated[int, Ge(1)] | None = None  # None: all but one core
    gpu_ids: tuple[Annotated[int, Ge(0)], ...] = ()  # empty: all visible GPUs
    gpu_share: Share = 1.0
    cpu_share: Share = 1.0
    disk_bytes: Annotated[int, Ge(2**30)] = 20 * 2**30  # below 1 GiB not even the genesis shards fit
    upload_bytes_per_s: Rate | None = None
    download_bytes_per_s: Rate | None = None
    only_when_idle: bool = False
    idle_minutes: Annotated[int, Interval(ge=1, le=24 * 60)] = 5
    pause_on_battery: bool = True
    pause_when_running: tuple[str, ...] = ()  # process names
    pause_when_fullscreen: bool = False
    schedule: tuple[Slot, ...] = ()  # (weekday 0=Mon, start_hour, end_hour); empty = always
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
        """ConfigError naming the first bad field (``limits.in_use: cpu_share must be ...``)."""
        check(self, prefix="limits")


@dataclass(frozen=True, kw_only=True)
class MigrationSettings:
    """The ``[migration]`` section: what the node does when the network publishes a larger
    architecture (app/node/migration.py)."""

    __pydantic_config__ = STRICT
    automatic: bool = False
    """True: a headless (server) node stops, migrates and restarts on the new version by itself;
    False: the app asks the volunteer (the upgrade banner) and ``main.py migrate`` runs it."""
    distill_steps: Annotated[int, Ge(0)] = 0
    """Steps of distillation from the frozen old model after growth (whole-model nodes only)."""


@dataclass(kw_only=True)
class NodeConfig:
    """Every setting of a running node. The fields ``[node]`` may set are :class:`NodeSettings`;
    the others come from flags or the code that starts the node. ``training``, ``economics`` and
    ``p2p`` stay the file's mappings (validated against their sections' schemas), so a devnet or a
    test writes only the keys it changes."""

    __pydantic_config__ = STRICT
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: Port = DEFAULT_PORT
    advertise_host: str | None = None
    listen: bool = True
    reach: Reach | None = None  # None: ``host`` alone decides (a config from before the question)
    trackers: tuple[Tracker, ...] = ()
    invites: tuple[InviteCode, ...] = ()  # friends' nodes pasted as invite codes: joined like a tracker's peers
    max_steps: Annotated[int, Ge(0)] | None = None  # None: train until stopped
    modes: tuple[Mode, ...] | None = None  # None: the policy in modes.py decides
    device: Device = "auto"
    log_level: LogLevel = "INFO"
    json_events: bool = False
    headless: bool = False
    devnet: bool = False
    seed: int | None = None
    on_corrupt_checkpoint: Literal["ask", "restart", "stop"] | None = None  # None: ask in the app, stop headless
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    inference: InferenceLimits = field(default_factory=InferenceLimits)
    training: dict[str, Any] = field(default_factory=dict)
    economics: dict[str, Any] = field(default_factory=dict)
    p2p: dict[str, Any] = field(default_factory=dict)

    def validate(self, *, name: Callable[[str], str] | None = None) -> None:
        """ConfigError naming the first bad setting (``name`` renames a top-level key, e.g. to
        the flag that set it); the three sections are checked against their own schemas."""
        check(self, name=name)
        validate_settings({"training": self.training, "economics": self.economics, "p2p": self.p2p})

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


class NodeSettings(TypedDict, total=False):
    """The ``[node]`` section: the NodeConfig fields a volunteer may set in the file (types as
    NodeConfig declares them; TOML has no null, so an optional one is simply left out)."""

    __pydantic_config__ = STRICT  # type: ignore[misc]
    host: str
    port: Port
    advertise_host: str
    listen: bool
    reach: Reach
    trackers: tuple[Tracker, ...]
    invites: tuple[InviteCode, ...]
    modes: tuple[Mode, ...]
    device: Device
    log_level: LogLevel


@dataclass(frozen=True, kw_only=True)
class ConfigFile:
    """``config.toml``, all of it: the one schema every section is read through. A key, type,
    range or default is declared once, in the section's dataclass; adding a setting is adding a
    field there. ``[economics]`` stays a mapping here because its ``preset`` picks the defaults
    the other keys override (``economics.constants.from_settings`` reads it with the same schema).
    """

    __pydantic_config__ = STRICT
    node: NodeSettings = field(default_factory=lambda: NodeSettings())
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    inference: InferenceLimits = field(default_factory=InferenceLimits)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    economics: dict[str, Any] = field(default_factory=dict)


_PERSISTED: tuple[str, ...] = tuple(NodeSettings.__annotations__)


def validate_settings(settings: Mapping[str, Any]) -> ConfigFile:
    """Check a whole config (config.toml's content, or the dict the Settings page would save)
    against the schema. Returns the parsed sections; raises ConfigError with one line naming each
    bad key (up to three), what it got and what it expects. Missing keys keep their defaults."""
    parsed = parse(ConfigFile, settings)
    parsed.training.validate()
    from_settings(parsed.economics)
    return parsed


def listening(config: NodeConfig) -> tuple[str, dict[str, Any]]:
    """(host to bind, ``[p2p]`` section) for the volunteer's choice of who may connect.

    A concrete address in ``host`` is kept (the volunteer named an interface); the default
    loopback one opens to every interface once the volunteer allowed more than this computer.
    On a home network the router is not asked to open a port (UPnP off): only computers on that
    network are meant to connect."""
    p2p = dict(config.p2p)
    if config.reach is None:
        return config.host, p2p
    if config.reach == "this_computer":
        return "127.0.0.1", p2p
    host = config.host if config.host not in ("127.0.0.1", "localhost", "::1") else "0.0.0.0"
    if config.reach == "home_network":
        p2p["use_upnp"] = False
    return host, p2p


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raises ConfigError with the expected form."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"'{text}' is not HOST:PORT (for example 127.0.0.1:7450)")
    return host.strip("[]"), int(port_text)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read and check config.toml; a missing file is an empty config, a broken or invalid one a
    one-line ConfigError that starts with the file's path (the file is left as it is)."""
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            settings = tomllib.load(handle)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {path}: it is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}). Fix or delete the file to use defaults.") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}. Fix or delete the file to use defaults.") from None
    try:
        validate_settings(settings)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings


def apply_file_settings(config: NodeConfig, settings: Mapping[str, Any]) -> NodeConfig:
    """Return a copy of ``config`` with the file's values (checked against the schema first)."""
    parsed = validate_settings(settings)
    limits = config.limits
    if "limits" in settings:
        limits = parse(ResourceLimits, {**dataclasses.asdict(config.limits), **settings["limits"]},
                       prefix="limits")
    migration = parsed.migration if "migration" in settings else config.migration
    inference = config.inference
    if "inference" in settings:
        inference = parse(InferenceLimits, {**dataclasses.asdict(config.inference), **settings["inference"]},
                          prefix="inference")
    return dataclasses.replace(
        config, **parsed.node, limits=limits, migration=migration, inference=inference,
        training={**config.training, **settings.get("training", {})},
        economics={**config.economics, **settings.get("economics", {})},
        p2p={**config.p2p, **settings.get("p2p", {})},
    )


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
    if config.migration != MigrationSettings():
        out["migration"] = dataclasses.asdict(config.migration)
    if config.inference != InferenceLimits():
        out["inference"] = dataclasses.asdict(config.inference)
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
