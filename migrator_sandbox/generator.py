"""Deterministic, lazy generator of messy Segment profiles.

Profile ``i`` is a pure function of ``(seed, i)``: nothing is built up front, so a sandbox
of a million profiles starts instantly and two runs with the same seed see the same data.
The data is deliberately awkward (see docs/mapping.md): every trap the mapping has to get
right appears in a realistic share of profiles, and each profile carries a ``truth`` record
of what its standard fields are meant to be, so the oracle can be checked against intent.

With ``shared_identifier`` > 0, a share of profiles are *copies*: their user_id is another
profile's (its *original*), with an earlier, later or equal ``created_at``. Whether a
profile is a copy, and of which original, comes from a stream of its own, so the knob
changes nothing else in any profile.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import random
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from migrator_sandbox.settings import SandboxSettings

AUDIENCE_KEYS = frozenset({"high_value_users", "churn_risk_audience"})
COMPUTED_KEYS = frozenset({"purchase_count_30d", "lifetime_value"})

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_EPOCH_2018 = 1514764800  # 2018-01-01T00:00:00Z
_FIVE_YEARS = 5 * 365 * 86400

FIRST_NAMES = (
    "Zoë", "Łukasz", "José", "李", "Anna", "Mohammed", "Søren", "Chloé", "Björn", "Ana María",
    "Olivia", "Liam", "Émilie", "Yuki", "Fatima", "Oğuz", "Ådne", "Priya", "Jürgen", "Siobhán",
    "Kwame", "Дмитрий", "Νίκος", "Sam",
)  # fmt: skip
LAST_NAMES = (
    "Müller", "Kowalski", "García", "王", "O'Brien", "Nguyễn", "Smith", "Dubois", "Ivanova",
    "Þórsdóttir", "van der Berg", "Núñez", "Øvergaard", "Johnson", "Żółkiewski", "Schäfer",
    "田中", "Okafor",
)  # fmt: skip
EMOJI = ("🚀", "🌸", "✨", "🐙")
DOMAINS = ("example.com", "mail.example.org", "corp.example.net")
DESCRIPTIONS = (
    "VIP since 2019",
    "Prefers e-mail contact.\nDo not call before 10:00.",
    "Kundin aus München – bevorzugt Rechnung",
    "客户来自上海",
    "Loves 🍕 and 🎸",
    'Said "hi" at the booth',
)
STREETS = ("1 Market St", "ul. Długa 5", "Hauptstraße 12", "10 Downing Street", "Rua Augusta 9")
LINE2 = ("Apt 4B", "Suite 200", "piętro 3", "c/o Front desk")
CITIES = ("San Francisco", "Kraków", "München", "São Paulo", "東京", "Reykjavík")
STATES = ("CA", "Małopolskie", "Bayern", "SP", "NY")
COUNTRIES = ("US", "PL", "DE", "BR", "Japan", "Ísland")
_POSTALS = ("94103", "31-002", "80331", "01310-100", "10001", "02115")
_INVALID_BIRTHDATES: tuple[Any, ...] = (
    "1990-02-30",
    "17/05/1990",
    "1990-13-01",
    "not a date",
    19900517,
    "",
    "1990-05-17T25:00:00Z",
    "0000-01-01",
    "1990-5-17",
    "١٩٩٠-٠٥-١٧",  # Arabic-Indic digits: digits, but not ASCII ones
)
# Style tables: (label, share); each table's shares sum to 1.
_PHONE_STYLES = (
    ("absent", 0.35), ("text", 0.4), ("int", 0.15), ("float", 0.03), ("null", 0.04),
    ("blank", 0.03),
)  # fmt: skip
_DESCRIPTION_STYLES = (("absent", 0.7), ("text", 0.24), ("blank", 0.03), ("null", 0.03))
_BIRTHDATE_STYLES = (
    ("absent", 0.3), ("valid", 0.45), ("null_then_birthday", 0.03), ("invalid", 0.18),
    ("invalid_then_birthday", 0.02), ("null", 0.02),
)  # fmt: skip
_ADDRESS_STYLES = (
    ("absent", 0.35), ("nested", 0.3), ("flat", 0.2), ("mixed", 0.1), ("string", 0.05),
)  # fmt: skip
_METADATA_STYLES = (("absent", 0.45), ("dict", 0.45), ("string", 0.05), ("null", 0.05))
_STANDARD_ADDRESS_KEYS = ("line_1", "line_2", "city", "state", "postal_code", "country")
# How a copy's user_id entry is dated against its original's: "subsecond" is a fraction of
# a second away and sorts the other way as a string; "tie" is the same instant.
_SHARED_STYLES = (("earlier", 0.35), ("later", 0.35), ("subsecond", 0.1), ("tie", 0.2))
_PARTNER_TRIES = 64


@dataclass(frozen=True, slots=True)
class ProfileTruth:
    """What the generator meant the standard fields to be, independent of their encoding."""

    name: str | None
    email: str | None
    phone: str | None
    description: str | None
    birthdate: str | None
    address: dict[str, str] | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class GeneratedProfile:
    """One profile; shared by the cache, so callers must treat its containers as read-only."""

    index: int
    segment_id: str
    traits: dict[str, Any]
    external_ids: list[dict[str, Any]]
    metadata: dict[str, Any]
    truth: ProfileTruth
    long_tail: bool


def _base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars)).rjust(width, "0")[-width:]


def _iso(ts: float, millis: bool = True) -> str:
    # time.gmtime + f-string: several times faster than datetime.strftime, and long-tail
    # profiles format hundreds of these.
    y, mo, d, h, mi, s = time.gmtime(int(ts))[:6]
    moment = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    if not millis:
        return moment + "Z"
    return f"{moment}.{int((ts % 1) * 1000):03d}Z"


def _epoch(text: str) -> float:
    """Inverse of ``_iso`` (``YYYY-MM-DDTHH:MM:SS[.mmm]Z``)."""
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds + (int(text[20:23]) / 1000 if text[19] == "." else 0.0)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_text.lower() if c.isalnum()) or "user"


def _uuid(r: random.Random) -> str:
    """A version-4 UUID from ``r`` (uuid.UUID is slow for hundreds per profile)."""
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


class ProfileGenerator:
    """Builds profile ``i`` on demand; keeps a small LRU because traits and external ids of
    the same profile are requested back to back."""

    def __init__(self, settings: SandboxSettings, cache_size: int = 4096) -> None:
        self.settings = settings
        self.count = settings.profiles
        self._seed = settings.seed
        sources = random.Random(f"{self._seed}:sources")
        self._sources = tuple(_base62(sources.getrandbits(128), 22) for _ in range(3))
        self.profile = functools.lru_cache(maxsize=cache_size)(self.build)
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._identity_index: dict[tuple[str, str], str] | None = None
        self._copies_of: dict[int, list[int]] | None = None

    # -- identity -------------------------------------------------------------------------

    def segment_id_for(self, i: int) -> str:
        digest = hashlib.blake2b(f"{self._seed}:{i}".encode(), digest_size=20).digest()
        return "use_" + _base62(int.from_bytes(digest), 27)

    def segment_ids(self) -> list[str]:
        """All ids in list order (built once: one hash per profile, no profile data)."""
        if self._ids is None:
            self._ids = [self.segment_id_for(i) for i in range(self.count)]
            self._index = {sid: i for i, sid in enumerate(self._ids)}
            if len(self._index) != len(self._ids):  # 160-bit hashes: never, but never silently
                raise RuntimeError("segment_id collision")
        return self._ids

    def index_of(self, segment_id: str) -> int | None:
        self.segment_ids()
        assert self._index is not None
        return self._index.get(segment_id)

    def lookup(self, id_type: str, value: str) -> str | None:
        """Resolve ``type:value`` to a segment_id.

        Other types than segment_id need an index of every external id; it is built on the
        first such lookup (external ids never change, only traits have an overlay).
        A user_id shared by several profiles resolves to the first of them in list order.
        """
        if id_type == "segment_id":
            return value if self.index_of(value) is not None else None
        if self._identity_index is None:
            index: dict[tuple[str, str], str] = {}
            for i in range(self.count):
                profile = self.build(i)
                for entry in profile.external_ids:
                    index.setdefault((entry["type"], entry["id"]), profile.segment_id)
            self._identity_index = index
        return self._identity_index.get((id_type, value))

    def __iter__(self) -> Iterator[GeneratedProfile]:
        return (self.profile(i) for i in range(self.count))

    # -- shared identifiers ---------------------------------------------------------------

    def _rolls_copy(self, i: int) -> bool:
        share = self.settings.shared_identifier
        return share > 0 and random.Random(f"{self._seed}:shared:{i}").random() < share

    def _has_user(self, i: int) -> bool:
        """Profile ``i``'s own has-a-user_id roll, without building it (see ``build``)."""
        r = random.Random(f"{self._seed}:{i}")
        r.random()  # long_tail
        return r.random() >= self.settings.no_identifier

    def original_of(self, i: int) -> int | None:
        """The profile whose user_id profile ``i`` copies; None when ``i`` is not a copy.

        An original is never a copy itself and has a user_id of its own; several copies may
        share one original. A copy that finds no original (tiny sandboxes, share near 1)
        stays a profile of its own.
        """
        if not self._rolls_copy(i) or self.count < 2:
            return None
        rs = random.Random(f"{self._seed}:shared:{i}")
        rs.random()  # the roll above
        for _ in range(_PARTNER_TRIES):
            j = rs.randrange(self.count)
            if j != i and not self._rolls_copy(j) and self._has_user(j):
                return j
        return None

    def copies_of(self) -> dict[int, list[int]]:
        """original -> its copies (ascending), for every original; built once, lazily."""
        if self._copies_of is None:
            groups: dict[int, list[int]] = {}
            if self.settings.shared_identifier > 0:
                for i in range(self.count):
                    j = self.original_of(i)
                    if j is not None:
                        groups.setdefault(j, []).append(i)
            self._copies_of = groups
        return self._copies_of

    def shares_identifier(self, i: int) -> bool:
        """Whether profile ``i``'s user_id is also another profile's (copy or original)."""
        return self.original_of(i) is not None or i in self.copies_of()

    # -- profile --------------------------------------------------------------------------

    def build(self, i: int) -> GeneratedProfile:
        """Uncached construction; ``profile(i)`` is the cached entry point."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        r = random.Random(f"{self._seed}:{i}")
        long_tail = r.random() < self.settings.long_tail
        has_user = r.random() >= self.settings.no_identifier  # mirrored by _has_user
        first, last = r.choice(FIRST_NAMES), r.choice(LAST_NAMES)
        if r.random() < 0.03:
            first = f"{first} {r.choice(EMOJI)}"

        standard: list[tuple[str, Any]] = []
        name = _name_traits(r, first, last, standard)
        email = _email_traits(r, i, first, last, standard)
        phone = _phone_traits(r, standard)
        description = _description_traits(r, standard)
        birthdate = _birthdate_traits(r, standard)
        address = _address_traits(r, standard)
        _metadata_trait(r, standard, self.settings.loose_metadata)
        r.shuffle(standard)

        customs = _custom_traits(r)
        if long_tail:
            total = r.randint(201, 300)
            for k in range(max(0, total - len(customs) - len(standard))):
                customs.append((f"attr_{k:03d}", _filler_value(r, k)))
        traits = dict(customs)
        traits.update(standard)  # standard keys last: a first-page-only reader loses them

        base = _EPOCH_2018 + r.randrange(_FIVE_YEARS) + r.random()
        external_ids, user_id = self._external_ids(r, i, base, long_tail, has_user, email, first)
        original = self.original_of(i) if self.settings.shared_identifier > 0 else None
        if original is not None:
            user_id = self._copy_user_id(i, original, external_ids, long_tail)
        created = [e["created_at"] for e in external_ids]
        metadata = {
            "created_at": min(created),
            "updated_at": max(created),
            "expires_at": None,
            "first_message_id": _uuid(r),
            "last_message_id": _uuid(r),
        }
        truth = ProfileTruth(name, email, phone, description, birthdate, address, user_id)
        return GeneratedProfile(
            i, self.segment_id_for(i), traits, external_ids, metadata, truth, long_tail
        )

    def _external_ids(
        self,
        r: random.Random,
        i: int,
        base: float,
        long_tail: bool,
        has_user: bool,
        email: str | None,
        first: str,
    ) -> tuple[list[dict[str, Any]], str | None]:
        source = r.choice(self._sources)

        def entry(kind: str, value: str, created_at: str) -> dict[str, Any]:
            return {
                "type": kind,
                "id": value,
                "source_id": source,
                "collection": "users",
                "created_at": created_at,
                "encoding": "none",
            }

        others = []
        for _ in range(r.randint(101, 250) if long_tail else r.randint(1, 5)):
            others.append(entry("anonymous_id", _uuid(r), _iso(base - r.randrange(86400 * 300))))
        if email is not None and r.random() < 0.35:
            others.append(entry("email", email, _iso(base + r.randrange(86400))))
        if r.random() < 0.15:
            ga = f"GA1.2.{r.randrange(10**9)}.{r.randrange(10**9)}"
            others.append(entry("ga_client_id", ga, _iso(base + r.randrange(86400))))
        r.shuffle(others)

        users: list[dict[str, Any]] = []
        user_id = None
        if has_user:
            user_id = _user_id_value(r, i, first)
            created = _iso(base + r.randrange(3600), millis=r.random() < 0.7)
            users.append(entry("user_id", user_id, created))
            if r.random() < 0.01:
                user_id = self._second_user_id(r, i, base, user_id, users, entry)
        # Long tail: user_id only on a later page. Users keep their relative order.
        position = min(100 if long_tail else 0, len(others))
        for user in users:
            position = r.randint(position, len(others))
            others.insert(position, user)
            position += 1
        return others, user_id

    def _copy_user_id(
        self, i: int, original: int, external_ids: list[dict[str, Any]], long_tail: bool
    ) -> str:
        """Replace profile ``i``'s user_id entries by one holding its original's chosen
        user_id, dated against the original's entry; returns that user_id."""
        source = self.profile(original)
        shared = source.truth.user_id
        assert shared is not None  # originals have a user_id
        anchor = next(
            e for e in source.external_ids if e["type"] == "user_id" and e["id"] == shared
        )
        rs = random.Random(f"{self._seed}:shared-entry:{i}")
        at, text = _epoch(anchor["created_at"]), anchor["created_at"]
        style = _pick(rs, _SHARED_STYLES)
        if style == "earlier":
            created = _iso(at - rs.randrange(1, 86400 * 30), millis=rs.random() < 0.7)
        elif style == "later":
            created = _iso(at + rs.randrange(1, 86400 * 30), millis=rs.random() < 0.7)
        elif style == "subsecond":
            if text.endswith(".000Z") or "." not in text:  # whole second: "…:05.500Z" is later
                created = _iso(int(at) + 0.5)
            else:  # "…:05Z" is earlier than "…:05.250Z"
                created = _iso(int(at), millis=False)
        elif "." not in text and rs.random() < 0.5:
            created = text[:-1] + ".000Z"  # the same instant, written with milliseconds
        else:
            created = text
        positions = [n for n, e in enumerate(external_ids) if e["type"] == "user_id"]
        for n in reversed(positions):
            del external_ids[n]
        if positions:
            position = positions[0]
        else:  # a copy always has a user_id, even if it would have had none
            low = min(100 if long_tail else 0, len(external_ids))
            position = rs.randint(low, len(external_ids))
        entry = {
            "type": "user_id",
            "id": shared,
            "source_id": external_ids[0]["source_id"],  # anonymous ids: never none
            "collection": "users",
            "created_at": created,
            "encoding": "none",
        }
        external_ids.insert(position, entry)
        return shared

    @staticmethod
    def _second_user_id(
        r: random.Random,
        i: int,
        base: float,
        primary: str,
        users: list[dict[str, Any]],
        entry: Callable[[str, str, str], dict[str, Any]],
    ) -> str:
        """A profile merged from two accounts; returns which user_id is the earliest."""
        legacy = f"legacy-{i}"
        case = r.randrange(3)
        second_at = int(base) + 7200
        if case == 0:  # legacy account is older although it is listed after the primary
            users[0]["created_at"] = _iso(second_at, millis=False)
            users.append(entry("user_id", legacy, _iso(second_at - 86400 * 30)))
            return legacy
        if case == 1:  # "…:00Z" < "…:00.500Z" as instants, but not as strings
            users[0]["created_at"] = _iso(second_at, millis=False)
            users.append(entry("user_id", legacy, _iso(second_at + 0.5)))
            return primary
        created = _iso(second_at, millis=False)  # a tie: the smallest id wins
        users[0]["created_at"] = created
        users.append(entry("user_id", legacy, created))
        return min(primary, legacy)


