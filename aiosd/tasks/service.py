"""Long operations as tasks: an id at once, progress lines, a final state, `wait` with a deadline.

Tasks are records in the store (table `tasks`), so `aiosd tasks` shows them after a restart;
a task that was running when the daemon died is marked `interrupted` at the next start.
The work itself runs in this service's TaskGroup (no ownerless tasks), at most
`MAX_RUNNING` at once; more wait their turn.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import ApiProblem, Route, json_ok, read_query
from aiosd.context import NodeContext, ServiceKey
from aiosd.errors import AiosdError
from storage import Store, Table

log = logging.getLogger(__name__)

TaskState = Literal["pending", "running", "succeeded", "failed", "interrupted"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "interrupted"})
# Bounds: progress lines per task and tasks kept (oldest final ones are pruned first).
MAX_PROGRESS = 200
MAX_TASKS = 5000
MAX_RUNNING = 8
# Failures a user caused or can fix: logged as one line, not with a traceback.
EXPECTED_FAILURES: tuple[type[BaseException], ...] = (AiosdError, ValueError, LookupError, OSError, TimeoutError)


class ProgressLine(BaseModel):
    ts: float
    message: str


class Task(BaseModel):
    id: str
    kind: str
    target: str
    state: TaskState = "pending"
    created: float
    updated: float
    progress: list[ProgressLine] = Field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None


TASKS = Table.model("tasks", Task)

Work = Callable[["TaskHandle"], Awaitable[dict[str, Any] | None]]


class TaskHandle:
    """What a running piece of work uses to report progress."""

    def __init__(self, service: TaskService, task_id: str) -> None:
        self._service = service
        self.id = task_id

    async def progress(self, message: str) -> None:
        await self._service._update(self.id, progress=message)



class WaitQuery(BaseModel):
    """`POST /v1/tasks/{id}/wait` query parameters."""

    model_config = ConfigDict(extra="ignore")
    timeout_s: float = Field(60.0, ge=0, le=3600, allow_inf_nan=False, description="seconds to wait at most")

class TaskService:
    name = "tasks"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._changed = asyncio.Condition()
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._group: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._mark_interrupted)
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._group is not None:
            for t in list(self._running):  # cancel running work on shutdown
                t.cancel()
            try:
                await self._group.__aexit__(None, None, None)
            except BaseExceptionGroup:
                log.warning("task work ended with errors at shutdown")

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/tasks", self._h_list, "list tasks, newest first", tag="tasks"),
            Route("GET", "/v1/tasks/{id}", self._h_get, "one task with its progress", response=Task, tag="tasks"),
            Route("POST", "/v1/tasks/{id}/wait", self._h_wait,
                  "wait until the task is final (?timeout_s=, default 60)", response=Task, tag="tasks",
                  query=WaitQuery),
        ]

    # ----- API for other services -----------------------------------------------------------
    async def start(self, kind: str, target: str, work: Work) -> Task:
        """Record a new task and run `work` in the background; return the task at once."""
        now = time.time()
        task = Task(id="t-" + secrets.token_hex(6), kind=kind, target=target, created=now, updated=now)
        await asyncio.to_thread(self._store.put, TASKS, task.id, task)
        if self._group is None:
            raise RuntimeError("the task service is not running")
        job = self._group.create_task(self._run(task.id, work))
        self._running.add(job)
        job.add_done_callback(self._running.discard)
        log.info("task started", extra={"task": task.id, "kind": kind, "target": target})
        return task

    async def get(self, task_id: str) -> Task | None:
        return await asyncio.to_thread(self._store.get, TASKS, task_id)

    async def list(self) -> list[Task]:
        rows = await asyncio.to_thread(self._store.scan, TASKS)
        return sorted((t for _, t in rows), key=lambda t: t.created, reverse=True)

    async def wait(self, task_id: str, timeout_s: float) -> Task:
        """The task once final, or as it stands when `timeout_s` runs out."""
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while True:
                task = await self.get(task_id)
                if task is None:
                    raise KeyError(task_id)
                left = deadline - time.monotonic()
                if task.state in FINAL or left <= 0:
                    return task
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=left)
                except TimeoutError:
                    pass

    # ----- internals ------------------------------------------------------------------------
    async def _run(self, task_id: str, work: Work) -> None:
        async with self._slots:
            await self._update(task_id, state="running")
            try:
                result = await work(TaskHandle(self, task_id))
            except asyncio.CancelledError:
                await asyncio.shield(self._update(task_id, state="interrupted", error="daemon stopped"))
                raise
            except Exception as e:  # one unit of work: its failure is the task's result
                if isinstance(e, EXPECTED_FAILURES):
                    log.info("task failed", extra={"task": task_id, "error": str(e)})
                else:
                    log.exception("task failed unexpectedly", extra={"task": task_id})
                await self._update(task_id, state="failed", error=str(e) or type(e).__name__)
                return
            await self._update(task_id, state="succeeded", result=result or {})
            log.info("task succeeded", extra={"task": task_id})

    async def _update(self, task_id: str, *, state: TaskState | None = None, progress: str | None = None,
                      result: dict[str, Any] | None = None, error: str | None = None) -> None:
        now = time.time()

        def apply(txn: Any) -> None:
            task = txn.get(TASKS, task_id)
            if task is None:
                return
            changes: dict[str, Any] = {"updated": now}
            if state is not None:
                changes["state"] = state
            if progress is not None:
                changes["progress"] = (task.progress + [ProgressLine(ts=now, message=progress)])[-MAX_PROGRESS:]
            if result is not None:
                changes["result"] = result
            if error is not None:
                changes["error"] = error
            txn.put(TASKS, task_id, task.model_copy(update=changes))

        await asyncio.to_thread(self._store.update, apply)
        async with self._changed:
            self._changed.notify_all()

    def _mark_interrupted(self) -> None:
        def apply(txn: Any) -> None:
            rows = list(txn.scan(TASKS))
            for key, task in rows:
                if task.state not in FINAL:
                    txn.put(TASKS, key, task.model_copy(update={
                        "state": "interrupted", "error": "the daemon stopped while this task ran",
                        "updated": time.time()}))
            finals = sorted((t for _, t in rows if t.state in FINAL), key=lambda t: t.updated)
            for task in finals[: max(0, len(rows) - MAX_TASKS)]:
                txn.delete(TASKS, task.id)

        self._store.update(apply)

    # ----- handlers -------------------------------------------------------------------------
    async def _h_list(self, request: web.Request) -> web.Response:
        return web.json_response([t.model_dump(mode="json", exclude={"progress"}) for t in await self.list()])

    async def _h_get(self, request: web.Request) -> web.Response:
        task = await self.get(request.match_info["id"])
        if task is None:
            raise ApiProblem(404, "not_found", f"no task {request.match_info['id']}", "id")
        return json_ok(task)

    async def _h_wait(self, request: web.Request) -> web.Response:
        timeout_s = (await read_query(request, WaitQuery)).timeout_s
        try:
            return json_ok(await self.wait(request.match_info["id"], timeout_s))
        except KeyError:
            raise ApiProblem(404, "not_found", f"no task {request.match_info['id']}", "id") from None


TASKS_KEY: ServiceKey[TaskService] = ServiceKey("tasks")


def task_service(ctx: NodeContext) -> TaskService:
    return TaskService(ctx.store)


__all__ = ["FINAL", "TASKS", "TASKS_KEY", "Task", "TaskHandle", "TaskService", "task_service"]
