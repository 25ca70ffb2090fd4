"""What a request handler reaches through the app: the runtime and the settings.

Stored on the app instance by ``create_app`` (no module-level singletons).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quart import Quart, current_app

from actors.exposition import HttpStats
from actors.runtime import Runtime
from taskflow.config import Settings
from web.admission import Admission
from web.auth import Auth

EXTENSION_KEY = "taskflow"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiState:
    runtime: Runtime
    settings: Settings
    auth: Auth
    admission: Admission | None = None
    """``None``: no ``TASKFLOW_MAX_BACKLOG``."""
    http: HttpStats = field(default_factory=HttpStats)
    """Requests served by route, method and status (for ``GET /metrics``)."""


def install(app: Quart, state: ApiState) -> None:
    app.extensions[EXTENSION_KEY] = state


def current_state() -> ApiState:
    state = current_app.extensions[EXTENSION_KEY]
    assert isinstance(state, ApiState)
    return state
