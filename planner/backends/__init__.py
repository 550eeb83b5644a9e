"""Model backends: `ModelBackend` (base), litellm's providers, the MCP host's own model."""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from planner.backends.base import ModelBackend as ModelBackend
    from planner.backends.litellm import LiteLLMBackend as LiteLLMBackend
    from planner.backends.sampling import Sampler as Sampler
    from planner.backends.sampling import SamplingBackend as SamplingBackend
    from planner.backends.sampling import reply_from_sampling as reply_from_sampling
    from planner.backends.sampling import sampling_params as sampling_params
