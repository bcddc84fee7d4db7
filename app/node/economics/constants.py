"""Every number of the NEURO economy in one place, overridable through ``EconomicsConfig``.

Amounts are integer micro-NEURO (``UNIT`` = 10**6 per NEURO) so that every node computes the
same balances bit for bit; floats appear only in multipliers, and each product is rounded down
to an integer once, in one function (``rewards.scale``).

Sources: seed 001 (governance windows, 66 % / 30 %, 100 NEURO proposal stake, inference price
factors, "2x stake slash" for lazy compute), seed 002 (fee burn, PoNW, stake) and the original
NeuroShard implementation's defaults as listed in DESIGN.md section 4 where the seeds give no
number. A devnet or a test passes a smaller ``EconomicsConfig`` (seconds instead of days); the
code path is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt

from app.node.schema import STRICT, parse
from app.node.schema import ConfigError as SettingsError

UNIT = 10**6
"""micro-NEURO per NEURO: six decimals are enough for the 0.00001 NEURO data reward (10 units)."""

MAX_SUPPLY_UNITS = 10**18
"""Upper bound for any single amount in a record (1e12 NEURO); keeps sums far below 2**63."""

PROOF_KINDS = ("uptime", "training", "data", "inference", "verification", "async")
ROLES = ("none", "worker", "driver", "validator")


class ConfigError(SettingsError):
    """An ``[economics]`` setting is unusable; the message names it."""


def neuro(amount: float | int) -> int:
    """NEURO -> micro-NEURO, for writing constants readably (``neuro(0.0005)`` -> 500)."""
    return int(round(amount * UNIT))


def format_neuro(units: int) -> str:
    """micro-NEURO -> a display string with six decimals, e.g. ``'12.500000 NEURO'``."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNIT)
    return f"{sign}{whole}.{frac:06d} NEURO"


def _default_rewards() -> dict[str, int]:
    """Per-proof base rewards in micro-NEURO (original implementation, DESIGN.md section 4).

    uptime: 0.0001 NEURO per minute online -> per 60 s epoch. training: 0.0005 per batch per
    layer held. data: 0.00001 per sample served. inference: paid by the requester through the
    market, so the mint is a small per-token bonus (1/10 of the base price) to bootstrap supply.
    verification: 0.0005 per spot-check performed (as much as one training batch on one layer,
    since a check re-runs one).
    """
    return {
        "uptime_per_minute": neuro(0.0001),
        "training_per_batch_layer": neuro(0.0005),
        "async_training_per_batch_layer": neuro(0.0003),
        "data_per_sample": 10,
        "inference_per_1000_tokens": neuro(0.01),
        "verification_per_check": neuro(0.0005),
    }


def _default_role_bonus() -> dict[str, float]:
    """Role bonus (original implementation): drivers hold the embedding (more memory and data
    traffic), validators hold the head and compute the loss, workers hold middle layers."""
    return {"none": 0.0, "worker": 0.1, "driver": 0.2, "validator": 0.3}


Units = Annotated[int, Ge(0)]
"""An amount in micro-NEURO; negative amounts would mint by subtraction."""
Millis = Annotated[int, Gt(0)]


