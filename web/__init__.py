"""The HTTP layer: the REST API (``web.app.create_app``) and its server (``web.server``)."""
