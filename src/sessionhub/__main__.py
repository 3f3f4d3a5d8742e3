"""``python -m sessionhub`` and the ``sessionhub`` command."""

from __future__ import annotations

import sys

_MISSING = (
    "sessionhub: the command needs the server extra ({name} is not installed): "
    "pip install 'sessionhub[server]'"
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status. Without the ``server`` extra (a bare
    ``pip install sessionhub``), one line says what to install, and the status is 2."""
    try:
        from .cli import main as cli_main
    except ImportError as exc:  # click, granian, starlette...: what `server` installs
        if (exc.name or "").partition(".")[0] == "sessionhub":
            raise  # a fault of sessionhub's own, not a missing extra
        print(_MISSING.format(name=exc.name or "a dependency"), file=sys.stderr)
        return 2
    return int(cli_main(argv))


if __name__ == "__main__":
    sys.exit(main())
