"""The semantic cache's guard: is a cached answer to one prompt right for another prompt?

Embedding similarity says two prompts are *about* the same thing; it does not say they ask the
same question. With all-MiniLM-L6-v2, "Track order 48213" and "Track order 48231" score 0.97 and
"Is ibuprofen safe with alcohol?" / "... unsafe ..." 0.98, higher than most true paraphrases. The
guard therefore refuses a candidate that passed the similarity threshold when the two prompts
differ in something that changes the answer:

=============  ===========================================================================
check          refuses when the prompts differ in…
=============  ===========================================================================
``negation``   negation cues (not, never, without, avoid…), negating prefixes (safe/unsafe,
               refundable/non-refundable) or opposites (open/closed, include/exclude)
``numbers``    quantities, compared in a canonical unit (14 days = two weeks, 7pm = 19:00)
``units``      unit words not attached to a number ("convert 100 USD to GBP / to EUR")
``dates``      weekdays, months, seasons, today/tomorrow/next week…
``direction``  direction or comparison (before/after, more/less, buy/sell, over/under), or
               swapped roles around from/to/into ("from savings to current account")
``entities``   names: capitalised words, acronyms, quoted strings, code identifiers, URLs
``lexical``    near-identical wording with a content word changed or added (economy vs
               business class, warranty vs extended warranty): a different question
=============  ===========================================================================

Before comparing, greetings and thanks around the request are dropped ("Hi team, …", "… Many
thanks"), contractions expanded, words lightly stemmed, a short list of synonyms and phrasal verbs
mapped to one word (start/begin, sign up/register) and one-letter typos forgiven (bagage/baggage).
The ``lexical`` check then refuses when content words differ and either the content words mostly
overlap (Jaccard >= ``near_duplicate_overlap``) or the sentences are the same frame around the
change (difflib ratio of the word sequences >= ``same_frame_ratio``).

It is pure and offline (strings in, a :class:`GuardVerdict` out, no model): a few hundred
microseconds per pair, less when the cache keeps a stored prompt's :func:`analyse_prompt`
features beside it (``bench/semantic_quality.py`` prints the figure for the machine it runs on).
It is deliberately conservative: a refused true paraphrase costs one upstream call, a served
near-miss is a wrong answer. Every check can be switched off in :class:`GuardConfig`; the verdict
names every check that refused, ``verdict.check`` the first (a bounded label set, for metrics).
On fow-cache's labelled pairs the default configuration serves about half the true paraphrases
and a wrong answer to about 1% of near-misses, against 61% of near-misses for the threshold alone
(``python bench/semantic_quality.py``; the word lists were written with that set in view, so
expect less on other traffic: the semantic cache's shadow mode is the check on real traffic).

The word lists are general English, written for questions people ask support desks and
assistants; they are not exhaustive. In other languages only the numbers, units, entities and
lexical checks see anything (and text written without spaces differs as a whole), which suits an
English embedding model such as all-MiniLM-L6-v2. The guard is one layer: the semantic cache also
partitions by everything but the last user turn
(:mod:`hookgate.plugins.semantic_cache_partition`) and audits its hits against fresh answers.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import final

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GuardCheck", "GuardConfig", "GuardVerdict", "SemanticCacheGuard", "PromptFeatures", "analyse_prompt"]


class GuardCheck(str, Enum):
    """Why a candidate was refused: the value is the metrics label."""

    TOO_LONG = "too_long"
    THRESHOLD = "threshold"
    NEGATION = "negation"
    NUMBERS = "numbers"
    UNITS = "units"
    DATES = "dates"
    DIRECTION = "direction"
    ENTITIES = "entities"
    LEXICAL = "lexical"


class GuardConfig(BaseModel):
    """Settings of the guard (the ``guard`` table of the semantic cache's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    similarity_threshold: float = Field(
        0.75, ge=0.0, le=1.0, description="cosine similarity a candidate needs before the checks are even asked"
    )
    negation: bool = Field(True, description="refuse when negation or polarity differs (not, without, safe/unsafe, open/closed)")
    numbers: bool = Field(True, description="refuse when the quantities differ (in a canonical unit: 14 days = 2 weeks)")
    units: bool = Field(True, description="refuse when unit words not attached to a number differ (to GBP / to EUR)")
    dates: bool = Field(True, description="refuse when weekdays, months, seasons or relative days differ")
    direction: bool = Field(True, description="refuse on opposite direction/comparison words or roles swapped around from/to")
    entities: bool = Field(True, description="refuse when a name, acronym, quoted string or code identifier is not in both")
    lexical: bool = Field(True, description="refuse near-identical prompts whose content words differ")
    near_duplicate_overlap: float = Field(
        0.67,
        ge=0.0,
        le=1.0,
        description="content-word overlap (Jaccard) from which a changed or added content word means a different question",
    )
    same_frame_ratio: float = Field(
        0.65,
        ge=0.0,
        le=1.0,
        description="word-sequence similarity (function words included) from which a changed content word means a "
        "different question, however short the prompts",
    )
    max_prompt_chars: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="longer prompts are refused unread: the embedder reads only their first ~256 tokens, and "
        "comparing them costs more",
    )


