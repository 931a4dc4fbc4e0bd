"""How a config key is declared, and what follows from a declaration.

A section of the config is a class decorated with `@section` (a frozen, keyword-only dataclass);
each of its keys is one field made with `key()`. The field's name is the key's name, its
annotation the key's type, and `key()` holds the rest: the one-line meaning, the default and the
constraints (choices, minimum, a conversion such as making a path absolute). A key that may be
null says so in its annotation (`Path | None`); a secret is annotated `Secret` and is also
accepted as `NAME_file`. Nothing else repeats any of it:

- `keys_of(section)` turns the declaration into the tree of `Key`s that validation walks and
  the documentation lists (`key_paths`);
- `build(section, keys, values, root)` turns validated values into the typed object.

Fields made without `key()` (the config file's own path, a parsed key file, warnings) are not
keys: a config file never sets them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, dataclass_transform

from daemon.secrets import Secret

T = TypeVar("T")
REQUIRED: Any = object()  # marker: the key has no default
_DECLARATION = "speechkit-watch config key"  # where key() keeps its arguments in field metadata

# The kind of a key of each plain type; `kind=` in key() narrows a string to url or language.
_KINDS: Mapping[object, str] = {bool: "bool", int: "int", float: "float", Path: "path",
                                str: "str", Secret: "str"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Declared:
    """What key() was told beyond the field's name, type and default."""

    doc: str
    kind: str | None
    choices: tuple[str, ...]
    item_choices: tuple[str, ...]
    minimum: float | None
    convert: Callable[[Any], Any] | None
    inherits: str | None


def key(
    doc: str,
    *,
    default: Any = REQUIRED,
    default_factory: Callable[[], Any] | None = None,
    kind: str | None = None,
    choices: tuple[str, ...] = (),
    item_choices: tuple[str, ...] = (),
    minimum: float | None = None,
    convert: Callable[[Any], Any] | None = None,
    inherits: str | None = None,
) -> Any:
    """Declare one key as a dataclass field.

    `doc`: its meaning in one line. Without `default` or `default_factory` the key is required.
    `kind`: "url" or "language" for a string checked as such (else the annotation decides).
    `choices`: the values a string may take; `item_choices`: the same for each item of a list.
    `minimum`: the least number allowed. `convert`: applied to the validated value when the
    typed config is built. `inherits`: for a section of per-folder overrides, the top-level key
    whose values fill in what it leaves unset.
    """
    declared = _Declared(doc, kind, choices, item_choices, minimum, convert, inherits)
    metadata = {_DECLARATION: declared}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(key, dataclasses.field)
)
def section(cls: type[T]) -> type[T]:
    """A config section: a frozen dataclass, keyword-only so that keys keep the file's order."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key as validation and the documentation see it (made by keys_of)."""

    name: str
    kind: str  # str, url, path, enum, language, bool, int, float, list, section, sections
    doc: str
    default: Any = REQUIRED  # a section's `{}` is validated as an empty mapping: every default
    choices: tuple[str, ...] = ()
    children: tuple[Key, ...] = ()
    secret: bool = False  # also accepted as NAME_file; never logged
    minimum: float | None = None
    nullable: bool = False
    item_choices: tuple[str, ...] = ()
    section: type[Any] | None = None  # the class a section (or each item of a list of them) is
    convert: Callable[[Any], Any] | None = None
    inherits: str | None = None


def keys_of(cls: type[Any]) -> tuple[Key, ...]:
    """The keys a section declares, in declaration order (the order of problems and docs)."""
    hints = typing.get_type_hints(cls)
    keys: list[Key] = []
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(_DECLARATION)
        if declared is not None:
            keys.append(_key(cls, field, declared, hints[field.name]))
    return tuple(keys)


def _key(cls: type[Any], field: dataclasses.Field[Any], declared: _Declared, hint: Any) -> Key:
    nullable, hint = _without_none(hint)
    item = _tuple_item(hint)
    children: tuple[Key, ...] = ()
    section_class: type[Any] | None = None
    if dataclasses.is_dataclass(hint):
        kind, section_class = "section", typing.cast(type[Any], hint)
    elif item is not None and dataclasses.is_dataclass(item):
        kind, section_class = "sections", typing.cast(type[Any], item)
    elif item is str:
        kind = declared.kind or "list"
    elif hint in _KINDS:
        kind = declared.kind or ("enum" if declared.choices else _KINDS[hint])
    else:
        raise TypeError(f"{cls.__name__}.{field.name}: no config key kind for {hint!r}")
    if section_class is not None:
        children = keys_of(section_class)
    if declared.inherits is not None:
        # Overrides: every key may be left out or null, and then the inherited value holds.
        children = tuple(
            dataclasses.replace(child, default=None, nullable=True) for child in children
        )
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = {} if section_class is not None else field.default_factory()
    else:
        default = REQUIRED
    return Key(
        name=field.name, kind=kind, doc=declared.doc, default=default,
        choices=declared.choices, children=children, secret=hint is Secret,
        minimum=declared.minimum, nullable=nullable, item_choices=declared.item_choices,
        section=section_class, convert=declared.convert, inherits=declared.inherits,
    )  # fmt: skip


def _without_none(hint: Any) -> tuple[bool, Any]:
    """(whether `X | None`, X)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(others) == 1:
            return len(others) < len(typing.get_args(hint)), others[0]
    return False, hint


def _tuple_item(hint: Any) -> Any:
    """X of `tuple[X, ...]`, else None."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def key_paths(keys: Sequence[Key], prefix: str = "") -> list[str]:
    """Every key path under `keys` (`watch[].path`, `storage.bucket`, ...)."""
    paths: list[str] = []
    for each in keys:
        key_path = f"{prefix}.{each.name}" if prefix else each.name
        paths.append(key_path)
        if each.kind == "section":
            paths.extend(key_paths(each.children, key_path))
        elif each.kind == "sections":
            paths.extend(key_paths(each.children, key_path + "[]"))
    return paths


def build(
    cls: type[T], keys: Sequence[Key], values: Mapping[str, Any], root: Mapping[str, Any]
) -> T:
    """The typed section from validated values (every key present, defaults filled in).

    Each key's value becomes its declared type (lists tuples, secrets `Secret`, sections their
    class) and then passes the key's conversion; values that are not keys (a parsed key file)
    pass as they are. `root` holds the top-level values that overrides inherit from.
    """
    names = {each.name for each in keys}
    arguments = {name: value for name, value in values.items() if name not in names}
    for each in keys:
        arguments[each.name] = _typed(each, values[each.name], root)
    return cls(**arguments)


def _typed(declared: Key, value: Any, root: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    if declared.section is not None:
        if declared.kind == "sections":
            value = tuple(build(declared.section, declared.children, item, root) for item in value)
        else:
            if declared.inherits is not None:
                overrides = {name: item for name, item in value.items() if item is not None}
                value = {**root[declared.inherits], **overrides}
            value = build(declared.section, declared.children, value, root)
    elif isinstance(value, list):
        value = tuple(value)
    elif declared.secret:
        value = Secret(value)
    return value if declared.convert is None else declared.convert(value)