# -- standard traits: each appends its encoding to ``out`` and returns the intended value ---


def _pick(r: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    roll, acc = r.random(), 0.0
    for label, weight in weighted:
        acc += weight
        if roll < acc:
            return label
    return weighted[-1][0]


_NAME_STYLES = (
    ("full", 0.28), ("camel", 0.18), ("snake", 0.18), ("mixed", 0.05), ("first_only", 0.08),
    ("last_only", 0.02), ("blank_full", 0.05), ("both", 0.04), ("numeric", 0.01), ("none", 0.11),
)  # fmt: skip


def _name_traits(r: random.Random, first: str, last: str, out: list) -> str | None:
    style = _pick(r, _NAME_STYLES)
    if style == "full":
        name = r.choice((f"{first} {last}", f"{first} {last}", first, f"{first} {last} "))
        out.append(("name", name))
        return name
    if style == "numeric":
        number = r.randrange(1000, 99999)
        out.append(("name", number))
        return str(number)
    if style == "none":
        return None
    if style == "first_only":
        out.append((r.choice(("firstName", "first_name")), first))
        return first
    if style == "last_only":
        out.append((r.choice(("lastName", "last_name")), last))
        return last
    if style == "both":
        out.append(("name", f"{first} {last[0]}."))
        out.extend([("firstName", first), ("lastName", last)])
        return f"{first} {last[0]}."
    first_key, last_key = {
        "camel": ("firstName", "lastName"),
        "snake": ("first_name", "last_name"),
        "mixed": ("firstName", "last_name"),
        "blank_full": ("firstName", "lastName"),
    }[style]
    if style == "blank_full":
        out.append(("name", r.choice(("", "   ", None))))
    intended = f"{first} {last}"
    if style in ("camel", "snake") and r.random() < 0.1:
        last_value = r.choice(("", None, False))  # a last name with no value
        intended = first
    else:
        last_value = last
    out.extend([(first_key, first), (last_key, last_value)])
    return intended


_EMAIL_STYLES = (
    ("plain", 0.6), ("plus", 0.1), ("upper", 0.05), ("unicode", 0.03), ("absent", 0.15),
    ("blank", 0.04), ("null", 0.03),
)  # fmt: skip


def _email_traits(r: random.Random, i: int, first: str, last: str, out: list) -> str | None:
    style = _pick(r, _EMAIL_STYLES)
    local = f"{_slug(first)}.{_slug(last)}"
    domain = r.choice(DOMAINS)
    if style == "absent":
        return None
    if style in ("blank", "null"):
        out.append(("email", None if style == "null" else r.choice(("", " "))))
        return None
    email = {
        "plain": f"{local}{i}@{domain}",
        "plus": f"{local}+promo{i}@{domain}",
        "upper": f"{local.title()}{i}@{domain.upper()}",
        "unicode": f"{first.split()[0].lower()}{i}@exämple.de",
    }[style]
    out.append(("email", email))
    return email


def _phone_traits(r: random.Random, out: list) -> str | None:
    style = _pick(r, _PHONE_STYLES)
    number = 14155550000 + r.randrange(10000)
    if style == "absent":
        return None
    if style in ("null", "blank"):
        out.append(("phone", None if style == "null" else ""))
        return None
    if style == "int":
        out.append(("phone", number))
        return str(number)
    if style == "float":
        out.append(("phone", float(number)))
        return str(number)
    digits = str(number)
    text = r.choice((
        f"+1 {digits[1:4]} {digits[4:7]} {digits[7:]}",
        f"({digits[1:4]}) {digits[4:7]}-{digits[7:]}",
        f"+48 600 {digits[5:8]} {digits[8:]}",
        f"+{digits}",
    ))  # fmt: skip
    out.append(("phone", text))
    return text


def _description_traits(r: random.Random, out: list) -> str | None:
    style = _pick(r, _DESCRIPTION_STYLES)
    if style == "absent":
        return None
    if style == "text":
        text = r.choice(DESCRIPTIONS)
        out.append(("description", text))
        return text
    out.append(("description", None if style == "null" else " \t "))
    return None


def _birthdate_traits(r: random.Random, out: list) -> str | None:
    style = _pick(r, _BIRTHDATE_STYLES)
    year, month = r.randint(1940, 2008), r.randint(1, 12)
    day = r.randint(1, calendar.monthrange(year, month)[1])
    date = f"{year:04d}-{month:02d}-{day:02d}"
    written = r.choice((
        date, date, f"{date}T00:00:00Z", f"{date}T10:20:30.123+02:00", f"{date} 10:20",
        f"{date}T23:59:59-0500", f"{date}T08:15:00.5Z",
    ))  # fmt: skip
    if style == "absent":
        return None
    if style == "valid":
        out.append((r.choice(("birthdate", "birthdate", "birthday")), written))
        return date
    if style == "null_then_birthday":  # a null birthdate does not hide birthday
        out.extend([("birthdate", None), ("birthday", written)])
        return date
    if style == "invalid_then_birthday":  # a present, invalid birthdate does
        out.extend([("birthdate", r.choice(_INVALID_BIRTHDATES)), ("birthday", written)])
        return None
    if style == "null":
        out.append(("birthdate", None))
        return None
    out.append((r.choice(("birthdate", "birthday")), r.choice(_INVALID_BIRTHDATES)))
    return None


_ADDRESS_KEY_SHARE = {
    "line_1": 0.85, "line_2": 0.3, "city": 0.9, "state": 0.6, "postal_code": 0.8, "country": 0.85,
}  # fmt: skip


def _address_traits(r: random.Random, out: list) -> dict[str, str] | None:
    style = _pick(r, _ADDRESS_STYLES)
    if style == "absent":
        return None
    intended: dict[str, str] = {}
    nested: dict[str, Any] = {}
    flat: list[tuple[str, Any]] = []
    for key in _STANDARD_ADDRESS_KEYS:
        if r.random() >= _ADDRESS_KEY_SHARE[key]:
            if style in ("nested", "mixed") and r.random() < 0.1:
                nested[_alias(r, key)] = None  # an explicit null: no value, no key
            continue
        text, raw = _address_value(r, key)
        intended[key] = text
        alias = _alias(r, key)
        in_nested = style == "nested" or (style == "mixed" and r.random() < 0.5)
        if in_nested:
            nested[alias] = raw
            if style == "mixed" and r.random() < 0.3:  # same alias at trait level loses
                flat.append((alias, _address_value(r, key)[1]))
        else:
            flat.append((alias, raw))
            if style == "mixed" and r.random() < 0.3:  # a valueless nested key defers
                nested[alias] = r.choice((None, "", "  "))
    if style == "string":
        out.append(("address", f"{r.choice(STREETS)}, {r.choice(CITIES)}"))
    elif nested or style == "nested":
        out.append(("address", nested))
    out.extend(flat)
    return intended or None


def _alias(r: random.Random, key: str) -> str:
    if key == "line_1":
        return r.choice(("street", "street", "line_1"))
    if key == "postal_code":
        return r.choice(("postalCode", "postal_code"))
    return key


def _address_value(r: random.Random, key: str) -> tuple[str, Any]:
    if key == "postal_code":
        text = r.choice(_POSTALS)
        if text.isdigit() and text[0] != "0" and r.random() < 0.4:
            return text, int(text)  # a number as postal code
        return text, text
    pool = {"line_1": STREETS, "line_2": LINE2, "city": CITIES, "state": STATES,
            "country": COUNTRIES}[key]  # fmt: skip
    text = r.choice(pool)
    return text, text


def _metadata_trait(r: random.Random, out: list, loose: bool = False) -> None:
    style = _pick(r, _METADATA_STYLES)
    if style == "absent":
        return
    if style != "dict":
        out.append(("metadata", "legacy-import" if style == "string" else None))
        return
    meta: dict[str, Any] = {
        "loyalty_tier": r.choice(("bronze", "silver", "gold", "złoty")),
        "points": r.randrange(5000),
        "opt_in": r.random() < 0.5,
    }
    if r.random() < 0.5:
        meta["nested"] = {"a": None, "b": [1, None, 2], "c": {"d": None}, "e": "ë"}
    if r.random() < 0.4:
        meta["nullable"] = None
    if r.random() < 0.2:
        meta["empty"] = {}
        meta["list_of_nulls"] = [None]
    if loose:
        _loosen(r, meta)
    out.append(("metadata", meta))


def _loosen(r: random.Random, meta: dict[str, Any]) -> None:
    """Type the metadata as loosely as Segment traits often are: every value still fits
    `metadata_rules.TYPED_SCHEMA` after a lossless conversion, none before it."""
    if r.random() < 0.6:
        meta["points"] = str(meta["points"])  # "34" for a number
    if r.random() < 0.6:
        meta["opt_in"] = "true" if meta["opt_in"] else "false"
    moment = _EPOCH_2018 + r.randrange(_FIVE_YEARS)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    meta["signup_date"] = r.choice((stamp + "Z", stamp + ".250+02:00", stamp[:10]))
    meta["last_seen_at"] = r.choice((stamp, stamp.replace("T", " "), stamp + "Z", stamp + "-05:00"))
    interests = r.sample(("running", "books", "coffee", "travel", "kawa ☕"), r.randint(1, 3))
    meta["interests"] = interests[0] if r.random() < 0.5 else interests
    store = r.randrange(1000, 10000)
    meta["store_id"] = store if r.random() < 0.5 else str(store)
    meta["retired_key"] = "anything"  # its definition is deleted: not checked


# -- custom traits --------------------------------------------------------------------------

_CUSTOMS: tuple[tuple[str, Callable[[random.Random], Any]], ...] = (
    ("plan", lambda r: r.choice(("free", "pro", "enterprise"))),
    ("ltv", lambda r: round(r.uniform(0, 5000), 2)),
    ("orders_count", lambda r: r.randrange(200)),
    ("is_vip", lambda r: r.random() < 0.2),
    ("last_seen_at", lambda r: _iso(_EPOCH_2018 + r.randrange(_FIVE_YEARS))),
    ("favorite_colors", lambda r: r.sample(["red", "zielony", "青", "blue"], r.randint(0, 3))),
    ("preferences", lambda r: _preferences(r)),
    ("referrer", lambda r: None),
    ("Größe", lambda r: r.randint(36, 48)),
    ("クラス", lambda r: r.choice(("A", "B"))),
    ("emoji_🎉", lambda r: True),
    ("tags", lambda r: []),
    ("attrs", lambda r: {}),
    ("mixed_list", lambda r: [1, "two", None, {"three": 3.0}]),
    ("ratio", lambda r: 0.1 + 0.2),
    ("big_number", lambda r: 2**53 + r.randrange(100)),
    ("createdAt", lambda r: _iso(_EPOCH_2018 + r.randrange(_FIVE_YEARS))),
    ("high_value_users", lambda r: r.random() < 0.3),
    ("churn_risk_audience", lambda r: r.random() < 0.1),
    ("purchase_count_30d", lambda r: r.randrange(20)),
    ("lifetime_value", lambda r: round(r.uniform(0, 900), 1)),
    ("utm_source", lambda r: r.choice(("google", "newsletter", None))),
)


def _preferences(r: random.Random) -> dict[str, Any]:
    locale = r.choice(("pl-PL", "en-US", "ja-JP"))
    return {"newsletter": r.random() < 0.5, "channels": ["email", "sms"], "locale": locale,
            "quiet_hours": None}  # fmt: skip


def _custom_traits(r: random.Random) -> list[tuple[str, Any]]:
    chosen = r.sample(_CUSTOMS, r.randint(3, 12))
    return [(key, make(r)) for key, make in chosen]


def _filler_value(r: random.Random, k: int) -> Any:
    kind = k % 6
    if kind == 0:
        return r.randrange(10**6)
    if kind == 1:
        return round(r.random() * 100, 3)
    if kind == 2:
        return r.random() < 0.5
    if kind == 3:
        return f"value-{r.randrange(10**4)}-ü"
    if kind == 4:
        return None
    return {"k": k, "list": [k, None]}


def _user_id_value(r: random.Random, i: int, first: str) -> str:
    kind = r.randrange(4)
    if kind == 0:
        return str(1_000_000 + i)
    if kind == 1:
        return f"usr_{r.getrandbits(48):012x}{i:x}"
    if kind == 2:
        return _uuid(r)
    return f"{_slug(first)}+{i}@example.com"  # needs percent-encoding in a path
