"""The error tree: unique codes, each documented in docs/errors.md with its HTTP status."""

from __future__ import annotations

import re
from pathlib import Path

import scribefleet
from scribefleet import errors

DOC = Path(__file__).parents[1] / "docs" / "errors.md"


def documented() -> dict[str, int]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d{3}) \|", DOC.read_text(), flags=re.M)
    return {code: int(status) for code, status in rows}


def test_codes_are_unique_upper_snake() -> None:
    classes = [errors.ScribefleetError, *errors._all_subclasses(errors.ScribefleetError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), f"duplicate codes: {sorted(c for c in codes if codes.count(c) > 1)}"
    assert all(re.fullmatch(r"[A-Z][A-Z_]+", c) for c in codes)


def test_docs_and_code_agree() -> None:
    in_code = {code: cls.http_status for code, cls in errors.ERRORS_BY_CODE.items()}
    assert documented() == in_code


def test_every_error_class_says_what_it_is() -> None:
    for cls in errors.ERRORS_BY_CODE.values():
        assert cls.__doc__ and cls.__doc__.strip(), cls


def test_from_code_round_trip() -> None:
    err = errors.ScribefleetError.from_code("MEDIA_EMPTY", "no audio", path="x.mp4")
    assert isinstance(err, errors.MediaEmpty)
    assert err.to_dict() == {"code": "MEDIA_EMPTY", "message": "no audio", "details": {"path": "x.mp4"}}
    unknown = errors.ScribefleetError.from_code("SOMETHING_NEW", "from a newer peer")
    assert unknown.code == "SOMETHING_NEW" and type(unknown) is errors.ScribefleetError


def test_public_names_are_exported() -> None:
    for name in scribefleet.__all__:
        assert getattr(scribefleet, name) is not None
    assert scribefleet.__version__
