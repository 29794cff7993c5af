"""Issue 18: the edges count what they refuse (connections past a cap, idle/slowloris closes,
malformed requests), per listener, and /metrics exports them with Prometheus names.

A real aiohttp listener on 127.0.0.1 with a one-connection cap and a short idle timer.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from aiosd.metrics.prom import edge_text
from federation.edge import RejectionLog, edge_counters
from federation.edge_http import EdgeSettings, EdgeSite, runner_kwargs


async def _closed(s: socket.socket, within_s: float) -> bool:
    """True when the server closes `s` (EOF or reset) within `within_s`."""
    loop = asyncio.get_running_loop()
    s.setblocking(False)
    try:
        async with asyncio.timeout(within_s):
            while await loop.sock_recv(s, 4096):
                pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


async def test_refused_idle_and_bad_requests_are_counted_per_listener() -> None:
    edge = EdgeSettings(idle_timeout_s=0.5, per_source=1, total=8)
    rej, other = RejectionLog(), RejectionLog()
    runner = web.AppRunner(web.Application(), access_log=None, **runner_kwargs(edge, rej))
    runner2 = web.AppRunner(web.Application(), access_log=None, **runner_kwargs(edge, other))
    await runner.setup()
    await runner2.setup()
    site = EdgeSite(runner, "127.0.0.1", 0, edge=edge, rejections=rej)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        assert edge_counters(rej) == {"connections_refused": {"per_source_cap": 0, "total_cap": 0},
                                      "idle_closes": 0, "bad_requests": 0, "unmasked_frames": 0}
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished: a slowloris
        await asyncio.sleep(0.05)
        refused = socket.create_connection(("127.0.0.1", port), timeout=5)  # past the cap of one
        assert await _closed(refused, 2.0)
        assert edge_counters(rej)["connections_refused"]["per_source_cap"] == 1
        assert await _closed(slow, 5.0)  # the idle timer closes it
        await asyncio.sleep(0.05)
        assert edge_counters(rej)["idle_closes"] == 1
        slow.close()
        refused.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
        assert (await r.read(64))[9:12] == b"400"
        w.close()
        await asyncio.sleep(0.05)
        c = edge_counters(rej)
        assert c["bad_requests"] == 1 and c["idle_closes"] == 1, c  # a finished request is not an idle close
        assert other.counts.total() == 0  # each listener counts its own
    finally:
        await runner.cleanup()
        await runner2.cleanup()
    text = edge_text("n1", {"p2p": {**edge_counters(rej), "handshakes_rejected": {"rate_limited": 2}},
                            "api": edge_counters(other)})
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(fams) == {"aiosd_edge_connections_refused", "aiosd_edge_idle_closes", "aiosd_edge_bad_requests",
                         "aiosd_edge_unmasked_frames", "aiosd_edge_handshakes_rejected"}
    got = {(s.name, s.labels.get("listener"), s.labels.get("reason")): s.value
           for f in fams.values() for s in f.samples}
    assert got[("aiosd_edge_connections_refused_total", "p2p", "per_source_cap")] == 1
    assert got[("aiosd_edge_idle_closes_total", "p2p", None)] == 1
    assert got[("aiosd_edge_bad_requests_total", "api", None)] == 0
    assert got[("aiosd_edge_handshakes_rejected_total", "p2p", "rate_limited")] == 2
    assert edge_text("n1", {}) == ""
