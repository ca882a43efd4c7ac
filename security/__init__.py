"""Security policies shared by ``engine`` and ``handlers``; imports neither.

Pure building blocks, each in its own module and tested without a server:

* ``identity`` -- who is calling (``UserContext``), roles, the capability table, who a script
  runs as;
* ``ratelimit`` -- token buckets per surface and key, rules written as ``300/10s``, and the
  client address behind trusted proxies;
* ``net`` -- the outbound ``fetch`` guard: URL checks, blocked address ranges in every spelling,
  checked DNS resolution, redirect hops;
* ``secrets`` -- AES-GCM sealing of secrets at rest, key text, log masking;
* ``headers`` -- default security headers and how a script's own headers override them;
* ``limits`` -- URL, header, body and JSON-depth limits with the 4xx they map to;
* the admin bearer token guarding ``/engine`` (``check_admin_token``) and the loopback test that
  decides where the development profile may leave ``/engine`` open (``is_loopback_host``).

The names below are the package's contract; the modules hold a few more for their own tests.
"""

from security._admin_token import TokenVerdict, bearer_token, check_admin_token
from security._network import is_loopback_host
from security.headers import merge_headers, new_csp_nonce, security_headers
from security.identity import (
    AuthMethod,
    Capability,
    Denied,
    Role,
    UserContext,
    can,
    capabilities,
    insufficient,
    require,
    runs_as,
)
from security.limits import (
    LimitExceeded,
    check_body_size,
    check_headers,
    check_json_depth,
    check_url_length,
    json_depth_exceeds,
)
from security.net import (
    BlockedDestination,
    ParsedTarget,
    check_url,
    is_blocked_ip,
    parse_host_literal,
    redirect_method,
    redirect_target,
    resolve_checked,
    strip_credentials_on_cross_host,
)
from security.ratelimit import (
    DEFAULT_LIMITS,
    Decision,
    RateLimit,
    RateLimiter,
    client_ip,
    ip_bucket_key,
    parse_networks,
)
from security.secrets import (
    SecretBox,
    SecretError,
    SecretKeyError,
    generate_key_text,
    key_from_text,
    redact,
    secret_context,
)

__all__ = [
    "DEFAULT_LIMITS",
    "AuthMethod",
    "BlockedDestination",
    "Capability",
    "Decision",
    "Denied",
    "LimitExceeded",
    "ParsedTarget",
    "RateLimit",
    "RateLimiter",
    "Role",
    "SecretBox",
    "SecretError",
    "SecretKeyError",
    "TokenVerdict",
    "UserContext",
    "bearer_token",
    "can",
    "capabilities",
    "check_admin_token",
    "check_body_size",
    "check_headers",
    "check_json_depth",
    "check_url",
    "check_url_length",
    "client_ip",
    "generate_key_text",
    "insufficient",
    "ip_bucket_key",
    "is_blocked_ip",
    "is_loopback_host",
    "json_depth_exceeds",
    "key_from_text",
    "merge_headers",
    "new_csp_nonce",
    "parse_host_literal",
    "parse_networks",
    "redact",
    "redirect_method",
    "redirect_target",
    "require",
    "resolve_checked",
    "runs_as",
    "secret_context",
    "security_headers",
    "strip_credentials_on_cross_host",
]
