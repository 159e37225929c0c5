"""pymesh-fastapi: thin FastAPI integration for pymesh.

It will mesh a FastAPI service's inbound requests (ASGI middleware: mTLS peer identity,
authorization, telemetry) and hand handlers a meshed httpx client as a dependency.
Nothing is exported yet.
"""

__all__: list[str] = []
