"""pytester runs real pytest processes with the plugin loaded from its entry point; the remote
runs use the same real servers as the client tests."""

from collections.abc import Callable

import pytest
from _pytest.pytester import pytest_addoption, pytester

from tests.client.conftest import make_server, server_token, server_url, sync_client
from tests.client.serving import ThreadedServer

__all__ = [
    "make_server",
    "pytest_addoption",
    "pytester",
    "server_token",
    "server_url",
    "sync_client",
]


@pytest.fixture
def server(make_server: Callable[..., ThreadedServer]) -> ThreadedServer:
    """A server that keeps ended sessions readable, to check what a run has ended."""
    return make_server(retention=600)
