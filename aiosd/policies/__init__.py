"""Policies: the AIOS policy contract, the in-process runner seam, the registry and the built-ins."""

from aiosd.policies.contract import AIOSv1PolicyRule, PolicyHandle
from aiosd.policies.errors import (
    PolicyConfigError,
    PolicyError,
    PolicyFailed,
    PolicyInputError,
    PolicyNotFound,
    PolicyOutputError,
)
from aiosd.policies.loading import PolicyRunner
from aiosd.policies.registry import AIOS_EXAMPLE_OVERRIDES, PolicyEntry, PolicyRegistry, builtin_registry

__all__ = [
    "AIOS_EXAMPLE_OVERRIDES",
    "AIOSv1PolicyRule",
    "PolicyConfigError",
    "PolicyEntry",
    "PolicyError",
    "PolicyFailed",
    "PolicyHandle",
    "PolicyInputError",
    "PolicyNotFound",
    "PolicyOutputError",
    "PolicyRegistry",
    "PolicyRunner",
    "builtin_registry",
]
