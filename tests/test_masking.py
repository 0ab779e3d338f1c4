"""masking.py: what looks like a secret is masked in free text, the rest is left to tell what it was."""

from __future__ import annotations

from scribefleet.errors import DownloadFailed
from scribefleet.masking import redact, redact_value


def test_presigned_and_signed_links_keep_everything_but_their_signature() -> None:
    s3 = ("https://b.s3.amazonaws.com/a.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026"
          "&X-Amz-Date=20261202T000000Z&X-Amz-Security-Token=IQo&X-Amz-Signature=abc123")  # fmt: skip
    assert redact(f"task {s3} dispatched") == (
        "task https://b.s3.amazonaws.com/a.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
        "&X-Amz-Date=20261202T000000Z&X-Amz-Security-Token=***&X-Amz-Signature=*** dispatched"
    )
    assert redact("https://a.blob.core.windows.net/c/x.wav?sv=2022&sig=Ab%3D&se=2026") == (
        "https://a.blob.core.windows.net/c/x.wav?sv=2022&sig=***&se=2026"
    )
    assert redact("https://h/x.mp3?token=t0k&api_key=k3y;Signature=s") == "https://h/x.mp3?token=***&api_key=***;Signature=***"
    assert redact("curl https://user:pa55@host/x.wav") == "curl https://user:***@host/x.wav"


def test_commands_keep_their_words_but_not_the_values_of_secret_names() -> None:
    assert redact("AWS_SECRET_ACCESS_KEY=abc aws s3 cp x y") == "AWS_SECRET_ACCESS_KEY=*** aws s3 cp x y"
    assert redact("OPENAI_API_KEY='a b' python x.py --token=zz") == "OPENAI_API_KEY=*** python x.py --token=***"


def test_what_holds_no_secret_is_left_as_it_is() -> None:
    for text in ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PL1", "mail a@b.com", "ETA 3m, 2/7 done", ""):
        assert redact(text) == text


def test_error_messages_and_details_and_nested_values_are_masked() -> None:
    err = DownloadFailed("could not download https://h/a.wav?sig=s3cr3t (404)", url="https://h/a.wav?sig=s3cr3t")
    assert "s3cr3t" not in err.message and "s3cr3t" not in str(err) and err.details == {"url": "https://h/a.wav?sig=***"}
    assert redact_value({"a": ["x?token=1", 2, None], "b": {"c": "PASSWORD=p"}}) == {
        "a": ["x?token=***", 2, None], "b": {"c": "PASSWORD=***"}
    }
