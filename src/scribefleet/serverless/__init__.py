"""Seed 003's serverless job: a media URL in, an SRT in S3 out (`handler.Worker`), run by `scribefleet handle`
or as a RunPod serverless worker (`python -m scribefleet.serverless`)."""

from scribefleet.serverless.handler import Worker

__all__ = ["Worker"]
