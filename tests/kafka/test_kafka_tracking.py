"""The commit point of a partition: never past a record that has not finished."""

from __future__ import annotations

from aiokafka import TopicPartition

from fastapi_opinionated_eventbus.backends.kafka.tracking import PartitionTrack


def test_the_commit_point_waits_for_the_first_unfinished_record() -> None:
    track = PartitionTrack(TopicPartition("t", 0))
    for offset in (10, 11, 12, 13):
        assert track.received(offset)
    assert not track.finished(12)  # 10 and 11 still running
    assert not track.finished(13)
    assert (track.commit_to, track.first_unfinished, len(track)) == (None, 10, 4)
    assert track.finished(10)
    assert (track.commit_to, track.first_unfinished) == (11, 11)
    assert track.finished(11)  # 12 and 13 had finished already: all the way
    assert (track.commit_to, track.first_unfinished, len(track)) == (14, None, 0)
    assert track.dirty
    track.committed = 14
    assert not track.dirty


def test_offsets_going_back_do_not_fit_the_track() -> None:
    track = PartitionTrack(TopicPartition("t", 0))
    assert track.received(5)
    assert track.finished(5)
    assert not track.received(5)  # already committable: a reset partition
    assert not track.received(3)
    assert track.received(6)
    assert not track.received(6)