@dataclass(kw_only=True)
class EconomicsConfig:
    """All economic parameters. Durations are milliseconds so a devnet can shrink days to seconds.

    Also the schema of config.toml's ``[economics]`` section (app/node/schema.py): a new setting
    is one annotated field here; the range rules that predate the schema stay in __post_init__.
    """

    __pydantic_config__ = STRICT

    network_id: str = "neuroshard-main"
    """Signed into every record: a record from another network (or a devnet) never validates here."""
    genesis_public_key: str = ""
    """Hex compressed public key allowed to sign the genesis allocation; empty = no genesis."""

    # --- time ---------------------------------------------------------------------------------
    epoch_ms: int = 60_000
    """PoNW epoch: 60 s (original implementation); one proof per node, kind and epoch."""
    max_clock_skew_ms: Millis = 120_000
    """Records stamped further than this in the future are refused at the door (two epochs)."""
    challenge_window_ms: int = 600_000
    """A proof is final (its reward spendable) 600 s after its epoch ends, unless challenged."""

    # --- rewards and emission ----------------------------------------------------------------
    rewards: dict[str, Units] = field(default_factory=_default_rewards)
    role_bonus: dict[str, Annotated[float, Ge(0)]] = field(default_factory=_default_role_bonus)
    stake_bonus_per_doubling: Annotated[float, Ge(0)] = 0.1
    """Stake multiplier 1 + 0.1 * log2(1 + stake / 1000 NEURO): diminishing, so stake buys some
    priority but cannot buy the reward stream (original implementation)."""
    stake_bonus_scale_units: Annotated[int, Gt(0)] = neuro(1000)
    epoch_emission_per_node: Units = neuro(0.5)
    """Cap on the NEURO minted per epoch, per sqrt(active nodes): see ``rewards.epoch_cap``."""
    max_proofs_per_hour: int = 120
    max_reward_per_day: Units = neuro(10_000)

    # --- fees, stake, slashing ----------------------------------------------------------------
    fee_burn_share: float = 0.05
    """5 % of every fee is destroyed (original implementation); the rest goes to the fee pool
    account, so the fee still costs the sender but supply shrinks slowly with use."""
    min_transfer_fee: Units = 1
    min_verifier_stake: Units = neuro(100)
    """Stake a node needs before its spot-check verdicts count (verify mode, seed 001)."""
    challenge_bond: Units = neuro(10)
    """Locked by every verdict, pass or fail, until settlement; the side the other verifiers
    outvote loses it (a refuted fail: half to the accused, half burned; a pass on a proof that is
    slashed: burned), so neither griefing nor covering for a cheat is free."""
    cheat_penalty: Units = neuro(10)
    slash_multiplier: Annotated[int, Ge(1)] = 2
    """Seed 001: a failed spot-check slashes 2x; the cheater loses 2 x cheat_penalty, taken from
    stake first and capped at what the account holds."""
    reporter_share: float = 0.5
    """Half of a slash goes to the checkers who proved it (original implementation), rest burned."""
    challenge_confirmations: int = 2
    """Distinct staked verifiers that must agree a proof failed (and outnumber those who found it
    right) before the slash applies: one verifier alone, honest or griefing, never slashes."""
    spot_check_rate: float = 0.05
    spot_check_steps: int = 1
    """Committed steps a verifier re-runs per proof it samples (distinct, drawn per verifier); the
    verdict names the first that fails. A prover that faked a share f of its steps is caught by one
    check with probability 1 - (1 - f)^k (benchmarks/verify.py)."""
    spot_check_rtol: Annotated[float, Ge(0)] = 1e-3
    spot_check_atol: Annotated[float, Ge(0)] = 1e-4

    # --- governance (seed 001) --------------------------------------------------------------
    proposal_stake: Units = neuro(100)
    discussion_ms: Millis = 7 * 24 * 3600 * 1000
    voting_ms: int = 7 * 24 * 3600 * 1000
    implementation_ms: Millis = 7 * 24 * 3600 * 1000
    approval_threshold: float = 0.66
    quorum_threshold: float = 0.30
    max_merges_per_proposal: Annotated[int, Ge(1)] = 256

    # --- inference pricing (seed 001) --------------------------------------------------------
    inference_base_price: int = neuro(0.0001)
    demand_range: tuple[float, float] = (1.0, 2.0)
    speed_range: tuple[float, float] = (0.8, 1.5)
    reputation_range: tuple[float, float] = (0.8, 1.2)

    # --- bounds on claimed work (ponw.py) -------------------------------------------------------
    min_layer_us: int = 20
    """Fastest plausible forward + backward of one layer on one micro-batch, in microseconds: one
    layer launches dozens of kernels and a kernel launch costs several microseconds on any
    accelerator, so a claimed cost below this is physically impossible whatever the shape."""
    work_time_margin: float = 1.25
    """A proof's claimed work (batches x layers x its measured cost per layer) may exceed the wall
    time it covers by this factor. An honest node's claim is at most 1.0 of it by construction
    (the cost is the fastest step it measured in that time); the margin absorbs the gap between
    the training thread's clock and the economy's under load, never a tier's table speed."""
    max_work_span_epochs: int = 3
    fault_lazy_steps: int = 0
    """Devnet fault injection only (refused on the main network): the node claims this many
    made-up steps for every step it ran, so verify mode has a lazy node to catch."""
    fault_grief: bool = False
    """Devnet fault injection only (refused on the main network): a verify-mode node that fails
    every proof it judges with forged evidence, so the devnet shows a griefer refuted."""
    """How far back before its epoch a training proof's credited time may start: a step longer
    than an epoch is credited whole to the epoch it finished in, but nobody claims an afternoon."""

    def __post_init__(self) -> None:
        _positive(self, "epoch_ms", "challenge_window_ms", "voting_ms", "max_proofs_per_hour",
                  "challenge_confirmations", "inference_base_price", "spot_check_steps")
        for name in ("fee_burn_share", "reporter_share", "spot_check_rate",
                     "approval_threshold", "quorum_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"economics.{name} must be between 0 and 1")
        missing = set(_default_rewards()) - set(self.rewards)
        if missing:
            raise ConfigError(f"economics.rewards lacks {sorted(missing)}")
        if self.fault_lazy_steps and self.network_id == "neuroshard-main":
            raise ConfigError("economics.fault_lazy_steps is devnet fault injection; the main network refuses it")
        if self.fault_grief and self.network_id == "neuroshard-main":
            raise ConfigError("economics.fault_grief is devnet fault injection; the main network refuses it")
        if self.fault_lazy_steps < 0:
            raise ConfigError("economics.fault_lazy_steps must not be negative")
        if self.min_layer_us <= 0 or self.max_work_span_epochs <= 0 or self.work_time_margin < 1.0:
            raise ConfigError("economics.min_layer_us and max_work_span_epochs must be positive, "
                              "work_time_margin at least 1")
        for name, known in (("rewards", _default_rewards()), ("role_bonus", _default_role_bonus())):
            unknown = set(getattr(self, name)) - set(known)
            if unknown:
                raise ConfigError(f"economics.{name} has unknown entries {sorted(unknown)}; "
                                  f"known: {', '.join(known)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EconomicsConfig:
        """Builds a config from the ``[economics]`` TOML section, refusing unknown keys. A table
        (``rewards``, ``role_bonus``) may change one entry and keep the others."""
        if not isinstance(values, dict):
            raise ConfigError(f"economics must be a table of settings, got {values!r}")
        values = dict(values)
        defaults = {"rewards": _default_rewards(), "role_bonus": _default_role_bonus()}
        for name, default in defaults.items():
            if isinstance(values.get(name), dict):
                values[name] = {**default, **values[name]}
        try:
            return parse(cls, values, prefix="economics")
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def devnet(cls, **overrides: Any) -> EconomicsConfig:
        """Seconds instead of days: 1 s epochs, 3 s challenge window, 2 s governance phases."""
        values: dict[str, Any] = {
            "network_id": "neuroshard-devnet", "epoch_ms": 1000, "max_clock_skew_ms": 5000,
            "challenge_window_ms": 3000, "discussion_ms": 2000, "voting_ms": 2000,
            "implementation_ms": 2000,
        }
        values.update(overrides)
        return cls(**values)


def _positive(config: EconomicsConfig, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise ConfigError(f"economics.{name} must be positive")


def from_settings(settings: dict[str, Any], *, devnet: bool = False) -> EconomicsConfig:
    """The ``[economics]`` section of config.toml. ``preset = "devnet"`` (or ``devnet=True``)
    starts from the seconds-long devnet timings; other keys override single values."""
    if not isinstance(settings, dict):
        raise ConfigError(f"economics must be a table of settings, got {settings!r}")
    values = dict(settings)
    preset = parse(_Preset, {"preset": values.pop("preset", "devnet" if devnet else "main")},
                   prefix="economics").preset
    if preset == "main":
        return EconomicsConfig.from_dict(values)
    base = vars(EconomicsConfig.devnet())
    return EconomicsConfig.from_dict({**base, **values})


@dataclass(frozen=True)
class _Preset:
    """``[economics] preset``: which defaults the section's other keys override."""

    __pydantic_config__ = STRICT
    preset: Literal["main", "devnet"]
