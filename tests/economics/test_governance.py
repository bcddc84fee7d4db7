import pytest

from app.node.economics import governance
from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.governance import Phase, Proposal, VoteRefused

from .helpers import ALICE, BOB, CAROL, DAVE, T0, Devnet, submit_all

CFG = EconomicsConfig.devnet()
MERGES = [[b"t".hex(), b"h".hex()], [b"th".hex(), b"e".hex()]]


def _proposal(created=0) -> Proposal:
    return Proposal(proposal_id="p", author="a", title="th", merges=[(b"t", b"h")], created_ms=created)


def test_votes_are_refused_outside_the_voting_window_and_twice():
    p = _proposal()
    with pytest.raises(VoteRefused, match="not opened"):
        governance.check_vote(p, "v", 10, CFG.discussion_ms - 1, CFG)
    governance.check_vote(p, "v", 10, CFG.discussion_ms, CFG)
    p.votes["v"] = True
    with pytest.raises(VoteRefused, match="already voted"):
        governance.check_vote(p, "v", 10, CFG.discussion_ms + 1, CFG)
    with pytest.raises(VoteRefused, match="closed"):
        governance.check_vote(p, "w", 10, p.voting_closes(CFG), CFG)
    with pytest.raises(VoteRefused, match="stake"):
        governance.check_vote(p, "w", 0, CFG.discussion_ms + 1, CFG)


@pytest.mark.parametrize("yes, no, total, outcome", [
    (66, 34, 100, Phase.APPROVED),
    (65, 35, 100, Phase.REJECTED),
    (20, 9, 100, Phase.NO_QUORUM),  # 29 % of staked supply voted
    (30, 0, 100, Phase.APPROVED),  # exactly the 30 % quorum
    (0, 0, 0, Phase.NO_QUORUM),
])
def test_tally_applies_66_percent_approval_and_30_percent_quorum(yes, no, total, outcome):
    votes = {"y": True, "n": False}
    assert governance.tally(votes, {"y": yes, "n": no}, total, CFG).outcome is outcome


def test_phases_advance_with_time_only():
    p = _proposal()
    assert governance.advance(p, CFG.discussion_ms - 1, CFG) is Phase.DISCUSSION
    assert governance.advance(p, CFG.discussion_ms, CFG) is Phase.VOTING
    p.votes["v"] = True
    assert governance.advance(p, p.voting_closes(CFG), CFG, {"v": 5}, 10) is Phase.APPROVED
    assert governance.advance(p, p.implementation_at(CFG), CFG) is Phase.IMPLEMENTED


@pytest.fixture()
def ledger(tmp_path):
    net = Devnet()
    ledger = net.ledger(tmp_path)
    allocations = {ALICE.address: neuro(300), BOB.address: neuro(300), CAROL.address: neuro(300),
                   DAVE.address: neuro(150)}
    stakes = [net.stake(k, neuro(100), T0 + i) for i, k in enumerate((BOB, CAROL, DAVE), start=1)]
    submit_all(ledger, [net.genesis_record(allocations), *stakes])
    yield net, ledger
    ledger.close()


def test_vocabulary_proposal_end_to_end_on_a_devnet_timescale(ledger):
    net, ledger = ledger
    cfg = net.config
    proposal = net.signed(ALICE, "proposal", {"title": "merge th, the", "merges": MERGES}, T0 + 10)
    submit_all(ledger, [proposal])
    assert ledger.balance(ALICE.address).staked == cfg.proposal_stake
    opens = T0 + 10 + cfg.discussion_ms
    early = net.signed(BOB, "vote", {"proposal_id": proposal.record_id, "approve": True}, opens - 1)
    yes_bob = net.signed(BOB, "vote", {"proposal_id": proposal.record_id, "approve": True}, opens + 1)
    yes_carol = net.signed(CAROL, "vote", {"proposal_id": proposal.record_id, "approve": True}, opens + 2)
    no_dave = net.signed(DAVE, "vote", {"proposal_id": proposal.record_id, "approve": False}, opens + 3)
    no_alice = net.signed(ALICE, "vote", {"proposal_id": proposal.record_id, "approve": False}, opens + 4)
    submit_all(ledger, [early, yes_bob, yes_carol, no_dave, no_alice])
    assert ledger.record_status(early.record_id) == ("rejected", "voting has not opened yet (proposal is in discussion)")
    assert ledger.record_status(no_alice.record_id) == ("rejected", "only accounts with stake can vote")
    assert ledger.proposals()[0].phase is Phase.VOTING
    done = opens + cfg.voting_ms + cfg.implementation_ms
    submit_all(ledger, [net.transfer(BOB, CAROL, 1, done)])  # moves the canonical clock
    (state,) = ledger.proposals()
    assert state.phase is Phase.IMPLEMENTED
    assert (state.approve_weight, state.reject_weight) == (neuro(200), neuro(100))
    assert ledger.balance(ALICE.address).available == neuro(300)  # stake returned: quorum reached
    due = ledger.merges_due(applied=set())
    assert due == [(proposal.record_id, [(b"t", b"h"), (b"th", b"e")])]
    assert ledger.merges_due(applied={proposal.record_id}) == []


