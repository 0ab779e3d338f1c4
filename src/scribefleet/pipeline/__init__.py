"""The stages of one transcription job (decode -> vad -> transcribe -> diarize -> render -> publish).

`job.run_transcription` drives them; `media`, `vad`, `asr`, `diarize` (with
`speakers`), `render` are the stages, `checkpoint` makes each stage's output crash-safe, and `models`
resolves and caches the speech models a slot keeps warm.
"""
