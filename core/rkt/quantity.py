"""Resource quantities as appc writes them (appc-spec/ace.md "Resource Isolators").

Kubernetes-style: ``"128974848"``, ``"125952Ki"``, ``"123Mi"``, ``"500m"`` (milli-units,
for CPU), ``"1.5"``, ``"1e3"``. Standard library only: the schema models and the
code that runs a pod (which never imports pydantic) share this parser.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_quantity"]


def _quote(value: object) -> str:
    """A value as it appears in JSON, for error messages (``"64Q"``, ``12``, ``null``)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Kubernetes-style quantities (ace.md "Resource Isolators"): a decimal number and an
# optional binary, metric or exponent suffix.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:[eE](?P<exponent>[+-]?[0-9]{1,6})|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|K|M|G|T|P|E))?\Z"
)
_MULTIPLIERS = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    # ace.md lists "K"; Kubernetes spells it "k". Both mean 1000.
    "K": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
# Quantities are int64 in the reference; the bound also keeps "1e999999999" from
# turning into a huge integer when a stage1 converts it.
_QUANTITY_MAX = Decimal(2) ** 63 - 1


def parse_quantity(value: object) -> Decimal:
    """Parse a resource quantity (``"250m"``, ``"1G"``, ``"125952Ki"``, ``2``) to a Decimal.

    Raises ValueError for anything else, for negative values and for values beyond int64.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{_quote(value)} is not a quantity (use a string such as \"512M\")")
    text = str(value) if not isinstance(value, str) else value.strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{_quote(value)} is not a quantity (such as \"250m\", \"1G\", \"1Gi\")")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        if match["exponent"] is not None:
            exponent = int(match["exponent"])
            if abs(exponent) > 100:
                raise ValueError(f"{_quote(value)} is out of range")
            result = number.scaleb(exponent)
        else:
            result = number * _MULTIPLIERS[suffix]
    except InvalidOperation as exc:
        raise ValueError(f"{_quote(value)} is not a quantity") from exc
    if result < 0:
        raise ValueError(f"{_quote(value)} must not be negative")
    if result > _QUANTITY_MAX:
        raise ValueError(f"{_quote(value)} is out of range")
    return result


