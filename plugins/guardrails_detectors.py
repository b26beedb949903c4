"""The guardrails plugin's built-in detectors: deterministic, offline, one class per family.

Each is registered as an entry point in the ``hookgate.detectors`` group, exactly like a third
party's, and follows :class:`hookgate.detectors.Detector`. Entry point: kinds (how a candidate
is checked):

- ``email``: ``EMAIL`` (RFC 5321 lengths, a top-level label of letters)
- ``phone``: ``PHONE`` (``phonenumbers``: valid in its region's numbering plan)
- ``payment_card``: ``PAYMENT_CARD`` (issuer prefix and length, Luhn)
- ``iban``: ``IBAN`` (the country's registered format, ISO 7064 mod 97)
- ``ip_address``: ``IP_ADDRESS`` (the standard library's ``ipaddress``)
- ``national_id``: ``US_SSN``, ``UK_NINO``, ``ES_NIF``, ``IT_FISCAL_CODE``, ``FR_NIR``
  (published ranges and check characters, ``python-stdnum``)
- ``credentials``: ``API_KEY``, ``PRIVATE_KEY``, ``JWT``, ``PASSWORD`` (provider key formats, PEM
  blocks, a JWT header that decodes, URL userinfo)
- ``custom_patterns``: the kinds an operator configures (RE2 patterns)

Why no presidio-analyzer: its pattern recognizers are regular expressions plus the same
checksums, but the package pulls in spaCy (a 393 MB virtualenv with numpy and thinc, 1.6 s to
import its recognizers on this machine), its e-mail recognizer asks ``tldextract``, which tries
to download the public-suffix list at run time, and on a probe sentence its phone recognizer
reported a US SSN as a phone number and its IP recognizer a version string. The checks that carry
the precision are taken from narrower libraries: ``phonenumbers`` (Google's numbering-plan
metadata) for phones and ``python-stdnum`` for the IBAN registry and national ids.

Identifiers that only *look* like personal data are the main source of false positives: an order
number that happens to pass Luhn, a version string that is a valid IPv4 address. Card and phone
numbers that directly follow an identifier label (``order #``, ``invoice no.``, ``tracking``,
``SKU``…) are therefore not reported, and dotted quads after a version word (``version``, ``v``,
``build``, ``==``…) are not reported as IP addresses.

Every pattern has bounded repetitions, so a scan is linear in the text even on adversarial input
(a 100 KB run of base64 is not re-read from every position). The costliest detector is ``phone``:
libphonenumber parses every digit run, once per configured region (on 100 KB of dense digit
groups about 1.5 s per region on this machine), so list only the regions your users write in.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

import phonenumbers
import re2
from pydantic import BaseModel, ConfigDict, Field, field_validator
from stdnum import iban as stdnum_iban
from stdnum.es import dni as stdnum_dni, nie as stdnum_nie
from stdnum.fr import nir as stdnum_nir
from stdnum.it import codicefiscale as stdnum_codicefiscale
from stdnum.us import ssn as stdnum_ssn

from hookgate.detectors import KIND_PATTERN, Finding

__all__ = [
    "EmailDetector",
    "PhoneDetector",
    "PaymentCardDetector",
    "IbanDetector",
    "IpAddressDetector",
    "NationalIdDetector",
    "CredentialsDetector",
    "CustomPatternDetector",
    "CustomPattern",
    "follows_identifier_label",
]


class DetectorOptions(BaseModel):
    """Base of the built-in detectors' option models: unknown options are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- context shared by the numeric detectors ---------------------------------------------------

_ID_SUFFIX = r"(?:no\.?|nr\.?|num(?:ber)?\.?|#|id|code)"
IDENTIFIER_LABEL = re.compile(
    # Words that name a record by themselves ("order 123…"), then nouns that do only with a
    # suffix ("customer no. 123…", not "call customer +1 415…").
    r"(?i)(?:\b(?:order|invoice|inv|tracking|shipment|parcel|ticket|ref|reference|sku|serial|s/n|po|confirmation"
    r"|booking|transaction|txn|receipt|batch|lot|id|upc|ean|gtin|isbn|zip|postcode|postal\s+code|ein|tin)"
    rf"\s*{_ID_SUFFIX}?"
    r"|\b(?:case|part|model|item|product|article|request|customer|account|user|member|build|tax|vat|order)"
    rf"\s*{_ID_SUFFIX})"
    r"(?:\s+(?:is|was))?\s*[:#=]?\s*#?\s*\Z"
)
"""A label that says the number after it is an identifier (``Order #``, ``invoice no.``)."""


