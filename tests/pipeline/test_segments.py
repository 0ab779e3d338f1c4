"""pipeline/segments.py: clips cut into readable cues at their words; every transcript ordered, no overlaps."""

from __future__ import annotations

from typing import Any

from scribefleet.pipeline.segments import MAX_CUE_CHARS, MAX_CUE_S, split_by_words, tidy


def _words(*spec: tuple[str, float, float]) -> list[dict[str, Any]]:
    return [{"word": w, "start": s, "end": e, "probability": 0.9} for w, s, e in spec]


def _segment(words: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(w["word"] for w in words)
    return {"id": 0, "seek": 0, "start": words[0]["start"], "end": words[-1]["end"], "text": text,
            "tokens": [1, 2, 3], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.2,
            "no_speech_prob": 0.01, "words": words}


def _encode(text: str) -> list[int]:
    return [len(w) for w in text.split()]


def test_a_clip_is_cut_after_sentences_and_at_pauses() -> None:
    words = _words((" Pity", 0.0, 0.3), (" the", 0.3, 0.5), (" world.", 0.5, 1.0), (" Or", 1.2, 1.4),
                   (" else", 1.4, 1.7), (" this", 3.0, 3.2), (" be.", 3.2, 3.5))
    cues = split_by_words(_segment(words), _encode)
    assert [c["text"] for c in cues] == [" Pity the world.", " Or else", " this be."]
    assert [(c["start"], c["end"]) for c in cues] == [(0.0, 1.0), (1.2, 1.7), (3.0, 3.5)]
    assert [c["tokens"] for c in cues] == [[4, 3, 6], [2, 4], [4, 3]]
    assert all(c["avg_logprob"] == -0.2 for c in cues)  # the clip's scores stay with each cue
    assert "".join(c["text"] for c in cues) == _segment(words)["text"]  # nothing lost, nothing doubled


def test_long_speech_without_full_stops_is_cut_to_readable_cues() -> None:
    words = _words(*[(f" word{i}{',' if i % 7 == 6 else ''}", i * 0.3, i * 0.3 + 0.25) for i in range(80)])
    cues = split_by_words(_segment(words), _encode)
    assert len(cues) > 1
    assert all(len(c["text"]) <= MAX_CUE_CHARS and c["end"] - c["start"] <= MAX_CUE_S for c in cues)
    assert sum(len(c["words"]) for c in cues) == 80
    # a cut lands after a comma when one is near the limit
    assert sum(c["text"].endswith(",") for c in cues) >= len(cues) // 2


def test_a_short_sentence_stays_whole_with_its_own_tokens() -> None:
    segment = _segment(_words((" Hello", 0.0, 0.4), (" there.", 0.4, 0.9)))
    assert split_by_words(segment, _encode) == [segment]
    no_words = dict(segment, words=[])
    assert split_by_words(no_words, _encode) == [no_words]


def test_tidy_orders_and_removes_overlaps() -> None:
    a = {"start": 5.0, "end": 9.0, "text": "b", "words": [{"word": "b", "start": 5.0, "end": 9.5, "probability": 1}]}
    b = {"start": 0.0, "end": 5.5, "text": "a"}
    c = {"start": 9.0, "end": 8.0, "text": "c"}
    out = tidy([a, b, c])
    assert [s["text"] for s in out] == ["a", "b", "c"]
    assert [(s["start"], s["end"]) for s in out] == [(0.0, 5.0), (5.0, 9.0), (9.0, 9.5)]  # 9.0 --> 9.0: shown 0.5 s
    assert out[1]["words"][0]["end"] == 9.0  # a word never outlasts its cue


def test_segments_that_start_together_become_cues_with_a_length() -> None:
    # seen on a 5.1 recording: a clip and a second decoding of its first words both started at 0.05 s, and
    # the shorter was cut to 0.05 --> 0.05, a cue no player shows
    thump = {"start": 0.05, "end": 0.44, "text": "-thump", "tokens": [12, 400]}
    one = {"start": 0.05, "end": 0.84, "text": " 1.", "tokens": [352, 13]}
    twice = {"start": 2.0, "end": 3.0, "text": " From", "tokens": [3574]}
    again = {"start": 2.0, "end": 3.0, "text": " fairest", "tokens": [3574]}
    out = tidy([one, thump, twice, again])
    assert [(s["start"], s["end"], s["text"]) for s in out] == [
        (0.0, 0.44, "-thump"), (0.44, 0.94, " 1."), (2.0, 3.0, " From fairest")
    ]  # each shown MIN_CUE_S where there is room
    assert out[2]["tokens"] == [3574, 3574]
    assert all(s["end"] > s["start"] for s in out)


def test_a_cue_of_no_length_is_given_time_to_be_read() -> None:
    """Seen on a real meeting (tests/data/real/speakers/dev01.wav, tiny.en, batched): two one-word cues whose
    aligned word lasted no time, " Yeah." 17.56 --> 17.56 (never shown) and 17.78 --> 17.84 (a flicker)."""
    cues = [{"start": 16.76, "end": 17.16, "text": " Project documents."},
            {"start": 17.56, "end": 17.56, "text": " Yeah."},
            {"start": 17.78, "end": 17.84, "text": " Yeah."},
            {"start": 17.86, "end": 18.64, "text": " That's it."},
            {"start": 29.9, "end": 29.9, "text": " Bye."}]  # fmt: skip
    out = tidy(cues, duration_s=30.0)
    assert [(c["start"], c["end"]) for c in out] == [
        (16.76, 17.26), (17.28, 17.78), (17.78, 17.86), (17.86, 18.64), (29.5, 30.0)
    ]  # the free time around each is taken, after it first; never over a neighbour or past the end
    assert all(c["end"] > c["start"] for c in out)
    assert all(a["end"] <= b["start"] for a, b in zip(out, out[1:]))
