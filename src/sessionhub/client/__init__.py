"""Python clients of a sessionhub server: ``Client`` (blocking) and ``AsyncClient``.

Both speak the HTTP/JSON API with the hub's verbs, arguments and exceptions, so code written against
an embedded ``SessionHub`` runs against a server by changing how the hub is made.
"""

from ._async import AsyncClient, AsyncRemoteData, AsyncRemoteHistory
from ._calls import ClientClosed
from ._sync import Client, RemoteData, RemoteHistory

__all__ = [
    "AsyncClient",
    "AsyncRemoteData",
    "AsyncRemoteHistory",
    "Client",
    "ClientClosed",
    "RemoteData",
    "RemoteHistory",
]
