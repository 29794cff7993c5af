"""TaskService over a real LMDB store: ids at once, progress, final states, restart marks interrupted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aiosd.tasks.service import TaskHandle, TaskService
from storage import Store
from tests.waiting import eventually


async def test_task_runs_reports_progress_and_succeeds(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    gate = asyncio.Event()

    async def work(h: TaskHandle) -> dict[str, int]:
        await h.progress("step one")
        await gate.wait()
        await h.progress("step two")
        return {"answer": 42}

    async with TaskService(store) as tasks:
        t = await tasks.start("apply.block", "b1", work)
        assert t.state == "pending" and t.id.startswith("t-")
        async def running() -> bool:
            cur = await tasks.get(t.id)
            return cur is not None and cur.state == "running" and len(cur.progress) == 1

        await eventually(running, timeout_s=10)
        gate.set()
        done = await tasks.wait(t.id, timeout_s=5)
        assert done.state == "succeeded" and done.result == {"answer": 42}
        assert [p.message for p in done.progress] == ["step one", "step two"]
        assert [x.id for x in await tasks.list()] == [t.id]
    store.close()


async def test_failed_work_fails_the_task_with_its_message(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")

    async def work(h: TaskHandle) -> None:
        raise ValueError("image localhost/nope:1 not found")

    async with TaskService(store) as tasks:
        t = await tasks.start("apply.block", "b1", work)
        done = await tasks.wait(t.id, timeout_s=5)
        assert done.state == "failed" and done.error == "image localhost/nope:1 not found"
        with pytest.raises(KeyError):
            await tasks.wait("t-missing", 1)
    store.close()


async def test_running_task_is_interrupted_by_shutdown_and_stays_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")

    async def forever(h: TaskHandle) -> None:
        await asyncio.Event().wait()

    async with TaskService(store) as tasks:
        t = await tasks.start("apply.block", "b1", forever)

        async def running() -> bool:
            cur = await tasks.get(t.id)
            return cur is not None and cur.state == "running"

        await eventually(running, timeout_s=10)
    async with TaskService(store) as again:
        got = await again.get(t.id)
        assert got is not None and got.state == "interrupted"
    store.close()
