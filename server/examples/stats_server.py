"""Numbers: descriptive statistics, percentiles, safe arithmetic, and a slow total with progress.

`running_total` sleeps between items and reports MCP progress, so it shows
taskorch forwarding a downstream server's progress to its own caller.
"""

from __future__ import annotations

import ast
import math
import operator
import statistics
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from server.examples._common import PURE, run_stdio

server = MCPServer(
    "stats",
    instructions="Statistics and arithmetic: describe, percentile, evaluate, running_total.",
)

Values = Annotated[
    list[float], Field(min_length=1, max_length=100_000, description="The numbers, at least one.")
]


class Description(BaseModel):
    count: int = Field(description="How many numbers.")
    sum: float = Field(description="Their sum.")
    mean: float = Field(description="Arithmetic mean.")
    median: float = Field(description="Median.")
    stdev: float | None = Field(description="Sample standard deviation (null for one number).")
    min: float = Field(description="Smallest.")
    max: float = Field(description="Largest.")


@server.tool(annotations=PURE, title="Describe numbers")
def describe(values: Values) -> Description:
    """Count, sum, mean, median, sample standard deviation, min and max of a list of numbers."""
    return Description(
        count=len(values),
        sum=math.fsum(values),
        mean=statistics.fmean(values),
        median=statistics.median(values),
        stdev=statistics.stdev(values) if len(values) > 1 else None,
        min=min(values),
        max=max(values),
    )


class Percentile(BaseModel):
    q: float = Field(description="The percentile asked for, 0 to 100.")
    value: float = Field(description="The value at that percentile (linear interpolation).")


@server.tool(annotations=PURE, title="Percentile")
def percentile(
    values: Values,
    q: Annotated[float, Field(ge=0, le=100, description="Percentile, 0 to 100.")] = 50,
) -> Percentile:
    """The q-th percentile of a list of numbers, interpolating linearly between neighbours."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    value = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return Percentile(q=q, value=value)


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        # Cap powers: 9**9**9 would hang the server, not answer.
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise ValueError("exponent too large (at most 1000)")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


class Evaluation(BaseModel):
    expression: str = Field(description="The expression as given.")
    value: float = Field(description="Its value.")


@server.tool(annotations=PURE, title="Evaluate arithmetic")
def evaluate(
    expression: Annotated[
        str,
        Field(
            min_length=1,
            max_length=500,
            description="Arithmetic such as '2 * (3 + 4) ** 2 / sqrt(16)'. "
            "Operators + - * / // % **; "
            "functions abs round min max sqrt log exp floor ceil; constants pi e.",
        ),
    ],
) -> Evaluation:
    """Evaluate an arithmetic expression safely (no names, attributes or calls beyond the list)."""
    try:
        tree = ast.parse(expression, mode="eval")
        value = _eval(tree)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        raise ToolError(f"cannot evaluate {expression!r}: {exc}") from exc
    return Evaluation(expression=expression, value=float(value))


class RunningTotal(BaseModel):
    total: float = Field(description="The sum of the values.")
    partial_sums: list[float] = Field(description="The total after each value.")


@server.tool(annotations=PURE, title="Running total (slow, with progress)")
async def running_total(
    values: Values,
    ctx: Context,
    delay_s: Annotated[
        float, Field(ge=0, le=5, description="Pause after each value, to watch progress.")
    ] = 0.05,
) -> RunningTotal:
    """Add the values one by one, pausing `delay_s` after each and reporting progress."""
    partial: list[float] = []
    total = 0.0
    for i, v in enumerate(values, start=1):
        total += v
        partial.append(total)
        await ctx.report_progress(i, len(values), f"added {i} of {len(values)}")
        if delay_s:
            await anyio.sleep(delay_s)
    return RunningTotal(total=total, partial_sums=partial)


def main() -> None:
    run_stdio(server)


if __name__ == "__main__":
    main()
