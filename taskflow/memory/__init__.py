"""In-memory twins of every port: products in their own right, for embedding and tests."""

from taskflow.memory.events import MemoryEventBus
from taskflow.memory.logs import MemoryLogStore
from taskflow.memory.store import MemoryJobStore
from taskflow.memory.transport import MemoryTransport

__all__ = ["MemoryEventBus", "MemoryJobStore", "MemoryLogStore", "MemoryTransport"]
