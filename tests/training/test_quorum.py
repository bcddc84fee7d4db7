"""Quorum lifecycle: form, train a session, renew or dissolve, replace a lost member."""

from __future__ import annotations

import pytest

from app.node.training.quorum import Quorum, QuorumError, QuorumState, form_quorum

HOLDERS = {0: ["d1", "d2"], 1: ["w-fast", "w-slow"], 2: ["v-fast", "v-slow"]}
TIERS = {"d1": "T1", "d2": "T4", "w-fast": "T2", "w-slow": "T3", "v-fast": "T1", "v-slow": "T4"}


def test_quorum_members_share_the_drivers_speed_class() -> None:
    fast = form_quorum("d1", HOLDERS, TIERS, now=0.0, session_s=60)
    slow = form_quorum("d2", HOLDERS, TIERS, now=0.0, session_s=60)
    assert fast is not None and slow is not None
    assert fast.members == {0: "d1", 1: "w-fast", 2: "v-fast"} and fast.speed == "fast"
    assert slow.members == {0: "d2", 1: "w-slow", 2: "v-slow"} and slow.speed == "slow"
    assert fast.state == QuorumState.TRAINING


def test_drivers_spread_over_the_replicas_of_each_stage() -> None:
    holders = {0: ["a", "b", "c", "d"], 1: ["x", "y"]}
    tiers = dict.fromkeys(["a", "b", "c", "d", "x", "y"], "T2")
    chosen = [form_quorum(d, holders, tiers, now=0.0, session_s=60) for d in holders[0]]
    assert [q.members[1] for q in chosen if q] == ["x", "y", "x", "y"]


def test_quorum_cannot_form_without_a_holder_for_every_stage() -> None:
    assert form_quorum("d1", {0: ["d1"], 1: []}, TIERS, now=0.0, session_s=60) is None


def test_session_renews_while_members_live_then_dissolves_at_the_limit() -> None:
    q = form_quorum("d1", HOLDERS, TIERS, now=0.0, session_s=60)
    assert q is not None
    assert not q.session_over(30.0) and q.session_over(60.0)
    for session in range(2, q.max_sessions + 1):
        assert q.renew(60.0 * session, alive=lambda _n: True)
        assert q.sessions == session
    assert not q.renew(999.0, alive=lambda _n: True)
    assert q.state == QuorumState.DISSOLVED


def test_session_end_with_a_dead_member_dissolves() -> None:
    q = form_quorum("d1", HOLDERS, TIERS, now=0.0, session_s=60)
    assert q is not None and not q.renew(60.0, alive=lambda n: n != "w-fast")
    assert q.state == QuorumState.DISSOLVED


def test_lost_member_is_replaced_by_a_replica_or_the_quorum_dissolves() -> None:
    q = form_quorum("d1", HOLDERS, TIERS, now=0.0, session_s=60)
    assert q is not None
    assert q.replace_member(1, ["w-slow"]) == "w-slow" and q.members[1] == "w-slow"
    assert q.replace_member(2, []) is None
    assert q.state == QuorumState.DISSOLVED
    with pytest.raises(QuorumError):
        q.start(1.0)


def test_record_round_trip_and_strict_parsing() -> None:
    q = form_quorum("d1", HOLDERS, TIERS, now=5.0, session_s=60)
    assert q is not None
    back = Quorum.from_record(q.to_record())
    assert back.members == q.members and back.state == q.state and back.quorum_id == q.quorum_id
    for bad in ({}, {"v": 2}, {**q.to_record(), "members": {"1": "x"}}, {**q.to_record(), "state": "??"}):
        with pytest.raises(QuorumError):
            Quorum.from_record(bad)
