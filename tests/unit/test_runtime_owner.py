"""Owner ids and the choice of orphans (runtime.drivers.owner), without processes."""

from __future__ import annotations

from pathlib import Path

from runtime.drivers import owner as own


def m(pid: int, owner: str, data_dir: str, role: str = own.ROLE_INSTANCE, *, service: bool = False,
      leader: bool = True, iid: str = "i") -> own.Marked:
    return own.Marked(pid, owner, data_dir, role, iid, service, leader)


def test_owner_ids_differ_per_node_and_per_data_dir_and_are_stable(tmp_path: Path) -> None:
    a = own.owner_id("n1", tmp_path / "a")
    assert a == own.owner_id("n1", tmp_path / "a") and len(a) == 12
    assert len({a, own.owner_id("n2", tmp_path / "a"), own.owner_id("n1", tmp_path / "b")}) == 3
    env = own.owner_env(a, tmp_path / "a", own.ROLE_INSTANCE, "echo-0")
    assert env == {own.ENV_OWNER: a, own.ENV_DATA_DIR: str(tmp_path / "a"), own.ENV_ROLE: "instance",
                   own.ENV_INSTANCE: "echo-0"}


def test_orphans_are_gone_data_dirs_and_own_unknowns_only(tmp_path: Path) -> None:
    live, gone = str(tmp_path), str(tmp_path / "gone")
    marked = [
        m(1, "other", live),  # a live daemon's instance: untouched
        m(2, "other", gone),  # a dead daemon's instance, data dir removed: reaped
        m(3, "other", gone, leader=False),  # its child: goes with the group, not chosen alone
        m(4, "other", gone, own.ROLE_SERVICE, service=True),  # its podman service: reaped
        m(5, "other", gone, own.ROLE_SERVICE, service=False),  # conmon under that service: podman's business
        m(6, "me", live, iid="known"),  # ours and recorded: kept (adopted)
        m(7, "me", live, iid="unknown"),  # ours, no record: reaped
        m(8, "other", "", own.ROLE_INSTANCE),  # no data dir recorded: unknown, not gone
        m(9, "other", gone, "something-else"),
    ]
    chosen = own.orphans(marked, "me", lambda x: x.instance_id == "known")
    assert [x.pid for x in chosen] == [2, 4, 7]
    assert own.data_dir_gone(gone) and not own.data_dir_gone(live) and not own.data_dir_gone("")


def test_a_data_dir_claimed_by_another_owner_is_abandoned_by_the_first(tmp_path: Path) -> None:
    d = tmp_path / "runtime"
    assert not own.abandoned(str(tmp_path), "a")  # no owner file (made before owners): not abandoned
    own.claim(d, "a")
    assert (d / own.OWNER_FILE).read_text() == "a\n"
    assert not own.abandoned(str(d), "a") and own.abandoned(str(d), "b")
    own.claim(d, "b")  # the dir was made again by a daemon with another identity
    assert own.abandoned(str(d), "a") and not own.abandoned(str(d), "b")
    assert own.abandoned(str(tmp_path / "gone"), "a") and not own.abandoned("", "a")
    chosen = own.orphans([m(1, "a", str(d)), m(2, "b", str(d))], "b", lambda x: True)
    assert [x.pid for x in chosen] == [1]
