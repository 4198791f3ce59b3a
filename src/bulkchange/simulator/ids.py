"""Generation of realistic, unique device identifiers.

Clients often validate ICCID/IMEI check digits, so generated identifiers carry
a correct Luhn digit; MDNs and IP addresses only need to be unique.
"""

from __future__ import annotations

import ipaddress


def luhn_check_digit(body: str) -> str:
    """Return the Luhn check digit that makes ``body + digit`` valid."""
    total = 0
    # Walking from the right, the digit next to the (future) check digit is doubled.
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when ``number`` (all digits) ends with a correct Luhn check digit."""
    return number.isdigit() and len(number) >= 2 and luhn_check_digit(number[:-1]) == number[-1]


class IdAllocator:
    """Hands out ICCIDs, IMEIs, MDNs and IPv4 addresses that never repeat.

    Sequences are deterministic so that two runs with the same inputs produce
    the same identifiers (handy when comparing logs between runs).
    """

    ICCID_PREFIX = "891480"  # 89 = telecom, 1 = North America, 480 = Verizon issuer id
    IMEI_TAC = "35987610"  # an 8-digit type allocation code
    MDN_START = 2_015_550_000
    IP_NETWORK = ipaddress.IPv4Network("10.0.0.0/8")

    def __init__(self) -> None:
        self._iccid_serial = 0
        self._imei_serial = 0
        self._mdn = self.MDN_START
        self._ip = 0

    def next_iccid(self) -> str:
        """A 20-digit ICCID: prefix + 13-digit serial + Luhn digit."""
        self._iccid_serial += 1
        body = f"{self.ICCID_PREFIX}{self._iccid_serial:013d}"
        return body + luhn_check_digit(body)

    def next_imei(self) -> str:
        """A 15-digit IMEI: TAC + 6-digit serial + Luhn digit."""
        self._imei_serial += 1
        body = f"{self.IMEI_TAC}{self._imei_serial % 1_000_000:06d}"
        return body + luhn_check_digit(body)

    def next_mdn(self) -> str:
        """A 10-digit mobile directory number."""
        self._mdn += 1
        return str(self._mdn)

    def next_ip(self) -> str:
        """A unique 10.x.y.z address, skipping .0 and .255 host parts."""
        while True:
            self._ip += 1
            address = self.IP_NETWORK.network_address + self._ip
            last = int(address) & 0xFF
            if last not in (0, 255):
                return str(address)
