"""The base image (debootstrap + sdk, cached by content hash) and block images, with real podman."""

from __future__ import annotations

import pytest

from runtime.errors import ImageNotFound
from runtime.images import BASE_LATEST, PodmanCli, build_base, build_block
from runtime.podman_conf import podman_env, write_containers_conf
from tests.integration.test_runtime_support import CACHE, ECHO_DIR, podman_usable, run_env

pytestmark = [pytest.mark.timeout(600), pytest.mark.podman]


@pytest.fixture
def cli() -> PodmanCli:
    why = podman_usable()
    if why:
        pytest.skip(why)
    return PodmanCli(env=podman_env(write_containers_conf(CACHE)))


async def test_base_image_is_cached_and_runs_the_sdk_offline(cli: PodmanCli) -> None:
    steps: list[str] = []
    ref = await build_base(CACHE, cli=cli, progress=steps.append)
    again: list[str] = []
    assert await build_base(CACHE, cli=cli, progress=again.append) == ref
    assert any("cached" in s for s in again) and not any("debootstrap" in s for s in again), again
    assert ref.startswith("localhost/aiosd-base:") and steps
    env = {"CONTAINERS_CONF": str(CACHE / "containers.conf")}
    r = run_env(env, "podman", "run", "--rm", "--network=none", "--init", BASE_LATEST, "python3", "-c",
                "import sdk, aiohttp, msgpack, sys; print(sys.version_info[:2], sdk.__name__)")
    assert r.returncode == 0, r.stderr
    assert "(3, 11) sdk" in r.stdout


async def test_block_image_from_a_directory_and_missing_base_is_named(cli: PodmanCli) -> None:
    await build_base(CACHE, cli=cli)
    tag = await build_block(ECHO_DIR, "localhost/aiosd-test-echo-build:1", cli=cli)
    env = {"CONTAINERS_CONF": str(CACHE / "containers.conf")}
    r = run_env(env, "podman", "run", "--rm", "--network=none", tag, "ls", "/block")
    assert r.returncode == 0 and "block.py" in r.stdout, r.stderr
    run_env(env, "podman", "rmi", tag)
    with pytest.raises(ImageNotFound, match="localhost/no-such-base:9"):
        await build_block(ECHO_DIR, "localhost/x:1", base="localhost/no-such-base:9", cli=cli)
