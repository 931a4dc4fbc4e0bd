"""The state store: one SQLite row per file version moving through explicit states.

A file version is (path, size, mtime, sha256). Rows are never deleted to claim work: a row's
`state` says what happens next and `due_at` says when. The daemon, `status` and `retry` open the
same file; WAL lets `status` read while the daemon writes. Every change is one short transaction,
so a `kill -9` loses at most the step that was running.

Two durability tiers, chosen per commit (`lifecycle.synced`, `lifecycle.call_synced`): a commit
that precedes something costly or irreversible (a submission's quota record, the recorded
operation id, DONE and FAILED, hooks, anything not on the steps' hot path) is made with
`synchronous=FULL`, synced to disk before it returns. The others (a hash, the upload claimed,
the object stored, back to upload for a new submission, a reschedule or a count, a status
check's quota record) are made with `synchronous=NORMAL`: in WAL mode they survive a killed
process and only a power loss or an OS crash can lose them, leaving a step to redo; the next
FULL commit syncs them along with it. The setting is switched only when a commit needs the
other one than the last.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from daemon import layout, lifecycle
from daemon.lifecycle import State

SCHEMA_VERSION = 5
BUSY_TIMEOUT_MS = 10_000  # `status`/`retry` may wait this long for the daemon's short write

# The states and their moves are `daemon.lifecycle`'s; these names are kept for readers of rows.
QUEUED = State.QUEUED
UPLOADING = State.UPLOADING
SUBMITTING = State.SUBMITTING
PENDING = State.PENDING
DONE = State.DONE
FAILED = State.FAILED
SUPERSEDED = State.SUPERSEDED
GONE = State.GONE

ACTIVE_STATES = lifecycle.ACTIVE
TERMINAL_STATES = lifecycle.TERMINAL
ALL_STATES = ACTIVE_STATES + TERMINAL_STATES
# The order `due` hands out work in: what was already paid for first.
DUE_ORDER = (PENDING, SUBMITTING, UPLOADING, QUEUED)
# What a newer version of a path replaces, and what `retry` re-queues: set-based moves, checked
# against the table once here like every single move in `update`.
_REPLACED_BY_A_NEW_VERSION = (*ACTIVE_STATES, FAILED)
_RETRIED = FAILED
if not all(lifecycle.allowed(old, SUPERSEDED) for old in _REPLACED_BY_A_NEW_VERSION) or not (
    lifecycle.allowed(_RETRIED, QUEUED) and lifecycle.allowed(QUEUED, UPLOADING)
):  # pragma: no cover - a table edit that breaks the store's set-based moves
    raise lifecycle.TransitionRefusedError("the state store's set-based moves leave the table")


class StateFileError(Exception):
    """The state file cannot be used (corrupt, unreadable, from a newer version)."""


class StateWriteError(StateFileError):
    """A change could not be written (disk full, I/O error, read-only): nothing of it was kept.

    At steady state this is an episode to wait out, not a reason to die: the daemon stops taking
    steps (and never submits) until the state file can be written again.
    """


# The free space a submission needs beside the state file: the operation id the service returns
# must be written at once, and a transaction with its WAL pages needs far less than this.
MIN_FREE_BYTES = 1024 * 1024


def daemon_lock_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".daemon-lock")


class DaemonLock:
    """Held by the running daemon: one daemon per state file, and `transcribe` can tell."""

    def __init__(self, state_file: Path) -> None:
        self.path = daemon_lock_path(state_file)
        self._descriptor: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the lock
            self._descriptor = None


def daemon_running(state_file: Path) -> bool:
    """Whether a daemon holds the lock of this state file right now."""
    probe = DaemonLock(state_file)
    if not probe.path.exists():
        return False
    if probe.acquire():
        probe.release()
        return False
    return True


def _on_read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False  # cannot tell: opening the file says what is wrong


def unwritable_reason(path: Path) -> str | None:
    """Why this process cannot write the state file and the journal SQLite keeps beside it
    (`NAME-wal`, `NAME-shm`), or None. Checked at start: found at the first write instead, it
    was a crash after READY, and a restart loop under systemd."""
    folder = path.parent
    journal = f"SQLite keeps its journal ({path.name}-wal, {path.name}-shm) there"
    if path.exists():
        if _on_read_only_mount(path):
            return "it is on a read-only mount; remount it read-write or move state_file"
        if not os.access(path, os.W_OK, effective_ids=True):
            return "the file is read-only for this user; fix its owner or permissions"
    if _on_read_only_mount(folder):
        return f"its folder {folder} is on a read-only mount, and {journal}"
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=True):
        return (
            f"its folder {folder} is not writable for this user, and {journal}; fix the "
            "folder's owner or permissions"
        )
    return None


@dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    folder: str
    size: int
    mtime_ns: int
    state: State
    created_at: float
    updated_at: float
    sha256: str | None = None
    due_at: float | None = None
    attempts: int = 0
    duration_seconds: float | None = None
    channels: int | None = None
    object_key: str | None = None
    object_deleted: int = 0
    operation_id: str | None = None
    submitted_at: float | None = None
    checks: int = 0
    submissions: int = 0
    stage: str | None = None
    message: str | None = None
    error_code: int | None = None
    finished_at: float | None = None
    duplicate_of: int | None = None  # the row whose result this one reuses (same content)
    specification: str | None = None  # canonical JSON of the request's specification
    hook_pending: int = 0  # on_complete still has to run for this row
    hook_attempts: int = 0
    moved_to: str | None = None  # where after_done moved the audio
    owner: str | None = None  # "transcribe:PID" while a one-shot command drives the row
    # NAME of the outputs when it is not the audio's stem: another audio file of the same stem
    # in the same folder had it first (`call.mp3` beside `call.wav` -> `call.mp3.txt`).
    output_name: str | None = None


_COLUMNS = tuple(field.name for field in fields(FileRow))
_PATH_COLUMNS = (
    "path",
    "folder",
    "moved_to",
    "output_name",
)  # stored as bytes: file names need not be valid UTF-8

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL,
        folder BLOB NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT,
        state TEXT NOT NULL,
        due_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        duration_seconds REAL,
        channels INTEGER,
        object_key TEXT,
        object_deleted INTEGER NOT NULL DEFAULT 0,
        operation_id TEXT,
        submitted_at REAL,
        checks INTEGER NOT NULL DEFAULT 0,
        submissions INTEGER NOT NULL DEFAULT 0,
        stage TEXT,
        message TEXT,
        error_code INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        duplicate_of INTEGER,
        specification TEXT
    );
    CREATE INDEX files_path ON files (path);
    CREATE INDEX files_state_due ON files (state, due_at);
    CREATE INDEX files_sha256 ON files (sha256);
    """,
    # v2: API calls of the last hour, so quota pacing survives a restart.
    2: """
    CREATE TABLE api_calls (kind TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX api_calls_kind_at ON api_calls (kind, at);
    """,
    # v3: the on_complete hook, after_done moves, and rows owned by a `transcribe` process.
    3: """
    ALTER TABLE files ADD COLUMN hook_pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN hook_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN moved_to BLOB;
    ALTER TABLE files ADD COLUMN owner TEXT;
    CREATE INDEX files_hook_pending ON files (hook_pending) WHERE hook_pending = 1;
    """,
    # v4: outputs named after the whole file name when another file took the stem's names.
    4: """
    ALTER TABLE files ADD COLUMN output_name BLOB;
    """,
    # v5: the webhook outbox. An event is written in the transaction that records the file's
    # end and deleted once a receiver took it (or it was given up): at least once, across
    # crashes. `body` is the exact JSON sent on every attempt, with its delivery id.
    5: """
    CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL UNIQUE,
        file_id INTEGER NOT NULL,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL,
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (due_at);
    """,
}
CALL_HISTORY_SECONDS = 3600.0  # the quota window; older calls are pruned


