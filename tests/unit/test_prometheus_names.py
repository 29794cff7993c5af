"""Issue 18: /metrics follows the Prometheus naming guide, checked with prometheus_client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from aiosd.metrics.prom import FAMILIES, NAME_RE, prometheus_text, snake

GPU = {"gpu_id": "GPU-1", "usedMem": 10.0, "freeMem": 20.0, "totalMem": 30.0, "cudaUtilization": 50.0,
       "memUtilization": 25.0, "temperature": 61.0, "powerDrawW": 120.0, "powerUtilization": 0.0}


def check_exposition(text: str) -> dict[str, str]:
    """Parse `text`; every family snake_case with HELP and TYPE, counters `_total`, units as suffixes.
    Returns family name -> type (the parser names a counter family without its `_total`)."""
    kinds: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        assert NAME_RE.match(fam.name) and fam.name == fam.name.lower(), fam.name
        assert fam.documentation and fam.type in ("gauge", "counter"), fam.name
        assert fam.samples, fam.name
        if fam.type == "counter":
            assert all(s.name.endswith("_total") for s in fam.samples), fam.name
        else:
            assert not fam.name.endswith("_total"), fam.name
        assert not any(w in fam.name for w in ("mem_", "_mb", "util_", "percent", "temperature_c")) or \
            fam.name.endswith(("_bytes", "_ratio", "_celsius")), fam.name
        kinds[fam.name] = fam.type
    for line in text.splitlines():  # one HELP and one TYPE per family
        assert not line.startswith("#") or line.split()[1] in ("HELP", "TYPE")
    helps = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# HELP")]
    assert len(helps) == len(set(helps))
    return kinds


def test_every_sampled_name_maps_to_a_conforming_family() -> None:
    values = {name: 42.0 for name in FAMILIES}
    counters = {"metrics.samples": 3.0, "replication.written": 1.0, "envelopes_accepted": 9.0,
                "envelopes_rejected_bad_sig": 2.0, "envelopes_rejected_unknown_kind": 0.0}
    kinds = check_exposition(prometheus_text("n1", values, [GPU, {**GPU, "gpu_id": "GPU-2"}], counters))
    assert kinds["aiosd_memory_available_bytes"] == "gauge"
    assert kinds["aiosd_network_receive_bytes"] == "counter"
    assert kinds["aiosd_envelopes_rejected_bad_sig"] == "counter"
    assert kinds["aiosd_gpu_device_temperature_celsius"] == "gauge"
    assert kinds["aiosd_gpu_utilization_ratio"] == "gauge"
    text = prometheus_text("n1", {"memory.averageUtil": 50.0, "memory.freeMem": 1.0}, [], {})
    assert 'aiosd_memory_used_ratio{node="n1"} 0.5' in text and "aiosd_memory_available_bytes" in text
    assert "freeMem" not in text and "avgCudaUtilization" not in text


def test_unknown_names_fall_back_to_snake_case() -> None:
    assert snake("gpu.avgCudaUtilization") == "gpu_avg_cuda_utilization"
    check_exposition(prometheus_text('n"1', {"some.newMetric": 1.0}, [], {"x.already_total": 1.0}))
