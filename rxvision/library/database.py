"""The library file: one SQLite database of reference pills, their facts and search keys.

Built from a manifest into a temporary file and moved into place in one rename, so a
reader never sees half a library and a failed build leaves nothing behind. Served
read-only (``mode=ro``). Tables (``SCHEMA_VERSION`` 1):

- ``meta(key, value)``: format, schema version, counts, source manifest, image root.
- ``refs``: one row per reference photograph: label, NDC, part, status, every fact,
  ``tokens`` (normalised imprint tokens in reading order), ``imprint_key`` (distinct
  tokens, sorted) and ``group_id`` (identical-pill group).
- ``imprint_postings(key, df, refs)``: an inverted index. Keys are each normalised imprint
  token, the whole imprint run together, and their one-edit keys
  (:func:`~rxvision.library.imprint_text.edit_keys`): two tokens within one edit share a
  key. ``refs`` packs the ids of the ``df`` references holding the key (little-endian
  int32), so a search reads one row per key whatever the library's size.
- ``pill_text``: FTS5 over names (RxNorm name, generic, brand, labeler) and imprint tokens.
- ``look_groups``: one row per identical-pill group.
- ``lookalikes(label, rank, other, similarity)``: each label's nearest other labels by the
  model's class rows (:mod:`.appearance`); filled only for a library built for a model,
  whose weights' SHA-256 is ``meta.lookalikes_weights_sha256``.

``meta.image_root`` is stored relative to the library file's folder (an artifact and the
photographs it refers to can move together); a library written before that holds an
absolute path, which still reads.

Example:
    >>> build_library("../shared/data/c3pi-4k/manifest.csv", "library.sqlite")
    >>> with open_library("library.sqlite") as lib:
    ...     lib.references("00002-3229-30")[0].facts.describe()
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..io_utils import atomic_write
from .appearance import Appearance, nearest
from .errors import LibraryError
from .facts import DrugFacts
from .groups import find_groups, look_key, summarize
from .imprint_text import edit_keys, imprint_key

FORMAT = "rxvision-library"
SCHEMA_VERSION = 1
LIBRARY_NAME = "library.sqlite"  # its name inside a model artifact folder
BUILD_HINT = "build one with `rxvision library build MANIFEST --out library.sqlite`"

# DrugFacts fields stored as refs columns; tuples are stored joined.
_FACT_FIELDS = [f.name for f in fields(DrugFacts)]
_JOIN = {"imprint": ";", "colors": ", "}
_SQL_TYPES = {"part": "INTEGER", "score": "INTEGER", "size_mm": "REAL"}

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs (
    id INTEGER PRIMARY KEY,
    {", ".join(f"{name} {_SQL_TYPES.get(name, 'TEXT')}" for name in _FACT_FIELDS)},
    tokens TEXT NOT NULL,
    imprint_key TEXT NOT NULL,
    group_id INTEGER
);
CREATE INDEX refs_label ON refs(label);
CREATE INDEX refs_ndc ON refs(ndc);
CREATE INDEX refs_group ON refs(group_id);
CREATE TABLE imprint_postings (key TEXT PRIMARY KEY, df INTEGER NOT NULL,
                               refs BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE look_groups (group_id INTEGER PRIMARY KEY, imprint_key TEXT NOT NULL,
                          colors TEXT NOT NULL, shape TEXT NOT NULL,
                          labels INTEGER NOT NULL, refs INTEGER NOT NULL);
CREATE VIRTUAL TABLE pill_text USING fts5(names, imprint, tokenize = 'unicode61');
CREATE TABLE lookalikes (label TEXT NOT NULL, rank INTEGER NOT NULL, other TEXT NOT NULL,
                         similarity REAL NOT NULL, PRIMARY KEY (label, rank)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Reference:
    """One reference pill in a library: its row id, facts, group and photograph."""

    id: int
    facts: DrugFacts
    group_id: int | None
    image_path: Path | None


def read_manifest_facts(manifest: str | Path) -> list[DrugFacts]:
    """Every row of a manifest CSV as checked :class:`DrugFacts`, in file order.

    Raises:
        LibraryError: missing file, not a UTF-8 CSV, no ``label`` column, no rows, or a bad
            cell (the message names the line and the column).
    """
    path = Path(manifest)
    if not path.is_file():
        raise LibraryError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LibraryError(f"{path}: not a UTF-8 CSV manifest ({exc})") from exc
    if "label" not in cols:
        raise LibraryError(f"{path}: manifest lacks the 'label' column; found {cols}")
    if not rows:
        raise LibraryError(f"{path}: manifest has no rows")
    out = []
    for line, row in enumerate(rows, start=2):
        if None in row:  # csv.DictReader files surplus fields under the key None
            raise LibraryError(f"{path}:{line}: more fields than the header's {len(cols)}")
        out.append(DrugFacts.from_row(row, where=f"{path}:{line}"))
    return out


def build_library(
    manifest: str | Path,
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    appearance: Appearance | None = None,
) -> Path:
    """Build a library file from a manifest CSV; image paths resolve against its folder.

    Args:
        manifest: CSV with at least ``label`` (and ``image`` for photographs); the facts
            columns of c3pi-4k are read when present.
        out: the ``.sqlite`` file to write (replaced atomically).
        labels: keep only the rows of these labels (a model's), e.g. the c3pi-1k pills of
            the c3pi-4k manifest; None keeps every row.
        appearance: the model's class rows, to store each label's look-alikes.

    Returns:
        ``out`` as a Path.

    Raises:
        LibraryError: a bad manifest, or no row left for ``labels``.
    """
    manifest = Path(manifest)
    facts = read_manifest_facts(manifest)
    if labels is not None:
        wanted = set(labels)
        facts = [f for f in facts if f.label in wanted]
        if not facts:
            raise LibraryError(f"{manifest} holds none of the {len(wanted)} labels asked for")
    return write_library(
        facts,
        out,
        image_root=manifest.parent.resolve(),
        source=str(manifest),
        appearance=appearance,
    )


def write_library(
    facts: Sequence[DrugFacts],
    out: str | Path,
    *,
    image_root: Path | None,
    source: str = "",
    appearance: Appearance | None = None,
) -> Path:
    """Write ``facts`` (one per reference) as a library file, atomically.

    Enrollment rebuilds a library this way: ``lib.all_facts() + new_facts``. Relative
    ``image`` paths resolve against ``image_root`` (stored relative to ``out``'s folder);
    absolute ones are kept as they are. With ``appearance``, each label's nearest other
    labels by the model's class rows are stored too (:mod:`.appearance`).
    """
    if not facts:
        raise LibraryError("a library needs at least one reference pill")
    group_ids = find_groups(facts)
    out = Path(out)
    root = (
        os.path.relpath(Path(image_root).resolve(), out.resolve().parent)
        if image_root is not None
        else ""
    )
    return atomic_write(out, lambda tmp: _write(tmp, facts, group_ids, root, source, appearance))


def _write(
    tmp: Path,
    facts: Sequence[DrugFacts],
    group_ids: Sequence[int | None],
    image_root: str,
    source: str,
    appearance: Appearance | None,
) -> None:
    conn = sqlite3.connect(tmp)
    try:
        # The file is private until renamed into place: no journal needed.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(_SCHEMA)
        cols = [*_FACT_FIELDS, "tokens", "imprint_key", "group_id"]
        conn.executemany(
            f"INSERT INTO refs (id, {', '.join(cols)}) VALUES ({', '.join('?' * (len(cols) + 1))})",
            (_row(i, f, g) for i, (f, g) in enumerate(zip(facts, group_ids, strict=True), 1)),
        )
        conn.executemany("INSERT INTO imprint_postings VALUES (?, ?, ?)", _postings(facts))
        conn.executemany(
            "INSERT INTO pill_text (rowid, names, imprint) VALUES (?, ?, ?)",
            (
                (
                    i,
                    " ".join(p for p in (f.name, f.generic_name, f.brand_name, f.labeler) if p),
                    " ".join(f.imprint_tokens),
                )
                for i, f in enumerate(facts, 1)
            ),
        )
        conn.executemany(
            "INSERT INTO look_groups VALUES (?, ?, ?, ?, ?, ?)", _group_rows(facts, group_ids)
        )
        if appearance is not None:
            conn.executemany(
                "INSERT INTO lookalikes VALUES (?, ?, ?, ?)", nearest(appearance, facts, group_ids)
            )
        summary = summarize(facts, group_ids)
        meta = {
            "format": FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "references": str(len(facts)),
            "labels": str(len({f.label for f in facts})),
            "groups": str(summary.groups),
            "grouped_labels": str(summary.labels),
            "source": source,
            "image_root": image_root,
        }
        if appearance is not None:
            meta["lookalikes_weights_sha256"] = appearance.fingerprint
            meta["lookalikes_source"] = appearance.source
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def _row(i: int, f: DrugFacts, group_id: int | None) -> tuple[Any, ...]:
    values = [_JOIN[n].join(getattr(f, n)) if n in _JOIN else getattr(f, n) for n in _FACT_FIELDS]
    tokens = f.imprint_tokens
    return (i, *values, " ".join(tokens), imprint_key(tokens), group_id)


def _postings(facts: Sequence[DrugFacts]) -> Iterable[tuple[str, int, bytes]]:
    """(key, df, packed ref ids) for every imprint search key, ids ascending."""
    index: dict[str, list[int]] = {}
    for i, f in enumerate(facts, 1):
        tokens = f.imprint_tokens
        keys: set[str] = set()
        # Each token, and the whole imprint run together (for misreads that move a
        # letter/digit boundary), each with its one-edit keys.
        for key in {*tokens, "".join(tokens)} - {""}:
            keys.add(key)
            keys |= edit_keys(key)
        for key in keys:
            index.setdefault(key, []).append(i)
    for key in sorted(index):
        yield key, len(index[key]), np.asarray(index[key], dtype="<i4").tobytes()


def _group_rows(
    facts: Sequence[DrugFacts], group_ids: Sequence[int | None]
) -> Iterable[tuple[Any, ...]]:
    members: dict[int, list[DrugFacts]] = {}
    for f, g in zip(facts, group_ids, strict=True):
        if g is not None:
            members.setdefault(g, []).append(f)
    for g, fs in sorted(members.items()):
        key = look_key(fs[0])
        assert key is not None  # only imprinted pills are grouped
        yield g, key[0], ", ".join(sorted(key[1])), key[2], len({f.label for f in fs}), len(fs)


class Library:
    """A read-only library file, open for lookups and search.

    One connection shared by threads; a lock serialises queries (they take milliseconds).
    Use :func:`open_library` rather than the constructor.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, str]) -> None:
        self.path = path
        self.meta = meta
        self._conn = conn
        self._lock = threading.Lock()
        root = meta.get("image_root", "")
        # relative to the library's folder (an absolute root, from older files, stays)
        self.image_root = Path(os.path.normpath(path.resolve().parent / root)) if root else None
        self.num_references = int(meta["references"])
        self._idf_n = self.num_references
        self._cache: dict[str, Any] = {}

    def cached(self, key: str, make: Callable[[Library], Any]) -> Any:
        """``make(self)`` computed once per open library (for in-memory search tables)."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make(self)
        with self._lock:
            return self._cache.setdefault(key, value)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read query and return all rows."""
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except (sqlite3.OperationalError, sqlite3.ProgrammingError):
                raise  # a bad query is a bug here, not a broken file
            except sqlite3.DatabaseError as exc:
                raise LibraryError(
                    f"{self.path}: library read failed ({exc}); "
                    f"the file may be corrupt: {BUILD_HINT}"
                ) from exc

    def key_weight(self, df: int) -> float:
        """Inverse document frequency of a search key held by ``df`` references."""
        return math.log(1.0 + self._idf_n / max(df, 1))

    def fetch(self, ids: Sequence[int]) -> list[Reference]:
        """References by row id, in the order of ``ids`` (unknown ids are skipped)."""
        if not ids:
            return []
        rows = self.query(
            f"SELECT {_SELECT} FROM refs WHERE id IN ({', '.join('?' * len(ids))})", list(ids)
        )
        by_id = {r[0]: self._reference(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def references(self, label_or_ndc: str) -> list[Reference]:
        """The reference pills of one label (or NDC), in part order.

        Raises:
            LibraryError: no reference has that label or NDC.
        """
        rows = self.query(
            f"SELECT {_SELECT} FROM refs WHERE label = ? OR ndc = ? ORDER BY part, id",
            (label_or_ndc, label_or_ndc),
        )
        if not rows:
            raise LibraryError(
                f"{label_or_ndc!r} is not in the library {self.path} "
                "(give a label or an NDC with dashes, e.g. 00002-3229-30)"
            )
        return [self._reference(r) for r in rows]

    def group_members(self, group_ids: Sequence[int]) -> list[Reference]:
        """All references in the given identical-pill groups, by group then label."""
        if not group_ids:
            return []
        rows = self.query(
            f"SELECT {_SELECT} FROM refs WHERE group_id IN "
            f"({', '.join('?' * len(group_ids))}) ORDER BY group_id, label, id",
            list(group_ids),
        )
        return [self._reference(r) for r in rows]

    def references_for(self, labels: Sequence[str]) -> dict[str, list[Reference]]:
        """The references of several labels at once (labels not in the library are absent)."""
        out: dict[str, list[Reference]] = {}
        distinct = list(dict.fromkeys(labels))
        for start in range(0, len(distinct), 500):  # well under SQLite's variable limit
            part = distinct[start : start + 500]
            rows = self.query(
                f"SELECT {_SELECT} FROM refs WHERE label IN ({', '.join('?' * len(part))}) "
                "ORDER BY label, part, id",
                part,
            )
            for r in rows:
                ref = self._reference(r)
                out.setdefault(ref.facts.label, []).append(ref)
        return out

    @property
    def lookalikes_fingerprint(self) -> str | None:
        """SHA-256 of the weights the look-alike table was computed from (None: no table)."""
        return self.meta.get("lookalikes_weights_sha256") or None

    def lookalikes(self, labels: Sequence[str], k: int) -> dict[str, list[tuple[str, float]]]:
        """Each label's ``k`` nearest other labels by appearance, as (label, cosine)."""
        if self.lookalikes_fingerprint is None or not labels:
            return {}
        distinct = list(dict.fromkeys(labels))
        rows = self.query(
            f"SELECT label, other, similarity FROM lookalikes WHERE label IN "
            f"({', '.join('?' * len(distinct))}) AND rank <= ? ORDER BY label, rank",
            [*distinct, k],
        )
        out: dict[str, list[tuple[str, float]]] = {}
        for label, other, sim in rows:
            out.setdefault(label, []).append((other, float(sim)))
        return out

    def all_facts(self) -> list[DrugFacts]:
        """Every reference's facts in row order (to rebuild the library with more pills)."""
        return [
            self._reference(r).facts for r in self.query(f"SELECT {_SELECT} FROM refs ORDER BY id")
        ]

    def labels(self) -> list[str]:
        """Distinct labels, sorted."""
        return [r[0] for r in self.query("SELECT DISTINCT label FROM refs ORDER BY label")]

    def _reference(self, row: tuple[Any, ...]) -> Reference:
        values = dict(zip(_FACT_FIELDS, row[1:-1], strict=True))
        for name, sep in _JOIN.items():
            values[name] = tuple(p for p in (values[name] or "").split(sep) if p)
        for name in _FACT_FIELDS:
            if values[name] is None and name not in ("size_mm", "score"):
                values[name] = ""
        facts = DrugFacts(**values)
        image = Path(facts.image) if facts.image else None
        if image is not None and not image.is_absolute() and self.image_root is not None:
            image = self.image_root / image
        return Reference(row[0], facts, row[-1], image)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_SELECT = ", ".join(["id", *_FACT_FIELDS, "group_id"])


def copy_library(src: str | Path, out: str | Path) -> Path:
    """Copy a library file to ``out`` (atomically), keeping its photographs reachable.

    The copy's ``image_root`` is rewritten relative to its new folder (an export or an
    enrolled model lives elsewhere than its source).
    """
    with open_library(src) as lib:
        source, root = lib.path, lib.image_root
    out = Path(out)
    new_root = os.path.relpath(root, out.resolve().parent) if root is not None else ""

    def write(tmp: Path) -> None:
        shutil.copyfile(source, tmp)
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'image_root'", (new_root,))
            conn.commit()
        finally:
            conn.close()

    return atomic_write(out, write)


def find_library(path: str | Path) -> Path:
    """A library file given as itself or as a model artifact folder holding ``library.sqlite``.

    Raises:
        LibraryError: nothing there, or a folder without a library.
    """
    path = Path(path)
    if path.is_dir():
        inside = path / LIBRARY_NAME
        if not inside.is_file():
            raise LibraryError(
                f"{path} holds no {LIBRARY_NAME}; give the library file itself or {BUILD_HINT}"
            )
        return inside
    if not path.is_file():
        raise LibraryError(f"library not found: {path}; {BUILD_HINT}")
    return path


def open_library(path: str | Path, verify: bool = False) -> Library:
    """Open a library file (or an artifact folder holding one) read-only.

    Args:
        path: the ``.sqlite`` file, or a folder with ``library.sqlite`` beside ``card.json``.
        verify: also run SQLite's ``quick_check`` over every page (slower; for builds and
            tests rather than every start).

    Raises:
        LibraryError: missing, not an SQLite file, not a library, another schema version,
            or corrupt.
    """
    path = find_library(path)
    uri = path.resolve().as_uri() + "?mode=ro"
    broken = f"{path} is not an RxVision library or is corrupt"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LibraryError(f"{broken} ({exc}); {BUILD_HINT}") from exc
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise LibraryError(f"{broken} (no library format mark); {BUILD_HINT}")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise LibraryError(
                f"{path} has library schema {meta.get('schema_version')}, this RxVision reads "
                f"schema {SCHEMA_VERSION}: rebuild it from its manifest ({BUILD_HINT})"
            )
        (count,) = conn.execute("SELECT count(*) FROM refs").fetchone()
        if str(count) != meta.get("references"):
            raise LibraryError(
                f"{broken} (holds {count} references, its meta says "
                f"{meta.get('references')}); {BUILD_HINT}"
            )
        if verify:
            (result,) = conn.execute("PRAGMA quick_check").fetchone()
            if result != "ok":
                raise LibraryError(f"{broken} (integrity check: {result}); {BUILD_HINT}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise LibraryError(f"{broken} ({exc}); {BUILD_HINT}") from exc
    except LibraryError:
        conn.close()
        raise
    return Library(path, conn, meta)
