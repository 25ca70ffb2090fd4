"""An S3 server for the tests: moto's, started by the tests on loopback (real S3 protocol).

``s3_server``: one per session (``http://testing:testing@127.0.0.1:<port>``); ``s3_url``: a
fresh bucket on it per test. Under ``CI=true`` a server that cannot start fails the test.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import require_service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """A moto server that can be stopped and started again on the same port (the outage
    scenario of the fault suite)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = _free_port()
        self._cls = ThreadedMotoServer
        self._server: object | None = None

    @property
    def base(self) -> str:
        return f"http://testing:testing@127.0.0.1:{self.port}"

    def start(self) -> None:
        server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            inner = getattr(self._server, "_server", None)  # werkzeug's; moto leaves it open
            if inner is not None:
                inner.server_close()
            self._server = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        server = S3Server()
        server.start()
    except Exception as exc:  # moto missing or the port refused
        require_service("S3 (moto server)", repr(exc))
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    return f"{s3_server.base}/tf-{uuid.uuid4().hex[:12]}"
