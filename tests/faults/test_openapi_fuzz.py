"""schemathesis against ``/api/openapi.json``: the API answers as its document says.

schemathesis reads the document the app serves and, for every operation, generates requests
that fit it (positive) and requests that break it (negative). They go to the Flask app in
process (``schemathesis.openapi.from_wsgi``), with the session's Postgres and Redis, once with
an admin's token and once with a user's. Half the time a path id is a real job or pending
checkpoint, the caller's or another user's, so requests reach rows and not only 404s. Every
response goes through schemathesis's checks: no 5xx (a 503 too: the database is up), status
code, content type, headers and body as documented, schema-valid requests accepted and
invalid ones refused with a 4xx. The test collects every failure and fails at the end, listing
each distinct one once with a curl command that reproduces it. Each operation gets a Hypothesis
test of its own, drawn from its strategy (the app comes from the session's fixtures, and
``schemathesis.pytest.from_fixture`` fails under pytest 9.2, which has no ``Node._nodeid``).

Two things the document cannot say, so the run leaves them aside:

- the keys of free-form JSON (``inputData``, an approval's ``data``) cannot hold NUL characters:
  OpenAPI 3.0 has no ``propertyNames``, so schemathesis generates no NUL at all
  (``allow-x00``); tests/integration/test_api.py sends them;
- a decision's ``data`` is checked against the edit schema of the checkpoint's step and its
  policy's ``dataSchema``, an approval's ``option`` against its policy's options, and a
  submission's ``review`` against the policies its job type declares (it may only tighten
  them), which the document does not tell: a schema-valid request refused with a 422 naming
  only those fields is what the API should do (``CHECKED_IN_CONTEXT``).

The rate limits are off (``RATE_LIMIT_JOBS`` and ``RATE_LIMIT_DECISIONS`` empty): the run sends
submissions and decisions as fast as it can, and a 429 (documented) would hide what lies behind
it. No worker runs, so jobs stay PENDING, and ``FLEET_TIMEOUT`` is short: no worker will answer.
What the run writes (jobs, decisions, the paused flag) ``clean_state`` empties before the next
test.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from dataclasses import field

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import Phase
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData

from tests.faults.report import FULL
from tests.faults.report import Figures
from tests.faults.report import record
from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

#: Generated requests per operation and caller (fewer when an operation has fewer to give).
EXAMPLES = 100 if FULL else 20
#: Schema-valid requests that what they name may refuse with a 422, by operation: the
#: fields such a 422 may name. A decision's ``data`` and an approval's ``option`` are checked
#: against the checkpoint; a submission's ``review`` against its job type's policies.
CHECKED_IN_CONTEXT = {
    "POST /api/admin/agent-checkpoints/{checkpoint_id}": ("data", "option"),
    "POST /api/admin/agent-checkpoints/{checkpoint_id}/request-changes": ("data",),
    "POST /api/agent-jobs": ("review",),
}


@dataclass
class Tally:
    """The cases one caller sent, and the failures they met."""

    cases: int = 0
    errors_5xx: int = 0
    #: One report per distinct failure (operation, title, message), and how often it came.
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    seen: collections.Counter = field(default_factory=collections.Counter)

    def fail(self, key: tuple[str, str, str], report: str) -> None:
        self.failures.setdefault(key, report)
        self.seen[key] += 1

    def summary(self) -> str:
        """Each distinct failure, how often it came, and its first report."""
        parts = []
        for key, report in self.failures.items():
            operation, title, _message = key
            parts.append(f"{operation}: {title} ({self.seen[key]}x)\n{report}")
        return "\n\n".join(parts)


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory):
    """Hypothesis keeps caches (source constants, Unicode data) in its home directory,
    ``.hypothesis`` in the working tree unless told otherwise: a temporary one here. Its
    example database is off (``database=None``)."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def tallies():
    """Every caller's tally; the run's figures are recorded once both have run."""
    done: list[Tally] = []
    yield done
    cases = sum(t.cases for t in done)
    record(
        Figures(
            fault="schemathesis against /api/openapi.json",
            injected=f"{cases} requests generated from the OpenAPI document, valid and invalid, "
            "to every operation, as an admin and as a user; path ids drawn half the time from "
            "real jobs and pending checkpoints",
            behaviour="Every answer has a documented status, content type and body; valid "
            "requests are accepted (an approval's edit aside: its step's schema decides), "
            "invalid ones refused with a 4xx; no 5xx",
            jobs=cases,
            faults=cases,
            errors_5xx=sum(t.errors_5xx for t in done),
        )
    )


