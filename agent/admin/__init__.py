"""Admin API: a small HTTP/1.1 server on a unix socket (mode 0600) and its client.

The agent and each proxy serve one; the CLI, probes and the failover
controller are the clients. JSON by default, Prometheus text for /metrics.
"""

from .client import AdminClient, AdminError  # noqa: F401
from .server import AdminServer, Response  # noqa: F401
