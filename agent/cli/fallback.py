"""When no admin API answers: say so, and show what the pinned maps still give.

Routes, clusters and endpoints live only in the proxy and the agent. With
both down the kernel still steers by its services map, so `routes` and
`clusters` print that map (which VIPs are steered, with which protocol and
remote port) under the reasons, and exit 6 so scripts can tell a partial
answer from a full one.
"""

from . import output
from .datapath_view import DatapathView
from .errors import UNAVAILABLE

SERVICE_COLUMNS = [("ID", "id"), ("VIP:PORT", "vip"), ("PROTOCOL", "protocol"),
                   ("REMOTE PORT", "remote_port")]


def no_config(settings, fmt: str, what: str, key: str, unavailable: dict) -> int:
    """Emit {key: [], "source": None, "datapath_services": [...]|None, "unavailable"}."""
    with DatapathView(settings, unavailable) as dv:
        services = dv.read("services")
    data = {"source": None, key: [], "datapath_services": services, "unavailable": unavailable}

    def text(wide):
        lines = [f"{what} unavailable: neither the proxy nor the agent answers"]
        if services:
            lines += ["", "the datapath's services map (steered VIPs; no routes in the kernel):",
                      output.table(services, SERVICE_COLUMNS, wide)]
        elif services is not None:
            lines += ["", "the datapath's services map is empty"]
        return "\n".join(lines + ["", output.unavailable_text(unavailable)])

    output.emit(data, fmt, text)
    return UNAVAILABLE
