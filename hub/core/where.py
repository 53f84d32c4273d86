"""Value filters: ``where``, a condition on an entity's property values.

A ``where`` is a JSON object of property name -> condition; an entity matches when
every condition holds (AND). A condition is

- a bare value (not an object): the property equals it;
- an object of one or more operators, all of which must hold:

  ==========================  =====================================================
  ``{"eq": v}``               the property equals ``v`` (any JSON value)
  ``{"ne": v}``               the property is absent or does not equal ``v``
  ``{"lt"|"lte"|"gt"|"gte": x}``  ``x`` a number or a string; the property is of the
                              same kind and compares so (numbers by value, strings
                              by code point); absent or another kind: false
  ``{"in": [v, ...]}``        the property equals one of the values
  ``{"exists": true|false}``  the property is present (``null`` is a value) or not
  ==========================  =====================================================

To compare with an object, use ``{"eq": {...}}``: a bare object is always read as
operators. Equality is JSON equality: ``1`` equals ``1.0``; ``true`` is not ``1``;
arrays and objects compare element by element.

Bounds (a ``where`` over them is refused with :class:`WhereError` naming the part):
:data:`MAX_TERMS` operators in all, :data:`MAX_IN` values per ``in``, operand values
nested at most :data:`MAX_DEPTH` deep, property names of at most :data:`MAX_NAME`
characters. The cost of :meth:`Where.matches` is one dict look-up and one comparison
per term, on the referenced properties only.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..errors import WhereError
from .model import Delta

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "MAX_DEPTH",
    "MAX_IN",
    "MAX_NAME",
    "MAX_TERMS",
    "OPERATORS",
    "ViewDelta",
    "Where",
    "WhereError",
    "parse_where",
    "parse_where_json",
    "where_from_words",
]

#: Operators in all, over every property (a bare value counts as one).
MAX_TERMS: Final = 32
#: Values in one ``in`` list.
MAX_IN: Final = 256
#: How deep an operand value may nest (``[[1]]`` is 2 deep; a scalar 0).
MAX_DEPTH: Final = 8
#: Characters in a property name.
MAX_NAME: Final = 256

OPERATORS: Final = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "exists")

_ABSENT: Final = object()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans apart from numbers, deep for
    arrays and objects."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_number(a):
        return _is_number(b) and bool(a == b)
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(value, b[key]) for key, value in a.items())
        )
    return type(a) is type(b) and bool(a == b)


def _compare(op: str, value: Any, operand: Any) -> bool:
    if _is_number(operand):
        if not _is_number(value):
            return False
    elif not isinstance(value, str):
        return False
    if op == "lt":
        return bool(value < operand)
    if op == "lte":
        return bool(value <= operand)
    if op == "gt":
        return bool(value > operand)
    return bool(value >= operand)


def _holds(op: str, value: Any, operand: Any) -> bool:
    """Whether one term holds for a property value (``_ABSENT`` if missing)."""
    if op == "exists":
        return (value is not _ABSENT) is operand
    if value is _ABSENT:
        return op == "ne"
    if op == "eq":
        return same(value, operand)
    if op == "ne":
        return not same(value, operand)
    if op == "in":
        return any(same(value, v) for v in operand)
    return _compare(op, value, operand)


class Where:
    """A parsed value filter (build it with :func:`parse_where`)."""

    __slots__ = ("__weakref__", "_key", "_memo", "_tests", "fields", "source", "terms")

    def __init__(self, terms: tuple[tuple[str, str, Any], ...], source: dict[str, Any]) -> None:
        #: (property, operator, operand), in the order given.
        self.terms = terms
        #: The properties the filter reads: only a change to one of them can change
        #: whether an entity matches.
        self.fields: frozenset[str] = frozenset(name for name, _, _ in terms)
        #: The JSON form it was parsed from.
        self.source = source
        #: Per term, a test of the canonical JSON value (None: absent).
        self._tests = tuple((name, _encoded_test(op, operand)) for name, op, operand in terms)
        # Equal filters have equal keys (repr tells 1, 1.0 and true apart; == does not).
        self._key = repr(terms)
        #: The last :meth:`matches_state` answer: (entity id, version, answer).
        self._memo: tuple[str, int, bool] = ("", -1, False)

    def __repr__(self) -> str:
        return f"Where({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Where) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def matches(self, properties: Mapping[str, Any]) -> bool:
        """Whether an entity with these (decoded) property values matches."""
        for name, op, operand in self.terms:
            if not _holds(op, properties.get(name, _ABSENT), operand):
                return False
        return True

    def matches_encoded(self, properties: Mapping[str, bytes]) -> bool:
        """:meth:`matches` for canonical JSON values (as the core keeps them): strings,
        booleans and null compare as bytes; only numbers, arrays and objects that
        are not byte-equal are decoded."""
        for name, test in self._tests:
            if not test(properties.get(name)):
                return False
        return True

    def matches_state(self, entity_id: str, version: int, properties: Mapping[str, bytes]) -> bool:
        """:meth:`matches_encoded` for an entity's state at a version, remembering the
        last answer: ``(id, version)`` names one state of the log, and subscriptions
        sharing this filter (one object: the hub interns them) ask about the same
        delta one after the other, so all but the first are answered from memory."""
        memo = self._memo
        if memo[1] == version and memo[0] == entity_id:
            return memo[2]
        answer = self.matches_encoded(properties)
        self._memo = (entity_id, version, answer)
        return answer


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


def _encoded_test(op: str, operand: Any) -> Callable[[bytes | None], bool]:
    """One term as a test of a canonical JSON value (None: the property is absent)."""
    if op == "exists":
        return (lambda raw: raw is not None) if operand else (lambda raw: raw is None)
    if op in _ORDER:
        order = _ORDER[op]
        if _is_number(operand):
            return lambda raw: raw is not None and _compare_raw(order, raw, operand, _is_number)
        return lambda raw: raw is not None and _compare_raw(order, raw, operand, _is_str)
    values = operand if op == "in" else (operand,)
    # Byte-equal canonical JSON is equal; numbers, arrays and objects may also be equal
    # when not byte-equal (1 and 1.0): only those are decoded and compared.
    exact = frozenset(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values)
    loose = tuple(v for v in values if _is_number(v) or isinstance(v, list | dict))

    def member(raw: bytes) -> bool:
        if raw in exact:
            return True
        if not loose:
            return False
        value = orjson.loads(raw)
        return any(same(value, v) for v in loose)

    if op == "ne":
        return lambda raw: raw is None or not member(raw)
    return lambda raw: raw is not None and member(raw)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _compare_raw(
    order: Callable[[Any, Any], bool], raw: bytes, operand: Any, kind: Callable[[object], bool]
) -> bool:
    value = orjson.loads(raw)
    return kind(value) and bool(order(value, operand))


@dataclass(frozen=True, slots=True)
class ViewDelta(Delta):
    """A delta of a ``where`` subscription's view rather than of the entity
    (hub/core/session/view.py)."""

    #: The entity starts matching: ``touched`` is its full state (wire: ``entered``).
    entered: bool = False
    #: The entity stops matching (``deleted`` is set, so merges treat it as a
    #: removal; wire: a ``left`` frame).
    left: bool = False
    #: An entry's lease: the entity's deadline (None: it has none), as on a
    #: :class:`~hub.core.model.LeasedDelta`; or what the delta it stands for said.
    deadline: int | None = None  # type: ignore[misc]


def _depth(value: Any, path: str, level: int = 0) -> None:
    """Refuse an operand nested deeper than :data:`MAX_DEPTH`."""
    if isinstance(value, list | dict):
        if level >= MAX_DEPTH:
            raise WhereError(f"{path}: values may nest at most {MAX_DEPTH} deep")
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            _depth(item, path, level + 1)


def _operand(op: str, operand: Any, path: str) -> Any:
    if op == "exists":
        if not isinstance(operand, bool):
            raise WhereError(f"{path}: 'exists' needs true or false")
        return operand
    if op in ("lt", "lte", "gt", "gte"):
        if not (_is_number(operand) or isinstance(operand, str)):
            raise WhereError(f"{path}: {op!r} needs a number or a string")
        return operand
    if op == "in":
        if not isinstance(operand, list):
            raise WhereError(f"{path}: 'in' needs a list of values")
        if len(operand) > MAX_IN:
            raise WhereError(f"{path}: 'in' takes at most {MAX_IN} values, not {len(operand)}")
        for item in operand:
            _depth(item, path)
        return tuple(operand)
    _depth(operand, path)
    return operand


def parse_where(value: object) -> Where:
    """Check and compile a ``where`` given in its JSON form.

    Raises:
        WhereError: the value is malformed or over a bound; the message names the
            offending part (``where.load: 'lt' needs a number or a string``).
    """
    if not isinstance(value, dict):
        raise WhereError("where: must be an object of property name -> condition")
    terms: list[tuple[str, str, Any]] = []
    for name, condition in value.items():
        if not isinstance(name, str):
            raise WhereError("where: property names must be strings")
        path = f"where.{name}"
        if len(name) > MAX_NAME:
            raise WhereError(f"where: a property name over {MAX_NAME} characters")
        if not isinstance(condition, dict):
            terms.append((name, "eq", _operand("eq", condition, path)))
        elif not condition:
            raise WhereError(f"{path}: an empty condition (give a value or an operator)")
        else:
            for op, operand in condition.items():
                if op not in OPERATORS:
                    raise WhereError(
                        f"{path}: unknown operator {op!r} (one of {', '.join(OPERATORS)};"
                        ' compare with an object as {"eq": {...}})'
                    )
                terms.append((name, op, _operand(op, operand, f"{path}.{op}")))
        if len(terms) > MAX_TERMS:
            raise WhereError(f"where: at most {MAX_TERMS} conditions in all")
    return Where(tuple(terms), value)


def parse_where_json(text: str | bytes) -> Where:
    """:func:`parse_where` for a ``where`` given as JSON text (a query parameter).

    Raises:
        WhereError: not JSON, or not a valid ``where``.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise WhereError(f"where: not JSON ({exc})") from None
    return parse_where(value)


