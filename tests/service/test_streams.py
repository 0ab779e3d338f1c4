"""A batch stream's reading of its tasks: each ended task read once, none missed, a re-run seen open again."""

from __future__ import annotations

from scribefleet.options import TranscribeOptions
from scribefleet.service import jobs as J
from scribefleet.service.streams import BatchTasks
from service.harness import DATA, Service


def test_a_batch_stream_sees_every_change_while_reading_ended_tasks_once(idle: Service) -> None:
    controller = idle.controller  # its dispatcher never starts: a cancel applies at once
    writer = controller.uploads.new_writer("en01.wav")
    writer.write((DATA / "en01.wav").read_bytes())
    upload = writer.finish()
    batch = J.create_batch(controller, "watched")

    def add() -> str:
        return J.create_job(controller, upload.upload_id, TranscribeOptions(formats=["txt"]), batch.id).id

    def states(rows: list) -> dict[str, str]:
        return {task.id: job["status"] for task, job, _ in rows}

    a, b = add(), add()
    watched = BatchTasks(controller, batch.id)
    assert states(watched.read()) == {a: "queued", b: "queued"}
    controller.cancel(a)  # ended between two polls
    c = add()
    controller.cancel(c)  # added and ended between two polls: never seen open
    rows = watched.read()
    assert states(rows) == {a: "canceled", b: "queued", c: "canceled"}
    assert [task.id for task, _, _ in rows] == [a, b, c]  # submission order
    assert watched.ended.keys() == {a, c} and watched.open == {b}
    controller.store.reset_tasks(batch.id, [a])  # a re-run: open again
    assert states(watched.read()) == {a: "queued", b: "queued", c: "canceled"}
    assert watched.ended.keys() == {c}
