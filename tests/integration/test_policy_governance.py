"""Templates and governance pre-checks through the real sandbox: convert a custom-template spec,
veto or rewrite an action payload, fail closed when the pre-check policy breaks."""

from __future__ import annotations

import pytest

from aiosd.policies.archive import pack_files
from aiosd.policies.errors import PolicyVetoed
from aiosd.policies.service import PoliciesService
from aiosd.policies.templates import TemplateRecord
from aiosd.specs.errors import SpecError
from aiosd.specs.parse import ParsedMgmt, parse_document
from tests.integration.test_policy_sandbox import svc  # noqa: F401  # the fixture

PRECHECK = '''
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.max = parameters.get("max_instances", 4)
    def eval(self, parameters, input_data, context):
        p = dict(input_data["payload"])
        if p.get("name", "").startswith("forbidden"):
            return {"allowed": False, "reason": "names starting with forbidden are not allowed here"}
        if p.get("maxInstances", 0) > self.max:
            p["maxInstances"] = self.max
        if p.get("mode") == "boom":
            raise RuntimeError("pre-check bug")
        return {"allowed": True, "payload": p}
'''
CONVERT = '''
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass
    def eval(self, parameters, input_data, context):
        body = input_data["document"]["body"]
        if body.get("mode") == "chain":
            return {"header": {"templateUri": "Other/V2:v1"}, "body": {}}
        return {"service": "health", "mgmtCommand": body["cmd"], "blockId": body["block"], "mgmtData": {}}
'''


def _archive(src: str) -> bytes:
    return pack_files({"code/function.py": src.encode()})


async def test_precheck_vetoes_rewrites_and_fails_closed(svc: PoliciesService) -> None:  # noqa: F811
    await svc.publish("gov.blocks:v1-a", _archive(PRECHECK))
    assert await svc.precheck("add_block", {"name": "x"}) == {"name": "x"}  # no policy mapped: unchanged
    with pytest.raises(SpecError, match="actionsPolicyMap.add_block.*not registered"):
        await svc.governance.set_mapping({"add_block": "gov.nothing:v1"})
    await svc.governance.set_mapping({"add_block": "gov.blocks:v1-a"})
    assert await svc.precheck("add_block", {"name": "b", "maxInstances": 9}) == {"name": "b", "maxInstances": 4}
    with pytest.raises(PolicyVetoed, match="add_block was refused by the pre-check policy gov.blocks:v1-a: names"):
        await svc.precheck("add_block", {"name": "forbidden-1"})
    with pytest.raises(PolicyVetoed, match="could not run.*RuntimeError: pre-check bug"):
        await svc.precheck("add_block", {"name": "b", "mode": "boom"})
    assert await svc.precheck("remove_block", {"name": "forbidden-1"}) == {"name": "forbidden-1"}


async def test_template_converts_then_the_spec_is_validated(svc: PoliciesService) -> None:  # noqa: F811
    await svc.publish("tpl.short:v1-a", _archive(CONVERT))
    await svc.template_book.put(TemplateRecord(templateUri="Short/V1:v1", templatePolicyRuleUri="tpl.short:v1-a"))
    parsed_doc = {"header": {"templateUri": "Parser/V1"}, "body": {"spec": {"values": {"x": 1}}}}
    assert await svc.convert(parsed_doc) is parsed_doc  # Parser/V1 passes through untouched
    doc = await svc.convert({"header": {"templateUri": "Short/V1:v1"}, "body": {"cmd": "restart", "block": "b1"}})
    parsed = parse_document(doc)
    assert isinstance(parsed, ParsedMgmt)
    with pytest.raises(SpecError, match="must convert to a Parser/V1 document"):
        await svc.convert({"header": {"templateUri": "Short/V1:v1"}, "body": {"mode": "chain"}})
    with pytest.raises(SpecError, match="not in the template store.*known: Parser/V1, Short/V1:v1"):
        await svc.convert({"header": {"templateUri": "Missing/V1:v1"}, "body": {}})
