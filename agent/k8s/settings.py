"""Enrollment settings; each default says why it is what it is."""

import dataclasses

from .cgroups import DRIVERS
from .policy import DEFAULT_EXCLUDED_NAMESPACES


@dataclasses.dataclass
class EnrollerSettings:
    watch_timeout: int = 300
    """Server-side lifetime of one watch (s). A watch that ends is resumed from
    the last resourceVersion (bookmarks keep it fresh), so this only bounds how
    long a silently dead connection can go unnoticed."""
    request_timeout: float = 30.0
    """Client timeout (s) for connecting and for list calls: a hung API server
    becomes an error and a back-off instead of a stuck thread."""
    api_backoff_base: float = 0.5
    """First wait (s) after a failed list or watch; doubles per failure."""
    api_backoff_cap: float = 30.0
    """Longest wait (s) between API retries: an agent never goes more than this
    without trying again once the API server is back."""
    retry_base: float = 1.0
    """First wait (s) before retrying a pod that could not be enrolled (its cgroup
    is not there yet: the kubelet creates it moments after scheduling)."""
    retry_cap: float = 60.0
    """Longest wait (s) between retries of one pod; a pod update retries at once."""
    warn_after: int = 5
    """Attempts at a missing cgroup before it is logged as a warning, not info."""
    resync_interval: float = 60.0
    """How often (s) the enrolled map is compared with what we enrolled, so an
    entry lost to a datapath reinstall is put back."""
    cgroup_driver: str = None
    """The kubelet's cgroup driver (systemd, cgroupfs); None: look for both."""
    kubelet_cgroup_root: str = "/"
    """The kubelet's --cgroup-root ('/' unless the node overrides it, e.g. kind)."""
    excluded_namespaces: tuple = DEFAULT_EXCLUDED_NAMESPACES
    """Namespaces never enrolled, whatever their labels: the control plane's and
    nodemesh's own (the remote proxy pool must never be steered to itself)."""
    pods_file: str = None
    """Where pods.json is written; None: $NODEMESH_RUN_DIR/pods.json, '': nowhere."""

    def __post_init__(self):
        if self.cgroup_driver not in (None, *DRIVERS):
            raise ValueError(f"cgroup_driver {self.cgroup_driver!r}: expected systemd, "
                             "cgroupfs or None")
        for name in ("watch_timeout", "request_timeout", "api_backoff_base", "retry_base",
                     "resync_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.api_backoff_cap < self.api_backoff_base or self.retry_cap < self.retry_base:
            raise ValueError("a back-off cap must not be below its base")
        self.excluded_namespaces = tuple(self.excluded_namespaces)
