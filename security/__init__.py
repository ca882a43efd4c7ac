"""Security policies shared by ``engine`` and ``handlers``; imports neither.

So far: the admin bearer token guarding ``/engine`` (``check_admin_token``) and the loopback
test that decides where the development profile may leave ``/engine`` open
(``is_loopback_host``).
"""

from security._admin_token import TokenVerdict, bearer_token, check_admin_token
from security._network import is_loopback_host

__all__ = ["TokenVerdict", "bearer_token", "check_admin_token", "is_loopback_host"]
