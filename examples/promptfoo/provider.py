"""A session-aware promptfoo provider: a stand-in for a stateful service (seed 004's mock).

The service keeps a conversation per session: it remembers the topics it was asked about, so the
answer depends on the session's earlier calls. The session id comes in the vars; sessionhub
records each call in that session's history. ``PROVIDER_DELAY`` (seconds) makes calls overlap
under ``-j N``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sessionhub.integrations.promptfoo import SESSION_VAR, session_aware


@session_aware
def call_api(prompt: str, options: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    session_id = context["vars"][SESSION_VAR]
    time.sleep(float(os.environ.get("PROVIDER_DELAY", "0")))
    words = prompt.split()
    return {
        "output": f"[session {session_id[:8]}] {prompt.upper()}",
        "tokenUsage": {"prompt": len(words), "completion": len(words), "total": 2 * len(words)},
    }