@final
@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """The guard's decision on one candidate."""

    serve: bool
    refused_by: tuple[GuardCheck, ...]
    """Every check that refused, in the order of :class:`GuardCheck` (empty when served)."""
    similarity: float

    @property
    def check(self) -> GuardCheck | None:
        """The first check that refused, or None: one label per verdict, for metrics."""
        return self.refused_by[0] if self.refused_by else None


# --- the lexicons (general English; stems are computed by _stem) ----------------------------------

_STOPWORDS = frozenset(
    """a an the this that these those it its it's there here i me my mine myself we us our ours you your yours
    he him his she her hers they them their theirs one's someone somebody anyone anybody
    is am are was were be been being do does did done doing have has had having
    can could will would shall should may might must need needs needed ought
    what which who whom whose when where why how whats whens wheres whos hows
    of in on at for to from with by about as into onto than then so if or and but also too
    any some all each every much many lot lots bit
    please hi hello hey thanks thank cheers okay ok yes yeah well just really actually basically quite very
    possible able allowed way go going get got getting let tell know want wanted like would-like
    usually typically normally generally currently still ever already exactly roughly approximately
    available option options thing things kind sort something anything
    um umm uh er erm hmm hiya morning sorry wondering
    time price cost come people person city country place
    status process procedure step steps method details information info offer offers provide
    under over above below between through during within before after across around near via per off out up down
    """.split()
)
"""Words that do not change which question is asked (for the lexical check only)."""

_NEGATION_CUES = frozenset("not no never none nobody nothing nowhere neither nor without avoid prevent".split())

_NEGATING_PREFIXES = ("un", "non", "in", "im", "il", "ir", "dis", "de", "mis", "anti")

_POLAR_OPPOSITES: tuple[tuple[str, str], ...] = (
    ("open", "closed close shut"),
    ("include included inclusive", "exclude excluded exclusive"),
    ("allow allowed permit permitted", "ban banned forbid forbidden prohibit prohibited"),
    ("accept approve approved grant", "reject rejected decline declined deny denied refuse revoke"),
    ("pass passed", "fail failed"),
    ("success successful succeed", "failure fail"),
    ("win won", "lose lost"),
    ("enable enabled", "disable disabled"),
    ("add", "remove delete"),
    ("join", "leave quit"),
    ("pause paused", "resume resumed"),
    ("start begin", "stop end finish"),
    ("safe", "dangerous unsafe harmful"),
    ("good best better", "bad worst worse"),
    ("benefit benefits advantage advantages pro pros", "drawback drawbacks disadvantage disadvantages con cons downside downsides risk risks"),
    ("compulsory mandatory required", "optional voluntary"),
    ("hot warm", "cold cool"),
    ("busy", "quiet"),
    ("spicy hot", "mild"),
    ("true", "false"),
    ("legal lawful", "illegal unlawful"),
    ("valid", "invalid expired"),
    ("correct right", "wrong incorrect"),
    ("positive", "negative"),
    ("agree", "disagree"),
    ("like love", "dislike hate"),
    ("same", "different"),
    ("cover covered", "exclude excluded"),
    ("outstanding excellent", "inadequate poor"),
    ("properly fine", "fault faulty broken"),
    ("free", "paid charged"),
)
"""Opposite meanings: one side in each prompt (and not both in either) means different questions."""

_DIRECTION_OPPOSITES: tuple[tuple[str, str], ...] = (
    ("before prior within during", "after beyond"),
    ("increase raise rise more higher bigger larger extra up grow", "decrease reduce lower less fewer smaller down cut drop"),
    ("most highest", "least lowest fewest"),
    ("buy purchase", "sell"),
    ("over above exceeding", "under below"),
    ("import", "export"),
    ("upload", "download"),
    ("deposit", "withdraw withdrawal"),
    ("send sent", "receive received"),
    ("lend", "borrow"),
    ("arrive arrival arrivals", "depart departure departures"),
    ("inbound incoming", "outbound outgoing"),
    ("maximum", "minimum"),
    ("first earliest", "last latest final"),
    ("early", "late"),
    ("upgrade", "downgrade"),
    ("in", "out"),
    ("on", "off"),
    ("north northern", "south southern"),
    ("east eastern", "west western"),
    ("left", "right"),
    ("landlord", "tenant"),
    ("employer", "employee"),
    ("buyer", "seller"),
    ("lender", "borrower"),
    ("adult adults", "child children kid kids baby babies"),
    ("parent parents", "child children kid kids"),
    ("host", "guest"),
    ("pay", "refund"),
)
"""Opposite directions, comparisons and roles."""

_ALIGNED_ONLY = frozenset({"in", "out", "on", "off", "up", "down", "left", "right", "first", "last"})
"""Particles too common to compare across whole prompts: opposed only when the wording lines up
("opt in"/"opt out", "turn on"/"turn off", "check-in"/"check-out")."""

_ROLE_PREPOSITIONS = ("from", "to", "into", "than", "versus", "vs", "onto", "towards")

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12, "single": 1, "couple": 2, "twice": 2,
}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9,
    "tenth": 10, "eleventh": 11, "twelfth": 12,
}  # fmt: skip
_NUMBER_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000, "k": 1000}

