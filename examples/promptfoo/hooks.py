"""promptfoo's extension hook: the suite session in beforeAll, its statistics in afterAll."""

from sessionhub.integrations.promptfoo import extension_hook

__all__ = ["extension_hook"]
