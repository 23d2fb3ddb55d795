"""``agentq checkpoints``: review approval checkpoints from a terminal, over the HTTP API.

A reviewer works from their own machine with an admin's token, not from the server's
database: every command is calls to a running agentq (``--url``, ``AGENTQ_URL``) with
``--token`` (``AGENTQ_TOKEN``)::

    agentq checkpoints list --mine
    agentq checkpoints show 3f2a9c1e
    agentq checkpoints request-changes 3f2a9c1e --feedback "Check the token's expiry"
    agentq checkpoints approve 7b01d2c4 --reason "Looks right"

A refusal (not an approver, your own job's checkpoint, a stale version, already decided,
invalid data) exits 1 with the server's message on stderr, as does a server that cannot be
reached.
"""

from __future__ import annotations

import difflib
import functools
import http.client
import importlib.metadata
import json
import math
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from app.status import CheckpointStatus
from app.status import Outcome
from app.terminal import table
from app.terminal import when

#: Where the API answers unless ``--url`` or ``AGENTQ_URL`` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8000"
#: The API's checkpoints, under the base URL.
CHECKPOINTS = "/api/admin/agent-checkpoints"
#: The characters of an id the list shows (``show`` and the decisions take them, or more).
SHORT_ID = 8
#: Pending checkpoints asked for per page of the list.
PAGE = 200


