"""Fast money formatting that writes exactly what Babel writes.

Babel's `format_currency` costs ~40 µs a call: on a cold transform (250 items, each a new price)
that alone is 10 ms. For each (currency, locale) this module reads the layout off Babel's own
output for one probe amount (prefix, suffix, group and decimal separators, group sizes), then
checks the derived formatter against Babel on a set of amounts (small and large, rounding cases);
only a formatter that agrees on all of them is used, otherwise every call goes to Babel. Amounts are
non-negative (items refuse negative prices), so only positive patterns matter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from babel import Locale
from babel.numbers import format_currency, get_currency_precision

INTEGER_PROBE = "1234567"
FRACTION_PROBE = "890123"
CHECK_AMOUNTS = tuple(Decimal(a) for a in (
    "0", "0.5", "5", "12.5", "99.99", "999.99", "1000", "1234.56", "9999.995", "12345.67",
    "123456.78", "1234567.89", "12345678.9", "2.345", "2.355", "0.001", "1000000",
))


@dataclass(frozen=True)
class MoneyLayout:
    """How one locale writes one currency: `prefix` 1,234 `decimal` 56 `suffix`."""

    prefix: str
    suffix: str
    group: str
    decimal: str
    primary: int  # the rightmost group's size
    secondary: int  # the size of every other group
    digits: int  # the currency's decimals

    def format(self, amount: Decimal) -> str:
        quantum = Decimal(1).scaleb(-self.digits)
        text = f"{amount.quantize(quantum, rounding=ROUND_HALF_EVEN):f}"
        whole, _, fraction = text.partition(".")
        groups = [whole[-self.primary:]] if len(whole) > self.primary else [whole]
        rest = whole[: -self.primary] if len(whole) > self.primary else ""
        while rest:
            groups.append(rest[-self.secondary:])
            rest = rest[: -self.secondary]
        number = self.group.join(reversed(groups))
        if self.digits:
            number += self.decimal + fraction
        return self.prefix + number + self.suffix


def derive_layout(currency: str, locale: Locale) -> MoneyLayout | None:
    """Read the layout off Babel's output, or None where it does not fit this simple shape."""
    digits = get_currency_precision(currency)
    probe = INTEGER_PROBE + ("." + FRACTION_PROBE[:digits] if digits else "")
    written = format_currency(Decimal(probe), currency, locale=locale)
    start = written.find(INTEGER_PROBE[0])
    last_digit = (FRACTION_PROBE[:digits] or INTEGER_PROBE)[-1]
    end = written.rfind(last_digit) + 1
    if start < 0 or end <= start:
        return None
    prefix, middle, suffix = written[:start], written[start:end], written[end:]
    separators = [(i, ch) for i, ch in enumerate(middle) if not ch.isdigit()]
    if "".join(ch for ch in middle if ch.isdigit()) != probe.replace(".", ""):
        return None  # other digits (a native numbering system): leave it to Babel
    decimal = ""
    if digits:
        if not separators:
            return None
        decimal = separators.pop()[1]
    group_chars = {ch for _, ch in separators}
    if len(group_chars) > 1:
        return None
    integer_part = middle[: len(middle) - (len(decimal) + digits if digits else 0)]
    sizes = [len(chunk) for chunk in integer_part.split(group_chars.pop())] if group_chars else []
    if len(sizes) >= 3:
        primary, secondary = sizes[-1], sizes[-2]
    elif sizes:
        primary = secondary = sizes[-1]
    else:
        primary = secondary = len(INTEGER_PROBE) + 1  # this locale does not group
    layout = MoneyLayout(prefix, suffix, "".join({ch for _, ch in separators}) or ",", decimal,
                         primary, secondary, digits)
    for amount in CHECK_AMOUNTS:
        if layout.format(amount) != format_currency(amount, currency, locale=locale):
            return None
    return layout


@functools.lru_cache(maxsize=1024)
def layout_for(currency: str, locale: Locale) -> MoneyLayout | None:
    return derive_layout(currency, locale)


def format_money(amount: Decimal, currency: str, locale: Locale) -> str:
    """Exactly `babel.numbers.format_currency(amount, currency, locale=locale)`, fast."""
    layout = layout_for(currency, locale)
    if layout is None:
        return format_currency(amount, currency, locale=locale)
    return layout.format(amount)
