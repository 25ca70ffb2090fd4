"""Ports: small Protocols the actors talk to. Adapters live in taskflow.memory (twins) and
in the driver-specific packages."""

from taskflow.ports.events import EventBus
from taskflow.ports.logs import LogStore
from taskflow.ports.store import (
    Bury,
    Change,
    Complete,
    DeadLetterQuery,
    DeadMessage,
    Inserted,
    JobQueries,
    JobQuery,
    JobStore,
    JobStoreAndQueries,
    MarkCancelled,
    Progress,
    Recovered,
    Release,
    Renew,
    ReplayRequest,
    Reschedule,
)
from taskflow.ports.transport import Deliveries, Delivery, Transport

__all__ = [
    "Bury",
    "Change",
    "Complete",
    "DeadLetterQuery",
    "DeadMessage",
    "Deliveries",
    "Delivery",
    "EventBus",
    "Inserted",
    "JobQueries",
    "JobQuery",
    "JobStore",
    "JobStoreAndQueries",
    "LogStore",
    "MarkCancelled",
    "Progress",
    "Recovered",
    "Release",
    "Renew",
    "ReplayRequest",
    "Reschedule",
    "Transport",
]
