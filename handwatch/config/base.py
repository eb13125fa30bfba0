"""The base of every config model: frozen once loaded, and an unknown key is an error, never ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
