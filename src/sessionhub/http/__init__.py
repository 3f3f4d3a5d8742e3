"""The HTTP/JSON face: ``create_app(hub)`` is an ASGI app any ASGI server can run.

    app = sessionhub.http.create_app(hub, token="s3cret")

``sessionhub serve`` runs it on granian; the routes, the error format and the event stream are
described by the OpenAPI document the app serves at ``/openapi.json``.
"""

from ._app import SessionHubApp, create_app
from ._openapi import openapi_document

__all__ = ["SessionHubApp", "create_app", "openapi_document"]
