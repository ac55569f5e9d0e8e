"""Deterministic rows for the demo app, as chunks of COPY text.

Time is kept as integer microseconds since ``HISTORY_START`` (two years before
``ANCHOR``) and rendered as UTC text only when a row is written, so the output
depends on nothing but the seed and the scale: never on the clock, the time zone
or the server. Each table draws from its own random stream (seeded from the seed
and the table name), and ids are handed out in time order, as a live database
would.

What the data looks like:

* customers sign up at a growing rate; about a third never order, the rest have
  a Pareto-distributed propensity, so orders per customer are long-tailed;
* products have log-normal prices per category and Zipf-like popularity;
* orders go placed -> paid -> shipped -> delivered over hours and days, as of
  ``ANCHOR``; about 5% are cancelled before payment and 3% are returned;
  ``order_total`` is exactly the sum of ``quantity * unit_price`` of its items;
* payments: card and PayPal checkouts sometimes fail once or twice (``failed``
  rows) before one ``succeeded`` row for the full total; bank transfers stay
  ``pending`` until they settle (then the same row becomes ``succeeded``);
  a returned order keeps its ``succeeded`` payment and gets a second row with
  status ``refunded`` for the full amount (net paid = succeeded - refunded);
  a cancelled order has at most failed attempts, never a succeeded payment;
* events come in sessions of several events (mostly page views), about 30% of
  sessions anonymous, with jsonb properties such as device, referrer, query.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from demo_app.exceptions import InvalidOption
from demo_app.reference import (
    ADJECTIVES,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    HOUR_WEIGHTS,
    LAST_NAMES,
    PAYMENT_METHODS,
    REFERRERS,
    SEARCH_TERMS,
    WEEKDAY_WEIGHTS,
    slugify,
)

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
"""Every generated timestamp is before this instant."""
HISTORY_DAYS = 731
HISTORY_START = ANCHOR - timedelta(days=HISTORY_DAYS)

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
END = HISTORY_DAYS * DAY
"""``ANCHOR`` in microseconds since ``HISTORY_START``."""

NULL = "\\N"

COLUMNS: dict[str, tuple[str, ...]] = {
    "countries": ("country_code", "country_name", "region"),
    "products": (
        "product_id", "sku", "product_name", "category", "unit_price", "is_active",
        "created_at", "updated_at",
    ),
    "customers": (
        "customer_id", "email", "full_name", "country_code", "is_marketing_opt_in",
        "signed_up_at", "created_at", "updated_at",
    ),
    "orders": (
        "order_id", "customer_id", "status", "order_total", "shipping_country_code",
        "ordered_at", "created_at", "updated_at",
    ),
    "order_items": (
        "order_item_id", "order_id", "product_id", "quantity", "unit_price", "created_at",
        "updated_at",
    ),
    "payments": (
        "payment_id", "order_id", "payment_method", "status", "amount", "paid_at",
        "created_at", "updated_at",
    ),
    "events": (
        "event_id", "session_id", "customer_id", "event_type", "page_path", "properties",
        "occurred_at",
    ),
}  # fmt: skip
"""Columns each table is written with, in COPY order; tables in load order."""

_PRODUCT_HISTORY_DAYS = 400
_DAY_PREFIX = [
    (HISTORY_START + timedelta(days=day)).strftime("%Y-%m-%d ")
    for day in range(-_PRODUCT_HISTORY_DAYS, HISTORY_DAYS + 1)
]


_CLOCK = [f"{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)]


def timestamp(micros: int) -> str:
    """COPY text for a time given in microseconds since ``HISTORY_START``."""
    day, rest = divmod(micros, DAY)
    second, fraction = divmod(rest, SECOND)
    return f"{_DAY_PREFIX[day + _PRODUCT_HISTORY_DAYS]}{_CLOCK[second]}{fraction:06d}+00"


def money(cents: int) -> str:
    """Exact decimal text for an amount in cents."""
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class Sizes:
    """How many rows of each entity to make: linear in scale (products sub-linear)."""

    customers: int
    products: int
    orders: int
    events: int

    @classmethod
    def for_scale(cls, scale: float) -> Sizes:
        """Sizes for a scale factor; 1 is about 1,000 customers and 25,000 events.

        Raises:
            InvalidOption: the scale is not a positive finite number.
        """
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise InvalidOption("scale", scale, "a positive number such as 0.1, 1 or 200")
        if not math.isfinite(scale) or scale <= 0:
            raise InvalidOption("scale", scale, "a positive number such as 0.1, 1 or 200")
        return cls(
            customers=max(10, round(1_000 * scale)),
            products=max(20, round(200 * math.sqrt(scale))),
            orders=max(20, round(3_000 * scale)),
            events=max(100, round(25_000 * scale)),
        )


@dataclass
class OrderBatch:
    """COPY text for a run of consecutive orders with their items and payments."""

    orders: list[str] = field(default_factory=list)
    order_items: list[str] = field(default_factory=list)
    payments: list[str] = field(default_factory=list)


def spread(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into whole numbers proportional to ``weights``, summing exactly."""
    cumulative = list(accumulate(weights))
    whole = cumulative[-1]
    counts: list[int] = []
    previous = 0
    for running in cumulative:
        upto = round(total * running / whole) if whole else 0
        counts.append(upto - previous)
        previous = upto
    counts[-1] += total - previous
    return counts


