"""From command-line INPUTs (files, folders, globs, media URLs) to jobs with their output paths.

Folders are walked recursively; a file in a folder counts as media when its
extension is a known media one or PyAV finds an audio stream in it (so a
`.dat` recording is found and a `notes.txt` is not). A file named on the
command line is always taken, so a broken one fails with its own error code.

Outputs go to `OUT/<path relative to the input root>` with the media suffix
replaced by the format's (`talks/day1/a.mp3` -> `OUT/day1/a.srt` for input
`talks`). Two inputs that would land on the same name (`a.mp3`, `a.wav`)
keep their full names instead (`a.mp3.srt`, `a.wav.srt`), and two whose full
names are the same too (`x/a.wav` and `y/a.wav`, given as inputs `x` and `y`)
add a short hash of their path (`a.wav [1f2e3d4c].srt`). A name longer than
a file system takes (255 bytes with its `.json`: a title in Chinese or a
file named at the limit) is cut at a character to fit.

An http(s) URL is one job, or one per entry of a playlist (read with yt-dlp,
nothing downloaded); its outputs are named after the media's title
(`OUT/<title>.srt`), with a short hash of the URL added where two titles
collide. A URL whose metadata cannot be read up front is still one job: it
fails with its own code (DOWNLOAD_FAILED, URL_UNSUPPORTED...) and the batch
goes on.

`check_inputs` is what every command calls before it records or starts
anything: a path that does not exist and a glob that matches nothing are
refused up front (INPUT_NOT_FOUND naming every one of them), unless the
caller explicitly allows them (`--allow-missing`), in which case each becomes
a job of its own that fails with INPUT_NOT_FOUND while the others run. A
named pipe or device named on the command line is there, so it is not
missing: its job fails with MEDIA_UNREADABLE.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scribefleet.errors import InputNotFound, UrlUnsupported
from scribefleet.options import FetchOptions, http_url_problem, is_http_url

GLOB_CHARS = set("*?[")


@dataclass
class InputFile:
    """One media file to transcribe and where its outputs go."""

    path: Path  # absolute (empty for a URL)
    rel: Path  # relative to its input root: names the outputs and is shown to people
    missing: bool = False
    out_stem: Path = field(default_factory=Path)  # set by assign_outputs()
    url: str | None = None  # a media URL, downloaded by the job's fetch stage

    @property
    def source(self) -> str:
        """The input as a string: the URL, or the absolute path."""
        return self.url or str(self.path)

    def outputs(self, formats: tuple[str, ...]) -> dict[str, Path]:
        return {fmt: self.out_stem.with_name(f"{self.out_stem.name}.{fmt}") for fmt in formats}


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    prefix: list[str] = []
    for part in parts:
        if GLOB_CHARS & set(part):
            break
        prefix.append(part)
    return Path(*prefix) if prefix else Path(".")


def _walk(root: Path, skip: set[Path]) -> list[Path]:
    # PyAV and numpy load only when a folder is walked: `status`, `logs` and `cancel` start fast
    from scribefleet.pipeline.media import looks_like_media

    found: list[Path] = []
    seen: set[Path] = set()  # real folders walked: a link back up the tree is walked once, not forever
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        # hidden folders (.git, .scribefleet state) and the output folder are never inputs
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip
        )
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            candidate = here / name
            if candidate.is_file() and looks_like_media(candidate):
                found.append(candidate)
    return found


def is_url(text: str) -> bool:
    """Whether an input names an http(s) URL rather than a path (`HTTPS://` too: schemes have no case)."""
    return is_http_url(text)


def check_url_form(url: str) -> None:
    """URL_UNSUPPORTED for a URL that does not parse (a space in its host, a bad port, a broken IPv6 address),
    before any job is made: the libraries that fetch it would fail with a bare error only in a slot."""
    if problem := http_url_problem(url):
        raise UrlUnsupported(f"{url!r} is not a well-formed URL: {problem}; copy the address again", url=url)


def _url_name(title: str | None, url: str) -> str:
    """A file name for a URL's outputs: its title, else the last part of its path, made safe."""
    raw = title or url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "media"
    name = re.sub(r"[\\/\x00-\x1f]+", "_", raw).strip().lstrip(".")
    return name[:120] or "media"  # characters: assign_outputs fits its bytes to the file system (_fit)


def url_inputs(urls: list[str], fetch: FetchOptions, *, allowlist: list[str] | None = None) -> list[InputFile]:
    """One InputFile per media URL (playlists expanded); output stems not yet assigned.

    `allowlist`: read the URLs as the controller does, reaching only public addresses and these.
    """
    from scribefleet.pipeline.fetch import expand_url  # yt-dlp loads only when a URL is given

    found: dict[str, InputFile] = {}
    for url in urls:
        check_url_form(url)
        for entry in expand_url(url, fetch, allowlist=allowlist):
            found.setdefault(entry.url, InputFile(path=Path(), rel=Path(_url_name(entry.title, entry.url)),
                                                  url=entry.url))  # fmt: skip
    return list(found.values())