def follows_identifier_label(text: str, start: int) -> bool:
    """Whether the value at ``start`` directly follows a label such as ``order #`` or ``SKU:``.

    Such a number is someone's record id, not a card or a phone, even when it passes a checksum
    (one random 16-digit number in ten passes Luhn).
    """
    return IDENTIFIER_LABEL.search(text, max(0, start - 40), start) is not None


VERSION_CONTEXT = re.compile(
    r"(?i)(?:\b(?:version|versions|ver|release|rel|build|rev|revision|rv|firmware|fw|driver|patch|update|kernel"
    r"|section|sect|chapter|clause|paragraph|para|figure|fig|table|step|rule|article|art|item|oid|isbn)\.?\s*[:#]?\s*"
    r"|(?:==|>=|<=|~=|!=|\^|@)\s*|[A-Za-z][\w+]*[-/_]v?|§\s*)\Z"
)
"""What makes a dotted number a version, a section number or a package pin, not an address or a phone."""


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


# --- e-mail --------------------------------------------------------------------------------------

_LOCAL = r"[\w!#$%&'*+/=?^`{|}~-]"
EMAIL = re.compile(  # the first character is not a "/": "ssh://git@host" is a URL, not an address
    rf"(?<![\w!#$%&'*+/=?^`{{|}}~.-])(?!/){_LOCAL}{{1,64}}(?:\.{_LOCAL}{{1,64}}){{0,8}}"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}([^\W\d_]{2,63})(?![\w-])"
)
FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp bmp ico tif tiff css js mjs ts tsx jsx json txt yaml yml toml lock html htm".split()
)
"""'TLDs' that are file names (``icon@2x.png``, ``logo@3x.webp``): retina assets, not addresses."""
URL_USERINFO_BEFORE = re.compile(r"://(?:[^\s/@]{0,256}:)?\Z")
SCP_PATH_AFTER = re.compile(r":[\w~.-]{0,100}/")
"""``git@github.com:org/repo.git``: a remote's user and host, not an address."""


class EmailDetector:
    """E-mail addresses (``EMAIL``), internationalised local parts and domains included.

    Not reported: ``name@host`` without a dot (``root@localhost``), a numeric top-level label
    (``pkg@1.2.3``), file names (``icon@2x.png``), a URL's userinfo (``ftp://anonymous@host``,
    ``https://user:password@host``: the ``credentials`` detector reports that password) and git
    remotes (``git@github.com:org/repo.git``).
    """

    name = "email"
    kinds = frozenset({"EMAIL"})

    def detect(self, text: str) -> list[Finding]:
        if "@" not in text:
            return []
        findings = []
        for match in EMAIL.finditer(text):
            if match.group(1).lower() in FILE_EXTENSIONS:
                continue
            if URL_USERINFO_BEFORE.search(text, max(0, match.start() - 300), match.start()):
                continue
            if SCP_PATH_AFTER.match(text, match.end()):
                continue
            findings.append(Finding("EMAIL", match.start(), match.end(), self.name, 0.95))
        return findings


# --- phone numbers -------------------------------------------------------------------------------


class PhoneOptions(DetectorOptions):
    regions: tuple[str, ...] = Field(
        ("US",),
        min_length=1,
        max_length=16,
        description="ISO 3166 regions whose national formats are recognised (numbers written with + and a "
        "country code are found whatever the regions); each region costs one pass over the text",
    )
    leniency: Literal["valid", "possible"] = Field(
        "valid",
        description="valid: the number exists in its region's numbering plan; possible: only its length fits "
        "(finds made-up numbers too, at the price of more false positives)",
    )

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [region for region in regions if region.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown regions: {', '.join(unknown[:5])}")
        return tuple(dict.fromkeys(region.upper() for region in regions))


class PhoneDetector:
    """Phone numbers (``PHONE``) with Google's libphonenumber metadata (``phonenumbers``).

    International numbers (``+44 20 7946 0958``) are found in any region; national ones
    (``(415) 555-2671``, ``030 1234567``) in the configured ``regions``. ``valid`` leniency keeps
    only numbers that exist in the numbering plan, which is what keeps dates, prices and random
    digit runs out; numbers right after an identifier label are skipped.
    """

    name = "phone"
    kinds = frozenset({"PHONE"})
    Config = PhoneOptions

    def __init__(self, config: PhoneOptions | None = None) -> None:
        self.config = config or PhoneOptions()
        self._leniency = (
            phonenumbers.Leniency.VALID if self.config.leniency == "valid" else phonenumbers.Leniency.POSSIBLE
        )

    def detect(self, text: str) -> list[Finding]:
        if not any(ch.isdigit() for ch in text):
            return []
        spans: dict[int, int] = {}
        for region in self.config.regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=self._leniency):
                if match.start in spans or follows_identifier_label(text, match.start):
                    continue
                if not_a_phone(text, match.start, match.end):
                    continue
                spans[match.start] = match.end
        return [Finding("PHONE", start, end, self.name, 0.85) for start, end in spans.items()]


