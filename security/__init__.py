"""Security policies shared by ``engine`` and ``handlers``; imports neither.

So far: the admin bearer token guarding ``/engine`` (``check_admin_token``).
"""

from security._admin_token import TokenVerdict, bearer_token, check_admin_token

__all__ = ["TokenVerdict", "bearer_token", "check_admin_token"]
