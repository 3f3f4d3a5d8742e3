"""Integrations of sessionhub with other frameworks, one module each, each behind its extra."""