NOT_PHONE_SHAPES = re.compile(
    r"\d{1,4}([./-])\d{1,2}\1\d{1,4}"  # a date (15.01.2024, 2024-01-15), or an SSN's 3-2-4
    r"|\d+[.,]\d+"  # a decimal (12345678.90, 48.8566)
    r"|\d{12,}"  # a barcode or record id: national numbers are written with separators or a +
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # an IPv4 address
)
DATE_INSIDE = re.compile(r"\d{4}-\d{2}-\d{2}")


def not_a_phone(text: str, start: int, end: int) -> bool:
    """Digit runs libphonenumber accepts in some region but that are something else: dates,
    decimals, fractions of a timestamp, barcodes, versions, codes glued to letters (``INV-2024-…``),
    and numbers of fewer than seven digits."""
    raw = text[start:end]
    if sum(ch.isdigit() for ch in raw) < 7:
        return True  # a local short number at best (388267): nothing to reach or mask
    if NOT_PHONE_SHAPES.fullmatch(raw.strip("()[] ")) or DATE_INSIDE.search(raw):
        return True
    before = text[max(0, start - 2) : start]
    if before[-1:].isalnum() or before[-1:] in ("-", "/", "_", "#") or (len(before) == 2 and before[0].isdigit() and before[1] in ".:,"):
        return True  # the tail of a longer token: a code, a time's fraction, a coordinate
    after = text[end : end + 2]
    if len(after) == 2 and after[0] in ".,:" and after[1].isdigit():
        return True
    return "." in raw and VERSION_CONTEXT.search(text, max(0, start - 24), start) is not None


# --- payment cards -------------------------------------------------------------------------------

# Compact, or in groups with one separator style; never inside a longer number, a decimal or a date.
CARD_CANDIDATE = re.compile(r"(?<![\w/])(?<!\d[.,-])(?:\d{12,19}|\d{2,6}([ -])\d{2,7}(?:\1\d{1,7}){0,5})(?![\w/]|[.,-]\d)")


@dataclass(frozen=True, slots=True)
class _CardRange:
    low: int
    high: int
    digits: int
    lengths: frozenset[int]


def _card_ranges() -> tuple[_CardRange, ...]:
    # Issuer identification ranges of the major networks (ISO/IEC 7812 as the networks publish
    # them): a 16-digit number starting with 1, 7, 8 or 9 is not a card, whatever Luhn says.
    table = [
        ("4", "4", (13, 16, 19)),  # Visa
        ("51", "55", (16,)),  # Mastercard
        ("2221", "2720", (16,)),  # Mastercard 2-series
        ("34", "34", (15,)),  # American Express
        ("37", "37", (15,)),
        ("6011", "6011", (16, 17, 18, 19)),  # Discover
        ("644", "649", (16, 17, 18, 19)),
        ("65", "65", (16, 17, 18, 19)),
        ("622126", "622925", (16, 17, 18, 19)),
        ("3500", "3599", (16, 17, 18, 19)),  # JCB (3528-3589 assigned; the rest of 35 unassigned)
        ("1800", "1800", (15,)),  # JCB's 15-digit ranges
        ("2131", "2131", (15,)),
        ("300", "305", (14, 15, 16, 17, 18, 19)),  # Diners Club
        ("36", "36", (14, 15, 16, 17, 18, 19)),
        ("38", "39", (14, 15, 16, 17, 18, 19)),
        ("62", "62", (16, 17, 18, 19)),  # UnionPay
        ("5018", "5018", tuple(range(12, 20))),  # Maestro
        ("5020", "5020", tuple(range(12, 20))),
        ("5038", "5038", tuple(range(12, 20))),
        ("5893", "5893", tuple(range(12, 20))),
        ("6304", "6304", tuple(range(12, 20))),
        ("6759", "6759", tuple(range(12, 20))),
        ("6761", "6763", tuple(range(12, 20))),
        ("56", "58", tuple(range(12, 20))),
        ("639", "639", tuple(range(12, 20))),
        ("67", "67", tuple(range(12, 20))),
        ("2200", "2204", (16, 17, 18, 19)),  # Mir
        ("9792", "9792", (16,)),  # Troy
        ("60", "60", (16,)),  # RuPay
        ("81", "82", (16,)),
        ("508", "508", (16,)),
    ]
    return tuple(_CardRange(int(low), int(high), len(low), frozenset(lengths)) for low, high, lengths in table)


