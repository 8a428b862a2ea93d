"""What every pipeline module has: a strict model of its `options:` that names the models it
calls, so the router refuses a models.yaml whose pipeline names an unknown model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PipelineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def named_models(self) -> dict[tuple[str | int, ...], str]:
        """Every model these options name, by where it is named (its key path in `options`)."""
        raise NotImplementedError

    def waits(self) -> tuple[str, float] | None:
        """A wait besides its steps (a person's approval): the option that sets it and its
        seconds. The pipeline model's `timeout_seconds` must be longer, or the run would end
        before the wait does."""
        return None