def expand_inputs(inputs: list[str], *, out_dir: Path, fetch: FetchOptions | None = None) -> list[InputFile]:
    """Expand files, folders, globs and URLs, in a stable order, without duplicates."""
    skip = {out_dir.resolve()}
    files: dict[Path, InputFile] = {}
    urls = [raw for raw in inputs if is_url(raw)]
    inputs = [raw for raw in inputs if not is_url(raw)]

    def add(path: Path, root: Path, missing: bool = False) -> None:
        absolute = path.resolve()
        if absolute in files:
            return
        rel = Path(path.name) if missing else _relative(path, root)
        files[absolute] = InputFile(path=absolute, rel=rel, missing=missing)

    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            for f in _walk(path, skip):
                add(f, path)
        elif path.is_file():
            add(path, path.parent)
        elif GLOB_CHARS & set(raw):
            root = _glob_root(str(path))  # ~ expanded, as the matches are
            matches = sorted(glob.glob(str(path), recursive=True))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    for f in _walk(mp, skip):
                        add(f, root)
                elif mp.is_file():
                    add(mp, root)
            if not matches:
                add(path, path.parent, missing=True)
        else:  # a pipe or device is there but is no media file: its job says so (MEDIA_UNREADABLE)
            add(path, path.parent, missing=not path.exists())
    result = list(files.values()) + (url_inputs(urls, fetch or FetchOptions()) if urls else [])
    assign_outputs(result, out_dir)
    return result


def _relative(path: Path, root: Path) -> Path:
    """Where `path` lies under the folder or glob root it was found in (its outputs mirror that), as it was
    walked: a link in the folder to a file or folder elsewhere keeps the name it has there."""
    for inner, outer in ((path, root), (path.resolve(), root.resolve())):
        with contextlib.suppress(ValueError):
            return inner.relative_to(outer)
    return Path(path.name)


#: bytes an output's stem may have: NAME_MAX (255) less the longest format suffix, ".json"
STEM_MAX_BYTES = 250


def _fit(stem: Path, tail: str = "") -> Path:
    """`stem` with `tail` added to its name, the name cut at a character so that it has at most STEM_MAX_BYTES."""
    budget = STEM_MAX_BYTES - len(tail.encode())
    raw = stem.name.encode("utf-8", "surrogateescape")
    name = stem.name if len(raw) <= budget else raw[:budget].decode("utf-8", "ignore").rstrip()
    return stem.with_name(name + tail)


def assign_outputs(files: list[InputFile], out_dir: Path) -> None:
    """Give each input its output stem, keeping full names (a URL: its hash) where stems would collide."""
    by_stem: dict[Path, list[InputFile]] = {}
    for f in files:
        by_stem.setdefault(_fit(f.rel if f.url else f.rel.with_suffix("")), []).append(f)
    for stem, group in by_stem.items():
        # files of two input folders can share even their full relative name (x/a.wav, y/a.wav given as x and y)
        full_names = Counter(f.rel for f in group if not f.url)
        for f in group:
            if len(group) == 1:
                f.out_stem = out_dir / stem
            elif f.url:
                f.out_stem = out_dir / _fit(f.rel, f" [{_short_hash(f.url)}]")
            elif full_names[f.rel] == 1 and _fit(f.rel) == f.rel:
                f.out_stem = out_dir / f.rel
            else:  # the full name is another input's too, or cut as well: the path's hash keeps them apart
                f.out_stem = out_dir / _fit(f.rel, f" [{_short_hash(str(f.path))}]")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def check_inputs(inputs: list[str], *, out_dir: Path, allow_missing: bool = False,
                 single_file: bool = False, fetch: FetchOptions | None = None) -> list[InputFile]:
    """`expand_inputs`, refusing (INPUT_NOT_FOUND) missing inputs, an empty result, or (`single_file`) a non-file."""
    if single_file and not is_url(inputs[0]) and not Path(inputs[0]).expanduser().is_file():
        raise InputNotFound(
            f"{inputs[0]} is not a file: name one media file or URL (folders go to 'scribefleet transcribe' or "
            "'batch')", input=inputs[0],
        )  # fmt: skip
    files = expand_inputs(inputs, out_dir=out_dir, fetch=fetch)
    missing = [f for f in files if f.missing]
    if missing and not allow_missing:
        names = ", ".join(str(f.path) for f in missing)
        raise InputNotFound(
            f"{len(missing)} input(s) not found, nothing was started: {names}. Check the paths (quote globs so the "
            "shell does not expand them), or pass --allow-missing to run the others and record these as failed jobs",
            missing=[str(f.path) for f in missing],
        )  # fmt: skip
    if not files:
        raise InputNotFound(
            f"no media found in {', '.join(inputs)}: name files, folders or globs that hold audio or video",
            inputs=list(inputs),
        )  # fmt: skip
    return files
