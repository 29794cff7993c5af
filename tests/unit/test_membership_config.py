"""SwimConfig: memberlist defaults, profiles, and field-naming validation."""

from __future__ import annotations

import math

import pytest

from federation.membership import SwimConfig


def test_lan_defaults_are_memberlists() -> None:
    c = SwimConfig.lan()
    assert (c.probe_interval_s, c.probe_timeout_s, c.indirect_checks) == (1.0, 0.5, 3)
    assert (c.gossip_interval_s, c.gossip_nodes) == (0.2, 3)
    assert (c.suspicion_mult, c.suspicion_max_timeout_mult, c.retransmit_mult) == (4, 6, 4)
    assert c.push_pull_interval_s == 30.0
    assert c.max_members == 10_000


def test_profiles_are_valid_and_ordered() -> None:
    lan, wan, test = SwimConfig.lan(), SwimConfig.wan(), SwimConfig.test()
    assert test.probe_interval_s < lan.probe_interval_s < wan.probe_interval_s
    assert wan.suspicion_mult > lan.suspicion_mult
    assert test.push_pull_interval_s < lan.push_pull_interval_s


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("probe_interval_s", 0.0, "probe_interval_s: must be > 0"),
        ("probe_timeout_s", -1.0, "probe_timeout_s: must be > 0"),
        ("probe_timeout_s", 2.0, "probe_timeout_s: must be <= probe_interval_s"),
        ("gossip_interval_s", math.inf, "gossip_interval_s: must be finite"),
        ("gossip_nodes", 0, "gossip_nodes: must be >= 1"),
        ("indirect_checks", -1, "indirect_checks: must be >= 0"),
        ("suspicion_mult", 0, "suspicion_mult: must be >= 1"),
        ("max_piggyback", 0, "max_piggyback: must be in 1..64"),
        ("max_piggyback", 65, "max_piggyback: must be in 1..64"),
        ("max_members", 0, "max_members: must be >= 1"),
        ("awareness_max_multiplier", 0, "awareness_max_multiplier: must be >= 1"),
    ],
)
def test_bad_value_names_the_field(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SwimConfig(**{field: value})  # type: ignore[arg-type]  # table-driven


def test_non_number_is_a_type_error_naming_the_field() -> None:
    with pytest.raises(TypeError, match="gossip_nodes: must be a number"):
        SwimConfig(gossip_nodes="3")  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(TypeError, match="gossip_nodes: must be a number"):
        SwimConfig(gossip_nodes=True)


def test_config_is_frozen() -> None:
    c = SwimConfig.lan()
    with pytest.raises(AttributeError):
        c.probe_interval_s = 2.0  # type: ignore[misc]  # frozen on purpose