CARD_RANGES = _card_ranges()


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check that every payment card number carries."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_issuer_known(digits: str) -> bool:
    """Whether the number's prefix and length belong to a card network."""
    return any(
        len(digits) in card.lengths and card.low <= int(digits[: card.digits]) <= card.high for card in CARD_RANGES
    )


class PaymentCardDetector:
    """Payment card numbers (``PAYMENT_CARD``): 12 to 19 digits, grouped by spaces or dashes or not,
    with a known issuer prefix and length and a valid Luhn check digit.

    Not reported: numbers that run on (part of a longer digit sequence), numbers right after an
    identifier label, and all-same-digit fillers (``0000 0000 0000 0000``).
    """

    name = "payment_card"
    kinds = frozenset({"PAYMENT_CARD"})

    def detect(self, text: str) -> list[Finding]:
        findings = []
        for match in CARD_CANDIDATE.finditer(text):
            digits = _digits(match.group())
            if not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
                continue
            if not (card_issuer_known(digits) and luhn_valid(digits)):
                continue
            if follows_identifier_label(text, match.start()):
                continue
            findings.append(Finding("PAYMENT_CARD", match.start(), match.end(), self.name, 1.0))
        return findings


# --- IBAN ----------------------------------------------------------------------------------------

IBAN_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){10,32}")


class IbanDetector:
    """International bank account numbers (``IBAN``), compact or in groups of four, checked
    against the country's registered length and format and the ISO 7064 mod-97 check digits
    (``python-stdnum``'s copy of the SWIFT registry)."""

    name = "iban"
    kinds = frozenset({"IBAN"})

    def detect(self, text: str) -> list[Finding]:
        findings = []
        position = 0
        while match := IBAN_CANDIDATE.search(text, position):
            position = match.end()
            candidate = match.group()
            ends = [i + 1 for i, ch in enumerate(candidate) if ch != " "]  # span end after n chars
            for length in range(len(ends), 14, -1):  # the longest valid prefix: the group after is another word
                end = match.start() + ends[length - 1]
                if end < len(text) and text[end].isalnum():
                    continue
                if stdnum_iban.is_valid(text[match.start() : end]):
                    findings.append(Finding("IBAN", match.start(), end, self.name, 1.0))
                    position = end
                    break
        return findings


# --- IP addresses --------------------------------------------------------------------------------

IPV4_CANDIDATE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\w)")
IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]{1,38}(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?:%[\w-]{1,16})?(?![\w:]|\.\w)"
)
NETWORK_CONTEXT = re.compile(
    r"(?i)\b(?:ip|ipv4|address|addr|host|server|dns|resolver|nameserver|gateway|router|ping|connect(?:ed)?|from|to)\b\W{0,3}\Z"
)
"""Words that make ``1.1.1.1`` an address: a quad of single digits is otherwise read as a version."""


