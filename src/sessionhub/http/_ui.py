"""The dashboard: the static page at ``/ui/`` (``/`` and ``/ui`` redirect there).

The files ship inside the package (``http/ui/``: HTML, CSS and ES modules, no build step) and are
read once, at app creation. They are public, like ``/openapi.json``: the page holds no data, and
every call it makes goes to the API with the token the user enters. A strict Content-Security-Policy
allows scripts, styles and connections to this origin only, so that even a rendering bug could not
run a script or send anything elsewhere.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

from ._request import Reply

__all__ = ["Dashboard"]

_TYPES: Final = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
)
_HOME: Final = "/ui/"
_TEXT: Final = b"text/plain; charset=utf-8"


class Dashboard:
    """Answers ``GET``/``HEAD`` for ``/``, ``/ui`` and every file under ``/ui/``."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, bytes]] = {}
        self._load(files(__package__).joinpath("ui"), "/ui/")
        self._files[_HOME] = self._files["/ui/index.html"]

    def _load(self, folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                self._load(entry, prefix + entry.name + "/")
                continue
            kind = _TYPES.get(entry.name[entry.name.rfind(".") :], _TEXT)  # _TEXT: licenses
            self._files[prefix + entry.name] = (entry.read_bytes(), kind)

    @staticmethod
    def serves(path: str) -> bool:
        return path in ("/", "/ui") or path.startswith(_HOME)

    def reply(self, path: str, method: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return Reply(405, b"the dashboard accepts GET only", _TEXT, ((b"allow", b"GET"),))
        if path in ("/", "/ui"):
            return Reply(308, b"", _TEXT, ((b"location", _HOME.encode()),))
        found = self._files.get(path)
        if found is None:
            return Reply(404, f"no dashboard file {path}".encode(), _TEXT)
        body, kind = found
        return Reply(200, body, kind, _HEADERS)