def _day_factors() -> list[float]:
    """Weekly rhythm and a holiday peak, per day of the history."""
    factors = []
    for day in range(HISTORY_DAYS):
        date = HISTORY_START + timedelta(days=day)
        season = 1.35 if (date.month, date.day) >= (11, 20) and date.month == 11 else 1.0
        if date.month == 12 and date.day <= 22:
            season = 1.35
        factors.append(WEEKDAY_WEIGHTS[date.weekday()] * season)
    return factors


_DAY_FACTORS = _day_factors()
_HOUR_CUMULATIVE = list(accumulate(HOUR_WEIGHTS))
_HOUR_CUMULATIVE_EARLY = _HOUR_CUMULATIVE[:16]
_COUNTRY_CUMULATIVE = list(accumulate(weight for *_, weight in COUNTRIES))
_METHOD_CUMULATIVE = list(accumulate(weight for _, weight in PAYMENT_METHODS))
_REFERRER_CUMULATIVE = list(accumulate(weight for _, weight in REFERRERS))
_DEVICE_CUMULATIVE = list(accumulate(weight for _, weight, _ in DEVICES))
_FIRST = [(name, slugify(name)) for name in FIRST_NAMES]
_LAST = [(name, slugify(name)) for name in LAST_NAMES]

# Event types after the first event of a session.
_SIGNED_IN_TYPES = ("page_view", "search", "add_to_cart", "checkout_started")
_SIGNED_IN_CUMULATIVE = list(accumulate((66, 13, 14, 7)))
_ANONYMOUS_TYPES = ("page_view", "search", "add_to_cart", "checkout_started", "signup")
_ANONYMOUS_CUMULATIVE = list(accumulate((68, 14, 12, 4, 2)))


def _below(rng: random.Random, n: int) -> int:
    """A whole number in ``[0, n)``; faster than ``randrange`` and as repeatable."""
    return int(rng.random() * n)


def _between(rng: random.Random, low: int, high: int) -> int:
    """A whole number in ``[low, high)``."""
    return low + int(rng.random() * (high - low))


def _pick(rng: random.Random, cumulative: Sequence[float]) -> int:
    """Index drawn with the given cumulative weights."""
    return bisect_right(cumulative, rng.random() * cumulative[-1])


