import pytest

from app.node.events import ModesChanged
from app.node.modes import VERIFY_MIN_STAKE_UNITS, ModeNotAvailable
from app.node.runtime.mode_service import ModeService

GB = 2**30


def service(tier="T4", stake=0, disk=100 * GB, layers=4):
    events: list = []
    svc = ModeService(tier=tier, layers_fit=layers, fits_full_model=True, data_dir_free=lambda: disk,
                      staked_units=lambda: stake, emit=events.append)
    return svc, events


def test_policy_decides_when_nothing_is_configured() -> None:
    svc, events = service(tier="T5")
    assert svc.start(None) == ("async", "data")
    assert isinstance(events[-1], ModesChanged) and "pipeline" in dict(events[-1].unavailable)


def test_operator_override_is_honoured_even_against_the_policy(caplog) -> None:
    svc, _ = service(tier="T5")
    assert svc.start(("pipeline",)) == ("pipeline",)
    assert "forced by configuration" in caplog.text
    with pytest.raises(ModeNotAvailable):
        service()[0].start(("mining",))


def test_volunteer_switches_cannot_enable_what_the_machine_cannot_do() -> None:
    svc, events = service(stake=0)
    svc.start(None)
    with pytest.raises(ModeNotAvailable, match="needs 100 NEURO staked"):
        svc.set(("pipeline", "verify"))
    assert svc.set(("pipeline",)) == ("pipeline",)
    assert events[-1].active == ("pipeline",)


def test_staking_makes_verify_available_live() -> None:
    stake = {"units": 0}
    events: list = []
    svc = ModeService(tier="T3", layers_fit=4, fits_full_model=True, data_dir_free=lambda: 100 * GB,
                      staked_units=lambda: stake["units"], emit=events.append)
    svc.start(None)
    stake["units"] = VERIFY_MIN_STAKE_UNITS
    assert "verify" in svc.set(("pipeline", "verify"))
