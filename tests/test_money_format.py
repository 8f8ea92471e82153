"""The fast money formatter writes exactly what Babel writes, or hands the call to Babel."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from babel import Locale, localedata
from babel.numbers import format_currency

from service.enrichment.money_format import MoneyLayout, derive_layout, format_money

CURRENCIES = ("USD", "EUR", "JPY", "INR", "KWD", "CHF")


def sample_locales(count: int) -> list[str]:
    chosen = random.Random(7).sample(sorted(localedata.locale_identifiers()), count)
    return [*chosen, "en_US", "de_DE", "ja_JP", "fr_CA", "en_IN", "es_ES", "pl_PL", "ar_EG"]


@pytest.mark.parametrize("tag", sample_locales(60))
def test_same_text_as_babel(tag: str):
    locale = Locale.parse(tag)
    amounts = random.Random(tag)
    for currency in CURRENCIES:
        for _ in range(40):
            amount = Decimal(amounts.randint(0, 10 ** amounts.randint(1, 10))).scaleb(
                -amounts.randint(0, 4))
            assert format_money(amount, currency, locale) == format_currency(
                amount, currency, locale=locale), (tag, currency, amount)


def test_layouts_are_derived_for_common_locales():
    for tag in ("en_US", "de_DE", "ja_JP", "fr_CA", "en_IN"):
        assert isinstance(derive_layout("USD", Locale.parse(tag)), MoneyLayout), tag


def test_indian_grouping():
    assert format_money(Decimal("1234567.5"), "INR", Locale.parse("en_IN")) == "₹12,34,567.50"
