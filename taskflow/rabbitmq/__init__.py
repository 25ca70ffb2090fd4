"""The RabbitMQ adapters (aiormq; asyncio backend only): the Transport and the EventBus
ports, over a reconnecting connection."""

from taskflow.backoff import Backoff
from taskflow.rabbitmq.connection import (
    RECONNECT,
    ConnectionStats,
    RabbitMQConnection,
    Session,
    open_rabbitmq_connection,
)
from taskflow.rabbitmq.events import (
    RabbitMQEventBus,
    RabbitMQEventBusStats,
    open_rabbitmq_event_bus,
    routing_key,
)
from taskflow.rabbitmq.topology import Topology
from taskflow.rabbitmq.transport import (
    RabbitMQTransport,
    RabbitMQTransportStats,
    open_rabbitmq_transport,
)

__all__ = [
    "RECONNECT",
    "Backoff",
    "ConnectionStats",
    "RabbitMQConnection",
    "RabbitMQEventBus",
    "RabbitMQEventBusStats",
    "RabbitMQTransport",
    "RabbitMQTransportStats",
    "Session",
    "Topology",
    "open_rabbitmq_connection",
    "open_rabbitmq_event_bus",
    "open_rabbitmq_transport",
    "routing_key",
]
