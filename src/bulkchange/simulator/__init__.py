"""A faithful, stateful Verizon ThingSpace M2M v1 simulator served over real HTTP.

See ``docs/thingspace-api.md`` for the wire contract it reproduces. Typical use::

    sim = Simulator(SimulatorConfig(activation_delay_s=0.1))
    with run_in_thread(sim) as server:
        ...  # point the client at server.base_url
"""

from .callbacks import ALLOWED_PORTS, CARRIER_SERVICE
from .clock import Clock, ManualClock, system_clock
from .config import FaultConfig, SimulatorConfig
from .counters import Counters
from .devices import SimDevice
from .ids import luhn_check_digit, luhn_valid
from .server import ServerHandle, run_in_thread, serve_in_thread
from .simulator import Simulator

__all__ = [
    "ALLOWED_PORTS",
    "CARRIER_SERVICE",
    "Clock",
    "Counters",
    "FaultConfig",
    "ManualClock",
    "ServerHandle",
    "SimDevice",
    "Simulator",
    "SimulatorConfig",
    "luhn_check_digit",
    "luhn_valid",
    "run_in_thread",
    "serve_in_thread",
    "system_clock",
]
