"""An approval storm: parked checkpoints decided by five reviewers at once, cancels racing."""

from __future__ import annotations

import collections
import random
import threading
import time

import pytest
import requests

from tests.conftest import wait_until
from tests.faults.conftest import scaled
from tests.faults.report import Figures
from tests.faults.report import record
from tests.faults.system import RECORDS
from tests.faults.system import settle

pytestmark = [pytest.mark.acceptance]

DECIDERS = 5
CANCELLERS = 2


def test_approval_storm_with_cancels(app, system, tokens, rng):
    """Given 300 jobs parked at their first checkpoint, when five reviewers approve every
    checkpoint in their own order while two clients cancel a third of the jobs, then each
    request is answered 200 or 409 (never a 5xx), each checkpoint has one decision at most,
    each continuation runs once, and every job ends COMPLETED or CANCELLED."""
    user_token, admin_token = tokens
    user = {"Authorization": f"Bearer {user_token}"}
    admin = {"Authorization": f"Bearer {admin_token}"}
    url = system.web.url
    count = scaled(300, 300)
    session = requests.Session()
    jobs = []
    for n in range(count):
        response = session.post(
            f"{url}/api/agent-jobs",
            headers=user,
            json={
                "jobType": "data-processing",
                "taskDescription": f"storm {n}",
                "inputData": {"records": RECORDS},
            },
            timeout=15,
        )
        assert response.status_code == 201, response.text
        jobs.append(response.json()["job"]["id"])
    checkpoints = wait_until(
        lambda: found if len(found := _pending(session, url, admin)) == count else None,
        120,
        f"{count} checkpoints to be pending",
    )
    answers = collections.Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(DECIDERS + CANCELLERS)

    def note(kind: str, response: requests.Response) -> None:
        with lock:
            answers[(kind, response.status_code)] += 1
            if response.status_code not in (200, 409):
                errors.append(f"{kind} {response.status_code} {response.text[:300]}")

    def decide(seed: int) -> None:
        own = requests.Session()
        order = random.Random(seed).sample(checkpoints, len(checkpoints))
        start.wait()
        while order:
            for checkpoint in order:
                note(
                    "decide",
                    own.post(
                        f"{url}/api/admin/agent-checkpoints/{checkpoint}",
                        headers=admin,
                        json={},
                        timeout=30,
                    ),
                )
            # Then the second checkpoints of the approved jobs, as they open.
            order = [c for c in _pending(own, url, admin) if c not in checkpoints]

    def cancel(seed: int) -> None:
        own = requests.Session()
        victims = random.Random(seed).sample(jobs, len(jobs) // 3)
        start.wait()
        for job in victims:
            note(
                "cancel",
                own.patch(
                    f"{url}/api/agent-jobs/{job}",
                    headers=user,
                    json={"action": "cancel"},
                    timeout=30,
                ),
            )

    threads = [
        threading.Thread(target=decide, args=(rng.randrange(2**32),)) for _ in range(DECIDERS)
    ] + [threading.Thread(target=cancel, args=(rng.randrange(2**32),)) for _ in range(CANCELLERS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    ended = time.monotonic()
    storm = ended - started
    settled = settle(app, jobs, bound=120, since=ended, final=("COMPLETED", "CANCELLED"))
    decided = sum(n for (kind, code), n in answers.items() if kind == "decide" and code == 200)
    record(
        Figures(
            fault="Approval storm with cancels",
            injected=(
                f"{count} jobs parked at their first checkpoint; {DECIDERS} reviewers approved "
                f"every checkpoint (and then every second checkpoint) each in their own order "
                f"while {CANCELLERS} clients cancelled a third of the jobs each: "
                f"{sum(answers.values())} requests in {storm:.1f} s, {decided} decisions "
                f"answered 200, {settled.statuses.get('CANCELLED', 0)} jobs cancelled."
            ),
            behaviour=(
                "A decision and a cancel lock the job row first, then the checkpoint, in "
                "one order everywhere; a decision is a guarded UPDATE of a PENDING "
                "checkpoint, so the first one wins and every later one, or one after a "
                "cancel, is answered 409; the continuation is dispatched by the winning "
                "decision's transaction only."
            ),
            jobs=count,
            faults=sum(answers.values()),
            lost=settled.lost,
            duplicated=settled.duplicated,
            stuck=settled.stuck,
            errors_5xx=sum(n for (_kind, code), n in answers.items() if code >= 500),
            worst_recovery_s=settled.seconds,
            slowest_job_s=settled.slowest,
        )
    )
    context = f"{settled}\n{errors[:5]}\n{dict(answers)}"
    assert errors == [], context
    assert settled.lost == settled.stuck == settled.duplicated == 0, context
    assert decided >= len(checkpoints) - settled.statuses.get("CANCELLED", 0), context


def _pending(session: requests.Session, url: str, admin: dict) -> list[str]:
    """Ids of every pending checkpoint, page after page."""
    found, cursor = [], None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        response = session.get(
            f"{url}/api/admin/agent-checkpoints", headers=admin, params=params, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        found += [c["id"] for c in body["checkpoints"]]
        cursor = body.get("nextCursor")
        if not cursor:
            return found