class ApiError(click.ClickException):
    """A refusal by the API: its HTTP ``status``, error ``code`` and ``details``; the
    message is the server's."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details


class Api:
    """JSON calls to agentq's API at ``url`` with a bearer ``token``::

        api = Api("http://127.0.0.1:8000", token)
        api("GET", "/api/admin/agent-checkpoints", query={"mine": "true"})

    The API's refusals raise :class:`ApiError`, carrying the server's message.
    """

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            # Each vote records it: the audit trail says the vote came from here.
            "User-Agent": f"agentq-cli/{importlib.metadata.version('agentq')}",
        }

    def __call__(
        self, method: str, path: str, body: dict | None = None, *, query: dict | None = None
    ) -> dict:
        """The decoded answer to ``method path`` with ``body`` as JSON.

        :raises ApiError: when the API answers with an error.
        :raises click.ClickException: when the server cannot be reached, or answers
            something that is not agentq's JSON.
        """
        target = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(
            target,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers=self.headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise click.ClickException(f"cannot reach {self.url}: {reason}") from None
        except json.JSONDecodeError:
            raise click.ClickException(f"{target} did not answer JSON: is it agentq?") from None


def _refusal(exc: urllib.error.HTTPError) -> click.ClickException:
    """The API's error answer as an ``ApiError`` (a plain one when it is not agentq's)."""
    try:
        error = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        return click.ClickException(f"{exc.url} answered {exc.code} {exc.reason}")
    return ApiError(exc.code, error.get("code", ""), error["message"], error.get("details"))


def _server_options(command: Callable) -> Callable:
    """``--url`` and ``--token`` (from ``AGENTQ_URL`` and ``AGENTQ_TOKEN``), passed to the
    command as ``api``, an :class:`Api`."""

    @functools.wraps(command)
    def with_api(url: str, token: str | None, **kwargs: Any) -> Any:
        if not token:
            raise click.UsageError(
                "No token: pass --token or set AGENTQ_TOKEN to an admin's API token "
                "(`agentq tokens create NAME` makes one)"
            )
        return command(api=Api(url, token), **kwargs)

    with_api = click.option(
        "--token",
        envvar="AGENTQ_TOKEN",
        show_envvar=True,
        help="An admin's API token.",
    )(with_api)
    return click.option(
        "--url",
        envvar="AGENTQ_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="agentq's base URL.",
    )(with_api)


@click.group()
def checkpoints() -> None:
    """Review approval checkpoints over the API: list, show (with diffs), approve, reject,
    request changes."""


@checkpoints.command("list")
@click.option("--job-type", help="Only checkpoints of jobs of this type.")
@click.option("--mine", is_flag=True, help="Only the checkpoints you may decide.")
@_server_options
def list_command(api: Api, job_type: str | None, mine: bool) -> None:
    """List the pending checkpoints, oldest first: id (its first characters), job type,
    title, version, approvals so far of those needed, deadline, the job's owner, and
    whether you may decide it."""
    pending = _pending(api, job_type=job_type, mine=mine)
    if not pending:
        click.echo("No pending checkpoints" + (" you may decide" if mine else ""))
        return
    rows = [
        (
            c["id"][:SHORT_ID],
            c["job"]["jobType"],
            c["title"],
            str(c["version"]),
            _approvals(c) + _against(c),
            _deadline(c["expiresAt"]),
            c["job"]["owner"],
            "yes" if c["mayDecide"] else "no",
        )
        for c in pending
    ]
    table(("ID", "JOB TYPE", "TITLE", "VERSION", "VOTES", "DEADLINE", "OWNER", "MAY DECIDE"), rows)


@checkpoints.command("show")
@click.argument("checkpoint_id", metavar="ID")
@_server_options
def show_command(api: Api, checkpoint_id: str) -> None:
    """Show checkpoint ID (its id, or the start of a pending one's): its job, status,
    version, policy and votes, and what it proposes: for files, a unified diff against the
    previous version (version 1: against the job's input, or each file whole), with the
    feedback between them; other data as JSON."""
    found = api("GET", f"{CHECKPOINTS}/{_resolve(api, checkpoint_id)}")
    checkpoint, versions = found["checkpoint"], found["versions"]
    _heading(checkpoint, versions)
    click.echo()
    click.echo(click.style("Policy", bold=True))
    for line in _policy_words(checkpoint):
        click.echo(f"  {line}")
    click.echo()
    click.echo(click.style("Votes", bold=True))
    for line in _vote_lines(checkpoint["votes"]) or ["none yet"]:
        click.echo(f"  {line}")
    click.echo()
    _proposal(checkpoint, versions)


#: The version a decision is on: the one the reviewer saw.
_version = click.option(
    "--version",
    type=click.IntRange(min=1),
    help="The version you reviewed (refused if another is current); default: the current one.",
)


def _data_file(what: str):
    """The ``--data-file`` option of a decision that may carry data: a JSON file of ``what``."""
    return click.option(
        "--data-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"A JSON file: {what}",
    )


@checkpoints.command("approve")
@click.argument("checkpoint_id", metavar="ID")
@click.option("--reason", help="Why (kept with your vote).")
@click.option("--option", help="One of the policy's named options.")
@_data_file("the checkpoint's data as you edited it.")
@_version
@_server_options
def approve_command(
    api: Api,
    checkpoint_id: str,
    reason: str | None,
    option: str | None,
    data_file: Path | None,
    version: int | None,
) -> None:
    """Approve checkpoint ID: a vote, when its policy needs more than one approval."""
    body = {"reason": reason, "option": option, "version": version, **_data(data_file)}
    _decide(api, "POST", checkpoint_id, "", body)


@checkpoints.command("reject")
@click.argument("checkpoint_id", metavar="ID")
@click.option("--reason", required=True, help="Why (the job's error, when it fails).")
@_version
@_server_options
def reject_command(api: Api, checkpoint_id: str, reason: str, version: int | None) -> None:
    """Reject checkpoint ID: the job fails (unless its policy counts rejections as votes)."""
    _decide(api, "DELETE", checkpoint_id, "", {"reason": reason, "version": version})


@checkpoints.command("request-changes")
@click.argument("checkpoint_id", metavar="ID")
@click.option("--feedback", required=True, help="What to change; the step reads it.")
@_data_file("data for the next proposal (an edit of this one).")
@_version
@_server_options
def request_changes_command(
    api: Api, checkpoint_id: str, feedback: str, data_file: Path | None, version: int | None
) -> None:
    """Send checkpoint ID back with feedback: its step runs again and opens the next version."""
    body = {"feedback": feedback, "version": version, **_data(data_file)}
    _decide(api, "POST", checkpoint_id, "/request-changes", body)


# -- Talking to the API ---------------------------------------------------------------------


def _pending(api: Api, *, job_type: str | None = None, mine: bool = False) -> list[dict]:
    """Every pending checkpoint (each page of the list), oldest first."""
    query = {"limit": PAGE, **({"jobType": job_type} if job_type else {})}
    if mine:
        query["mine"] = "true"
    found, cursor = [], None
    while True:
        page = api("GET", CHECKPOINTS, query={**query, **({"cursor": cursor} if cursor else {})})
        found += page["checkpoints"]
        cursor = page.get("nextCursor")
        if not cursor:
            return found


def _resolve(api: Api, given: str) -> str:
    """The checkpoint id ``given`` names: itself when it is a whole id, else the one
    pending checkpoint whose id starts with it.

    :raises click.ClickException: when no pending checkpoint's id, or more than one,
        starts with it.
    """
    try:
        return str(uuid.UUID(given))
    except ValueError:
        pass
    matches = [c for c in _pending(api) if c["id"].startswith(given.lower())]
    if not matches:
        raise click.ClickException(
            f"No pending checkpoint's id starts with {given}; `agentq checkpoints list` "
            "shows them (a decided one needs its whole id)"
        )
    if len(matches) > 1:
        listed = "\n".join(f"  {c['id']}  {c['title']}" for c in matches)
        raise click.ClickException(f"{given} starts {len(matches)} checkpoint ids:\n{listed}")
    return matches[0]["id"]


def _data(data_file: Path | None) -> dict:
    """``{"data": ...}`` read from a JSON file; nothing without one.

    :raises click.BadParameter: when the file is not JSON.
    """
    if data_file is None:
        return {}
    try:
        return {"data": json.loads(data_file.read_text())}
    except (ValueError, OSError) as exc:
        raise click.BadParameter(
            f"{data_file} is not JSON: {exc}", param_hint="--data-file"
        ) from None


def _decide(api: Api, method: str, checkpoint_id: str, action: str, body: dict) -> None:
    """Send one decision (fields left None are not sent, so an absent ``version`` means
    the current one) and say what came of it.

    :raises click.ClickException: with the server's reason when it refuses.
    """
    resolved = _resolve(api, checkpoint_id)
    sent = {name: value for name, value in body.items() if value is not None}
    try:
        decided = api(method, f"{CHECKPOINTS}/{resolved}{action}", sent)["checkpoint"]
    except ApiError as exc:
        raise click.ClickException(_explained(exc)) from None
    click.echo(_outcome(decided))


def _explained(exc: ApiError) -> str:
    """What a refused decision tells the reviewer: the server's message, and for a stale
    version which one to look at, for invalid data each field at fault."""
    message, details = exc.message, exc.details if isinstance(exc.details, dict) else {}
    current = details.get("checkpoint")
    if exc.code == "stale_version" and current:
        number, show = current["version"], f"run `agentq checkpoints show {current['id']}`"
        if current["status"] == CheckpointStatus.CHANGES_REQUESTED:
            return f"{message}\nversion {number + 1} is on its way: {show} once it is open"
        return f"{message}\nversion {number} is current: {show}"
    if exc.status == 422 and details:
        fields = (f"  {name}: {' '.join(msgs)}" for name, msgs in details.items())
        return "\n".join([message, *fields])
    return message


def _outcome(checkpoint: dict) -> str:
    """What a decision did, in a line: ``approved``, ``vote recorded: 1/2 approvals``..."""
    status, decision = checkpoint["status"], checkpoint["decision"] or {}
    if status == CheckpointStatus.APPROVED:
        option = decision.get("option")
        return "approved" + (f" with option {option}" if option else "")
    if status == CheckpointStatus.REJECTED:
        return "rejected: the job fails"
    if status == CheckpointStatus.CHANGES_REQUESTED:
        return (
            f"changes requested: the step runs again and opens version {checkpoint['version'] + 1}"
        )
    if status == CheckpointStatus.PENDING:
        return f"vote recorded: {_approvals(checkpoint)} approvals{_against(checkpoint)}"
    return status.lower()


# -- How a checkpoint reads in a terminal ---------------------------------------------------


def _approvals(checkpoint: dict) -> str:
    """Approvals so far of those needed: ``1/2``."""
    needed = (checkpoint["policy"] or {}).get("minApprovals", 1)
    return f"{checkpoint['approvals']}/{needed}"


def _against(checkpoint: dict) -> str:
    """``, 1 against`` when a rejection counted as a vote against; else nothing."""
    return f", {checkpoint['rejections']} against" if checkpoint["rejections"] else ""


def _duration(seconds: float) -> str:
    """``45 s``, ``30 min``, ``2 h``, ``3 d``: seconds in the largest unit under two of
    the next."""
    for unit, size, limit in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if seconds < limit:
            return f"{round(seconds / size, 1):g} {unit}"
    return f"{round(seconds / 86400, 1):g} d"


def _deadline(expires_at: str | None) -> str:
    """``in 12 min`` from now (to the minute, rounded up), ``passed``, or ``-`` for none."""
    if expires_at is None:
        return "-"
    left = (datetime.fromisoformat(expires_at) - datetime.now(UTC)).total_seconds()
    return f"in {_duration(math.ceil(left / 60) * 60)}" if left > 0 else "passed"


def _heading(checkpoint: dict, versions: list[dict]) -> None:
    """The checkpoint's title, id, job, status and where it stands among its versions."""
    job, current = checkpoint["job"], versions[-1]
    click.echo(click.style(checkpoint["title"], bold=True))
    click.echo(f"  checkpoint  {checkpoint['id']}")
    click.echo(
        f"  job         {job['id']} ({job['jobType']}, {job['status']}), "
        f"submitted by {job['owner']}"
    )
    click.echo(f"  step        {checkpoint['step']}, version {checkpoint['version']}")
    status = checkpoint["status"]
    if status == CheckpointStatus.PENDING:
        status += f", {_approvals(checkpoint)} approvals{_against(checkpoint)}"
        if checkpoint["expiresAt"]:
            status += f", deadline {_deadline(checkpoint['expiresAt'])}"
    elif checkpoint["decidedAt"]:
        status += f" at {when(checkpoint['decidedAt'])}"
    click.echo(f"  status      {status}")
    if current["id"] != checkpoint["id"]:
        click.echo(
            f"  current     version {current['version']} ({current['status']}): "
            f"`agentq checkpoints show {current['id']}`"
        )


def _policy_words(checkpoint: dict) -> list[str]:
    """The checkpoint's review policy, a line a rule."""
    policy = checkpoint["policy"]
    if policy is None:
        return ["information only: nobody decides it"]
    approvers = checkpoint["approvers"]
    submitter = "may" if policy["allowSelfApproval"] else "may not"
    veto = (
        "one rejection rejects"
        if policy["vetoOnReject"]
        else "a rejection is a vote against; rejected once too few could still approve"
    )
    lines = [
        f"who decides: {'admins among ' + ', '.join(approvers) if approvers else 'any admin'}; "
        f"the job's submitter {submitter}",
        f"approvals needed: {policy['minApprovals']}; {veto}",
    ]
    if policy["expiresIn"] is None:
        lines.append("deadline: none")
    else:
        lines.append(
            f"deadline: {_duration(policy['expiresIn'])} after opening "
            f"({when(checkpoint['expiresAt'])}), then {policy['onTimeout']}"
        )
    if policy["remindAt"]:
        before = ", ".join(_duration(s) for s in policy["remindAt"])
        lines.append(f"reminders: {before} before the deadline")
    if policy["escalateTo"]:
        lines.append(
            f"escalation: {', '.join(policy['escalateTo'])} may decide too, "
            f"{_duration(policy['escalateAfter'])} after opening"
        )
    if policy["options"]:
        named = (
            o["name"] + (f" (resumes at step {o['step']})" if o["step"] else "")
            for o in policy["options"]
        )
        lines.append(f"options: {', '.join(named)}")
    if policy["dataSchema"]:
        lines.append("data sent with a decision must fit its dataSchema")
    if policy["maxRevisions"] is not None:
        lines.append(f"changes may be requested {policy['maxRevisions']} time(s) at most")
    return lines


def _vote_lines(votes: list[dict]) -> list[str]:
    """Each vote: when, what, by whom, with which option, and the reviewer's words."""
    return [
        f"{when(v['createdAt'])}  {v['outcome']} by {v['decidedBy']}"
        + (f" ({v['option']})" if v["option"] else "")
        + (f": {v['reason']}" if v["reason"] else "")
        for v in votes
    ]


def _proposal(checkpoint: dict, versions: list[dict]) -> None:
    """What the checkpoint proposes: its files as diffs, else its data as JSON; for a
    version after the first, the feedback that asked for it first."""
    earlier = [v for v in versions if v["version"] < checkpoint["version"]]
    previous = earlier[-1] if earlier else None
    if previous is not None:
        click.echo(click.style(f"Version {previous['version']} was sent back", bold=True))
        for vote in previous["votes"]:
            if vote["outcome"] == Outcome.CHANGES_REQUESTED:
                click.echo(f"  {vote['decidedBy']} asked: {vote['reason']}")
        click.echo()
    files = _files(checkpoint["data"])
    if files is None:
        click.echo(click.style(f"Data (version {checkpoint['version']})", bold=True))
        click.echo(json.dumps(checkpoint["data"], indent=2, sort_keys=True))
        return
    if previous is not None:
        before = _files(previous["data"]) or {}
        title = f"Changes from version {previous['version']} to {checkpoint['version']}"
    else:
        inputs = _files(checkpoint["job"]["inputData"]) or {}
        # Files as the job asked for them show whole: a diff against them would be empty.
        before = {p: c for p, c in inputs.items() if p in files and files[p] != c}
        title = "Proposed files" + (", against the job's input" if before else "")
    click.echo(click.style(title, bold=True))
    for path in [*files, *(p for p in before if p not in files)]:
        _print_diff(path, before.get(path), files.get(path))


def _files(data: Any) -> dict[str, str] | None:
    """``{path: content}`` of data that holds files (``{"files": [{path, content}]}``)."""
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("content"), str)
        for f in files
    ):
        return None
    return {f["path"]: f["content"] for f in files}


#: A diff line's colour by its first character (headers first: they start with - and + too).
STYLES = (
    ("---", {"bold": True}),
    ("+++", {"bold": True}),
    ("@@", {"fg": "cyan"}),
    ("+", {"fg": "green"}),
    ("-", {"fg": "red"}),
)


def _print_diff(path: str, old: str | None, new: str | None) -> None:
    """The unified diff turning ``old`` into ``new`` (None: no such file), coloured on a
    terminal; one line when they are the same."""
    if old == new:
        click.echo(f"  {path}: unchanged")
        return
    lines = difflib.unified_diff(
        (old or "").splitlines(),
        (new or "").splitlines(),
        f"a/{path}" if old is not None else "/dev/null",
        f"b/{path}" if new is not None else "/dev/null",
        lineterm="",
    )
    for line in lines:
        style = next((s for start, s in STYLES if line.startswith(start)), {})
        click.echo(click.style(line, **style))