class IpAddressDetector:
    """IPv4 and IPv6 addresses (``IP_ADDRESS``), as the standard library's ``ipaddress`` parses them.

    Not reported: loopback and unspecified addresses (``127.0.0.1``, ``0.0.0.0``, ``::1``), which
    name no one; a dotted quad after a version word or a name (``version 1.2.3.4``,
    ``nginx/1.25.3.1``, ``==2.0.1.0``, ``section 1.2.3.4``); a quad of single digits
    (``2.0.0.1``) unless a network word comes before it (``dns 1.1.1.1``) or a port or prefix
    after it; an IPv6 address of one group (``::ffff``). Times, MAC addresses and ``Foo::Bar``
    scopes are not valid IPv6.
    """

    name = "ip_address"
    kinds = frozenset({"IP_ADDRESS"})

    def detect(self, text: str) -> list[Finding]:
        findings = []
        if "." in text:
            for match in IPV4_CANDIDATE.finditer(text):
                try:
                    address = ipaddress.IPv4Address(match.group())
                except ValueError:
                    continue
                if address.is_loopback or address.is_unspecified:
                    continue
                start = match.start()
                if VERSION_CONTEXT.search(text, max(0, start - 24), start):
                    continue
                if all(len(octet) == 1 for octet in match.group().split(".")):  # 2.0.0.1: likely a version
                    port_or_prefix = text[match.end() : match.end() + 1] in (":", "/")
                    if not (port_or_prefix or NETWORK_CONTEXT.search(text, max(0, start - 24), start)):
                        continue
                findings.append(Finding("IP_ADDRESS", start, match.end(), self.name, 0.9))
        if ":" in text:
            for match in IPV6_CANDIDATE.finditer(text):
                candidate, end = match.group(), match.end()
                if candidate.endswith(":") and not candidate.endswith("::"):
                    candidate, end = candidate[:-1], end - 1  # "…:924f: next" ends a sentence part
                if candidate.count(":") < 2 or sum(1 for group in re.split(r"[:.]", candidate) if group) < 2:
                    continue
                try:
                    address6 = ipaddress.IPv6Address(candidate)
                except ValueError:
                    continue
                if address6.is_loopback or address6.is_unspecified:
                    continue
                findings.append(Finding("IP_ADDRESS", match.start(), end, self.name, 0.9))
        return findings


# --- national identity numbers -------------------------------------------------------------------

NATIONAL_ID_KINDS = ("US_SSN", "UK_NINO", "ES_NIF", "IT_FISCAL_CODE", "FR_NIR")
NINO_REJECTED_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_S = r"(?<![\w-].)"  # after a value's first character: no letter, digit or dash before it
_E = r"(?![\w-])"  # (a lookbehind placed first would defeat re's fast scan for the first character)
NATIONAL_ID_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType({
    # Area-group-serial with one separator style; a bare 9-digit run is too common to be an SSN.
    "US_SSN": re.compile(rf"\d{_S}\d{{2}}([- ])\d{{2}}\1\d{{4}}{_E}"),
    # HMRC's rules: two prefix letters (not D, F, I, Q, U, V; no O second), six digits, A-D.
    "UK_NINO": re.compile(rf"[A-CEGHJ-PR-TW-Z]{_S}[A-CEGHJ-NPR-TW-Z] ?\d{{2}} ?\d{{2}} ?\d{{2}} ?[A-D]{_E}"),
    # Spanish DNI (8 digits + check letter) and NIE (X/Y/Z + 7 digits + check letter).
    "ES_NIF": re.compile(rf"(?:\d{_S}\d{{7}}|[XYZ]{_S}-?\d{{7}})-?[A-HJ-NP-TV-Z]{_E}"),
    # Italian codice fiscale, omocodia substitutions included; upper case, as it is printed
    # (case-insensitive, every six-letter word of prose would be a candidate).
    "IT_FISCAL_CODE": re.compile(rf"[A-Z]{_S}[A-Z]{{5}}[\dLMNP-V]{{2}}[A-EHLMPR-T][\dLMNP-V]{{2}}[A-Z][\dLMNP-V]{{3}}[A-Z]{_E}"),
    # French NIR (numéro de sécurité sociale): sex, year, month, department, commune, order, key.
    "FR_NIR": re.compile(rf"[12]{_S} ?\d{{2}} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{{2}}|2[ABab]) ?\d{{3}} ?\d{{3}} ?\d{{2}}{_E}"),
})


def _national_id_valid(kind: str, value: str) -> bool:
    if kind == "US_SSN":
        return stdnum_ssn.is_valid(value)
    if kind == "UK_NINO":
        return value[:2] not in NINO_REJECTED_PREFIXES
    if kind == "ES_NIF":
        return stdnum_nie.is_valid(value) if value[0] in "XYZ" else stdnum_dni.is_valid(value)
    if kind == "IT_FISCAL_CODE":
        return stdnum_codicefiscale.is_valid(value)
    if kind == "FR_NIR":
        return stdnum_nir.is_valid(value)
    return False