class Synthesizer:
    """Generates every table for one seed and scale.

    Tables must be generated in ``COLUMNS`` order (products and customers first:
    orders and events refer to them); each uses its own random stream, so the
    content of one table never depends on how another was consumed.
    """

    def __init__(self, *, seed: int, sizes: Sizes) -> None:
        self.seed = seed
        self.sizes = sizes
        self.counts: dict[str, int] = dict.fromkeys(COLUMNS, 0)
        # products
        self._price: list[int] = []
        self._product_path: list[str] = []
        self._category_path = [f"/category/{slug}" for slug, *_ in CATEGORIES.values()]
        self._popularity: list[float] = []
        # customers
        self._signup: list[int] = []
        self._country: list[str] = []
        self._buying: list[float] = []
        self._browsing: list[float] = []

    def _rng(self, table: str) -> random.Random:
        return random.Random(f"tidewater-demo:{self.seed}:{table}")

    def chunks(self, table: str) -> Iterator[str]:
        """COPY text for countries, products, customers or events (orders, order_items
        and payments come together from ``order_batches``)."""
        generators = {
            "countries": self._countries,
            "products": self._products,
            "customers": self._customers,
            "events": self._events,
        }
        return generators[table]()

    def _countries(self) -> Iterator[str]:
        self.counts["countries"] = len(COUNTRIES)
        yield "".join(f"{code}\t{name}\t{region}\n" for code, name, region, _ in COUNTRIES)

    def _products(self) -> Iterator[str]:
        rng = self._rng("products")
        categories = list(CATEGORIES.items())
        lines = []
        for product_id in range(1, self.sizes.products + 1):
            category, (_, prefix, median, nouns) = categories[_below(rng, len(categories))]
            name = f"{rng.choice(ADJECTIVES)} {rng.choice(nouns)}"
            price = min(250_000, max(99, round(rng.lognormvariate(math.log(median), 0.6))))
            if rng.random() < 0.7:
                price = max(99, price // 100 * 100 - 1)  # x.99
            created = -_between(rng, DAY, 365 * DAY)
            updated = created
            is_active = True
            change = rng.random()
            if change < 0.08:
                is_active = False
                updated = _below(rng, END)
            elif change < 0.3:
                updated = _below(rng, END)
            sku = f"{prefix}-{product_id:05d}"
            lines.append(
                f"{product_id}\t{sku}\t{name}\t{category}\t{money(price)}\t"
                f"{'t' if is_active else 'f'}\t{timestamp(created)}\t{timestamp(updated)}\n"
            )
            self._price.append(price)
            self._product_path.append(f"/products/{sku}")
        ranks = list(range(1, self.sizes.products + 1))
        rng.shuffle(ranks)
        self._popularity = list(accumulate(1.0 / rank**1.1 for rank in ranks))
        self.counts["products"] = len(lines)
        yield "".join(lines)

    def _time_of_day(self, rng: random.Random, day: int, *, early: bool = False) -> int:
        """A time on ``day`` at a typical hour; before 16:00 if ``early`` and it is the
        last day, so whatever follows still happens before ``ANCHOR``."""
        last = early and day == HISTORY_DAYS - 1
        hours = _HOUR_CUMULATIVE_EARLY if last else _HOUR_CUMULATIVE
        return day * DAY + _pick(rng, hours) * HOUR + _below(rng, HOUR)

    def _customers(self) -> Iterator[str]:
        rng = self._rng("customers")
        growth = [(0.5 + day / HISTORY_DAYS) * f for day, f in enumerate(_DAY_FACTORS)]
        customer_id = 0
        buying = browsing = 0.0
        for day, count in enumerate(spread(self.sizes.customers, growth)):
            lines = []
            for signed_up in sorted(self._time_of_day(rng, day) for _ in range(count)):
                customer_id += 1
                first, first_slug = rng.choice(_FIRST)
                last, last_slug = rng.choice(_LAST)
                country = COUNTRIES[_pick(rng, _COUNTRY_CUMULATIVE)][0]
                opt_in = "t" if rng.random() < 0.35 else "f"
                propensity = 0.0 if rng.random() < 0.35 else min(rng.paretovariate(1.2), 60.0)
                if customer_id == 1:
                    propensity = max(propensity, 1.0)  # somebody has to buy first
                updated = signed_up
                if rng.random() < 0.25:
                    updated += _below(rng, END - signed_up)
                domain = EMAIL_DOMAINS[_below(rng, len(EMAIL_DOMAINS))]
                email = f"{first_slug}.{last_slug}{customer_id}@{domain}"
                signed = timestamp(signed_up)
                lines.append(
                    f"{customer_id}\t{email}\t{first} {last}\t{country}\t{opt_in}\t"
                    f"{signed}\t{signed}\t{timestamp(updated)}\n"
                )
                buying += propensity
                browsing += propensity + 0.3
                self._signup.append(signed_up)
                self._country.append(country)
                self._buying.append(buying)
                self._browsing.append(browsing)
            self.counts["customers"] += count
            if lines:
                yield "".join(lines)

    def order_batches(self, *, batch_orders: int = 20_000) -> Iterator[OrderBatch]:
        """Orders with their items and payments, in batches of about ``batch_orders``."""
        rng = self._rng("orders")
        # Orders per day follow the customers signed up by then (and the weekly rhythm).
        signed_up_by_day = [
            bisect_left(self._signup, (day + 1) * DAY) for day in range(HISTORY_DAYS)
        ]
        weights = [n * f for n, f in zip(signed_up_by_day, _DAY_FACTORS, strict=True)]
        ids = {"order": 0, "item": 0, "payment": 0}
        batch = OrderBatch()
        for day, count in enumerate(spread(self.sizes.orders, weights)):
            placed = []
            for _ in range(count):
                ordered_at = self._time_of_day(rng, day)
                known = bisect_left(self._signup, ordered_at)
                if known == 0:  # before the first sign-up: the first customer, an hour in
                    customer = 0
                    ordered_at = min(END - 1, max(ordered_at, self._signup[0] + HOUR))
                else:
                    customer = bisect_right(
                        self._buying, rng.random() * self._buying[known - 1], 0, known
                    )
                placed.append((ordered_at, customer))
            placed.sort()
            for ordered_at, customer in placed:
                self._order(rng, batch, ids, ordered_at, customer)
            if len(batch.orders) >= batch_orders:
                yield batch
                batch = OrderBatch()
        if batch.orders:
            yield batch
        self.counts["orders"] = ids["order"]

    def _order(
        self,
        rng: random.Random,
        batch: OrderBatch,
        ids: dict[str, int],
        ordered_at: int,
        customer: int,
    ) -> None:
        ids["order"] += 1
        order_id = ids["order"]
        placed = timestamp(ordered_at)
        # items
        chosen: set[int] = set()
        lines = 1
        while lines < 12 and rng.random() < 0.66:
            lines += 1
        total = 0
        for _ in range(lines):
            product = _pick(rng, self._popularity)
            if product in chosen:
                continue
            chosen.add(product)
            roll = rng.random()
            quantity = 1 if roll < 0.8 else 2 if roll < 0.93 else rng.randint(3, 5)
            price = self._price[product]
            if rng.random() < 0.1:
                price = price * 85 // 100
            total += quantity * price
            ids["item"] += 1
            batch.order_items.append(
                f"{ids['item']}\t{order_id}\t{product + 1}\t{quantity}\t{money(price)}\t"
                f"{placed}\t{placed}\n"
            )
        self.counts["order_items"] += len(chosen)
        amount = money(total)
        # lifecycle as of the anchor
        method = PAYMENT_METHODS[_pick(rng, _METHOD_CUMULATIVE)][0]
        payments: list[tuple[str, int, int, int | None]] = []  # status, created, updated, paid
        attempt_at = ordered_at + _between(rng, 20 * SECOND, 3 * MINUTE)
        roll = rng.random()
        failures = 0
        if method in ("card", "paypal"):
            failures = 2 if roll < 0.015 else 1 if roll < 0.085 else 0
        status, updated = "placed", ordered_at
        if rng.random() < 0.05:  # cancelled before anything was paid
            failures = 0 if roll < 0.6 else 1 + (roll > 0.9)
            for _ in range(failures):
                payments.append(("failed", attempt_at, attempt_at + 2 * SECOND, None))
                attempt_at += _between(rng, 30 * SECOND, 5 * MINUTE)
            cancelled_at = ordered_at + _between(rng, 10 * MINUTE, 2 * DAY)
            if cancelled_at < END:
                status, updated = "cancelled", cancelled_at
        else:
            for _ in range(failures):
                payments.append(("failed", attempt_at, attempt_at + 2 * SECOND, None))
                attempt_at += _between(rng, 30 * SECOND, 5 * MINUTE)
            if method == "bank_transfer":
                paid_at = attempt_at + _between(rng, 6 * HOUR, 5 * DAY)
            else:
                paid_at = attempt_at + _between(rng, SECOND, 4 * SECOND)
            shipped_at = paid_at + _between(rng, 4 * HOUR, 3 * DAY)
            delivered_at = shipped_at + _between(rng, DAY, 6 * DAY)
            returned_at = delivered_at + _between(rng, 2 * DAY, 30 * DAY)
            if paid_at < END:
                payments.append(("succeeded", attempt_at, paid_at, paid_at))
                status, updated = "paid", paid_at
            else:
                payments.append(("pending", attempt_at, attempt_at, None))
            if shipped_at < END:
                status, updated = "shipped", shipped_at
            if delivered_at < END:
                status, updated = "delivered", delivered_at
            if returned_at < END and rng.random() < 0.032:
                status, updated = "returned", returned_at
                payments.append(("refunded", returned_at, returned_at, returned_at))
        for payment_status, created, changed, paid in payments:
            if created >= END:
                continue
            ids["payment"] += 1
            batch.payments.append(
                f"{ids['payment']}\t{order_id}\t{method}\t{payment_status}\t{amount}\t"
                f"{NULL if paid is None else timestamp(paid)}\t{timestamp(created)}\t"
                f"{timestamp(min(changed, END - 1))}\n"
            )
            self.counts["payments"] += 1
        country = self._country[customer]
        if rng.random() < 0.04:
            country = COUNTRIES[_pick(rng, _COUNTRY_CUMULATIVE)][0]
        batch.orders.append(
            f"{order_id}\t{customer + 1}\t{status}\t{amount}\t{country}\t"
            f"{placed}\t{placed}\t{timestamp(updated)}\n"
        )

    def _events(self) -> Iterator[str]:
        rng = self._rng("events")
        base = 0.15 * self.sizes.customers
        weights = [
            (base + bisect_left(self._signup, (day + 1) * DAY)) * factor
            for day, factor in enumerate(_DAY_FACTORS)
        ]
        event_id = 0
        for day, quota in enumerate(spread(self.sizes.events, weights)):
            rows: list[tuple[int, str]] = []
            while len(rows) < quota:
                self._session(rng, day, rows, quota - len(rows))
            rows.sort()
            lines = []
            for occurred_at, rest in rows:
                event_id += 1
                lines.append(f"{event_id}\t{rest}\t{timestamp(occurred_at)}\n")
            self.counts["events"] += len(lines)
            if lines:
                yield "".join(lines)

    def _session(
        self, rng: random.Random, day: int, rows: list[tuple[int, str]], most: int
    ) -> None:
        """Append one session of up to ``most`` events starting on ``day``."""
        at = self._time_of_day(rng, day, early=True)
        bits = rng.getrandbits(128)
        bits = (bits & ~(0xF << 76)) | (4 << 76)  # version 4
        bits = (bits & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
        hexed = f"{bits:032x}"
        session = f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
        known = bisect_left(self._signup, at)
        customer = NULL
        if known and rng.random() >= 0.3:
            total = self._browsing[known - 1]
            customer = str(bisect_right(self._browsing, rng.random() * total, 0, known) + 1)
        device, _, browsers = DEVICES[_pick(rng, _DEVICE_CUMULATIVE)]
        browser = browsers[_below(rng, len(browsers))]
        referrer = REFERRERS[_pick(rng, _REFERRER_CUMULATIVE)][0]
        viewing = f'{{"device": "{device}", "browser": "{browser}"}}'
        prefix = f"{session}\t{customer}\t"
        signed_in = customer != NULL
        types, cumulative = (
            (_SIGNED_IN_TYPES, _SIGNED_IN_CUMULATIVE)
            if signed_in
            else (_ANONYMOUS_TYPES, _ANONYMOUS_CUMULATIVE)
        )
        length = min(most, 1 + min(int(-4.0 * math.log(1.0 - rng.random())), 39))
        cart_items = cart_value = 0
        for position in range(length):
            if position == 0:
                event_type = "login" if signed_in and rng.random() < 0.25 else "page_view"
            else:
                event_type = types[_pick(rng, cumulative)]
                at += 2 * SECOND + min(
                    int(-40.0 * SECOND * math.log(1.0 - rng.random())), 10 * MINUTE
                )
            if event_type == "page_view":
                roll = rng.random()
                if roll < 0.25:
                    path = "/"
                elif roll < 0.7:
                    path = self._product_path[_pick(rng, self._popularity)]
                elif roll < 0.88:
                    path = self._category_path[_below(rng, len(self._category_path))]
                elif roll < 0.95:
                    path = "/cart"
                else:
                    path = "/account" if signed_in else "/about"
                properties = (
                    f'{{"device": "{device}", "browser": "{browser}", "referrer": "{referrer}"}}'
                    if position == 0
                    else viewing
                )
            elif event_type == "search":
                path = "/search"
                term = SEARCH_TERMS[_below(rng, len(SEARCH_TERMS))]
                properties = f'{{"query": "{term}", "result_count": {_below(rng, 120)}}}'
            elif event_type == "add_to_cart":
                product = _pick(rng, self._popularity)
                path = self._product_path[product]
                quantity = 1 if rng.random() < 0.85 else 2
                cart_items += quantity
                cart_value += quantity * self._price[product]
                properties = (
                    f'{{"product_id": {product + 1}, "quantity": {quantity}, '
                    f'"unit_price": {money(self._price[product])}}}'
                )
            elif event_type == "checkout_started":
                path = "/checkout"
                properties = f'{{"cart_items": {cart_items}, "cart_value": {money(cart_value)}}}'
            elif event_type == "login":
                path = "/login"
                method = ("password", "google", "apple")[_pick(rng, (70, 92, 100))]
                properties = f'{{"method": "{method}", "referrer": "{referrer}"}}'
            else:  # signup
                path = "/signup"
                method = "email" if rng.random() < 0.7 else "google"
                properties = f'{{"method": "{method}"}}'
            rows.append((at, f"{prefix}{event_type}\t{path}\t{properties}"))