_COMPARISON = re.compile(r"^\s*(?P<name>[^=<>!?\s]+)\s*(?P<op><=|>=|!=|=|<|>)\s*(?P<value>.*?)\s*$")
_IN = re.compile(r"^\s*(?P<name>\S+)\s+in\s+(?P<values>.*?)\s*$", re.DOTALL)
_EXISTS = re.compile(r"^\s*(?P<absent>!?)(?P<name>[^\s?]+)\?\s*$")
_WORD_OPS: Final = {"=": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


def _word_value(text: str) -> Any:
    """A value in the command-line syntax: JSON if it reads as JSON, else the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def where_from_words(words: list[str]) -> dict[str, Any]:
    """The JSON form of the command line's ``--where`` words (``flux list``/``watch``).

    Each word is one condition, and all must hold: ``status=open``, ``load<5``
    (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``), ``zone in a,b``, ``owner?`` (present),
    ``!owner?`` (absent), or a JSON object in the API's form. A value reads as JSON when
    it is JSON (``5``, ``true``, ``null``, ``"5"``), else as a string. Several words
    about one property combine (``load>1 load<5``).

    Raises:
        WhereError: a word in none of these forms, or a filter over a bound.
    """
    conditions: dict[str, dict[str, Any]] = {}

    def add(name: str, op: str, value: Any) -> None:
        conditions.setdefault(name, {})[op] = value

    for word in words:
        if word.lstrip().startswith("{"):
            for name, condition in parse_where_json(word).source.items():
                ops = condition if isinstance(condition, dict) else {"eq": condition}
                for op, value in ops.items():
                    add(name, op, value)
        elif match := _IN.match(word):
            values = [_word_value(v.strip()) for v in match["values"].split(",") if v.strip()]
            add(match["name"], "in", values)
        elif match := _EXISTS.match(word):
            add(match["name"], "exists", not match["absent"])
        elif match := _COMPARISON.match(word):
            add(match["name"], _WORD_OPS[match["op"]], _word_value(match["value"]))
        else:
            raise WhereError(
                f"--where {word!r}: expected NAME=VALUE, NAME!=VALUE, NAME<N (<=, >, >=), "
                "'NAME in A,B', NAME? or !NAME?"
            )
    parse_where(conditions)
    return dict(conditions)
