"""The server itself: raw HTTP against a real server, server-sent events, the OpenAPI document
with a schemathesis fuzz run, and ``sessionhub serve`` as a real process."""
