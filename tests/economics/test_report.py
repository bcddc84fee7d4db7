"""The per-kind proof report the devnet summary prints, read back from real ledger files."""

import json

from app.node.economics.report import OWN_PROOFS_FILE, report_from_dirs

from .helpers import BOB, CAROL, T0, Devnet, submit_all


def test_report_counts_made_accepted_refused_with_reasons_across_ledgers(tmp_path) -> None:
    net = Devnet()
    epoch = net.epoch_of(T0) + 1
    first = net.proof(BOB, epoch, offset_ms=900)
    overlap = net.proof(BOB, epoch + 1, offset_ms=100, work_start_ms=first.body["work_end_ms"] - 1)
    uptime = net.proof(CAROL, epoch, kind="uptime", uptime_ms=500)
    for name, records in (("a", [first, uptime]), ("b", [first, overlap])):
        (tmp_path / name).mkdir()
        ledger = net.ledger(tmp_path / name)
        submit_all(ledger, records)
        ledger.close()
    (tmp_path / "b" / OWN_PROOFS_FILE).write_text(json.dumps(
        {"training": {"made": 3, "refused_at_door": {"proof stamped before its epoch began": 1}}}))
    report = report_from_dirs([tmp_path / "a", tmp_path / "b"], net.config)
    assert report["uptime"] == {"made": 1, "accepted": 1, "refused": 0, "refused_reasons": {}, "checked": 0,
                                "challenged": 0, "slashed": 0}
    training = report["training"]
    assert (training["made"], training["accepted"], training["refused"]) == (3, 1, 2)
    assert training["refused_reasons"] == {
        "work span overlaps time this node already claimed in another proof": 1,
        "proof stamped before its epoch began": 1}
