"""Property test: the store behaves like a dict of dicts, through batches and reopen."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import Store, Table

TABLES = [Table.msgpack("t1"), Table.msgpack("t2")]
keys = st.text(alphabet="abc/", min_size=1, max_size=4)
values = st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.binary(max_size=8), st.none())
op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 1), keys, values),
    st.tuples(st.just("delete"), st.integers(0, 1), keys, st.none()),
    st.tuples(st.just("batch"), st.integers(0, 1), st.lists(st.tuples(keys, values), max_size=5), st.none()),
    st.tuples(st.just("reopen"), st.just(0), st.just(""), st.none()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=30), st.text(alphabet="abc/", max_size=2))
def test_store_matches_dict_model(ops: list[tuple[str, int, object, object]], prefix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "db"
        store = Store.open(path)
        model: list[dict[str, object]] = [{}, {}]
        try:
            for kind, t, key, value in ops:
                table = TABLES[t]
                if kind == "put":
                    store.put(table, key, value)  # type: ignore[arg-type]
                    model[t][key] = value  # type: ignore[index]
                elif kind == "delete":
                    assert store.delete(table, key) == (key in model[t])  # type: ignore[arg-type]  # the model keys tables loosely
                    model[t].pop(key, None)  # type: ignore[call-overload]
                elif kind == "batch":
                    with store.batch() as b:
                        for k, v in key:  # type: ignore[attr-defined]
                            b.put(table, k, v)
                            model[t][k] = v
                else:
                    store.close()
                    store = Store.open(path)
            for t, table in enumerate(TABLES):
                got = {k.decode(): v for k, v in store.scan(table)}
                assert got == model[t]
                assert {k.decode() for k, _ in store.scan(table, prefix)} == {
                    k for k in model[t] if k.startswith(prefix)}
                for k, v in model[t].items():
                    assert store.get(table, k) == v
        finally:
            store.close()
