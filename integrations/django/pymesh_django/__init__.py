"""pymesh-django: thin Django integration for pymesh.

It will mesh a Django service's inbound requests (WSGI/ASGI middleware: mTLS peer identity,
authorization, telemetry) and its outbound httpx calls, configured from Django settings.
Nothing is exported yet.
"""

__all__: list[str] = []
