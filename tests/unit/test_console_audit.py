"""The audit trail's pure parts and its LMDB driver (retention bounds, batches, summaries)."""

from __future__ import annotations

from pathlib import Path

from aiosd.api.auth import Principal
from aiosd.console.audit import (
    AuditEntry,
    entries_of_summary,
    entry_key,
    expired,
    make_entry,
    select,
    summary_doc,
)
from aiosd.console.auditlog import AUDIT, AuditLog
from storage import Store


def entry(ts: float, user: str = "alice", node: str = "n1") -> AuditEntry:
    return make_entry(ts=ts, node=node, user=user, role="operator", via="token", method="POST",
                      route="/v1/apply", path="/v1/apply", status=200)


def test_keys_sort_in_time_order() -> None:
    keys = [entry_key(ts, seq) for ts, seq in [(1.5, 3), (1.5, 4), (2.0, 0), (10.0, 1), (1e9, 0)]]
    assert keys == sorted(keys)


def test_retention_drops_the_old_and_the_excess_oldest_first() -> None:
    keys = [entry_key(t, 0) for t in range(100, 200)]
    assert expired(keys, now=200.0, max_entries=1000, retention_s=50.0) == keys[:50]
    assert expired(keys, now=200.0, max_entries=10, retention_s=1e9) == keys[:90]
    assert expired(keys, now=200.0, max_entries=10, retention_s=50.0) == keys[:90]
    assert expired([], now=1.0) == []


def test_select_newest_first_by_user_and_since() -> None:
    es = [entry(t, "alice" if t % 2 else "bob") for t in range(10)]
    assert [e.ts for e in select(es)] == [float(t) for t in range(9, -1, -1)]
    assert {e.user for e in select(es, user="bob")} == {"bob"}
    assert [e.ts for e in select(es, since=7)] == [9.0, 8.0, 7.0]
    assert len(select(es, limit=3)) == 3


def test_a_long_target_is_cut_and_bad_summaries_are_skipped() -> None:
    e = make_entry(ts=1.0, node="n", user="u", role="admin", via="socket", method="PUT", route="/x/{k}",
                   path="/x/" + "a" * 2000, status=403)
    assert len(e.target) == 512 and e.action == "PUT /x/{k}"
    doc = summary_doc("n", [e, entry(2.0)])
    doc["entries"].append({"ts": "yesterday"})
    doc["entries"].append("<script>")
    assert [x.ts for x in entries_of_summary(doc)] == [1.0, 2.0]
    assert entries_of_summary({"entries": "nope"}) == []


async def test_the_log_writes_batches_and_stays_bounded(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    try:
        log = AuditLog(store, "n1", None, max_entries=50)
        await log.start()
        p = Principal("alice", "operator", "token")
        for i in range(120):
            log.record(p if i % 3 else None, "POST", "/v1/apply", f"/v1/apply?i={i}", 200 if i % 2 else 403)
        got = await log.entries()
        assert len(got) == 50  # the newest 50, in time order
        assert got[-1].target == "/v1/apply?i=119" and got[0].target == "/v1/apply?i=70"
        assert {e.user for e in got} == {"alice", "anonymous"}
        await log.stop()
        log2 = AuditLog(store, "n1", None, max_entries=50)
        await log2.start()  # a restart keeps what was written
        assert len(await log2.entries()) == 50
        await log2.stop()
        assert store.count(AUDIT) == 50
    finally:
        store.close()