# unit word -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    **{w: ("duration", 1 / 86400) for w in ("second", "seconds", "sec", "secs")},
    **{w: ("duration", 1 / 1440) for w in ("minute", "minutes", "min", "mins")},
    **{w: ("duration", 1 / 24) for w in ("hour", "hours", "hr", "hrs", "h")},
    **{w: ("duration", 1.0) for w in ("day", "days")},
    **{w: ("duration", 7.0) for w in ("week", "weeks", "wk", "wks")},
    **{w: ("duration", 14.0) for w in ("fortnight", "fortnights")},
    **{w: ("duration", 365 / 12) for w in ("month", "months")},
    **{w: ("duration", 365.0) for w in ("year", "years", "yr", "yrs")},
    **{w: ("age", 1.0) for w in ("year-old", "year-olds")},
    **{w: ("mass", 1.0) for w in ("g", "gram", "grams", "gramme", "grammes")},
    **{w: ("mass", 1000.0) for w in ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms")},
    **{w: ("mass", 0.001) for w in ("mg", "milligram", "milligrams")},
    **{w: ("mass", 453.59237) for w in ("lb", "lbs")},
    **{w: ("mass", 28.349523) for w in ("oz", "ounce", "ounces")},
    **{w: ("mass", 6350.29) for w in ("stone",)},
    **{w: ("length", 1.0) for w in ("metre", "metres", "meter", "meters")},
    **{w: ("length", 1000.0) for w in ("km", "kms", "kilometre", "kilometres", "kilometer", "kilometers")},
    **{w: ("length", 0.01) for w in ("cm", "centimetre", "centimetres")},
    **{w: ("length", 0.001) for w in ("mm", "millimetre", "millimetres")},
    **{w: ("length", 1609.344) for w in ("mile", "miles")},
    **{w: ("length", 0.3048) for w in ("ft", "foot", "feet")},
    **{w: ("length", 0.0254) for w in ("inch", "inches", "in.")},
    **{w: ("volume", 1.0) for w in ("l", "litre", "litres", "liter", "liters")},
    **{w: ("volume", 0.001) for w in ("ml", "millilitre", "millilitres")},
    **{w: ("volume", 0.568) for w in ("pint", "pints")},
    **{w: ("data", 1e3) for w in ("kb",)},
    **{w: ("data", 1e6) for w in ("mb",)},
    **{w: ("data", 1e9) for w in ("gb", "gig", "gigs")},
    **{w: ("data", 1e12) for w in ("tb",)},
    **{w: ("energy", 1.0) for w in ("kwh",)},
    **{w: ("speed", 1.0) for w in ("mph",)},
    **{w: ("speed", 0.621371) for w in ("kph", "kmh", "km/h")},
    **{w: ("percent", 1.0) for w in ("%", "percent", "per-cent")},
    **{w: ("gbp", 1.0) for w in ("£", "gbp", "pound", "pounds", "quid")},
    **{w: ("gbp", 0.01) for w in ("p", "pence", "penny")},
    **{w: ("usd", 1.0) for w in ("$", "usd", "dollar", "dollars")},
    **{w: ("eur", 1.0) for w in ("€", "eur", "euro", "euros")},
    **{w: ("clock", 1.0) for w in ("am", "a.m", "a.m.")},
    **{w: ("clock_pm", 1.0) for w in ("pm", "p.m", "p.m.")},
    **{w: ("clock", 1.0) for w in ("o'clock", "oclock")},
}
_CURRENCY_SYMBOLS = frozenset("£$€")

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january february march april may june july august september october november december".split()
    + "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_DATE_WORDS = frozenset(
    "today tomorrow yesterday tonight weekend weekends weekday weekdays morning afternoon evening overnight "
    "spring summer autumn winter christmas easter midday noon midnight".split()
)
_DATE_NAMES = frozenset(w + suffix for w in (*_WEEKDAYS, *_MONTHS) for suffix in ("", "s"))
_RELATIVE = frozenset("this next last previous coming same following".split())
_PERIODS = frozenset("day week month year weekend morning afternoon evening night term quarter".split())

_TOKEN = re.compile(
    r"""(?P<quoted>"[^"\n]{1,200}"|“[^”\n]{1,200}”|‘[^’\n]{1,200}’|`[^`\n]{1,200}`|(?<!\w)'[^'\n]{1,200}'(?!\w))
      | (?P<url>https?://[^\s]+|[\w.+-]+@[\w-]+\.[\w.]+)
      | (?P<clock>\d{1,2}:\d{2}(?![\d]))
      | (?P<number>\d+(?:,\d{3})*(?:\.\d+)?)
      | (?P<word>[^\W\d_](?:[\w'’./-]*[\w])?|_\w+)
      | (?P<symbol>[%£$€])""",
    re.VERBOSE,
)
_LONGEST_WORD = 30
"""Longer "words" are unsegmented text (scripts written without spaces)."""

