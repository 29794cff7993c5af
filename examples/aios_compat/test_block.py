"""A block test file in AIOS's shape: it runs against AIOS and aiosd with only the import line changed.

    -from aios_instance import BlockTester
    +from sdk import BlockTester

Run it with `pytest examples/aios_compat/test_block.py` from the repository root.
"""

import pytest
from block import SumJoinBlock

from sdk import BlockTester


class CustomContext:
    def __init__(self, scale):
        self.block_data = {"block_id": "sum-join-test"}
        self.block_init_data = {}
        self.block_init_parameters = {"scale": scale}
        self.metrics = None
        self.sessions = None
        self.events = None


def test_sums_the_joined_inputs():
    tester = BlockTester(SumJoinBlock)
    results = tester.run({"inputs": [{"source": "a", "value": 2}, {"source": "b", "value": 3}]})
    assert results == [{"sum": 5.0, "sources": ["a", "b"], "seq_no": 0}]


def test_custom_context_sets_the_scale():
    tester = BlockTester.init_with_context(SumJoinBlock, CustomContext(scale=10))
    assert tester.context.block_init_parameters["scale"] == 10
    results = tester.run({"inputs": [{"source": "a", "value": 1}, {"source": "b", "value": 1}]})
    assert results[0]["sum"] == 20.0


def test_packets_carry_data_files_and_ids():
    tester = BlockTester(SumJoinBlock)
    packet = tester.create_packet({"inputs": []}, files=[({"name": "x.bin"}, b"\x00\x01")], session_id="s1", seq_no=7)
    assert (packet.session_id, packet.seq_no) == ("s1", 7)
    assert packet.files[0].metadata == '{"name": "x.bin"}' and packet.files[0].file_data == b"\x00\x01"
    ok, entries = tester.block_instance.on_preprocess(packet)
    assert ok and entries[0].extra_data == {"values": [], "sources": []}


def test_a_failing_callback_raises():
    tester = BlockTester(SumJoinBlock)
    with pytest.raises(Exception, match="numeric 'value'"):
        tester.run({"inputs": [{"source": "a"}]})
