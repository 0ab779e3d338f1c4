"""Tests of scribefleet.pipeline: one transcription job, stage by stage."""
