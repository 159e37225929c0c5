"""The inbound side: serving ASGI apps with the mesh (uvicorn), and the TLS peer in ASGI scope."""
