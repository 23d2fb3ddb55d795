"""The handler framework: what a job type is made of, and all a handler module imports.

::

    from app.framework import APPROVAL_REQUIRED, FileDiff, Handler, StepContext, registry

    handler = registry.register(Handler("code-generation", description="Write files"))

    @handler.step("propose", approval=True, view=FileDiff("files"))
    def propose(ctx: StepContext) -> dict: ...

``Handler`` and ``Step`` (``handler``), what a step receives (``context``), how reviewers
see a checkpoint's data (``views``), who may decide it and how (``Policy``, ``Option``),
the registry the runtime builds chains from (``registry``), the job's workspace
(``workspace``) and ``PermanentError`` (``errors``).
The job types themselves live in the ``handlers`` package.
"""

from app.framework.context import APPROVAL_REQUIRED
from app.framework.context import INFO
from app.framework.context import Approval
from app.framework.context import Feedback
from app.framework.context import StepContext
from app.framework.errors import PermanentError
from app.framework.handler import Handler
from app.framework.handler import Step
from app.framework.registry import registry
from app.framework.views import BeforeAfter
from app.framework.views import FileDiff
from app.framework.views import Json
from app.framework.views import RecordsTable
from app.framework.views import View
from app.framework.workspace import Workspace
from app.policy import Option
from app.policy import Policy
from app.status import OnTimeout

__all__ = [
    "APPROVAL_REQUIRED",
    "INFO",
    "Approval",
    "BeforeAfter",
    "Feedback",
    "FileDiff",
    "Handler",
    "Json",
    "OnTimeout",
    "Option",
    "PermanentError",
    "Policy",
    "RecordsTable",
    "Step",
    "StepContext",
    "View",
    "Workspace",
    "registry",
]
