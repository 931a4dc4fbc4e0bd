"""What every step works with: the settings of now, the state store, the adapters, the clock;
the look-ups that follow from a row's recorded settings (its API, its object key, its folder),
and `refit`, which records a row's settings anew when the config changed before it was sent.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daemon import audio, layout, lifecycle, scheduling, speechkit, state, uploads
from daemon.aftercare import Aftercare
from daemon.config import Config, WatchFolder
from daemon.gate import OPERATIONS_URL, RECOGNIZE_URL, STT_V3_URL, Gate
from daemon.logs import shown
from daemon.outcomes import Failure
from daemon.speechkit import backends
from daemon.storage import INLINE_KEY_PREFIX, ObjectStore

log = logging.getLogger(__name__)
DUPLICATE_WAIT_SECONDS = 2.0  # a twin being uploaded gets its operation id within seconds


class Context:
    """The parts every step uses: one per daemon (or `transcribe`), shared by its worker threads."""

    def __init__(
        self,
        config: Config,
        store: state.Store,
        objects: ObjectStore | None,
        api: speechkit.Backend,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        stopping: threading.Event,
        on_changed: Callable[[str], None],
        other_api: Callable[[str], speechkit.Backend] | None = None,
    ) -> None:
        self.gate = Gate(config, store, clock)
        self.aftercare = Aftercare(config, store, objects, clock=clock, stopping=stopping)
        self.config = config
        self.store = store
        self.objects = objects  # None: no storage, the audio goes inline (API v3)
        self.api = api  # the configured API's (`speechkit.api`)
        # The other API's backend, for operations submitted before `speechkit.api` changed.
        self.other_api = other_api
        self.clock = clock
        self.rng = rng
        self.stopping = stopping
        self.on_changed = on_changed  # a file changed under us: look at it again
        # Conversions to Ogg Opus wait here for their upload (emptied at start).
        self.work_dir = audio.work_dir_for(config.state_file)
        self._lock = threading.Lock()
        # Learned from finished operations: how much slower than documented the service is now.
        self.speed_factor = 1.0
        # Row id -> (size, mtime_ns) of a version `prepare` found to go up as it is (Ogg Opus
        # within the limits): its upload step need not read the file's pages again. In memory:
        # after a restart the upload step checks once more; a changed file is caught by the size
        # and time, and its bytes by the hash checked as they go up.
        self._as_is: dict[int, tuple[int, int]] = {}
        # The daemon deletes finished files' objects in batches (its loop sends them); a
        # one-shot `transcribe` deletes each at once.
        self.delete_in_batches = False
        self.uploads: uploads.Board | None = None  # the daemon shows uploads to `status`
        # Called after a file's end put webhook events in the outbox (the daemon's deliverer).
        self.events_ready: Callable[[], None] = lambda: None

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, settings: Config) -> None:
        """A reload: new files, the gate and what follows a file's end use the new settings."""
        self._config = settings
        self.gate.config = settings
        self.gate.set_limits(settings.quota)
        self.aftercare.config = settings

    def remember_as_is(self, row: state.FileRow) -> None:
        """`prepare` found this version fit to go up as it is."""
        with self._lock:
            self._as_is[row.id] = (row.size, row.mtime_ns)

    def take_as_is(self, row: state.FileRow) -> bool:
        """Whether `prepare` found this very version fit to go up as it is, in this run (once)."""
        with self._lock:
            return self._as_is.pop(row.id, None) == (row.size, row.mtime_ns)

    def forget_as_is(self, row_id: int) -> None:
        with self._lock:
            self._as_is.pop(row_id, None)

    def seconds_per_minute(self) -> float:
        """Expected processing time per audio minute and channel: configured x learned."""
        with self._lock:
            return self.config.polling.seconds_per_minute * self.speed_factor

    def learn(self, row: state.FileRow, operation: Mapping[str, Any]) -> None:
        observation = scheduling.observed_speed_factor(
            operation, row.duration_seconds or 0.0, row.channels or 1,
            self.config.polling.seconds_per_minute,
        )  # fmt: skip
        with self._lock:
            self.speed_factor = scheduling.learn(self.speed_factor, observation)

    def output_dir(self, row: state.FileRow) -> Path:
        """Where the outputs of a row are now (they follow the audio when it was moved)."""
        return layout.row_output_dir(self.config, row)

    def specification(self, row: state.FileRow, channels: int) -> dict[str, Any]:
        """The recognition settings of a row's request: its dedup key, recorded per row."""
        return self.folder(row).recognition.settings(self.config.speechkit.api, channels)

    def row_api(self, row: state.FileRow) -> str:
        """The API a row's request is for, told by its recorded specification."""
        if not row.specification:
            return self.config.speechkit.api
        return backends.api_of(json.loads(row.specification))

    def backend(self, row: state.FileRow) -> speechkit.Backend:
        """The backend of the API a row was submitted to: `speechkit.api` may have changed since,
        and each API misreads the other's operations."""
        api = self.row_api(row)
        if api == self.config.speechkit.api or self.other_api is None:
            return self.api
        return self.other_api(api)

    def refit(self, row: state.FileRow) -> state.FileRow | None:
        """A row not submitted yet, recorded under another `speechkit.api` or with(out) storage:
        its specification is made again from the config of now (as `retry` does), its object key
        for the storage of now (`inline:<sha256>` without). One recorded without storage that
        was about to be submitted goes back to uploading: None (the caller moves on to it)."""
        fields: dict[str, Any] = {}
        if row.specification is not None and self.row_api(row) != self.config.speechkit.api:
            specification = self.specification(row, row.channels or 1)
            fields["specification"] = json.dumps(specification, sort_keys=True)
        key, digest = row.object_key, row.sha256
        inline = self.objects is None
        if key is not None and digest is not None and key.startswith(INLINE_KEY_PREFIX) != inline:
            fields["object_key"] = self.key_for(digest)
        if not fields:
            return row
        now = self.clock()
        log.info(
            "%s was recorded under other settings (%s); it goes on with those of now",
            shown(row.path),
            ", ".join(
                f"API {self.row_api(row)}" if name == "specification" else
                ("without storage" if self.objects is not None else "with storage")
                for name in fields
            ),
        )  # fmt: skip
        if row.state == state.SUBMITTING and self.objects is not None and "object_key" in fields:
            key = fields.pop("object_key")
            self.store.apply(row, lifecycle.upload_first(now, key, **fields), now)
            return None
        if not self.store.update(row.id, now, expect=row.state, **fields):
            return None  # it moved on meanwhile (a newer version, `retry`)
        return self.store.get(row.id)

    def check_url(self, error: Failure) -> tuple[str, str]:
        """The config key and URL of a status check that something else answered: v3 reads a
        done operation's results under `speechkit.stt_v3_url`, the operation itself under
        `speechkit.operations_url`."""
        if getattr(error, "url_key", None) == STT_V3_URL:
            return STT_V3_URL, self.config.speechkit.stt_v3_url
        return OPERATIONS_URL, self.config.speechkit.operations_url

    def submit_url(self) -> tuple[str, str]:
        """The config key and URL submissions go to (each paused on its own)."""
        settings = self.config.speechkit
        if settings.api == "v3":
            return STT_V3_URL, settings.stt_v3_url
        return RECOGNIZE_URL, settings.recognize_url

    def key_for(self, digest: str) -> str:
        """The object key of some content; without storage, a name that no bucket holds."""
        if self.objects is None:
            return f"{INLINE_KEY_PREFIX}{digest}"
        return self.objects.key_for(digest)

    def folder(self, row: state.FileRow) -> WatchFolder:
        return layout.folder_of(self.config, row.path, row.folder)


class Part:
    """A part of the steps' work, with the shared context's parts at hand (the same objects
    for the life of the daemon; only the settings change, on a reload)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store
        self.gate = context.gate
        self.aftercare = context.aftercare
        self.objects = context.objects
        self.clock = context.clock
        self.rng = context.rng

    @property
    def config(self) -> Config:
        return self.context.config  # the settings of now: a reload replaces them