_PLEASANTRIES = re.compile(
    r"""^\W*(?:(?:hi|hello|hey|hiya|good\s+(?:morning|afternoon|evening)|morning|afternoon)(?:\s+(?:team|there|all|folks))?\W+)?
        (?:(?:sorry,?\s+)?(?:(?:quick|silly|stupid|daft|simple)\s+question|quick\s+one|sorry\s+to\s+bother\s+you|just\s+wondering)
           (?:,?\s+but)?\s*[,:;.!-]*\s*)?
      | [,.!\s]*(?:(?:many\s+)?thanks(?:\s+in\s+advance)?|thank\s+you|cheers|ta)\W*$""",
    re.IGNORECASE | re.VERBOSE,
)
"""Greetings and thanks around a request ("Hi team, …", "… Many thanks"): they change no answer."""

_SYNONYMS: tuple[str, ...] = (
    "get obtain receive request",  # "get" is a stop word: so are these
    "change update modify amend edit alter switch",
    "start begin commence",
    "make submit file lodge send",
    "fast fastest quick quickest rapid speedy",
    "shop store",
    "street road",
    "quote quotation estimate",
    "grade result mark",
    "kid kids child children",
    "photo picture",
    "car vehicle",
    "mobile phone cellphone",
    "cancel terminate",
    "help assist",
    "buy purchase",
    "delete erase",
    "fix repair mend",
    "big large",
    "small little",
    "find locate",
    "show display",
    "need require",
    "mute silence",
    "previous earlier",
    "create setup",
    "register signup",
    "include comewith",
    "activate golive",
    "disable turnoff switchoff",
    "enable turnon switchon",
    "login signin",
    "logout signout",
)
"""Words that ask the same thing (for the lexical check): general English, kept short on purpose.
Phrasal verbs are joined first ("sign up" → signup, see _PHRASES)."""

_PHRASES = {
    ("sign", "up"): "signup", ("set", "up"): "setup", ("come", "with"): "comewith", ("go", "live"): "golive",
    ("turn", "off"): "turnoff", ("switch", "off"): "switchoff", ("turn", "on"): "turnon", ("switch", "on"): "switchon",
    ("log", "in"): "login", ("sign", "in"): "signin", ("log", "out"): "logout", ("sign", "out"): "signout",
}  # fmt: skip

_NOT_NAMES = frozenset("i i'm i've i'd i'll ok okay asap fyi pls e.g i.e etc vs".split())
"""Capitalised or dotted tokens that are not names."""
_SENTENCE_END = re.compile(r"[.!?:;\n]\s*$")


# --- prompt analysis ------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class PromptFeatures:
    """What the checks compare, extracted once per prompt (cache it beside a stored prompt)."""

    chars: int
    """Length of the analysed text (the guard's ``max_prompt_chars`` applies to stored features too)."""
    words: tuple[str, ...]
    """Lower-cased words in order, contractions expanded ("don't" → do, not), possessives dropped."""
    stems: frozenset[str]
    content: frozenset[str]
    """Stems of the words that say which question is asked (no function words, no numbers)."""
    negations: int
    quantities: tuple[tuple[float, str], ...]
    """(value in the dimension's base unit, dimension), sorted."""
    free_units: frozenset[str]
    dates: frozenset[str]
    entities: frozenset[str]
    """Compact forms (lower case, letters and digits only) of names, acronyms, quoted strings, identifiers."""
    findable: frozenset[str]
    """Compact forms of every word and adjacent word pair: where another prompt's entities are looked up."""
    compact_text: str
    """The whole prompt in compact form, for longer entities (quoted strings, multi-word names)."""
    role_objects: tuple[tuple[str, frozenset[str]], ...]
    """For from/to/into…: the stems that follow them."""
    canonical: tuple[str, ...]
    """Stems in order, synonyms mapped to one word: what the sentence-frame comparison aligns."""
    parts: tuple[str, ...]
    """Stems in order with hyphenated words split ("check-in" → check, in): where particles are aligned."""