@pytest.fixture(params=["admin", "user"])
def caller(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def api_schema(app, caller, other_user, monkeypatch):
    """The document as the app serves it, with the caller's token and real ids to draw from."""
    monkeypatch.setitem(app.config, "RATE_LIMIT_JOBS", "")
    monkeypatch.setitem(app.config, "RATE_LIMIT_DECISIONS", "")
    monkeypatch.setitem(app.config, "FLEET_TIMEOUT", 0.01)
    jobs = [caller.enqueue("simple-task")["id"], other_user.enqueue("simple-task")["id"]]
    checkpoints = [park(app, caller), park(app, other_user)]
    config = schemathesis.Config.from_dict(
        {
            "generation": {"allow-x00": False},
            "auth": {"openapi": {"bearerAuth": {"bearer": caller.token}}},
            "dictionaries": {"jobs": {"values": jobs}, "checkpoints": {"values": checkpoints}},
            "parameters": {
                "path.job_id": {"dictionary": "jobs", "probability": 0.5},
                "path.checkpoint_id": {"dictionary": "checkpoints", "probability": 0.5},
            },
        }
    )
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app, config=config)


def edit_refused(failure: Exception, case, response) -> bool:
    """Whether ``failure`` is a schema-valid request refused for what the document cannot
    foretell (``CHECKED_IN_CONTEXT``): a 422 naming only those fields."""
    checked = CHECKED_IN_CONTEXT.get(case.operation.label)
    if not isinstance(failure, RejectedPositiveData) or checked is None:
        return False
    fields = response.json()["error"]["details"] if response.status_code == 422 else {}
    return bool(fields) and all(name.split(".")[0] in checked for name in fields)


def send(case, tally: Tally) -> None:
    """Send ``case`` and run schemathesis's checks on the answer, keeping what fails."""
    label = case.operation.label
    tally.cases += 1
    try:
        response = case.call()
    except Exception as exc:  # the app raised (TESTING propagates it): a 500 in production
        tally.errors_5xx += 1
        notes = "\n".join(getattr(exc, "__notes__", []))
        tally.fail((label, "the app raised", repr(exc)), f"{exc!r}\n{notes}")
        return
    if response.status_code >= 500:
        tally.errors_5xx += 1
    try:
        case.validate_response(response)
    except FailureGroup as group:
        for failure in group.exceptions:
            if not edit_refused(failure, case, response):
                tally.fail((label, failure.title, failure.message), str(group))


def test_every_operation_answers_as_documented(api_schema, caller, tallies):
    """Given the API's OpenAPI document and a caller's token, when schemathesis sends each
    operation valid and invalid requests, then every answer is as documented: no 5xx,
    valid requests accepted, invalid ones refused with a documented 4xx."""
    tally = Tally()
    tallies.append(tally)
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            error = result.err()
            tally.fail((error.label, "schemathesis cannot read it", str(error)), str(error))
            continue
        operation = result.ok()
        cases = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])

        @settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
            ],
        )
        @given(case=cases)
        def each(case):
            send(case, tally)

        each()

    assert tally.cases > 0
    if tally.failures:
        pytest.fail(
            f"{len(tally.failures)} distinct failure(s) in {tally.cases} cases as "
            f"{caller.name}:\n\n{tally.summary()}",
            pytrace=False,
        )