def test_second_vote_by_the_same_account_is_refused(ledger):
    net, ledger = ledger
    proposal = net.signed(ALICE, "proposal", {"title": "x", "merges": MERGES}, T0 + 10)
    at = T0 + 10 + net.config.discussion_ms + 1
    yes = net.signed(BOB, "vote", {"proposal_id": proposal.record_id, "approve": True}, at)
    no = net.signed(BOB, "vote", {"proposal_id": proposal.record_id, "approve": False}, at + 1)
    submit_all(ledger, [proposal, no, yes])  # arrival order does not matter, canonical time does
    assert ledger.record_status(yes.record_id)[0] == "applied"
    assert ledger.record_status(no.record_id) == ("rejected", "this account already voted on the proposal")
    assert ledger.proposals()[0].votes == {BOB.address: True}


def test_proposal_without_the_stake_is_refused(ledger):
    net, ledger = ledger
    broke = net.signed(DAVE, "proposal", {"title": "x", "merges": MERGES}, T0 + 10)
    submit_all(ledger, [broke])
    status, reason = ledger.record_status(broke.record_id)
    assert status == "rejected" and "stake" in reason
    assert ledger.proposals() == []


def test_proposal_without_quorum_burns_its_stake(ledger):
    net, ledger = ledger
    cfg = net.config
    proposal = net.signed(ALICE, "proposal", {"title": "x", "merges": MERGES}, T0 + 10)
    submit_all(ledger, [proposal])
    end = T0 + 10 + cfg.discussion_ms + cfg.voting_ms
    burned_before = ledger.totals()["burned"]
    submit_all(ledger, [net.transfer(BOB, CAROL, 1, end + 1, fee=0)])
    assert ledger.proposals()[0].phase is Phase.NO_QUORUM
    assert ledger.balance(ALICE.address).available == neuro(200)
    assert ledger.totals()["burned"] == burned_before + cfg.proposal_stake


def test_implemented_proposal_grows_the_real_tokenizer_identically_on_every_node(ledger, tmp_path):
    from app.node.economics.ledger import Ledger
    from app.node.tokenizer import NeuroTokenizer

    net, first = ledger
    cfg = net.config
    proposal = net.signed(ALICE, "proposal", {"title": "th, the", "merges": MERGES}, T0 + 10)
    opens = T0 + 10 + cfg.discussion_ms
    votes = [net.signed(k, "vote", {"proposal_id": proposal.record_id, "approve": True}, opens + i)
             for i, k in enumerate((BOB, CAROL), start=1)]
    clock = net.transfer(BOB, CAROL, 1, opens + cfg.voting_ms + cfg.implementation_ms)
    submit_all(first, [proposal, *votes, clock])
    second = Ledger(tmp_path / "second", cfg)
    second.submit_many([raw for raw in first.records_since(0)[0]], clock.timestamp_ms)
    vocabularies = []
    for node in (first, second):
        tokenizer = NeuroTokenizer.genesis()
        for _proposal_id, merges in node.merges_due(applied=set()):
            tokenizer = tokenizer.apply_merges(merges)
        vocabularies.append((tokenizer.vocab_size, tokenizer.content_hash, len(tokenizer.encode("the"))))
    second.close()
    assert vocabularies[0] == vocabularies[1]
    assert vocabularies[0][0] == NeuroTokenizer.genesis().vocab_size + 2
    assert vocabularies[0][2] == 1  # "the" is one token after the two merges
