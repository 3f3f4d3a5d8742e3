"""The dashboard: the static page at ``/ui/`` (``/`` and ``/ui`` redirect there).

The files ship inside the package (``http/ui/``: HTML, CSS and ES modules, no build step). They are
read once, at app creation, and the page is put together then: its scripts, stylesheets and ES
modules are inlined into the HTML, so that opening the page is one request, then the API calls. Each of the ~10
files used to be a request of its own, 30-50 ms apiece on a busy machine, and HTTP/1.1 gives a
browser six connections to share with the page's API calls and its event stream. The modules are
joined by a few lines below rather than by a bundler: they are ours, use one import form
(``import { a, b as c } from "./x.js"``) and export only functions, classes and constants, and
anything else is refused here, at creation, rather than broken in a browser. They are joined into
one classic script (strict, in a function scope), inlined where ``index.html`` loads ``main.js``:
at the end of the body, where it runs as soon as it is parsed (see ``_assemble``).

The page is public, like ``/openapi.json``: it holds no data, and every call it makes goes to the
API with the token the user enters. A strict Content-Security-Policy allows connections to this
origin only, and scripts and styles from this origin or exactly the inlined ones (by their
SHA-256), so that even a rendering bug could not run a script or send anything elsewhere.

The first reads in the page: when the server has no token (anyone may read the API), the page
carries the answers of its first API reads (``FIRST_READS``: the stats, the first page of sessions,
their count) in a JSON data block, read when the page is asked for, so that it draws its first table
and overview while it is parsed, before its first paint, rather than after three requests whose
answers wait for the main thread to be free (parsing, the first paint). The block is data, never
run (``type="application/json"``, which the CSP does not need to allow) and holds no ``<``
(written ``\\u003c``), so that no value can close it; the page renders it as text like any answer.
With a token the page stays public and holds no data: its first reads start from ``early.js``.

Caching: every file has a strong ETag (``If-None-Match`` answers 304); the page itself is
revalidated on each visit (``no-cache``; with its first reads in it, its tag changes with them),
while the files it refers to (the favicon, uPlot, which the page loads only once its first table is
drawn) are referred to by a name carrying their hash and cached as immutable. Bodies are gzipped
once, at creation, for clients that accept it; the page with its reads, when it is asked for (at a
fast level: the reads change every time).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import Awaitable, Callable
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final, NamedTuple

from ._request import Reply

__all__ = ["FIRST_READS", "Dashboard", "FirstReads"]

# The API reads the page starts with (early.js, main.js and sessions.js ask for these URLs).
FIRST_READS: Final = ("/v1/stats", "/v1/sessions?limit=25", "/v1/count")
# Answers the bodies of those of FIRST_READS that succeeded, by URL.
FirstReads = Callable[[], Awaitable[dict[str, bytes]]]

_TYPES: Final = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_HOME: Final = "/ui/"
_TEXT: Final = b"text/plain; charset=utf-8"
_ENTRY: Final = "main.js"
# Files the page refers to by a hashed name (``uPlot.iife.min.<hash>.js``): cached for good.
_VERSIONED: Final = ("favicon.svg", "vendor/uPlot.iife.min.js")
_REVALIDATE: Final = (b"cache-control", b"no-cache")
_IMMUTABLE: Final = (b"cache-control", b"public, max-age=31536000, immutable")
_GZIP_FROM: Final = 1024  # smaller bodies gain nothing worth a header
_GZIPPED: Final = (b"content-encoding", b"gzip")
_GZIP_LEVEL_NOW: Final = 1  # the page with its reads, gzipped when asked for: ~0.3 ms, not ~1
_READS_ID: Final = "sessionhub-first-reads"  # early.js reads the block by this id

_IMPORT = re.compile(r'^import \{([^}]*)\} from "\./([\w-]+)\.js";\n', re.M)
_EXPORT = re.compile(r"^export (?:async function|function|const|class) ([\w$]+)", re.M)
_STYLESHEET = re.compile(r'<link rel="stylesheet" href="([\w./-]+)">\n')
_MODULE = f'<script type="module" src="{_ENTRY}"></script>'
_CLASSIC = re.compile(r'<script src="([\w./-]+)"></script>')


class _File(NamedTuple):
    body: bytes
    gzipped: bytes | None
    kind: bytes
    etag: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # the ETag among them


class Dashboard:
    """Answers ``GET``/``HEAD`` for ``/``, ``/ui`` and every file under ``/ui/``."""

    def __init__(self, first_reads: FirstReads | None = None) -> None:
        """``first_reads``: where the page's first answers come from, when it carries them (a
        server without a token); ``None``: the page holds no data."""
        self._first_reads = first_reads
        sources: dict[str, bytes] = {}
        _read(files(__package__).joinpath("ui"), "", sources)
        versioned = {name: _versioned_name(name, sources[name]) for name in _VERSIONED}
        page, scripts, style = _assemble(sources, versioned)
        policy = (
            f"default-src 'none'; script-src 'self' {' '.join(map(_source_hash, scripts))}; "
            f"style-src 'self' {_source_hash(style)}; img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ).encode()
        security = (
            (b"content-security-policy", policy),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        )
        # The reads go before the page's first script (early.js), which takes them.
        at = page.index(b"<script")
        self._page_parts = (page[:at], page[at:])
        self._page_headers = (*security, _REVALIDATE, (b"vary", b"accept-encoding"))
        self._files: dict[str, _File] = {}
        for name, body in sources.items():  # the sources too: the readable form of the page
            self._add(_HOME + name, body, (*security, _REVALIDATE))
        for name, alias in versioned.items():
            self._add(_HOME + alias, sources[name], (*security, _IMMUTABLE))
        self._add(_HOME + "index.html", page, (*security, _REVALIDATE))
        self._files[_HOME] = self._files[_HOME + "index.html"]

    def _add(self, path: str, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        kind = _TYPES.get(path[path.rfind(".") :], _TEXT)  # _TEXT: licenses
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        packed = gzip.compress(body, 9, mtime=0) if len(body) >= _GZIP_FROM else None
        if packed is not None:
            headers = (*headers, (b"vary", b"accept-encoding"))
        self._files[path] = _File(body, packed, kind, etag, ((b"etag", etag), *headers))

    @staticmethod
    def serves(path: str) -> bool:
        return path in ("/", "/ui") or path.startswith(_HOME)

    async def answer(
        self,
        path: str,
        method: str,
        if_none_match: bytes | None = None,
        accept_encoding: bytes | None = None,
    ) -> Reply:
        """``reply``, with the page's first reads in the page when it carries them."""
        if self._first_reads is None or method not in ("GET", "HEAD"):
            return self.reply(path, method, if_none_match, accept_encoding)
        if path not in (_HOME, _HOME + "index.html"):
            return self.reply(path, method, if_none_match, accept_encoding)
        return self._page_with(await self._first_reads(), if_none_match, accept_encoding)

    def _page_with(
        self, reads: dict[str, bytes], if_none_match: bytes | None, accept_encoding: bytes | None
    ) -> Reply:
        head, rest = self._page_parts
        body = b"".join((head, _reads_block(reads), rest))
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        kind = _TYPES[".html"]
        headers = ((b"etag", etag), *self._page_headers)
        if if_none_match is not None and _matches(if_none_match, etag):
            return Reply(304, b"", kind, headers)
        if accept_encoding and _accepts_gzip(accept_encoding):
            packed = gzip.compress(body, _GZIP_LEVEL_NOW, mtime=0)
            return Reply(200, packed, kind, (*headers, _GZIPPED))
        return Reply(200, body, kind, headers)

    def reply(
        self,
        path: str,
        method: str,
        if_none_match: bytes | None = None,
        accept_encoding: bytes | None = None,
    ) -> Reply:
        if method not in ("GET", "HEAD"):
            return Reply(405, b"the dashboard accepts GET only", _TEXT, ((b"allow", b"GET"),))
        if path in ("/", "/ui"):
            return Reply(308, b"", _TEXT, ((b"location", _HOME.encode()),))
        found = self._files.get(path)
        if found is None:
            return Reply(404, f"no dashboard file {path}".encode(), _TEXT)
        if if_none_match is not None and _matches(if_none_match, found.etag):
            return Reply(304, b"", found.kind, found.headers)
        if found.gzipped is not None and accept_encoding and _accepts_gzip(accept_encoding):
            return Reply(200, found.gzipped, found.kind, (*found.headers, _GZIPPED))
        return Reply(200, found.body, found.kind, found.headers)


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110's weak comparison, as ``If-None-Match`` wants: a list of tags, or ``*``."""
    for tag in if_none_match.split(b","):
        tag = tag.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def _accepts_gzip(accept_encoding: bytes) -> bool:
    """``gzip`` listed with a weight above zero (``gzip;q=0`` refuses it; ``*`` is not read:
    browsers name gzip)."""
    for coding in accept_encoding.lower().split(b","):
        name, _, params = coding.partition(b";")
        if name.strip() == b"gzip":
            weight = params.replace(b" ", b"").removeprefix(b"q=")
            try:
                return not params.strip() or float(weight) > 0
            except ValueError:
                return False  # a malformed weight: the identity body is always right
    return False


