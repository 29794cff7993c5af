"""The entry of a split model, in process: chains stages, samples at the tail, keeps each session's history.

Every hop goes through tensor_wire (encode, decode) as it would between machines. When a stage answers
CacheMiss (it was restarted or replaced), the entry replays the session's fed tokens through the stages
before it (stateless) and rebuilds that stage's cache, then continues: the tokens equal an undisturbed
run's (Petals' failover). The network transport between stages is not here (vDAG data plane).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from sdk.llm import tensor_wire
from sdk.llm.errors import CacheMiss, InvalidRequest
from sdk.llm.params import SamplingParams
from sdk.llm.sampling import make_generator, sample_rows
from sdk.llm.stage import PipelineStage


@dataclass(slots=True)
class _Session:
    params: SamplingParams
    generator: torch.Generator | None
    fed: list[int] = field(default_factory=list)  # tokens whose K/V every stage holds
    pending: list[int] = field(default_factory=list)  # tokens to feed next (the prompt, then the last token)
    generated: list[int] = field(default_factory=list)


class SplitPipeline:
    """Stages covering [0, L) in order; `begin(session, prompt)` then `step(session)` per token."""

    def __init__(self, stages: list[PipelineStage], *, wire: bool = True) -> None:
        if not stages or not stages[0].first or not stages[-1].last:
            raise InvalidRequest("stages", "must start at layer 0 and end at the last layer")
        for a, b in itertools.pairwise(stages):
            if a.end != b.start:
                raise InvalidRequest("stages", f"ranges must be contiguous: [{a.start}, {a.end}) then "
                                               f"[{b.start}, {b.end})")
        self.stages = list(stages)
        self.wire = wire
        self.replays = 0
        self.hop_bytes = 0
        self._sessions: dict[str, _Session] = {}

    def begin(self, session_id: str, prompt_ids: list[int], params: SamplingParams | None = None) -> None:
        """Start (or restart) a session with a prompt."""
        if not prompt_ids:
            raise InvalidRequest("prompt", "is empty")
        p = params or SamplingParams(temperature=0.0)
        gen = None if p.greedy else make_generator(p.seed or 0, self.stages[-1].stack.device)
        self._sessions[session_id] = _Session(params=p, generator=gen, pending=list(prompt_ids))

    def replace_stage(self, index: int, stage: PipelineStage) -> None:
        """Swap in another instance of the same layer range (its caches rebuild on first use)."""
        old = self.stages[index]
        if (stage.start, stage.end) != (old.start, old.end):
            raise InvalidRequest("stage", f"must serve layers [{old.start}, {old.end}), got [{stage.start}, {stage.end})")
        self.stages[index] = stage

    def _hop(self, t: torch.Tensor) -> torch.Tensor:
        if not self.wire:
            return t
        frame = tensor_wire.encode(t)
        self.hop_bytes += len(frame)
        return tensor_wire.decode(frame)

    def _replay(self, session_id: str, s: _Session, index: int) -> None:
        x: torch.Tensor = torch.tensor(s.fed, dtype=torch.long)
        for stage in self.stages[:index]:
            x = self._hop(stage.stateless(x))
        if s.fed:
            self.stages[index].rebuild(session_id, x)
        self.replays += 1

    def step(self, session_id: str) -> int:
        """Feed the pending tokens through every stage, sample the next token at the tail; returns it."""
        s = self._sessions[session_id]
        start = len(s.fed)
        x: torch.Tensor = torch.tensor(s.pending, dtype=torch.long)
        for i, stage in enumerate(self.stages):
            try:
                out = stage.forward(session_id, x, start)
            except CacheMiss:
                self._replay(session_id, s, i)
                out = stage.forward(session_id, x, start)
            x = out if stage.last else self._hop(out)
        tok = sample_rows(x[None], [s.params], [s.generator])[0]
        s.fed.extend(s.pending)
        s.pending = [tok]
        s.generated.append(tok)
        return tok

    def step_many(self, session_ids: list[str]) -> list[int]:
        """One decode step for several sessions together (each past its prompt): one batched forward per
        stage. A stage that lost some sessions' caches gets those replayed, then the batch is retried."""
        sessions = [self._sessions[sid] for sid in session_ids]
        if any(not s.fed or len(s.pending) != 1 for s in sessions):
            raise InvalidRequest("session_ids", "step_many continues sessions after their first step()")
        xs: list[torch.Tensor] = [torch.tensor(s.pending, dtype=torch.long) for s in sessions]
        for i, stage in enumerate(self.stages):
            rows = [(sid, x, len(s.fed)) for sid, x, s in zip(session_ids, xs, sessions)]
            try:
                outs = stage.forward_batch(rows)
            except CacheMiss:
                for sid, s in zip(session_ids, sessions):
                    if stage.cached_len(sid) != len(s.fed):
                        self._replay(sid, s, i)
                outs = stage.forward_batch(rows)
            xs = outs if stage.last else [self._hop(o) for o in outs]
        toks = sample_rows(torch.stack(xs), [s.params for s in sessions], [s.generator for s in sessions])
        for s, tok in zip(sessions, toks):
            s.fed.extend(s.pending)
            s.pending = [tok]
            s.generated.append(tok)
        return toks

    def generate(self, session_id: str, prompt_ids: list[int], max_tokens: int,
                 params: SamplingParams | None = None) -> list[int]:
        """begin + max_tokens steps; the generated ids."""
        self.begin(session_id, prompt_ids, params)
        return [self.step(session_id) for _ in range(max_tokens)]

    def end(self, session_id: str) -> None:
        """Forget a session here and in every stage."""
        self._sessions.pop(session_id, None)
        for stage in self.stages:
            stage.drop(session_id)