def analyse_prompt(text: str) -> PromptFeatures:
    """Extract the features the guard compares (pure; linear in ``len(text)``: bound it first)."""
    chars = len(text)
    text = _PLEASANTRIES.sub("", text).strip() or text
    raw_tokens = [(m.lastgroup or "", m.group(), m.start()) for m in _TOKEN.finditer(text)]
    caseful = any(c.islower() for c in text) and any(c.isupper() for c in text[1:])
    words: list[str] = []
    entities: set[str] = set()
    kinds: list[str] = []
    for index, (kind, token, start) in enumerate(raw_tokens):
        if kind == "quoted":
            inner = token[1:-1]
            entities.add(_compact(inner))
            for sub in _TOKEN.finditer(inner):
                if sub.lastgroup == "word":
                    words.extend(_expand(sub.group()))
                    kinds.extend("word" for _ in _expand(sub.group()))
            continue
        if kind == "url":
            entities.add(_compact(token))
            continue
        if kind == "word":
            if _is_entity(token, text, start, caseful):
                entities.add(_compact(_strip_possessive(token)))
            expanded = _expand(token)
            words.extend(expanded)
            kinds.extend("word" for _ in expanded)
            continue
        words.append(token.lower())
        kinds.append(kind)

    words, kinds = _join_phrases(words, kinds)
    quantities, used, free_units = _quantities(words, kinds)
    dates = _dates(words, text)
    stems = [_stem(w) for w in words]
    content = frozenset(
        _CANONICAL.get(stems[i], stems[i])
        for i, w in enumerate(words)
        if kinds[i] == "word" and i not in used and len(w) > 1 and not _is_function_word(w, stems[i])
    )
    negations = sum(1 for w in words if w in _NEGATION_CUES or w.startswith("non-"))
    compact_words = [_compact(w) for w in words]
    findable = frozenset(compact_words) | frozenset(a + b for a, b in zip(compact_words, compact_words[1:]))
    roles: dict[str, set[str]] = {}
    for i, w in enumerate(words):
        if w in _ROLE_PREPOSITIONS:
            following = next((stems[j] for j in range(i + 1, min(i + 5, len(words))) if words[j] not in _STOPWORDS), None)
            if following is not None:
                roles.setdefault(w, set()).add(following)
    entities.discard("")
    entities -= _DATE_NAMES
    return PromptFeatures(
        chars=chars,
        words=tuple(words),
        stems=frozenset(stems),
        content=content,
        negations=negations,
        quantities=tuple(sorted(quantities)),
        free_units=frozenset(free_units),
        dates=frozenset(dates),
        entities=frozenset(e for e in entities if e not in _UNITS),
        findable=findable,
        compact_text=_compact(text),
        role_objects=tuple(sorted((k, frozenset(v)) for k, v in roles.items())),
        canonical=tuple(_CANONICAL.get(stem, stem) for stem in stems),
        parts=tuple(_stem(part) for w in words for part in w.split("-")) if any("-" in w for w in words) else tuple(stems),
    )


_CONTRACTIONS = {"can't": ("can", "not"), "cannot": ("can", "not"), "won't": ("will", "not"), "shan't": ("shall", "not")}


def _expand(token: str) -> list[str]:
    """Lower-case a word token, expand "n't" and drop possessive/verb clitics ("'s", "'re", "'ll"…)."""
    word = token.lower().replace("’", "'")
    if word in _CONTRACTIONS:
        return list(_CONTRACTIONS[word])
    if word.endswith("n't"):
        return [word[:-3], "not"]
    if "-" in word and word.split("-", 1)[0] in _NUMBER_WORDS:  # "two-bed", "twenty-five", "five-year-old"
        parts = word.split("-")
        return parts[:1] + ["year-old"] if parts[1:] == ["year", "old"] else parts
    for clitic in ("'s", "'re", "'ve", "'ll", "'d", "'m"):
        if word.endswith(clitic) and len(word) > len(clitic):
            return [word[: -len(clitic)]]
    return [word.rstrip("'")]


def _join_phrases(words: list[str], kinds: list[str]) -> tuple[list[str], list[str]]:
    joined_words: list[str] = []
    joined_kinds: list[str] = []
    i = 0
    while i < len(words):
        phrase = _PHRASES.get((words[i], words[i + 1])) if i + 1 < len(words) else None
        if phrase is not None:
            joined_words.append(phrase)
            joined_kinds.append("word")
            i += 2
            continue
        joined_words.append(words[i])
        joined_kinds.append(kinds[i])
        i += 1
    return joined_words, joined_kinds


def _is_function_word(word: str, stem: str) -> bool:
    return (
        word in _STOPWORDS
        or _CANONICAL.get(stem) in _STOP_STEMS
        or word in _NEGATION_CUES
        or word in _UNITS
        or word in _NUMBER_WORDS
        or word in _NUMBER_SCALES
    )


def _strip_possessive(token: str) -> str:
    token = token.replace("’", "'")
    return token[:-2] if token.lower().endswith("'s") else token.rstrip("'")


def _is_entity(token: str, text: str, start: int, caseful: bool) -> bool:
    """A name-like token: an identifier, a word mixing letters and digits, an acronym, or (in text
    that uses case) a capitalised word that does not start a sentence."""
    bare = _strip_possessive(token)
    if bare.lower() in _NOT_NAMES or bare.lower() in _UNITS:
        return False
    if "_" in bare or _CAMEL_OR_DOTTED.search(bare):
        return True
    if any(c.isdigit() for c in bare):
        return True
    if not caseful or bare.lower() in _NOT_NAMES:
        return False
    if len(bare) >= 2 and bare.isupper():
        return True
    if bare[:1].isupper():
        before = text[:start].rstrip()
        return bool(before) and not _SENTENCE_END.search(before) and not before.endswith(("\"", "“", "(", "-"))
    return False


_CAMEL_OR_DOTTED = re.compile(r"[a-z][A-Z]|\w\.\w")
_NOT_ALPHANUMERIC = re.compile(r"[^0-9a-z]+")


def _compact(text: str) -> str:
    return _NOT_ALPHANUMERIC.sub("", text.lower())


def _stem(word: str) -> str:
    """A tiny suffix stripper: enough to match inflections (closes/closed/closing), not a lemmatiser."""
    w = word.lower()
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ly") and len(w) > 5:
        w = w[:-2]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            if len(w) >= 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def _number_value(word: str) -> float | None:
    cleaned = word.replace(",", "")
    try:
        return float(cleaned)
    except ValueError:
        return None


