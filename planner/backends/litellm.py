"""`LiteLLMBackend`: any model litellm speaks, cloud or local, imported on first use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import anyio

from planner.backends.base import ModelBackend
from planner.errors import PlannerError, PlannerFailure
from planner.models import ModelReply, ModelRequest, ResponseMode
from planner.options import DEFAULT_TIMEOUT_S

__all__ = ["LiteLLMBackend"]

_AUTO_ORDER = (ResponseMode.JSON_SCHEMA, ResponseMode.JSON_OBJECT, ResponseMode.TOOLS)
_TOOL_NAME = "submit_plan"
# Words in a 400 answer that say the provider refused the *output format*, not the request.
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "schema", "grammar", "tool")


class LiteLLMBackend(ModelBackend):
    """Any model litellm can call: `openai/…`, `hosted_vllm/…`, `ollama/…`, cloud APIs.

    litellm is imported on the first call (it takes seconds to import). The API
    key is read, at call time, from the environment variable *named* by
    `api_key_env`; with none named, litellm's own variables (`OPENAI_API_KEY`,
    `OPENAI_API_BASE`, ...) apply.

    With `response_mode=auto` the backend asks for `json_schema` output, falls
    back to `json_object` with the schema (llama-cpp-python's server constrains
    to it) when the provider refuses that with a 400/422 (500 from
    llama-cpp-python), then to a forced tool call; the first mode that works is
    kept for later calls.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        response_mode: ResponseMode = ResponseMode.AUTO,
        temperature: float | None = 0.0,
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Configure the backend; nothing is imported or called yet.

        Args:
            model: litellm's model string, such as `openai/gpt-4o-mini`.
            api_base: The endpoint, when not the provider's default.
            api_key_env: Name of the environment variable holding the key.
            timeout_s: Seconds one model call may take.
            response_mode: How to constrain the answer (see `ResponseMode`).
            temperature: Sampling temperature; `None` leaves the provider's default.
            extra: More keyword arguments for `litellm.acompletion`.
            env: Where to read the key from (default: `os.environ`).
        """
        if not model.strip():
            raise ValueError(
                "the model string is empty: name a litellm model such as 'openai/gpt-4o'"
            )
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be more than 0, got {timeout_s}")
        self._model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.response_mode = response_mode
        self.temperature = temperature
        self.extra = dict(extra or {})
        self._env = env
        self._working_mode: ResponseMode | None = None

    @property
    def model(self) -> str:
        """The litellm model string."""
        return self._model

    @property
    def working_mode(self) -> ResponseMode | None:
        """The output mode the provider accepted, once one has."""
        return self._working_mode

    def _api_key(self) -> str | None:
        environ = os.environ if self._env is None else self._env
        if self.api_key_env:
            key = environ.get(self.api_key_env)
            if not key:
                raise PlannerError(
                    PlannerFailure.NOT_CONFIGURED,
                    f"the environment variable {self.api_key_env!r} (named by api_key_env) "
                    "is not set: export the API key under that name",
                    model=self._model,
                    setting="api_key_env",
                )
            return key
        if (
            self.api_base
            and self._model.startswith("openai/")
            and not environ.get("OPENAI_API_KEY")
            and _is_loopback(self.api_base)
        ):
            # A local OpenAI-compatible server needs no key, but the OpenAI client
            # refuses to start without one.
            return "unused"
        return None

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Ask the model once, falling back between output modes as configured."""
        if self.response_mode is not ResponseMode.AUTO:
            return await self._call(request, self.response_mode)
        if self._working_mode is not None:
            try:
                return await self._call(request, self._working_mode)
            except _FormatRejected as exc:
                raise exc.error from exc.__cause__
        last: PlannerError | None = None
        for mode in _AUTO_ORDER:
            try:
                reply = await self._call(request, mode)
            except _FormatRejected as exc:
                last = exc.error
                continue
            self._working_mode = mode
            return reply
        assert last is not None
        raise PlannerError(
            PlannerFailure.BAD_REQUEST,
            "the provider refused every structured-output mode (json_schema, json_object, "
            f"tools); the last refusal: {last.message}. Set response_mode='none' to plan "
            "with the prompt alone",
            model=self._model,
            setting="response_mode",
        )

    async def _call(self, request: ModelRequest, mode: ResponseMode) -> ModelReply:
        kwargs = self._arguments(request, mode)
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # litellm prints help banners to stdout on errors; stdout may be the MCP channel.
        litellm.suppress_debug_info = True
        try:
            # The provider's own timeout is passed on; this one guards against a hang
            # anywhere else (DNS, a stuck connection pool).
            with anyio.fail_after(self.timeout_s + 5):
                response = await litellm.acompletion(**kwargs)
        except TimeoutError:
            raise self._timeout() from None
        except Exception as exc:
            error = self._classify(exc)
            if self.response_mode is ResponseMode.AUTO and _refuses_format(exc):
                raise _FormatRejected(error) from exc
            raise error from exc
        return self._reply(response, mode)

    def _arguments(self, request: ModelRequest, mode: ResponseMode) -> dict[str, Any]:
        # The schema travels in response_format only: the prompt already shows the
        # answer's shape (rules, tools, an example), and the schema as text would
        # double a local model's prompt (1,500 tokens for 8 tools) for nothing.
        messages = list(request.messages)
        kwargs: dict[str, Any] = {
            "model": self._model,
            "messages": [m.model_dump() for m in messages],
            "timeout": self.timeout_s,
            "max_tokens": request.max_tokens,
            # Retrying is the caller's decision; litellm's and the OpenAI client's own
            # retries would multiply the wait on a dead endpoint.
            "num_retries": 0,
            "max_retries": 0,
            **self.extra,
        }
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = self._api_key()
        if key is not None:
            kwargs["api_key"] = key
        schema = request.answer_schema
        if mode is ResponseMode.JSON_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_schema",
                # Not strict: OpenAI's strict mode wants every property required and
                # closed objects everywhere, which tool schemas rarely are.
                "json_schema": {"name": "plan", "schema": schema, "strict": False},
            }
        elif mode is ResponseMode.JSON_OBJECT:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        elif mode is ResponseMode.TOOLS:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": _TOOL_NAME,
                        "description": "Submit the plan.",
                        "parameters": schema,
                    },
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": _TOOL_NAME}}
        return kwargs

    def _reply(self, response: Any, mode: ResponseMode) -> ModelReply:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise PlannerError(
                PlannerFailure.BAD_RESPONSE,
                "the provider answered with no choices",
                model=self._model,
            )
        choice = choices[0]
        message = choice.message
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage is not None else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        truncated = getattr(choice, "finish_reason", None) == "length"
        common: dict[str, Any] = {
            "model": str(getattr(response, "model", "") or self._model),
            "prompt_tokens": prompt_tokens if isinstance(prompt_tokens, int) else None,
            "completion_tokens": completion_tokens if isinstance(completion_tokens, int) else None,
            "truncated": truncated,
            "mode": mode,
        }
        tool_calls = getattr(message, "tool_calls", None) or []
        if mode is ResponseMode.TOOLS and tool_calls:
            arguments = tool_calls[0].function.arguments
            if isinstance(arguments, dict):
                return ModelReply(data=arguments, **common)
            return ModelReply(text=str(arguments or ""), **common)
        content = getattr(message, "content", None)
        if isinstance(content, str) and content.strip():
            return ModelReply(text=content, **common)
        raise PlannerError(
            PlannerFailure.BAD_RESPONSE,
            f"the answer held neither text nor a tool call (mode {mode.value})",
            model=self._model,
        )

    def _timeout(self) -> PlannerError:
        return PlannerError(
            PlannerFailure.TIMEOUT,
            f"no answer within {self.timeout_s:g} s from {self.api_base or 'the provider'}: "
            f"raise timeout_s (now {self.timeout_s:g}), or lower max_tokens so that the "
            "answer is shorter, or check that the model server is not overloaded",
            model=self._model,
            setting="timeout_s",
        )

    def _classify(self, exc: Exception) -> PlannerError:
        """Turn a litellm exception into a `PlannerError` that says what to check."""
        from litellm.exceptions import APIConnectionError, Timeout

        if isinstance(exc, Timeout):
            return self._timeout()
        status = getattr(exc, "status_code", None)
        detail = _first_line(str(getattr(exc, "message", "") or exc))
        where = self.api_base or "the provider"
        if (isinstance(exc, APIConnectionError) and status in (None, 500)) or _lost_connection(exc):
            return PlannerError(
                PlannerFailure.UNAVAILABLE,
                f"cannot reach {where}: {detail}. Check that the model server is running "
                "and that api_base is right",
                model=self._model,
                setting="api_base",
            )
        if status in (401, 403):
            key = f"the variable {self.api_key_env!r}" if self.api_key_env else "the API key"
            return PlannerError(
                PlannerFailure.AUTHENTICATION,
                f"{where} refused the credentials (HTTP {status}): check {key}. {detail}",
                model=self._model,
                setting="api_key_env",
            )
        if status == 404:
            return PlannerError(
                PlannerFailure.NOT_FOUND,
                f"{where} does not know this model (HTTP 404): check the model string. {detail}",
                model=self._model,
                setting="model",
            )
        if status == 429:
            return PlannerError(
                PlannerFailure.RATE_LIMITED,
                f"{where} is rate limiting (HTTP 429): try again later. {detail}",
                model=self._model,
            )
        if status in (400, 413, 422):
            if _context_overflow(detail):
                return PlannerError(
                    PlannerFailure.BAD_REQUEST,
                    f"{where} rejected the request (HTTP {status}): {detail}. The prompt and "
                    "the answer do not fit the model's context: lower max_tokens, or start "
                    "the model server with a larger context",
                    model=self._model,
                    setting="max_tokens",
                )
            return PlannerError(
                PlannerFailure.BAD_REQUEST,
                f"{where} rejected the request (HTTP {status}): {detail}",
                model=self._model,
            )
        if isinstance(status, int) and status >= 500:
            return PlannerError(
                PlannerFailure.UNAVAILABLE,
                f"{where} failed (HTTP {status}): {detail}. Try again, or check the server",
                model=self._model,
            )
        return PlannerError(
            PlannerFailure.UNAVAILABLE,
            f"the call failed ({type(exc).__name__}): {detail}",
            model=self._model,
        )


class _FormatRejected(Exception):
    """Internal: the provider refused this output mode; try the next one."""

    def __init__(self, error: PlannerError) -> None:
        super().__init__(str(error))
        self.error = error


def _lost_connection(exc: BaseException) -> bool:
    """Whether the endpoint was never reached (litellm reports that as an HTTP 500)."""
    import httpx
    from openai import APIConnectionError as OpenAIConnectionError

    unreachable = (httpx.ConnectError, OpenAIConnectionError, ConnectionError)
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, unreachable):
            return True
        node = node.__cause__ or node.__context__
    return "connection error" in str(exc).lower()


def _context_overflow(detail: str) -> bool:
    text = detail.lower()
    return "context" in text and ("token" in text or "length" in text)


def _refuses_format(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None)
    text = str(exc).lower()
    if status == 422:
        return True
    if status == 400:
        return any(word in text for word in _FORMAT_WORDS)
    # llama-cpp-python's server answers an unknown response_format type with a 500
    # that quotes its validation error.
    return status == 500 and "response_format" in text


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 300 else line[:297] + "..."
