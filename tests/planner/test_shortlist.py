"""Shortlisting a large catalog: the relevant tools are kept, the prompt stays small."""

from __future__ import annotations

import pytest

from executor.catalog import Catalog
from executor.ids import PlanId
from executor.plan import Plan, Step
from executor.policy import AgentConfig, ToolPolicy
from planner import PlanRequest, RepairSession, Revision, estimate_tokens, shortlist
from planner.shortlist import SHORTLIST_SIZE, SHORTLIST_THRESHOLD, tokenize
from tests.planner.generated import generated_catalog

TOKEN_BUDGET = 3000
"""Prompt tokens (estimated) a request over the 500-tool catalog may take."""


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "Delete ticket 42 and send an email to the customer",
            {("tickets", "delete_ticket"), ("emails", "send_email"), ("customers", "get_customer")},
        ),
        (
            "Export the invoices of last month and archive each payment",
            {("invoices", "export_invoice"), ("payments", "archive_payment")},
        ),
        (
            "Book a hotel near the meeting room and create a calendar event",
            {("hotels", "create_hotel"), ("calendar_events", "create_calendar_event")},
        ),
        ("searchFlights to Paris", {("flights", "search_flight")}),
    ],
)
def test_relevant_tools_survive_the_shortlist(query: str, expected: set[tuple[str, str]]) -> None:
    catalog = generated_catalog()
    assert len(catalog) == 500
    chosen = shortlist(catalog, ToolPolicy(), query)
    assert len(chosen) == SHORTLIST_SIZE
    keys = {t.key for t in chosen}
    if ("customers", "get_customer") in expected:
        # "customer" is named, but which verb is wanted is not: any customer tool will do.
        expected = expected - {("customers", "get_customer")}
        assert any(server == "customers" for server, _ in keys)
    assert expected <= keys


def test_the_prompt_stays_under_budget_with_500_tools() -> None:
    catalog = generated_catalog()
    request = PlanRequest(query="Delete ticket 42 and email the customer", catalog=catalog)
    session = RepairSession(request)
    ask = session.next_request()
    assert ask is not None
    tokens = sum(estimate_tokens(m.content) for m in ask.messages)
    assert tokens < TOKEN_BUDGET
    assert len(session.considered_tools) == SHORTLIST_SIZE
    assert set(session.considered_tools) == {t.alias for t in session.tools}
    # Only the shortlisted tools are in the prompt and in the schema.
    system = ask.messages[0].content
    assert system.count('- server "') == SHORTLIST_SIZE
    branches = ask.answer_schema["properties"]["steps"]["items"]["anyOf"]
    assert len(branches) == SHORTLIST_SIZE


def test_small_catalogs_are_not_shortlisted(catalog: Catalog) -> None:
    assert shortlist(catalog, ToolPolicy(), "anything") == list(catalog)
    tools = list(generated_catalog())[:SHORTLIST_THRESHOLD]
    small = Catalog(tools)
    assert len(shortlist(small, ToolPolicy(), "invoice")) == SHORTLIST_THRESHOLD


def test_denied_tools_are_never_shortlisted() -> None:
    catalog = generated_catalog()
    policy = ToolPolicy(deny=("tickets.delete_*", "emails"))
    chosen = shortlist(catalog, policy, "Delete ticket 42 and send an email")
    keys = {t.key for t in chosen}
    assert ("tickets", "delete_ticket") not in keys
    assert not any(server == "emails" for server, _ in keys)
    assert ("tickets", "get_ticket") in keys or ("tickets", "update_ticket") in keys


def test_a_revised_plans_tools_are_kept_whatever_their_rank() -> None:
    catalog = generated_catalog()
    old = Plan(
        id=PlanId("p1"),
        query="count the sensors",
        strategy="Count them.",
        steps=(Step(id="s1", server="sensors", tool="count_sensor", arguments={"sensor_id": "x"}),),
    )
    request = PlanRequest(
        query="Email the report",
        catalog=catalog,
        revision=Revision(plan=old, feedback="also email the report"),
    )
    session = RepairSession(request)
    assert ("sensors", "count_sensor") in {t.key for t in session.tools}
    ask = session.next_request()
    assert ask is not None
    assert "count_sensor" in ask.messages[-1].content  # the old plan is in the prompt


def test_a_policy_allowing_nothing_is_a_clear_error() -> None:
    from planner import PlannerError, PlannerFailure

    agent = AgentConfig(name="locked", tool_policy=ToolPolicy(allow=()))
    with pytest.raises(PlannerError) as caught:
        RepairSession(PlanRequest(query="x", catalog=generated_catalog(), agent=agent))
    assert caught.value.failure is PlannerFailure.NOT_CONFIGURED
    assert "'locked'" in str(caught.value)


def test_tokenize_splits_names_and_drops_noise() -> None:
    assert tokenize("listFiles in the repository_names") == ["list", "file", "repository", "name"]
    assert tokenize("Queries") == ["query"]
    assert tokenize("the a of") == []
