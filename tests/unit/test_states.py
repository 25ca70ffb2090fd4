"""The job state machine: every (status, trigger) pair, checked against a table written out here."""

from __future__ import annotations

import itertools

import pytest

from taskflow.errors import InvalidTransition
from taskflow.jobs import Job, JobStatus, Trigger, legal_pairs, sources, transition

S = JobStatus
T = Trigger

# The documented state machine, written independently of ``jobs._TABLE``.
EXPECTED: dict[tuple[JobStatus, Trigger], JobStatus] = {
    (S.PENDING, T.CLAIM): S.IN_PROGRESS,
    (S.PENDING, T.CANCEL): S.CANCELLED,
    (S.SCHEDULED, T.PROMOTE): S.PENDING,
    (S.SCHEDULED, T.CANCEL): S.CANCELLED,
    (S.IN_PROGRESS, T.SUCCEED): S.COMPLETED,
    (S.IN_PROGRESS, T.RETRY): S.SCHEDULED,
    (S.IN_PROGRESS, T.DEAD_LETTER): S.FAILED,
    (S.IN_PROGRESS, T.CANCEL): S.CANCELLED,
    (S.IN_PROGRESS, T.RELEASE): S.PENDING,
    (S.FAILED, T.REPLAY): S.PENDING,
}

EXPECTED_SOURCES: dict[Trigger, frozenset[JobStatus]] = {
    T.CLAIM: frozenset({S.PENDING}),
    T.SUCCEED: frozenset({S.IN_PROGRESS}),
    T.RETRY: frozenset({S.IN_PROGRESS}),
    T.DEAD_LETTER: frozenset({S.IN_PROGRESS}),
    T.CANCEL: frozenset({S.PENDING, S.SCHEDULED, S.IN_PROGRESS}),
    T.PROMOTE: frozenset({S.SCHEDULED}),
    T.RELEASE: frozenset({S.IN_PROGRESS}),
    T.REPLAY: frozenset({S.FAILED}),
}

ALL_PAIRS = list(itertools.product(JobStatus, Trigger))
LEGAL = [pair for pair in ALL_PAIRS if pair in EXPECTED]
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in EXPECTED]


def pair_id(pair: tuple[JobStatus, Trigger]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


def test_tables_cover_every_status_and_trigger() -> None:
    assert len(LEGAL) + len(ILLEGAL) == len(JobStatus) * len(Trigger)
    assert set(EXPECTED_SOURCES) == set(Trigger)
    assert legal_pairs() == frozenset(EXPECTED)


@pytest.mark.parametrize("pair", LEGAL, ids=pair_id)
def test_legal_transition_reaches_documented_status(pair: tuple[JobStatus, Trigger]) -> None:
    status, trigger = pair
    assert transition(status, trigger) is EXPECTED[pair]


@pytest.mark.parametrize("pair", ILLEGAL, ids=pair_id)
def test_illegal_transition_raises(pair: tuple[JobStatus, Trigger]) -> None:
    status, trigger = pair
    with pytest.raises(InvalidTransition) as info:
        transition(status, trigger)
    assert info.value.code == "invalid_transition"
    assert info.value.details == {"status": status.value, "trigger": trigger.value}
    assert status.value in info.value.message
    assert trigger.value in info.value.message


@pytest.mark.parametrize("trigger", list(Trigger), ids=lambda t: t.value)
def test_sources(trigger: Trigger) -> None:
    assert sources(trigger) == EXPECTED_SOURCES[trigger]


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_terminal_flag(status: JobStatus) -> None:
    assert status.terminal is (status in {S.COMPLETED, S.FAILED, S.CANCELLED})
    assert Job(id="j1", task="t", status=status).terminal is status.terminal


@pytest.mark.parametrize("status", [S.COMPLETED, S.FAILED, S.CANCELLED], ids=str)
def test_terminal_statuses_only_leave_by_replay(status: JobStatus) -> None:
    allowed = {}
    for trigger in Trigger:
        try:
            allowed[trigger] = transition(status, trigger)
        except InvalidTransition:
            continue
    assert allowed == ({T.REPLAY: S.PENDING} if status is S.FAILED else {})


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_in_dlq_only_for_failed(status: JobStatus) -> None:
    assert Job(id="j1", task="t", status=status).in_dlq is (status is S.FAILED)
