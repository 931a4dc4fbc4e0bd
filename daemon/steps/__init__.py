"""The steps of one file version, from a settled file to its transcript: each calls an adapter.

Each step reads the row, does one piece of I/O and records the outcome in the state store before
the next begins: QUEUED (check, hash) -> UPLOADING (put object) -> SUBMITTING (recorded before the
POST) -> PENDING (operation id committed) -> DONE or FAILED. A crash at any point leaves a row
whose state says which step to redo; every step is safe to redo except the submit POST, whose
lost answer is the one documented gap (see README "Crash safety").

One module per step (prepare, upload, submit, check), what ends a file (finish), what any step
may have to record instead of going on (setbacks), and what they share (context). `Steps` runs
the step a row is due for, then the following ones while there is no reason to wait.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon import state
from daemon.config import Config
from daemon.steps.check import MALFORMED_RESULT_CHECKS, Check
from daemon.steps.context import Context
from daemon.steps.finish import Finish
from daemon.steps.prepare import Prepare, sha256_file
from daemon.steps.setbacks import Setbacks
from daemon.steps.submit import Submit
from daemon.steps.upload import Upload, UploadProgress

__all__ = ["MALFORMED_RESULT_CHECKS", "Context", "Steps", "UploadProgress", "sha256_file"]


class Steps:
    """Advances file versions one step at a time; safe to call from several worker threads.

    What the daemon attaches (`uploads`, `events_ready`, batched deletes) goes on its Context;
    `__slots__` makes any other attribute set here an error instead of a setting that nothing
    reads.
    """

    __slots__ = ("_by_state", "aftercare", "checking", "clock", "context", "finishing", "gate",
                 "preparing", "setbacks", "stopping", "store", "submitting", "unwritten_operations",
                 "uploading")  # fmt: skip

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store, self.clock, self.stopping = context.store, context.clock, context.stopping
        self.gate, self.aftercare = context.gate, context.aftercare
        self.setbacks = Setbacks(context)
        self.finishing = Finish(context)
        self.uploading = Upload(context, self.setbacks)
        self.submitting = Submit(context, self.setbacks, self.uploading)
        self.checking = Check(context, self.setbacks, self.finishing)
        self.preparing = Prepare(context, self.setbacks, self.finishing)
        # Operation ids the service accepted that the state file could not take yet.
        self.unwritten_operations = self.submitting.unwritten_operations
        self._by_state: dict[str, Callable[[state.FileRow], bool]] = {
            state.QUEUED: self.preparing.prepare,
            state.UPLOADING: self.uploading.upload,
            state.SUBMITTING: self.submitting.submit,
            state.PENDING: self.checking.check,
        }

    @property
    def config(self) -> Config:
        return self.context.config

    @config.setter
    def config(self, settings: Config) -> None:
        """A reload: new files, the gate and what follows a file's end use the new settings."""
        self.context.config = settings

    # -- entry point -------------------------------------------------------------------------

    def advance(self, row_id: int) -> None:
        """Run the due step of a row, then the following ones while there is no reason to wait."""
        while not self.stopping.is_set():
            row = self.store.get(row_id)
            step = self._by_state.get(row.state)
            if step is None or (row.due_at is not None and row.due_at > self.clock()):
                return
            if not step(row):
                return

    def write_unwritten_operations(self) -> None:
        """Operation ids the state file could not take when they came: write them now."""
        self.submitting.write_unwritten_operations()
