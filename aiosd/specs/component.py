"""The component spec (`addComponent`): a versioned unit of software with its protocols and defaults.

Derives `componentURI = <componentType>.<name>:<version>-<releaseTag>`; compiles its protocols.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from aiosd.specs.base import AiosModel, JsonObject, Name
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.protocol import Protocol, parse_protocol


class ComponentId(AiosModel):
    name: Name
    version: Name
    release_tag: Name = Field(alias="releaseTag")


class InitContainer(AiosModel):
    container_image: str = Field(default="", alias="containerImage")
    container_registry_id: str = Field(default="", alias="containerRegistryId")
    container_image_metadata: JsonObject = Field(default_factory=dict, alias="containerImageMetadata")


class ContainerRegistryInfo(AiosModel):
    container_image: str = Field(alias="containerImage", min_length=1, max_length=1024)
    container_registry_id: str = Field(default="", alias="containerRegistryId")
    container_image_metadata: JsonObject = Field(default_factory=dict, alias="containerImageMetadata")
    # Both spellings appear in AIOS (doc vs code); `third-party` is read as `third_party`.
    component_mode: Literal["aios", "third_party", "third-party"] = Field(
        default="aios", alias="componentMode"
    )
    init_container: InitContainer | None = Field(default=None, alias="initContainer")


class ComponentSpec(AiosModel):
    component_id: ComponentId = Field(alias="componentId")
    component_type: Name = Field(alias="componentType")
    container_registry_info: ContainerRegistryInfo = Field(alias="containerRegistryInfo")
    component_metadata: JsonObject = Field(default_factory=dict, alias="componentMetadata")
    component_init_data: JsonObject = Field(default_factory=dict, alias="componentInitData")
    component_input_protocol: JsonObject = Field(default_factory=dict, alias="componentInputProtocol")
    component_output_protocol: JsonObject = Field(default_factory=dict, alias="componentOutputProtocol")
    component_init_settings_protocol: JsonObject = Field(
        default_factory=dict, alias="componentInitSettingsProtocol"
    )
    component_init_parameters_protocol: JsonObject = Field(
        default_factory=dict, alias="componentInitParametersProtocol"
    )
    component_init_settings: JsonObject = Field(default_factory=dict, alias="componentInitSettings")
    component_parameters: JsonObject = Field(default_factory=dict, alias="componentParameters")
    component_management_commands_template: JsonObject = Field(
        default_factory=dict, alias="componentManagementCommandsTemplate"
    )
    # name -> {policyRuleURI, parameters, settings}; entries without a URI are hints (kept, not run).
    policies: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @property
    def uri(self) -> str:
        cid = self.component_id
        return f"{self.component_type}.{cid.name}:{cid.version}-{cid.release_tag}"

    @property
    def mode(self) -> Literal["aios", "third_party"]:
        return "aios" if self.container_registry_info.component_mode == "aios" else "third_party"


_PROTOCOL_FIELDS = (
    ("input", "componentInputProtocol"),
    ("output", "componentOutputProtocol"),
    ("settings", "componentInitSettingsProtocol"),
    ("parameters", "componentInitParametersProtocol"),
)


def compile_protocols(spec: ComponentSpec, base: str) -> dict[str, Protocol]:
    """Compile the four protocols, keyed input|output|settings|parameters.

    Raises:
        SpecError: with the path of every malformed field spec.
    """
    out: dict[str, Protocol] = {}
    problems: list[Problem] = []
    raw = {
        "componentInputProtocol": spec.component_input_protocol,
        "componentOutputProtocol": spec.component_output_protocol,
        "componentInitSettingsProtocol": spec.component_init_settings_protocol,
        "componentInitParametersProtocol": spec.component_init_parameters_protocol,
    }
    for key, alias in _PROTOCOL_FIELDS:
        try:
            out[key] = parse_protocol(raw[alias], join_path(base, alias))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return out


__all__ = ["ComponentId", "ComponentSpec", "ContainerRegistryInfo", "InitContainer", "compile_protocols"]