def _quantities(words: list[str], kinds: list[str]) -> tuple[list[tuple[float, str]], set[int], set[str]]:
    """Numbers with the unit next to them, in canonical units; and unit words standing alone."""
    quantities: list[tuple[float, str]] = []
    used: set[int] = set()
    i = 0
    while i < len(words):
        word = words[i]
        value: float | None = None
        end = i
        if kinds[i] == "clock":
            hours, minutes = word.split(":")
            value, end = int(hours) + int(minutes) / 60, i
            dimension = "clock"
        elif kinds[i] == "number":
            value, dimension = _number_value(word), ""
        elif word in _ORDINALS and i + 1 < len(words) and words[i + 1].isalpha() and words[i + 1] not in _STOPWORDS:
            value, dimension = float(_ORDINALS[word]), "ordinal"
        elif (word in _NUMBER_WORDS and not _pronoun_one(words, i)) or (
            word in _NUMBER_SCALES and word != "k" and i > 0 and words[i - 1] in ("a", "one")
        ):
            value, end = _number_phrase(words, i)
            dimension = ""
        else:
            i += 1
            continue
        if value is None:
            i += 1
            continue
        if end + 1 < len(words) and words[end + 1] in ("st", "nd", "rd", "th"):
            dimension, end = "ordinal", end + 1
        elif end + 1 < len(words) and words[end + 1] in ("k", "bn"):
            value *= 1000 if words[end + 1] == "k" else 1e9
            end += 1
        # a currency symbol just before, a unit just after ("£50", "2 hours", "48 hours' notice")
        if not dimension and i > 0 and words[i - 1] in _CURRENCY_SYMBOLS:
            dimension = _UNITS[words[i - 1]][0]
            used.add(i - 1)
        if not dimension or dimension == "clock":
            nxt = end + 1
            if nxt < len(words) and words[nxt].rstrip("'") in _UNITS:
                unit_dimension, factor = _UNITS[words[nxt].rstrip("'")]
                if dimension == "clock" and unit_dimension not in ("clock", "clock_pm"):
                    pass
                else:
                    dimension, value = unit_dimension, value * factor
                    used.add(nxt)
                    end = nxt
        dimension, value = _clock(dimension, value)
        quantities.append((round(value, 6), dimension))
        used.update(range(i, end + 1))
        i = end + 1
    # A unit word alone names what the answer is measured in ("in euros", "how many kg"). Durations
    # are left out: "opening hours", "how many days does it take" ask what "how long" asks.
    free_units = {
        _UNITS[w][0] if _UNITS[w][0] not in ("mass", "length", "volume", "data") else w
        for index, w in enumerate(words)
        if index not in used and w in _UNITS and kinds[index] in ("word", "symbol") and len(w) > 1
    }
    free_units -= {"duration", "age", "clock", "clock_pm"}
    return quantities, used, free_units


_NOT_A_COUNT_BEFORE = frozenset("a the this that which new another any each every no only quick last next same other".split())


def _pronoun_one(words: list[str], i: int) -> bool:
    """"a new one", "which one", "one of my…": "one" standing for a thing, not a count."""
    if words[i] != "one":
        return False
    before = words[i - 1] if i > 0 else ""
    after = words[i + 1] if i + 1 < len(words) else ""
    return before in _NOT_A_COUNT_BEFORE or after in ("of", "another", "") or not after.isalpha()


def _clock(dimension: str, value: float) -> tuple[str, float]:
    if dimension == "clock_pm":
        return "clock", value % 12 + 12
    if dimension == "clock":
        return "clock", value % 12 if value == 12 else value
    return dimension, value


def _number_phrase(words: list[str], start: int) -> tuple[float, int]:
    """'twenty five' → 25, 'two thousand' → 2000, 'a hundred' → 100; returns (value, last index)."""
    total, current, end, i = 0.0, 0.0, start, start
    if words[i] in ("a", "one") and i + 1 < len(words) and words[i + 1] in _NUMBER_SCALES:
        current, i = 1.0, i + 1
    while i < len(words):
        w = words[i]
        if w in _NUMBER_WORDS:
            current += _NUMBER_WORDS[w]
        elif w in _NUMBER_SCALES and (current or total):
            scale = _NUMBER_SCALES[w]
            if scale >= 1000:
                total, current = total + (current or 1) * scale, 0.0
            else:
                current = (current or 1) * scale
        elif w == "and" and i + 1 < len(words) and words[i + 1] in _NUMBER_WORDS and (current or total):
            pass
        else:
            break
        end, i = i, i + 1
    return total + current, end


def _dates(words: list[str], text: str) -> set[str]:
    found: set[str] = set()
    for i, word in enumerate(words):
        singular = word[:-1] if word.endswith("s") else word
        if singular in _WEEKDAYS or singular in _DATE_WORDS:
            found.add(singular)
        elif word in _WEEKDAYS or word in _DATE_WORDS:
            found.add(word)
        elif word in _MONTHS and (word != "may" or re.search(r"(?<![.!?]\s)\bMay\b", text[1:])):
            found.add(word[:3])
        elif word in _RELATIVE and i + 1 < len(words) and (words[i + 1] in _PERIODS or words[i + 1] in _WEEKDAYS):
            found.add(f"{word} {words[i + 1]}")
        elif "-" in word:
            parts = word.split("-")
            if len(parts) == 2 and parts[0] in _RELATIVE and parts[1] in _PERIODS:
                found.add(" ".join(parts))
    return found


