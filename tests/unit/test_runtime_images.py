"""Image helpers that need no podman: mirror discovery, content hashes, block-dir checks, containers.conf."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from runtime.errors import ImageBuildError
from runtime.images import BaseRecipe, PodmanCli, build_block, debian_mirror, tree_hash
from runtime.podman_conf import containers_conf_text


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n")
    assert debian_mirror([tmp_path / "sources.list", d]) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    f = tmp_path / "sources.list"
    f.write_text("# deb http://old/ bookworm main\ndeb [arch=amd64] http://one.example/debian bookworm main\n")
    assert debian_mirror([f]) == "http://one.example/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "sources.list"
    f.write_text("deb http://x/ bullseye main\n")
    with pytest.raises(ImageBuildError, match="no apt source for Debian 'bookworm'"):
        debian_mirror([f])


def test_tree_hash_ignores_caches_and_sees_changes(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    h = tree_hash(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"junk")
    assert tree_hash(tmp_path) == h
    (tmp_path / "a.py").write_text("x = 2\n")
    assert tree_hash(tmp_path) != h


def test_rootfs_key_depends_on_packages_only() -> None:
    assert BaseRecipe().rootfs_key() == BaseRecipe(mirror="http://other/").rootfs_key()
    assert BaseRecipe(packages=("python3",)).rootfs_key() != BaseRecipe().rootfs_key()


async def test_block_dir_problems_are_named(tmp_path: Path) -> None:
    cli = PodmanCli(binary="/nonexistent/podman")
    with pytest.raises(ImageBuildError, match="block.py does not exist"):
        await build_block(tmp_path, "localhost/x:1", cli=cli)
    (tmp_path / "block.py").write_text("pass\n")
    with pytest.raises(ImageBuildError, match="not a valid image name"):
        await build_block(tmp_path, "Bad Tag", cli=cli)


def test_containers_conf_stays_within_hard_limits() -> None:
    text = containers_conf_text()
    assert 'runtime = "runc"' in text
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        assert f"nofile={hard}:{hard}" in text or f"nofile={min(hard, 1048576)}" in text
    assert "nproc=" in text
