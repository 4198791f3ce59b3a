"""A faithful, stateful Cisco IoT Control Center (AT&T POD 19) REST API v1 simulator over real HTTP.

See ``docs/controlcenter.md`` for the wire contract it reproduces and the settings that stand for
behaviour Cisco does not document. Typical use::

    sim = ControlCenterSimulator(ControlCenterConfig(tps=5), clock=ManualClock())
    with run_in_thread(sim) as server:
        ...  # point the client at server.base_url + "/rws/api"
"""

from .config import (
    ACCOUNT_SETTABLE,
    FAULT_KINDS,
    STATUSES,
    ControlCenterConfig,
    ControlCenterFaults,
    default_transitions,
)
from .counters import ControlCenterCounters
from .devices import AuditRecord, CCDevice
from .simulator import ControlCenterSimulator, User

API_ROOT = "/rws/api"

__all__ = [
    "ACCOUNT_SETTABLE",
    "API_ROOT",
    "FAULT_KINDS",
    "STATUSES",
    "AuditRecord",
    "CCDevice",
    "ControlCenterConfig",
    "ControlCenterCounters",
    "ControlCenterFaults",
    "ControlCenterSimulator",
    "User",
    "default_transitions",
]