# --- the comparison -------------------------------------------------------------------------------


def _stems_of(groups: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in groups.split())


_OppositesIndex = dict[str, tuple[tuple[int, int], ...]]


def _index_of(pairs: tuple[tuple[str, str], ...]) -> _OppositesIndex:
    """stem -> every (pair number, side) it belongs to."""
    index: dict[str, list[tuple[int, int]]] = {}
    for number, sides in enumerate(pairs):
        for side, words in enumerate(sides):
            for stem in _stems_of(words):
                index.setdefault(stem, []).append((number, side))
    return {stem: tuple(memberships) for stem, memberships in index.items()}


_POLAR = _index_of(_POLAR_OPPOSITES)
_CANONICAL = {_stem(w): _stem(group.split()[0]) for group in _SYNONYMS for w in group.split()}
_STOP_STEMS = frozenset(_stem(w) for w in _STOPWORDS)
_DIRECTIONS = _index_of(_DIRECTION_OPPOSITES)
_ALIGNED_STEMS = frozenset(_stem(w) for w in _ALIGNED_ONLY)


@final
class SemanticCacheGuard:
    """Decides whether a cached answer may be served for a new prompt (see the module docstring)."""

    __slots__ = ("config",)

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()

    def check(self, cached_prompt: str | PromptFeatures, new_prompt: str | PromptFeatures, similarity: float) -> GuardVerdict:
        """The verdict on serving ``cached_prompt``'s answer for ``new_prompt``.

        :param similarity: the cosine similarity of the two prompts' embeddings.
        Prompts may be given as text or as :func:`analyse_prompt`'s features (a cache can store
        the cached prompt's features beside it). Never raises.
        """
        config = self.config
        if _length(cached_prompt) > config.max_prompt_chars or _length(new_prompt) > config.max_prompt_chars:
            return GuardVerdict(False, (GuardCheck.TOO_LONG,), similarity)
        if not similarity >= config.similarity_threshold:  # also refuses NaN
            return GuardVerdict(False, (GuardCheck.THRESHOLD,), similarity)
        a = cached_prompt if isinstance(cached_prompt, PromptFeatures) else analyse_prompt(cached_prompt)
        b = new_prompt if isinstance(new_prompt, PromptFeatures) else analyse_prompt(new_prompt)
        particles = _ALIGNED_STEMS & set(a.parts) and _ALIGNED_STEMS & set(b.parts)
        aligned = _aligned_changes(a, b) if particles and (config.negation or config.direction) else _NO_ALIGNMENT
        outcomes = (
            (GuardCheck.NEGATION, config.negation and _negation_differs(a, b, aligned)),
            (GuardCheck.NUMBERS, config.numbers and a.quantities != b.quantities),
            (GuardCheck.UNITS, config.units and a.free_units != b.free_units),
            (GuardCheck.DATES, config.dates and a.dates != b.dates),
            (GuardCheck.DIRECTION, config.direction and _direction_differs(a, b, aligned)),
            (GuardCheck.ENTITIES, config.entities and _entities_differ(a, b)),
            (GuardCheck.LEXICAL, config.lexical and self._lexically_different(a, b)),
        )
        refused = tuple(check for check, differs in outcomes if differs)
        return GuardVerdict(not refused, refused, similarity)

    def _lexically_different(self, a: PromptFeatures, b: PromptFeatures) -> bool:
        only_a, only_b = _unmatched(a.content - b.content, b.content - a.content)
        if not only_a and not only_b:
            return False
        if any(len(word) > _LONGEST_WORD for word in only_a | only_b):
            return True  # text without spaces (Chinese, Japanese…) differs: what changed cannot be told
        shared = len(a.content & b.content) + (len(a.content - b.content) - len(only_a))
        union = shared + len(only_a) + len(only_b)
        if union > 0 and shared / union >= self.config.near_duplicate_overlap:
            return True
        # Short prompts: one swapped word of three is a low overlap, but the same sentence around it
        # ("What vaccines does my puppy / kitten need?") is the classic near-miss.
        frame = difflib.SequenceMatcher(a=a.canonical, b=b.canonical, autojunk=False).ratio()
        return frame >= self.config.same_frame_ratio


def _length(prompt: str | PromptFeatures) -> int:
    return prompt.chars if isinstance(prompt, PromptFeatures) else len(prompt)


def _unmatched(only_a: Iterable[str], only_b: Iterable[str]) -> tuple[set[str], set[str]]:
    """Drop pairs that are one typo apart (bagage/baggage) or the same word hyphenated (wi-fi/wifi)."""
    left, right = set(only_a), set(only_b)
    for x in sorted(left):
        match = next((y for y in sorted(right) if _same_word(x, y)), None)
        if match is not None:
            left.discard(x)
            right.discard(match)
    return left, right