class NationalIdOptions(DetectorOptions):
    kinds: tuple[Literal["US_SSN", "UK_NINO", "ES_NIF", "IT_FISCAL_CODE", "FR_NIR"], ...] = Field(
        NATIONAL_ID_KINDS, min_length=1, description="which national id formats to look for"
    )


class NationalIdDetector:
    """National identity numbers, each checked by its own published rule:

    - ``US_SSN``: ``123-45-6789`` or with spaces; areas 000, 666 and 900-999, group 00, serial
      0000 and the numbers the SSA lists as advertising samples are invalid.
    - ``UK_NINO``: ``AB 12 34 56 C``; HMRC's letter rules, and the BG, GB, KN, NK, NT, TN and ZZ
      prefixes that are never issued (ZZ is the usual test prefix).
    - ``ES_NIF``: DNI ``12345678Z`` and NIE ``X1234567L`` with their mod-23 check letter.
    - ``IT_FISCAL_CODE``: codice fiscale ``RSSMRA85T10A562S``, its date, month letter and check
      character.
    - ``FR_NIR``: numéro de sécurité sociale, 15 digits with its mod-97 key.

    Chosen for having a check that random text rarely passes; formats that are a bare run of
    digits with a weak check (Dutch BSN, Indian Aadhaar) would flag order numbers.
    """

    name = "national_id"
    Config = NationalIdOptions

    def __init__(self, config: NationalIdOptions | None = None) -> None:
        self.config = config or NationalIdOptions()
        self.kinds = frozenset(self.config.kinds)

    def detect(self, text: str) -> list[Finding]:
        findings = []
        for kind in self.config.kinds:
            for match in NATIONAL_ID_PATTERNS[kind].finditer(text):
                if _national_id_valid(kind, match.group()):
                    findings.append(Finding(kind, match.start(), match.end(), self.name, 0.95))
        return findings


# --- credentials ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CredentialPattern:
    kind: str
    regex: re.Pattern[str]
    confidence: float
    group: int = 0
    mixed_case: bool = False
    """The key body must mix upper and lower case letters and digits (generated, not a word)."""
    needles: tuple[str, ...] = ()
    """Literals one of which every match contains (in lower case): a text without any is not
    scanned with this pattern, which keeps fifteen patterns cheap on plain prose."""


