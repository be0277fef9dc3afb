"""Owner isolation for multi-user servers: an authorizer, and a startup check that warns when
isolation is off.

jupyter_taskrun shows each user only their own tasks, unless the server's authorizer grants
the ``taskrun:all`` permission (``handlers/base.py``: ``sees_all()`` asks
``authorizer.is_authorized(handler, user, "read", "taskrun:all")``). jupyter_server's default
authorizer (``AllowAllAuthorizer``) grants *everything*, so behind an identity provider that
yields several users, every user would see and control every task. Enable isolation with::

    jupyter server --ServerApp.authorizer_class=jupyter_taskrun.auth.OwnerScopedAuthorizer \\
                   --OwnerScopedAuthorizer.admin_users='["alice"]'

or in ``jupyter_server_config.py``::

    c.ServerApp.authorizer_class = "jupyter_taskrun.auth.OwnerScopedAuthorizer"
    c.OwnerScopedAuthorizer.admin_users = {"alice"}   # may see and control everyone's tasks

Everything else is allowed exactly as the default authorizer allows it.
"""

from __future__ import annotations

import logging
from typing import Any

from jupyter_server.auth.authorizer import AllowAllAuthorizer
from jupyter_server.auth.identity import IdentityProvider, LegacyIdentityProvider, PasswordIdentityProvider, User
from traitlets import Set, Unicode

#: the permission that lets a user see and control every user's tasks
ALL_TASKS_RESOURCE = "taskrun:all"

#: identity providers that only ever yield the one person running the server (a shared token or
#: password; anonymous users are mapped to the server's OS user by ``handlers.base.owner_name``)
SINGLE_USER_PROVIDERS = (IdentityProvider, PasswordIdentityProvider, LegacyIdentityProvider)


class OwnerScopedAuthorizer(AllowAllAuthorizer):
    """Allow what jupyter_server's default allows, but ``taskrun:all`` only to ``admin_users``."""

    admin_users = Set(Unicode(), config=True, help="Usernames that may see and control every user's tasks (taskrun:all).")

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == ALL_TASKS_RESOURCE:
            return getattr(user, "username", None) in self.admin_users
        return super().is_authorized(handler, user, action, resource)


def isolation_warning(serverapp: Any) -> str | None:
    """A warning when users are not isolated from each other, else None.

    Not isolated: the identity provider can yield different users (it is not one of
    jupyter_server's single-user token/password providers) while the authorizer grants
    ``taskrun:all`` to anybody (checked by asking it about a made-up user).
    """
    provider = getattr(serverapp, "identity_provider", None)
    authorizer = getattr(serverapp, "authorizer", None)
    if provider is None or authorizer is None or type(provider) in SINGLE_USER_PROVIDERS:
        return None
    probe = User(username="jupyter-taskrun-isolation-probe", name="isolation probe")
    try:
        granted = authorizer.is_authorized(None, probe, "read", ALL_TASKS_RESOURCE)
    except Exception:
        return None  # an authorizer that needs a real request decides for itself
    if hasattr(granted, "__await__"):  # async authorizers: cannot be asked here; close the coroutine
        close = getattr(granted, "close", None)
        if close:
            close()
        if not isinstance(authorizer, AllowAllAuthorizer) or isinstance(authorizer, OwnerScopedAuthorizer):
            return None
        granted = True
    if not granted:
        return None
    return (
        "jupyter_taskrun: TASKS ARE NOT ISOLATED BETWEEN USERS. The identity provider "
        f"{type(provider).__module__}.{type(provider).__name__} can yield several users, but the authorizer "
        f"{type(authorizer).__module__}.{type(authorizer).__name__} grants '{ALL_TASKS_RESOURCE}' to anybody: "
        "every user can see, cancel and delete every other user's tasks, logs and environment. Use "
        "--ServerApp.authorizer_class=jupyter_taskrun.auth.OwnerScopedAuthorizer "
        "(admins: c.OwnerScopedAuthorizer.admin_users) or an authorizer of your own."
    )


def warn_if_not_isolated(serverapp: Any, log: logging.Logger) -> str | None:
    message = isolation_warning(serverapp)
    if message:
        log.warning("%s\n%s\n%s", "!" * 80, message, "!" * 80)
    return message
