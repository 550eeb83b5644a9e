"""Clock and calendar: the time now in a zone, conversions, date arithmetic, business days."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from server.examples._common import PURE, run_stdio

server = MCPServer(
    "clock",
    instructions="Time and dates: now, convert_time, add_duration, business_days, month_calendar.",
)

Zone = Annotated[
    str,
    Field(min_length=1, max_length=64, description="IANA zone such as 'Europe/Paris' or 'UTC'."),
]
IsoTime = Annotated[
    str,
    Field(min_length=10, max_length=40, description="ISO 8601, e.g. 2025-03-01T09:30:00+01:00"),
]
IsoDate = Annotated[str, Field(min_length=10, max_length=10, description="ISO date, YYYY-MM-DD.")]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris'"
        ) from exc


def _parse(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ToolError(
            f"{value!r} is not an ISO 8601 date-time (YYYY-MM-DDTHH:MM:SS±HH:MM)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ToolError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from exc


class Moment(BaseModel):
    iso: str = Field(description="ISO 8601 with offset.")
    timezone: str = Field(description="The zone it is expressed in.")
    unix: float = Field(description="Seconds since 1970-01-01 UTC.")
    weekday: str = Field(description="Day of the week, in English.")
    date: str = Field(description="The calendar date, YYYY-MM-DD.")


def _moment(dt: datetime, zone: str) -> Moment:
    return Moment(
        iso=dt.isoformat(),
        timezone=zone,
        unix=dt.timestamp(),
        weekday=dt.strftime("%A"),
        date=dt.date().isoformat(),
    )


@server.tool(
    annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=False, open_world_hint=False),
    title="Time now",
)
def now(timezone: Zone = "UTC") -> Moment:
    """The current date and time in a time zone."""
    return _moment(datetime.now(_zone(timezone)), timezone)


@server.tool(annotations=PURE, title="Convert a time")
def convert_time(time: IsoTime, to_timezone: Zone) -> Moment:
    """Express a date-time in another time zone (a time without offset is taken as UTC)."""
    return _moment(_parse(time).astimezone(_zone(to_timezone)), to_timezone)


@server.tool(annotations=PURE, title="Add a duration")
def add_duration(
    time: IsoTime,
    days: Annotated[float, Field(ge=-36500, le=36500)] = 0,
    hours: Annotated[float, Field(ge=-876000, le=876000)] = 0,
    minutes: Annotated[float, Field(ge=-52560000, le=52560000)] = 0,
) -> Moment:
    """Add (or, with negative numbers, subtract) days, hours and minutes to a date-time."""
    dt = _parse(time) + timedelta(days=days, hours=hours, minutes=minutes)
    return _moment(dt, str(dt.tzinfo))


class BusinessDays(BaseModel):
    business_days: int = Field(description="Weekdays from start (included) to end (excluded).")
    calendar_days: int = Field(description="All days from start (included) to end (excluded).")


@server.tool(annotations=PURE, title="Business days between dates")
def business_days(start: IsoDate, end: IsoDate) -> BusinessDays:
    """Count weekdays (Monday to Friday) from `start` (included) to `end` (excluded)."""
    a, b = _day(start), _day(end)
    sign = 1 if b >= a else -1
    lo, hi = min(a, b), max(a, b)
    span = (hi - lo).days
    full_weeks, rest = divmod(span, 7)
    count = full_weeks * 5 + sum(1 for i in range(rest) if (lo + timedelta(days=i)).weekday() < 5)
    return BusinessDays(business_days=sign * count, calendar_days=sign * span)


class MonthCalendar(BaseModel):
    year: int
    month: int
    month_name: str = Field(description="The month's English name.")
    weeks: list[list[int]] = Field(description="Weeks from Monday; 0 for days of other months.")
    text: str = Field(description="The month as plain text, like the `cal` command.")


@server.tool(annotations=PURE, title="Month calendar")
def month_calendar(
    year: Annotated[int, Field(ge=1, le=9999)],
    month: Annotated[int, Field(ge=1, le=12)],
) -> MonthCalendar:
    """The weeks of one month (Monday first), as numbers and as text."""
    cal = calendar.Calendar(firstweekday=0)
    return MonthCalendar(
        year=year,
        month=month,
        month_name=calendar.month_name[month],
        weeks=cal.monthdayscalendar(year, month),
        text=calendar.TextCalendar(firstweekday=0).formatmonth(year, month),
    )


def main() -> None:
    run_stdio(server)


if __name__ == "__main__":
    main()