@dataclass(frozen=True)
class Delivery:
    """One webhook event for one receiver, waiting in the outbox until a receiver takes it."""

    delivery_id: str
    file_id: int
    event: str
    url: str
    body: bytes
    created_at: float
    due_at: float
    attempts: int = 0
    last_error: str | None = None
    id: int | None = None  # set once stored


_DELIVERY_COLUMNS = tuple(field.name for field in fields(Delivery) if field.name != "id")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _encode(value: str) -> bytes:
    return os.fsencode(value)


class NewVersion(NamedTuple):
    """A settled file version to record."""

    path: str
    folder: str
    size: int
    mtime_ns: int


def _after_prefix(prefix: bytes) -> bytes:
    """The least byte string above every string that starts with `prefix` (an index range's
    end); `prefix` is an encoded path, so it never ends in 0xff bytes alone."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\xff" * (len(prefix) + 1)


def _row(record: sqlite3.Row) -> FileRow:
    return _row_from(dict(zip(record.keys(), record, strict=True)))


def _row_from(values: dict[str, Any]) -> FileRow:
    for column in _PATH_COLUMNS:
        if values[column] is not None:
            values[column] = os.fsdecode(values[column])
    values["state"] = State(values["state"])
    return FileRow(**values)


def _enqueue(db: sqlite3.Connection, outbox: Iterable[Delivery]) -> None:
    columns = ", ".join(_DELIVERY_COLUMNS)
    marks = ", ".join("?" * len(_DELIVERY_COLUMNS))
    for delivery in outbox:
        db.execute(
            f"INSERT INTO webhook_outbox ({columns}) VALUES ({marks})",  # noqa: S608 - fixed names
            tuple(getattr(delivery, name) for name in _DELIVERY_COLUMNS),
        )


class Store:
    """Thread-safe access to the state file (one connection, one lock, short transactions)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        if read_only and not path.exists():
            raise StateFileError(
                f"{path}: no state file yet (the daemon has not run with this config)"
            )
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            unwritable = unwritable_reason(path)
            if unwritable is not None:
                raise StateFileError(f"{path}: cannot write the state file: {unwritable}")
        try:
            target = f"file:{urllib.parse.quote(str(path))}?mode=ro" if read_only else str(path)
            self._db = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
                uri=read_only,
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._prepare(read_only=read_only)
            if not read_only:
                self._check_writable()
        except sqlite3.DatabaseError as error:
            raise StateFileError(f"{path}: cannot use the state file: {error}") from None
        self._identity = _identity(path)

    def replaced(self) -> str | None:
        """Why the file at our path is no longer the one we opened (deleted, replaced), or None.

        SQLite keeps writing to the open file even after it was deleted: without this check the
        daemon would record everything in a file nobody can see, and pay again after a restart.
        """
        found = _identity(self.path)
        if found is None:
            return "it was deleted"
        if found != self._identity:
            return "another file took its place"
        return None

    def _prepare(self, *, read_only: bool) -> None:
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StateFileError(
                f"{self.path}: the state file is corrupt ({check}); move it aside to start afresh"
            )
        if not read_only:
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StateFileError(f"{self.path}: cannot switch the state file to WAL mode")
        self._db.execute("PRAGMA synchronous = FULL")
        self._synced = True  # the connection's `synchronous` is FULL (else NORMAL)
        self._db.execute("PRAGMA foreign_keys = ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateFileError(
                f"{self.path}: the state file has schema version {version}, newer than this "
                f"speechkit-watch ({SCHEMA_VERSION}); upgrade speechkit-watch"
            )
        if version < SCHEMA_VERSION:
            if read_only:
                raise StateFileError(f"{self.path}: the state file needs the daemon to upgrade it")
            self._migrate(version)

    def _check_writable(self) -> None:
        """Ask SQLite itself whether it can write (what file modes do not tell, e.g. a journal
        file left read-only): a change that is rolled back, so nothing reaches the disk."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                    self._db.execute(f"PRAGMA user_version = {version}")
                finally:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY:
                    return  # busy, or a full disk: passing troubles the running daemon waits out
                self._db.close()
                name = self.path.name
                raise StateFileError(
                    f"{self.path}: cannot write the state file: SQLite says '{error}'; check the "
                    f"owner and permissions of it and of {name}-wal and {name}-shm beside it"
                ) from None

    def _migrate(self, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def trace(self, callback: Callable[[str], None] | None) -> None:
        """Call `callback` with every SQL statement this store runs, its values filled in (None:
        stop). For tests and debugging: it shows each commit's `PRAGMA synchronous`."""
        with self._lock:
            self._db.set_trace_callback(callback)

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One short write transaction; StateWriteError when SQLite cannot write (all undone).
        `durable`: committed with `synchronous=FULL` (synced), else NORMAL (module docstring)."""
        with self._lock:
            try:
                self._synchronous(durable)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._rollback()
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as error:
                self._rollback()
                raise StateWriteError(
                    f"{self.path}: cannot write the state file: {error}"
                ) from None

    def _synchronous(self, durable: bool) -> None:
        """Switch `PRAGMA synchronous` between FULL and NORMAL, only when it changes (outside a
        transaction: SQLite applies it to the next commit)."""
        if durable != self._synced:
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._synced = durable

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def has_room(self, needed: int = MIN_FREE_BYTES) -> bool:
        """Whether the state file's file system has `needed` bytes free (checked before a
        submission, whose answer must be written)."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return True  # cannot tell: the write itself will say
        return stats.f_bavail * stats.f_frsize >= needed

    def _select(self, where: str, parameters: Iterable[Any] = ()) -> list[FileRow]:
        with self._lock:
            cursor = self._db.execute(f"SELECT * FROM files {where}", tuple(parameters))  # noqa: S608
            return [_row(record) for record in cursor.fetchall()]

    # -- reading -------------------------------------------------------------------------------

    def get(self, row_id: int) -> FileRow:
        rows = self._select("WHERE id = ?", (row_id,))
        if not rows:
            raise KeyError(row_id)
        return rows[0]

    def latest_for_path(self, path: str) -> FileRow | None:
        rows = self._select("WHERE path = ? ORDER BY id DESC LIMIT 1", (_encode(path),))
        return rows[0] if rows else None

    def known_versions(self) -> dict[str, tuple[int, int]]:
        """Path -> (size, mtime_ns) of the newest row per path: what start-up skips unread."""
        return {path: (size, mtime_ns) for path, size, mtime_ns in self.each_known_version()}

    def each_known_version(self) -> Iterator[tuple[str, int, int]]:
        """`known_versions` row by row (path, size, mtime_ns): 100,000 finished files need no
        list of them all. Holds the store while it is read (at start-up, before any worker)."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT path, size, mtime_ns FROM files WHERE id IN "
                "(SELECT MAX(id) FROM files GROUP BY path) AND state != ?",
                (GONE,),
            )
            for path, size, mtime_ns in cursor:
                yield os.fsdecode(path), size, mtime_ns

    def due(self, now: float, *, limit: int, exclude: Iterable[int] = ()) -> list[FileRow]:
        """Up to `limit` rows whose step is due at `now`, not owned by another process.

        Work already paid for first: status checks and outputs of pending operations, then
        submissions of uploaded files, then uploads, then new files; by due time (then id)
        within each. One query per state walks the (state, due_at) index from its start and
        stops at `limit`: a backlog of thousands costs what a few rows do, where one query over
        all states sorted every due row each time the loop dispatched.
        """
        excluded = tuple(exclude)
        exclusion = f"AND id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        rows: list[FileRow] = []
        with self._lock:
            for wanted in DUE_ORDER:
                if len(rows) >= limit:
                    break
                cursor = self._db.execute(
                    "SELECT * FROM files "  # noqa: S608
                    f"WHERE state = ? AND due_at <= ? AND owner IS NULL {exclusion} "
                    "ORDER BY due_at, id LIMIT ?",
                    (wanted, now, *excluded, limit - len(rows)),
                )
                rows.extend(_row(record) for record in cursor.fetchall())
        return rows

    def next_due_at(self, *, exclude: Iterable[int] = ()) -> float | None:
        """The earliest due time of an active row not owned by another process (None: none)."""
        excluded = tuple(exclude)
        exclusion = f"AND id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        earliest: float | None = None
        with self._lock:
            for wanted in DUE_ORDER:
                found = self._db.execute(
                    "SELECT due_at FROM files "  # noqa: S608
                    f"WHERE state = ? AND due_at IS NOT NULL AND owner IS NULL {exclusion} "
                    "ORDER BY due_at LIMIT 1",
                    (wanted, *excluded),
                ).fetchone()
                if found is not None and (earliest is None or found[0] < earliest):
                    earliest = float(found[0])
        return earliest

    def stem_taken(self, row: FileRow, stem: str) -> bool:
        """Whether an older file of another path in the same folder, with the same stem, has the
        outputs named after that stem (it was recorded first). Files that vanished before their
        end or were replaced by a newer version of themselves hold no names."""
        folder = os.path.dirname(row.path)
        # Every such file's name begins with the stem: an index range, not the whole folder.
        prefix = _encode(folder.rstrip(os.sep) + os.sep + stem)
        with self._lock:
            cursor = self._db.execute(
                "SELECT path, output_name FROM files WHERE path >= ? AND path < ? AND id < ? "
                "AND path != ? AND state NOT IN (?, ?)",
                (prefix, _after_prefix(prefix), row.id, _encode(row.path), GONE, SUPERSEDED),
            )
            for path_bytes, name_bytes in cursor.fetchall():
                other = os.fsdecode(path_bytes)
                if os.path.dirname(other) != folder:
                    continue  # a subfolder
                name = os.fsdecode(name_bytes) if name_bytes is not None else None
                if (name or layout.stem(Path(other))) == stem:
                    return True
        return False

    def versions_of(self, path: str) -> int:
        """How many rows (file versions, any state) the state file has for this path."""
        with self._lock:
            found = self._db.execute(
                "SELECT COUNT(*) FROM files WHERE path = ?", (_encode(path),)
            ).fetchone()[0]
        return int(found)

    def count_in_states(self, states: Iterable[str]) -> int:
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        with self._lock:
            found = self._db.execute(
                f"SELECT COUNT(*) FROM files WHERE state IN ({marks})",  # noqa: S608
                wanted,
            ).fetchone()[0]
        return int(found)

    def counts(self) -> dict[str, int]:
        with self._lock:
            cursor = self._db.execute("SELECT state, COUNT(*) FROM files GROUP BY state")
            found = dict(cursor.fetchall())
        return {state: int(found.get(state, 0)) for state in ALL_STATES}

    def in_states(self, states: Iterable[str], *, limit: int = 1000) -> list[FileRow]:
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        return self._select(f"WHERE state IN ({marks}) ORDER BY id LIMIT ?", (*wanted, limit))

    def same_content(self, sha256: str, specification: str, *, exclude: int) -> list[FileRow]:
        """Other rows with these bytes and settings, finished or on their way (newest first)."""
        return self._select(
            "WHERE sha256 = ? AND specification = ? AND id != ? AND state IN (?, ?, ?, ?) "
            "ORDER BY id DESC LIMIT 20",
            (sha256, specification, exclude, DONE, UPLOADING, SUBMITTING, PENDING),
        )

    def operation_awaited(self, operation_id: str, *, exclude: int) -> bool:
        """True if another row waits for this operation's result (PENDING on it)."""
        with self._lock:
            found = self._db.execute(
                "SELECT 1 FROM files WHERE operation_id = ? AND id != ? AND state = ? LIMIT 1",
                (operation_id, exclude, PENDING),
            ).fetchone()
        return found is not None

    def object_in_use(self, object_key: str, *, exclude: int) -> bool:
        """True if another unfinished row needs the same object (same content, other name)."""
        states = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            found = self._db.execute(
                f"SELECT 1 FROM files WHERE object_key = ? AND id != ? AND state IN ({states}) "  # noqa: S608
                "LIMIT 1",
                (object_key, exclude, *ACTIVE_STATES),
            ).fetchone()
        return found is not None

    def undeleted_objects(self) -> list[FileRow]:
        """Finished rows whose uploaded object may still be in the bucket."""
        return self._select(
            "WHERE object_key IS NOT NULL AND object_deleted = 0 AND state IN (?, ?, ?, ?)",
            TERMINAL_STATES,
        )

    def hooks_pending(self) -> list[FileRow]:
        return self._select("WHERE hook_pending = 1 AND owner IS NULL ORDER BY id")

    def owners(self) -> set[str]:
        with self._lock:
            cursor = self._db.execute("SELECT DISTINCT owner FROM files WHERE owner IS NOT NULL")
            return {owner for (owner,) in cursor.fetchall()}

    def release(self, owner: str) -> int:
        """Hand the rows of a one-shot process that went away back to the daemon."""
        with self._transaction() as db:
            return db.execute("UPDATE files SET owner = NULL WHERE owner = ?", (owner,)).rowcount

    def backlog(self) -> int:
        """File versions that still need a submission."""
        counts = self.counts()
        return counts[QUEUED] + counts[UPLOADING] + counts[SUBMITTING]

    def recent_calls(self, kind: str, since: float) -> list[float]:
        with self._lock:
            cursor = self._db.execute(
                "SELECT at FROM api_calls WHERE kind = ? AND at > ? ORDER BY at", (kind, since)
            )
            return [at for (at,) in cursor.fetchall()]

    # -- writing -------------------------------------------------------------------------------

    def record_call(self, kind: str, at: float, *, durable: bool = True) -> None:
        """Remember one API call for quota pacing; calls older than the window are pruned.
        `durable`: synced before it returns (`lifecycle.call_synced`)."""
        with self._transaction(durable=durable) as db:
            db.execute("INSERT INTO api_calls (kind, at) VALUES (?, ?)", (kind, at))
            db.execute("DELETE FROM api_calls WHERE at <= ?", (at - CALL_HISTORY_SECONDS,))

    def add_version(self, *, path: str, folder: str, size: int, mtime_ns: int, now: float) -> int:
        """Record a newly settled file version; unfinished or failed older ones are superseded."""
        return self.add_versions([NewVersion(path, folder, size, mtime_ns)], now)[0]

    def add_versions(self, versions: Iterable[NewVersion], now: float) -> list[int]:
        """`add_version` for many files in one transaction (a burst settles together): their
        row ids, in order. All or none are recorded."""
        replaced = (*ACTIVE_STATES, FAILED)
        marks = ",".join("?" * len(replaced))
        row_ids = []
        with self._transaction() as db:
            for version in versions:
                path = _encode(version.path)
                db.execute(
                    "UPDATE files SET state = ?, due_at = NULL, updated_at = ? "  # noqa: S608
                    f"WHERE path = ? AND state IN ({marks})",
                    (SUPERSEDED, now, path, *replaced),
                )
                cursor = db.execute(
                    "INSERT INTO files (path, folder, size, mtime_ns, state, due_at, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (path, _encode(version.folder), version.size, version.mtime_ns, QUEUED, now,
                     now, now),
                )  # fmt: skip
                assert cursor.lastrowid is not None  # noqa: S101 - always set after INSERT
                row_ids.append(cursor.lastrowid)
        return row_ids

    def mark_objects_deleted(self, row_ids: Iterable[int], now: float) -> None:
        """Record, in one transaction, that the objects of these rows are gone."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE files SET object_deleted = 1, updated_at = ? WHERE id = ?",
                [(now, row_id) for row_id in row_ids],
            )

    def apply(
        self,
        row: FileRow,
        change: lifecycle.Change,
        now: float,
        *,
        outbox: Iterable[Delivery] = (),
        twin: FileRow | None = None,
    ) -> bool:
        """Record a lifecycle decision for a row, if it is still in the state it was read in;
        the `outbox` deliveries are written in the same transaction, only if the row changed.

        With `twin`, only if that row too is still in the state and on the operation it was read
        with: a decision taken from what a twin was (reusing its operation) is not recorded once
        the twin has moved on.
        """
        fields = dict(change.fields)
        if change.state is not None:
            fields["state"] = change.state
        return self._update(
            row.id, now, row.state, fields, outbox, twin=twin, durable=change.durable
        )

    def update(self, row_id: int, now: float, *, expect: str | None = None, **changes: Any) -> bool:
        """Change columns of a row; with `expect`, only if the row is still in that state.

        The check guards against a row that moved on meanwhile (superseded by a newer version of
        the file, re-queued by `retry`): the caller then drops its step. True if the row changed.
        A change of `state` must be a move that `lifecycle.TRANSITIONS` allows from the state the
        row is in: anything else is a bug and raises TransitionRefusedError, changing nothing.
        """
        return self._update(row_id, now, expect, changes, ())

    def _update(
        self,
        row_id: int,
        now: float,
        expect: str | None,
        changes: dict[str, Any],
        outbox: Iterable[Delivery],
        *,
        twin: FileRow | None = None,
        durable: bool = True,
    ) -> bool:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}")
        for column in _PATH_COLUMNS:
            if changes.get(column) is not None:
                changes[column] = _encode(changes[column])
        target = changes.get("state")
        if target is not None:
            changes["state"] = str(State(target))
        changes["updated_at"] = now
        assignments = ", ".join(f"{column} = ?" for column in changes)
        condition = "id = ?" if expect is None else "id = ? AND state = ?"
        parameters: tuple[Any, ...] = (row_id,) if expect is None else (row_id, str(expect))
        if twin is not None:  # checked in the same statement as the row is written
            condition += (
                " AND EXISTS (SELECT 1 FROM files AS twin WHERE twin.id = ? AND twin.state = ?"
                " AND twin.operation_id IS ?)"
            )
            parameters += (twin.id, str(twin.state), twin.operation_id)
        with self._transaction(durable=durable) as db:
            if target is not None:
                found = db.execute("SELECT state FROM files WHERE id = ?", (row_id,)).fetchone()
                if found is None or (expect is not None and found[0] != expect):
                    return False  # gone or moved on: nothing to check, nothing changes
                if not lifecycle.allowed(found[0], target):
                    raise lifecycle.TransitionRefusedError(
                        f"file #{row_id}: {found[0]} -> {target} is not a move of the lifecycle"
                    )
            cursor = db.execute(
                f"UPDATE files SET {assignments} WHERE {condition}",  # noqa: S608 - checked names
                (*changes.values(), *parameters),
            )
            changed = cursor.rowcount == 1
            if changed:
                _enqueue(db, outbox)
            return changed

    def claim_upload(self, row_id: int, object_key: str, now: float) -> bool:
        """Move a hashed QUEUED row to UPLOADING unless a twin (same bytes and settings) is
        already on its way. One statement, so two twins hashed at once cannot both win."""
        with self._transaction(durable=lifecycle.synced(UPLOADING)) as db:
            cursor = db.execute(
                "UPDATE files SET state = ?, object_key = ?, attempts = 0, due_at = ?, "
                "updated_at = ? WHERE id = ? AND state = ? AND NOT EXISTS ("
                " SELECT 1 FROM files AS twin WHERE twin.sha256 = files.sha256"
                " AND twin.specification = files.specification AND twin.id != files.id"
                " AND twin.state IN (?, ?, ?))",
                (UPLOADING, object_key, now, now, row_id, QUEUED, UPLOADING, SUBMITTING, PENDING),
            )
            return cursor.rowcount == 1

    def requeue(
        self,
        *,
        paths: Iterable[str] = (),
        all_failed: bool = False,
        now: float,
        specification: Callable[[FileRow], str],
    ) -> int:
        """Put failed rows (all, or the newest row of each named path) back in the queue, each
        with `specification(row)`: the settings the config gives it now (lifecycle.retried)."""
        rows = self.in_states([FAILED], limit=2**31) if all_failed else []
        for path in paths:
            latest = self.latest_for_path(path)
            if latest is not None and latest.state == FAILED:
                rows.append(latest)
        changed = 0
        for row in {row.id: row for row in rows}.values():
            changed += self.apply(row, lifecycle.retried(now, specification(row)), now)
        return changed

    # -- the webhook outbox ----------------------------------------------------------------------

    def due_deliveries(self, now: float, *, limit: int = 100) -> list[Delivery]:
        return self._deliveries("WHERE due_at <= ? ORDER BY due_at, id LIMIT ?", (now, limit))

    def undelivered(self, *, limit: int = 1000) -> list[Delivery]:
        return self._deliveries("ORDER BY id LIMIT ?", (limit,))

    def undelivered_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM webhook_outbox").fetchone()[0])

    def next_delivery_at(self) -> float | None:
        with self._lock:
            value = self._db.execute("SELECT MIN(due_at) FROM webhook_outbox").fetchone()[0]
        return None if value is None else float(value)

    def delivery_failed(
        self, delivery_id: str, *, attempts: int, due_at: float, error: str
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE webhook_outbox SET attempts = ?, due_at = ?, last_error = ? "
                "WHERE delivery_id = ?",
                (attempts, due_at, error, delivery_id),
            )

    def delivery_ended(self, delivery_id: str) -> None:
        """Delivered, or given up: the event leaves the outbox."""
        with self._transaction() as db:
            db.execute("DELETE FROM webhook_outbox WHERE delivery_id = ?", (delivery_id,))

    def _deliveries(self, clause: str, parameters: tuple[Any, ...]) -> list[Delivery]:
        columns = ", ".join(("id", *_DELIVERY_COLUMNS))
        with self._lock:
            cursor = self._db.execute(
                f"SELECT {columns} FROM webhook_outbox {clause}",  # noqa: S608 - fixed names
                parameters,
            )
            return [Delivery(**dict(zip(record.keys(), record, strict=True)))
                    for record in cursor.fetchall()]  # fmt: skip

    def oldest_waiting_since(self) -> float | None:
        """When the oldest file that is not finished yet was found (None: nothing waits)."""
        states = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            value = self._db.execute(
                f"SELECT MIN(created_at) FROM files WHERE state IN ({states})",  # noqa: S608
                ACTIVE_STATES,
            ).fetchone()[0]
        return None if value is None else float(value)

    def calls_since(self, kind: str, since: float) -> int:
        with self._lock:
            found = self._db.execute(
                "SELECT COUNT(*) FROM api_calls WHERE kind = ? AND at > ?", (kind, since)
            ).fetchone()[0]
        return int(found)

    # -- the wall clock stepped ------------------------------------------------------------------

    def shift_times(self, step: float, now: float) -> int:
        """Move the schedule with a step of the wall clock (`step` seconds, negative when it
        went back): the due, submission and change times of unfinished rows, and the recorded
        API calls (none after `now`). What was due in a minute is still due in a minute, and a
        call made a minute ago still counts against the hour. How many rows moved."""
        states = ",".join("?" * len(ACTIVE_STATES))
        with self._transaction() as db:
            moved = db.execute(
                "UPDATE files SET due_at = due_at + ?, submitted_at = submitted_at + ?, "  # noqa: S608
                f"updated_at = updated_at + ? WHERE state IN ({states})",
                (step, step, step, *ACTIVE_STATES),
            ).rowcount
            db.execute("UPDATE api_calls SET at = MIN(at + ?, ?)", (step, now))
        return int(moved)

    def pull_in_future_times(self, now: float, *, tolerance: float) -> int:
        """Undo a backward step of the wall clock that was not seen as it happened (the daemon
        was stopped, or a step read the clock just before it): an unfinished row last changed
        more than `tolerance` after `now` was scheduled by a clock at least that far ahead, so
        its times move back by that much (a check due 10 s after it was scheduled is due 10 s
        from now); API calls recorded after `now` count as made now. How many rows moved."""
        states = ",".join("?" * len(ACTIVE_STATES))
        with self._transaction() as db:
            moved = db.execute(
                "UPDATE files SET due_at = due_at - (updated_at - ?), "  # noqa: S608
                "submitted_at = submitted_at - (updated_at - ?), updated_at = ? "
                f"WHERE state IN ({states}) AND updated_at > ?",
                (now, now, now, *ACTIVE_STATES, now + tolerance),
            ).rowcount
            db.execute("UPDATE api_calls SET at = ? WHERE at > ?", (now, now))
        return int(moved)

    # -- retention -------------------------------------------------------------------------------

    def retention_due(
        self, folder: str, ended: State, ended_before: float, *, limit: int
    ) -> list[FileRow]:
        """Rows of `folder` that ended `ended` at or before `ended_before` and still wait for
        their retention action (`due_at` set at their end: `daemon.retention`), oldest first."""
        return self._select(
            "WHERE state = ? AND folder = ? AND due_at IS NOT NULL AND finished_at <= ? "
            "AND owner IS NULL ORDER BY finished_at, id LIMIT ?",
            (str(ended), _encode(folder), ended_before, limit),
        )

    def drop_retention(self, acting: Iterable[tuple[str, State]]) -> int:
        """Clear `due_at` of finished rows whose folder and end are not among `acting` (the
        watch folders and ends whose rule still moves or deletes): the folder's rule became
        `keep`, or the folder left the config. The retention sweep would never visit them, so
        `status` would report them waiting forever and pruning would never forget them. Rows
        of a one-shot process are its own. `updated_at` is left alone: pruning counts from the
        row's last real change. How many rows were cleared."""
        pairs = [(_encode(folder), str(ended)) for folder, ended in acting]
        spared = " ".join("AND NOT (folder = ? AND state = ?)" for _ in pairs)
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE files SET due_at = NULL WHERE state IN (?, ?) "  # noqa: S608 - no input
                f"AND due_at IS NOT NULL AND owner IS NULL {spared}",
                (DONE, FAILED, *(value for pair in pairs for value in pair)),
            )
            return int(cursor.rowcount)

    def retention_pending(self) -> tuple[int, float | None]:
        """Finished rows whose audio is still to be moved or deleted, and the earliest time one
        was due by the delay it ended with (`status`)."""
        with self._lock:
            count, earliest = self._db.execute(
                "SELECT COUNT(*), MIN(due_at) FROM files WHERE state IN (?, ?) "
                "AND due_at IS NOT NULL",
                (DONE, FAILED),
            ).fetchone()
        return int(count), None if earliest is None else float(earliest)

    def prune_candidates(
        self, changed_before: float, *, after_id: int = 0, limit: int
    ) -> list[tuple[FileRow, bool]]:
        """Finished rows unchanged since `changed_before` with nothing left to do (no hook, no
        webhook event waiting), each with whether a newer row of the same path exists;
        `retention.prunable` decides. Paged by id: the rows after `after_id`."""
        terminal = ",".join("?" * len(TERMINAL_STATES))
        with self._lock:
            cursor = self._db.execute(
                "SELECT *, EXISTS (SELECT 1 FROM files AS newer WHERE newer.path = files.path "  # noqa: S608
                f"AND newer.id > files.id) AS newer_version FROM files WHERE state IN ({terminal}) "
                "AND updated_at < ? AND due_at IS NULL AND hook_pending = 0 AND owner IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM webhook_outbox WHERE file_id = files.id) "
                "AND id > ? ORDER BY id LIMIT ?",
                (*TERMINAL_STATES, changed_before, after_id, limit),
            )
            found = []
            for record in cursor.fetchall():
                values = dict(zip(record.keys(), record, strict=True))
                newer = bool(values.pop("newer_version"))
                found.append((_row_from(values), newer))
            return found

    def forget(self, row_ids: Iterable[int]) -> int:
        """Delete finished rows (`retention.prunable` said so); how many were deleted. A row
        that moved on meanwhile (re-queued by `retry`) is kept."""
        ids = list(row_ids)
        terminal = ",".join("?" * len(TERMINAL_STATES))
        deleted = 0
        for start in range(0, len(ids), _FORGET_BATCH):
            batch = ids[start : start + _FORGET_BATCH]
            marks = ",".join("?" * len(batch))
            with self._transaction() as db:
                deleted += db.execute(
                    f"DELETE FROM files WHERE id IN ({marks}) AND state IN ({terminal})",  # noqa: S608
                    (*batch, *TERMINAL_STATES),
                ).rowcount
        return deleted


_FORGET_BATCH = 500  # rows deleted per transaction: short transactions, the daemon keeps going
