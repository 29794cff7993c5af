"""Per-instance LLM statistics (TTFT, TPOT, tokens/s, queue, KV-cache bytes) and their AIOS metric names.

`EngineStats` is plain bookkeeping with time passed in; `snapshot()` is the dict /v1/metrics serves.
`LLMMetrics` publishes a snapshot into the block's AIOSMetrics under AIOS's `llm_*` names (Prometheus).
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from sdk.metrics import AIOSMetrics

# Percentiles over the last 512 requests: enough for a stable p50/p99, bounded memory.
WINDOW_REQUESTS = 512
# tokens/s over the last 10 s, like the SDK's fps gauges.
RATE_WINDOW_S = 10.0
# AIOS's histogram bounds (aios_transformers/metrics.py), in seconds.
TTFT_BUCKETS_S = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
TPOT_BUCKETS_S = (0.01, 0.05, 0.1, 0.2, 0.5)


def _pct(values: deque[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class EngineStats:
    """Counters and windows the engine updates from its thread; read by snapshot() from any thread."""

    def __init__(self) -> None:
        self.prompts_total = 0
        self.prompt_tokens_total = 0
        self.tokens_generated_total = 0
        self.errors_total = 0
        self.cancelled_total = 0
        self.rejected_total = 0
        self.reused_tokens_total = 0  # prompt tokens whose KV came from the session's cache (not recomputed)
        self.ttft_s: deque[float] = deque(maxlen=WINDOW_REQUESTS)
        self.tpot_s: deque[float] = deque(maxlen=WINDOW_REQUESTS)
        self._tokens: deque[tuple[float, int]] = deque()
        self._new_ttft: list[float] = []
        self._new_tpot: list[float] = []
        self.gauges: dict[str, float] = {}

    def tokens(self, now: float, n: int) -> None:
        """n tokens were generated at `now`."""
        self.tokens_generated_total += n
        self._tokens.append((now, n))
        while self._tokens and self._tokens[0][0] < now - RATE_WINDOW_S:
            self._tokens.popleft()

    def first_token(self, ttft_s: float) -> None:
        """A request produced its first token ttft_s after it was submitted."""
        self.ttft_s.append(ttft_s)
        self._new_ttft.append(ttft_s)

    def finished(self, tpot_s: float | None) -> None:
        """A request finished; tpot_s = (last - first token time) / (tokens - 1), None with one token."""
        if tpot_s is not None:
            self.tpot_s.append(tpot_s)
            self._new_tpot.append(tpot_s)

    def tokens_per_s(self, now: float) -> float:
        """Generated tokens per second over the last RATE_WINDOW_S."""
        window = [(t, c) for t, c in list(self._tokens) if t >= now - RATE_WINDOW_S]  # list(): atomic copy
        if not window:
            return 0.0
        span = min(RATE_WINDOW_S, max(now - window[0][0], 0.1))
        return sum(c for _, c in window) / span

    def drain_observations(self) -> tuple[list[float], list[float]]:
        """TTFT and TPOT values recorded since the last call (for histograms)."""
        ttft, tpot = self._new_ttft, self._new_tpot
        self._new_ttft, self._new_tpot = [], []
        return ttft, tpot

    def snapshot(self, now: float) -> dict[str, Any]:
        """Plain dict of every statistic (seconds, tokens, bytes)."""
        return {
            "ttft_s_p50": _pct(self.ttft_s, 0.5), "ttft_s_p99": _pct(self.ttft_s, 0.99),
            "tpot_s_p50": _pct(self.tpot_s, 0.5), "tpot_s_p99": _pct(self.tpot_s, 0.99),
            "tokens_per_s": self.tokens_per_s(now),
            "prompts_total": self.prompts_total, "prompt_tokens_total": self.prompt_tokens_total,
            "tokens_generated_total": self.tokens_generated_total, "errors_total": self.errors_total,
            "cancelled_total": self.cancelled_total, "rejected_total": self.rejected_total,
            "reused_tokens_total": self.reused_tokens_total,
            **self.gauges,
        }


class LLMMetrics:
    """Publishes engine snapshots into a block's AIOSMetrics under AIOS's `llm_*` names."""

    COUNTERS: ClassVar[dict[str, str]] = {"prompts_total": "llm_prompts_total", "prompt_tokens_total": "llm_prompt_tokens_total",
                "tokens_generated_total": "llm_tokens_generated_total",
                "errors_total": "llm_inference_errors_total", "cancelled_total": "llm_cancelled_total",
                "rejected_total": "llm_rejected_total"}
    GAUGES: ClassVar[dict[str, str]] = {"tokens_per_s": "llm_tokens_per_second", "running": "llm_active_sessions",
              "queue_length": "llm_queue_length", "kv_cache_bytes": "llm_kv_cache_bytes",
              "kv_cache_capacity_bytes": "llm_kv_cache_capacity_bytes", "sessions_cached": "llm_sessions_cached",
              "ttft_s_p50": "llm_ttft_p50_seconds", "tpot_s_p50": "llm_tpot_p50_seconds"}

    def __init__(self, metrics: AIOSMetrics) -> None:
        self.m = metrics
        for key, name in self.COUNTERS.items():
            metrics.register_counter(name, key.replace("_", " "))
        for key, name in self.GAUGES.items():
            metrics.register_gauge(name, key.replace("_", " "))
        metrics.register_histogram("llm_time_to_first_token_seconds", "submit to first token", TTFT_BUCKETS_S)
        metrics.register_histogram("llm_time_per_output_token_seconds", "time per output token after the first",
                                   TPOT_BUCKETS_S)

    def publish(self, snapshot: dict[str, Any], ttft: list[float], tpot: list[float]) -> None:
        """Bring the AIOS metrics up to `snapshot` (counters advance by the difference)."""
        for key, name in self.COUNTERS.items():
            delta = float(snapshot.get(key, 0)) - self.m.value(name)
            if delta > 0:
                self.m.increment_counter(name, delta)
        for key, name in self.GAUGES.items():
            if key in snapshot:
                self.m.set_gauge(name, float(snapshot[key]))
        for v in ttft:
            self.m.observe_histogram("llm_time_to_first_token_seconds", v)
        for v in tpot:
            self.m.observe_histogram("llm_time_per_output_token_seconds", v)
