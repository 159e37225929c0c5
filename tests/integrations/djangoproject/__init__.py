"""A minimal Django project for tests/integrations/test_django.py, configured by environment
variables (the tests run it in real servers, in subprocesses: gunicorn for WSGI,
`serve_asgi.py` for ASGI on `Mesh.server`)."""
