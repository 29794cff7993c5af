"""The AIOS policy contract and the in-process `PolicyRunner` seam (the sandbox replaces it later).

A policy is a class `AIOSv1PolicyRule(rule_id, settings, parameters)` with
`eval(parameters, input_data, context) -> dict` and optional `management(action, data) -> dict`.
Override rule (AIOS documents it, its sandbox does the opposite): stored defaults < the caller's
parameters/settings when loading < the parameters passed to one `eval`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiosd.policies.errors import (
    PolicyError,
    PolicyFailed,
    PolicyOutputError,
)
from aiosd.specs.errors import Problem


class AIOSv1PolicyRule:
    """Base class of built-in policies; a custom policy only needs the same three methods.

    Class attributes describe the policy for the registry: `parameters_protocol` and
    `settings_protocol` use the AIOS protocol mini-language; `check_config` adds checks the
    mini-language cannot express.
    """

    description: ClassVar[str] = ""
    parameters_protocol: ClassVar[Mapping[str, Any]] = {}
    settings_protocol: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        self.rule_id = rule_id
        self.settings: dict[str, Any] = dict(settings)
        self.parameters: dict[str, Any] = dict(parameters)

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        raise NotImplementedError

    def management(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a management command; built-ins know `get_config`, and their own actions."""
        if action == "get_config":
            return {"rule_id": self.rule_id, "parameters": self.parameters, "settings": self.settings}
        return {"ok": False, "error": f"unknown management action {action[:60]!r}"}

    @classmethod
    def check_config(
        cls, parameters: Mapping[str, Any], settings: Mapping[str, Any], path: str
    ) -> list[Problem]:
        """Extra checks beyond the protocols (e.g. a filter that must compile); [] when fine."""
        return []


class PolicyHandle:
    """One loaded policy instance with its merged configuration (stateful policies keep state here)."""

    __slots__ = ("parameters", "rule", "settings", "uri")

    def __init__(
        self, uri: str, rule: AIOSv1PolicyRule, parameters: dict[str, Any], settings: dict[str, Any]
    ):
        self.uri = uri
        self.rule = rule
        self.parameters = parameters
        self.settings = settings

    def eval(
        self, input_data: Mapping[str, Any], context: Any = None, parameters: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run `eval`; per-call `parameters` override the loaded ones.

        Raises:
            PolicyError: the policy rejected its input (PolicyInputError), raised (PolicyFailed),
                or returned something that is not a JSON object (PolicyOutputError).
        """
        params = self.parameters if not parameters else {**self.parameters, **parameters}
        try:
            out = self.rule.eval(params, input_data, context)
        except PolicyError:
            raise
        except Exception as exc:  # the policy's code is not ours: report it, keep running
            raise PolicyFailed(self.uri, exc) from exc
        if not isinstance(out, dict):
            raise PolicyOutputError(self.uri, f"expected a JSON object, got {type(out).__name__}")
        return out

    def management(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        try:
            out = self.rule.management(action, data)
        except PolicyError:
            raise
        except Exception as exc:  # the policy's code is not ours
            raise PolicyFailed(self.uri, exc) from exc
        if not isinstance(out, dict):
            raise PolicyOutputError(self.uri, f"expected a JSON object, got {type(out).__name__}")
        return out


__all__ = ["AIOSv1PolicyRule", "PolicyHandle"]
