"""Compatibility path for config files: ``c.ServerApp.authorizer_class = "jupyter_taskrun.auth.OwnerScopedAuthorizer"``."""

from .server.auth import OwnerScopedAuthorizer  # noqa: F401