def _same_word(x: str, y: str) -> bool:
    if x.replace("-", "") == y.replace("-", ""):
        return True
    shortest = min(len(x), len(y))
    if shortest < 5 or _has_negating_prefix(x, y) or _has_negating_prefix(y, x):
        return False
    return _edit_distance(x, y, 2) <= (1 if shortest < 8 else 2)


def _edit_distance(x: str, y: str, cap: int) -> int:
    """Damerau-Levenshtein (adjacent swaps count 1), stopping early past ``cap``."""
    if abs(len(x) - len(y)) > cap:
        return cap + 1
    previous2: list[int] = []
    previous = list(range(len(y) + 1))
    for i, cx in enumerate(x, 1):
        current = [i] + [0] * len(y)
        for j, cy in enumerate(y, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (cx != cy))
            if i > 1 and j > 1 and cx == y[j - 2] and x[i - 2] == cy:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > cap:
            return cap + 1
        previous2, previous = previous, current
    return previous[-1]


def _prefix_negates(words: set[str], bases: set[str]) -> bool:
    """Some word is one of ``bases`` with a negating prefix (unsafe / safe)."""
    return any(
        word.startswith(prefix) and len(word) - len(prefix) >= 3 and word[len(prefix) :] in bases
        for word in words
        for prefix in _NEGATING_PREFIXES
    )


def _has_negating_prefix(word: str, base: str) -> bool:
    """``word`` is ``base`` with a negating prefix: unsafe/safe, non-refundable/refundable."""
    word, base = word.replace("-", ""), base.replace("-", "")
    return len(base) >= 3 and any(word == prefix + base for prefix in _NEGATING_PREFIXES)


_Alignment = tuple[frozenset[str], frozenset[str]]
_NO_ALIGNMENT: _Alignment = (frozenset(), frozenset())


def _negation_differs(a: PromptFeatures, b: PromptFeatures, aligned: _Alignment) -> bool:
    if a.negations != b.negations:
        return True
    # "non-" words are counted as cues above; fused prefixes are compared here (unsafe/safe)
    only_a = {w for w in a.words if "-" not in w} - set(b.words)
    only_b = {w for w in b.words if "-" not in w} - set(a.words)
    if _prefix_negates(only_a, only_b) or _prefix_negates(only_b, only_a):
        return True
    return _opposed(a, b, aligned, _POLAR)


def _direction_differs(a: PromptFeatures, b: PromptFeatures, aligned: _Alignment) -> bool:
    if _opposed(a, b, aligned, _DIRECTIONS):
        return True
    roles_a, roles_b = dict(a.role_objects), dict(b.role_objects)
    for preposition in roles_a.keys() & roles_b.keys():
        moved_away = roles_a[preposition] - roles_b[preposition]
        moved_in = roles_b[preposition] - roles_a[preposition]
        # the same words in both prompts, but a different one after "to": the roles were swapped
        if any(w in b.stems for w in moved_away) and any(w in a.stems for w in moved_in):
            return True
    return False


def _entities_differ(a: PromptFeatures, b: PromptFeatures) -> bool:
    return any(not _mentions(b, e) for e in a.entities) or any(not _mentions(a, e) for e in b.entities)


def _mentions(features: PromptFeatures, entity: str) -> bool:
    """``entity`` is a word or word pair of the prompt, or (when long enough not to match by
    chance) part of it: "Wi-Fi" is in "wifi", "Hargreaves Lansdown" in "hargreaves lansdown's"."""
    return entity in features.findable or (len(entity) >= 8 and entity in features.compact_text)


def _opposed(a: PromptFeatures, b: PromptFeatures, aligned: _Alignment, index: _OppositesIndex) -> bool:
    """One prompt has a word of one side of a pair, the other a word of the other side, and
    neither has both. Particles (in/out, on/off…) count only where the two wordings line up."""
    sides_a = _sides(a.stems - _ALIGNED_STEMS, aligned[0], index)
    if not sides_a:
        return False
    sides_b = _sides(b.stems - _ALIGNED_STEMS, aligned[1], index)
    return any(len(sides) == 1 and sides_b.get(pair) == {1 - next(iter(sides))} for pair, sides in sides_a.items())


def _sides(stems: Iterable[str], aligned: Iterable[str], index: _OppositesIndex) -> dict[int, set[int]]:
    """pair number -> the sides (0, 1) of that pair the prompt uses."""
    found: dict[int, set[int]] = {}
    for stem in (*stems, *aligned):
        for pair, side in index.get(stem, ()):
            found.setdefault(pair, set()).add(side)
    return found


def _aligned_changes(a: PromptFeatures, b: PromptFeatures) -> _Alignment:
    """Stems replaced by one another where the two wordings line up ("opt in to" / "opt out of"),
    hyphenated parts included ("check-in" / "check-out")."""
    changed_a: set[str] = set()
    changed_b: set[str] = set()
    matcher = difflib.SequenceMatcher(a=a.parts, b=b.parts, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace":
            changed_a.update(a.parts[i1:i2])
            changed_b.update(b.parts[j1:j2])
    return frozenset(changed_a), frozenset(changed_b)
