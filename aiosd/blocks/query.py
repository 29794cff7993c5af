"""Query parameters of the block service's routes (validated by `read_query`, shown in OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import QueryFlag

MAX_WAIT_S = 600.0


class ApplyQuery(BaseModel):
    """`POST /v1/apply` query parameters."""

    model_config = ConfigDict(extra="ignore")
    dry_run: QueryFlag = Field(False, description="validate and place, change nothing")
    cluster: QueryFlag = Field(False, description="placed by the cluster's controller")
    wait: float = Field(0.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False,
                        description="seconds to wait for the apply task to be final")
    policy_overrides: str = Field("", max_length=1000, description="a policy set to apply with (aios-examples)")
    specUri: str = Field("", max_length=1000, description="apply this stored spec instead of a body")


class DryRunQuery(BaseModel):
    """`POST /v1/allocate/dry-run` query parameters."""

    model_config = ConfigDict(extra="ignore")
    policy_overrides: str = Field("", max_length=1000, description="a policy set to apply with (aios-examples)")


class ListQuery(BaseModel):
    """`GET /v1/{kind}` query parameters."""

    model_config = ConfigDict(extra="ignore")
    full: QueryFlag = Field(False, description="the whole records, documents included")


class InferQuery(BaseModel):
    """`POST /v1/infer/block/{id}` query parameters."""

    model_config = ConfigDict(extra="ignore")
    format: Literal["json", "msgpack"] | None = Field(None, description="the answer's encoding (or Accept)")


__all__ = ["MAX_WAIT_S", "ApplyQuery", "DryRunQuery", "InferQuery", "ListQuery"]