def _reads_block(reads: dict[str, bytes]) -> bytes:
    """The JSON data block ``{url: answer, ...}`` of the page's first reads. JSON holds ``<``
    only inside strings, where ``\\u003c`` means the same: so no value can end the block."""
    members = b",".join(
        b'"' + url.encode() + b'":' + body.replace(b"<", b"\\u003c") for url, body in reads.items()
    )
    return (
        f'<script type="application/json" id="{_READS_ID}">'.encode()
        + b"{"
        + members
        + b"}</script>\n"
    )


def _read(folder: Traversable, prefix: str, into: dict[str, bytes]) -> None:
    for entry in folder.iterdir():
        if entry.is_dir():
            _read(entry, prefix + entry.name + "/", into)
        else:
            into[prefix + entry.name] = entry.read_bytes()


def _versioned_name(name: str, body: bytes) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}{dot}{ext}"


def _source_hash(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return f"'sha256-{digest}'"


def _assemble(sources: dict[str, bytes], versioned: dict[str, str]) -> tuple[bytes, list[str], str]:
    """The page with its scripts, stylesheets and modules inlined; the inlined scripts and
    style."""
    html = sources["index.html"].decode()
    sheets = _STYLESHEET.findall(html)
    if not sheets or _MODULE not in html:
        raise ValueError(f"ui/index.html must link its stylesheets and load {_ENTRY} as a module")
    style = "\n".join(sources[name].decode() for name in sheets)
    classic = {name: sources[name].decode() for name in _CLASSIC.findall(html)}
    script = _bundle(sources, _ENTRY)
    for name, alias in versioned.items():
        html = html.replace(f'"{name}"', f'"{alias}"')
        script = script.replace(f'"{name}"', f'"{alias}"')
    for text, tag in (
        (style, "</style"),
        *((text, "</script") for text in (script, *classic.values())),
    ):
        if tag in text.lower():
            raise ValueError(f"ui: an inlined file contains {tag}")
    html = _STYLESHEET.sub("", html, count=len(sheets) - 1)
    html = _STYLESHEET.sub(lambda _: f"<style>{style}</style>\n", html)
    html = _CLASSIC.sub(lambda m: f"<script>{classic[m.group(1)]}</script>", html)
    # A classic script, not a module: an inline module runs in a task of its own once the
    # document is parsed, and Chromium may draw a frame of the empty page before it (traces of a
    # cold visit: 15-25 ms of style, layout and paint before the table is written); a classic
    # script at the end of the body runs when the parser reaches it, and the first frame has the
    # table in it. Strict, in a function scope of its own: what a module would have been.
    script = f'(function () {{\n"use strict";\n{script}}})();\n'
    html = html.replace(_MODULE, f"<script>{script}</script>")
    return html.encode(), [*classic.values(), script], style


def _bundle(sources: dict[str, bytes], entry: str) -> str:
    """The ES module ``entry`` and every module it imports, as one module script: each module a
    function scope returning its exports, in dependency order."""
    done: list[str] = []
    parts: list[str] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            raise ValueError(f"ui: import cycle {' -> '.join((*chain, name))}")
        text = sources[name].decode()
        for _, imported in _IMPORT.findall(text):
            add(imported + ".js", (*chain, name))
        body = _IMPORT.sub(_binding, text)
        exports = _EXPORT.findall(body)
        body = _EXPORT.sub(lambda m: m.group(0).removeprefix("export "), body)
        if re.search(r"^\s*(import|export)\b", body, re.M):
            raise ValueError(
                f'ui/{name}: only `import {{ ... }} from "./x.js";` and exported '
                "functions, classes and constants can be inlined"
            )
        done.append(name)
        parts.append(
            f"const {_module_name(name)} = (() => {{\n{body}\nreturn {{ "
            f"{', '.join(exports)} }};\n}})();\n"
        )

    add(entry, ())
    return "".join(parts)


def _binding(match: re.Match[str]) -> str:
    names = [part.strip() for part in match.group(1).split(",") if part.strip()]
    renamed = [name.replace(" as ", ": ") for name in names]
    return f"const {{ {', '.join(renamed)} }} = {_module_name(match.group(2) + '.js')};\n"


def _module_name(name: str) -> str:
    return "__ui_" + name.removesuffix(".js").replace("-", "_")