_T = r"(?![A-Za-z0-9_-])"  # a key ends where its alphabet does
CREDENTIAL_PATTERNS: tuple[_CredentialPattern, ...] = (
    # Anthropic: sk-ant-api03-… (and admin keys), 80-120 URL-safe characters.
    _CredentialPattern("API_KEY", re.compile(rf"\bsk-ant-(?:api|admin|oat|ort)\d{{2}}-[A-Za-z0-9_-]{{80,120}}{_T}"), 1.0, needles=("sk-ant-",)),
    # OpenAI: sk-…, sk-proj-…, sk-svcacct-…, sk-admin-…
    _CredentialPattern("API_KEY", re.compile(rf"\bsk-(?!ant-)(?:[A-Za-z]{{2,8}}-)?([A-Za-z0-9_-]{{32,200}}){_T}"), 0.95, mixed_case=True, needles=("sk-",)),
    # Groq: gsk_ + 52 alphanumerics.
    _CredentialPattern("API_KEY", re.compile(r"\bgsk_[A-Za-z0-9]{52}\b"), 1.0, needles=("gsk_",)),
    # AWS access key ids (long-term AKIA, temporary ASIA) and secret keys given with their name.
    _CredentialPattern("API_KEY", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), 1.0, needles=("akia", "asia")),
    _CredentialPattern(
        "API_KEY",
        re.compile(r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        1.0,
        1,
        needles=("secret",),
    ),
    # GitHub: classic tokens (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained github_pat_.
    _CredentialPattern("API_KEY", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b"), 1.0, needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    _CredentialPattern("API_KEY", re.compile(r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b"), 1.0, needles=("github_pat_",)),
    # Slack: bot/user/app tokens and incoming-webhook URLs.
    _CredentialPattern("API_KEY", re.compile(rf"\bxox[abposr]-(?:\d{{6,16}}-){{1,3}}[A-Za-z0-9-]{{10,64}}{_T}"), 1.0, needles=("xox",)),
    _CredentialPattern("API_KEY", re.compile(r"\bxapp-\d-[A-Z0-9]{8,16}-\d{6,16}-[a-f0-9]{32,80}\b"), 1.0, needles=("xapp-",)),
    _CredentialPattern("API_KEY", re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,32}"), 1.0, needles=("hooks.slack.com",)),
    # Google: API keys (AIza…), OAuth client secrets (GOCSPX-…) and access tokens (ya29.…).
    _CredentialPattern("API_KEY", re.compile(rf"\bAIza[0-9A-Za-z_-]{{35}}{_T}"), 1.0, needles=("aiza",)),
    _CredentialPattern("API_KEY", re.compile(rf"\bGOCSPX-[0-9A-Za-z_-]{{28}}{_T}"), 1.0, needles=("gocspx-",)),
    _CredentialPattern("API_KEY", re.compile(rf"\bya29\.[0-9A-Za-z_-]{{30,2048}}{_T}"), 0.95, needles=("ya29.",)),
    # Stripe secret and restricted keys.
    _CredentialPattern("API_KEY", re.compile(r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{24,99}\b"), 1.0, needles=("k_live_", "k_test_")),
)
PEM_BEGIN = re.compile(r"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----")
PEM_BODY = re.compile(r"(?:\s{1,4}(?:[A-Za-z0-9+/=]{8,100}|[A-Za-z-]{2,20}: [^\n]{1,200})){0,400}")
"""What follows a header whose END line is missing (a key cut off): base64 lines and PEM headers."""
PEM_MAX_CHARS = 16384
JWT = re.compile(rf"\beyJ[A-Za-z0-9_-]{{8,4096}}\.eyJ[A-Za-z0-9_-]{{8,8192}}\.[A-Za-z0-9_-]{{0,2048}}{_T}")
URL_PASSWORD = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/?#@\[\]]{0,256}:([^\s/?#@\[\]]{1,256})@[^\s/?#@]")
PASSWORD_PLACEHOLDER = re.compile(r"(?i)\$\{?\w*\}?|\*+|x+|<[^>]*>|%s|\{\{?[^}]*\}\}?|\.\.\.|…")
"""Userinfo that is a template or already masked (``${DB_PASSWORD}``, ``****``, ``<password>``)."""


def _b64url_json(segment: str) -> object:
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None


def _mixed(body: str) -> bool:
    return any(c.isupper() for c in body) and any(c.islower() for c in body) and any(c.isdigit() for c in body)


class CredentialsDetector:
    """Credentials (``API_KEY``, ``PRIVATE_KEY``, ``JWT``, ``PASSWORD``).

    - ``API_KEY``: OpenAI (``sk-``, ``sk-proj-``…), Anthropic (``sk-ant-api03-``), Groq
      (``gsk_``), AWS access key ids (``AKIA``/``ASIA``) and secret keys written next to their name,
      GitHub (``ghp_``…, ``github_pat_``), Slack (``xoxb-``…, ``xapp-``, webhook URLs), Google
      (``AIza``, ``GOCSPX-``, ``ya29.``) and Stripe (``sk_live_``…) by their published formats.
    - ``PRIVATE_KEY``: PEM private key blocks (RSA, EC, DSA, OpenSSH, PKCS#8, PGP).
    - ``JWT``: three base64url segments whose header decodes to JSON with an ``alg``.
    - ``PASSWORD``: the password of a URL's userinfo (``postgres://app:s3cret@db``), unless it is
      a template or already masked (``${DB_PASSWORD}``, ``****``).
    """

    name = "credentials"
    kinds = frozenset({"API_KEY", "PRIVATE_KEY", "JWT", "PASSWORD"})

    def detect(self, text: str) -> list[Finding]:
        findings = []
        lowered = text.lower()
        for pattern in CREDENTIAL_PATTERNS:
            if not any(needle in lowered for needle in pattern.needles):
                continue
            for match in pattern.regex.finditer(text):
                if pattern.mixed_case and not _mixed(match.group(1)):
                    continue
                start, end = match.span(pattern.group)
                findings.append(Finding(pattern.kind, start, end, self.name, pattern.confidence))
        if "-----BEGIN " in text:
            findings += self._private_keys(text)
        if "eyJ" in text:
            for match in JWT.finditer(text):
                header = _b64url_json(match.group().split(".", 1)[0])
                if isinstance(header, dict) and "alg" in header:
                    findings.append(Finding("JWT", match.start(), match.end(), self.name, 1.0))
        if "://" in text:
            for match in URL_PASSWORD.finditer(text):
                if not PASSWORD_PLACEHOLDER.fullmatch(match.group(1)):
                    findings.append(Finding("PASSWORD", *match.span(1), self.name, 0.95))
        return findings

    def _private_keys(self, text: str) -> list[Finding]:
        """PEM private key blocks: header to END line, or to the end of the base64 when cut off.

        The END line is looked for with ``str.find`` within ``PEM_MAX_CHARS``: a regex lazily
        scanning for it would re-read 16 KB after every header of a text full of them."""
        findings = []
        position = 0
        while match := PEM_BEGIN.search(text, position):
            end_line = f"-----END {match.group(1)}-----"
            at = text.find(end_line, match.end(), match.end() + PEM_MAX_CHARS)
            end = at + len(end_line) if at >= 0 else PEM_BODY.match(text, match.end()).end()
            findings.append(Finding("PRIVATE_KEY", match.start(), end, self.name, 1.0))
            position = end
        return findings


# --- custom patterns -----------------------------------------------------------------------------


class CustomPattern(DetectorOptions):
    """One operator-defined pattern: its kind and an RE2 regular expression."""

    kind: str = Field(description="the kind its findings get (upper case, e.g. EMPLOYEE_ID)", pattern=KIND_PATTERN.pattern)
    pattern: str = Field(max_length=2000, description="RE2 syntax: no backreferences or lookaround, linear time")
    ignore_case: bool = False
    confidence: float = Field(1.0, ge=0.0, le=1.0)

    @field_validator("pattern")
    @classmethod
    def _compiles_in_re2(cls, pattern: str) -> str:
        try:
            compiled = re2.compile(pattern)
        except re2.error as exc:
            raise ValueError(f"not a valid RE2 pattern: {exc}") from None
        if compiled.fullmatch("") is not None:
            raise ValueError("pattern matches the empty string")
        return pattern


class CustomPatternOptions(DetectorOptions):
    name: str = Field("custom_patterns", pattern=r"[a-z][a-z0-9_]{0,39}", description="the detector's name in findings and metrics")
    patterns: tuple[CustomPattern, ...] = Field(min_length=1, max_length=200)
    max_match_chars: int = Field(
        256, ge=1, le=65536, description="the longest a match may be; longer ones are not guaranteed to be found"
    )
    window_chars: int = Field(
        8192, ge=1024, le=1_048_576, description="the text is matched in windows of this many characters"
    )


class CustomPatternDetector:
    """Findings from regular expressions an operator configures (``[[...patterns]]``).

    Patterns are compiled with RE2 (``google-re2``), which matches in time linear in the text: an
    operator's ``(a+)+$`` cannot hang a worker thread as it would with backtracking ``re``. The text
    is matched in windows of ``window_chars`` that overlap by ``max_match_chars``, which bounds both
    what one call costs and how long a match may be; that bound is also what a stream's hold-back
    window must cover for a match split across chunks to be caught.
    """

    Config = CustomPatternOptions

    def __init__(self, config: CustomPatternOptions) -> None:
        self.config = config
        self.name = config.name
        self.kinds = frozenset(p.kind for p in config.patterns)
        self._compiled = [
            (p.kind, re2.compile(("(?i)" if p.ignore_case else "") + p.pattern), p.confidence) for p in config.patterns
        ]

    def detect(self, text: str) -> list[Finding]:
        overlap = self.config.max_match_chars
        step = max(self.config.window_chars - overlap, 1)
        seen: set[tuple[str, int, int]] = set()
        findings = []
        for window_start in range(0, max(len(text) - overlap, 1), step):
            window_end = min(window_start + self.config.window_chars, len(text))
            window = text[window_start:window_end]
            for kind, regex, confidence in self._compiled:
                for match in regex.finditer(window):
                    start, end = match.span()
                    if start == end or end - start > overlap:
                        continue
                    # A match touching the window's edge may be cut short; the next window,
                    # which starts at most max_match_chars earlier, sees it whole.
                    if end == len(window) and window_end < len(text):
                        continue
                    key = (kind, window_start + start, window_start + end)
                    if key not in seen:
                        seen.add(key)
                        findings.append(Finding(kind, key[1], key[2], self.name, confidence))
        return findings
