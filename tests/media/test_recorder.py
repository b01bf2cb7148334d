"""The recorder: consent gate, a real recording through socket.io, the file and its row.

The doctor and the patient publish synthetic audio + video to a real media server; with both
consents in the ledger the doctor records about N seconds; the file must open with PyAV, decode
as video of about N seconds, and match its Recording row (size, SHA-256). Without both consents
(or after a withdrawal) the server refuses and nothing is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from media_server.peers import RelayHub
from media_server.peers import recorder as rec
from tests.media import peer_clients as pc
from tests.media_fixtures import MediaClient, run

SECONDS = 3.0
TOLERANCE = 0.6  # the first frame's wait and the last frame's flush


def consent(app, user_id: int, consultation_id: int, *, withdrawn: bool = False) -> None:
    from app.extensions import db
    from models import Consent, ConsentKind, utcnow

    with app.app_context():
        db.session.add(
            Consent(
                user_id=user_id,
                consultation_id=consultation_id,
                kind=ConsentKind.RECORDING,
                policy_version="test",
                accepted_at=utcnow(),
                withdrawn_at=utcnow() if withdrawn else None,
            )
        )
        db.session.commit()


def recordings(app, consultation_id: int):
    from app.extensions import db
    from models import Recording

    with app.app_context():
        return list(
            db.session.execute(
                select(Recording).where(Recording.consultation_id == consultation_id)
            ).scalars()
        )


def answerer(client: MediaClient, event: str):
    async def answer(sdp: str) -> str:
        ack = await client.call(event, {"sdp": sdp}, timeout=20)
        assert ack.get("ok"), ack
        return ack["sdp"]

    return answer


async def call_in(server, doctor: MediaClient, patient: MediaClient) -> None:
    await doctor.connect()
    await patient.connect()
    await doctor.call("room.enter", {})
    await patient.call("room.enter", {})
    await doctor.wait_for(lambda: any(p["state"] == "waiting" for p in doctor.participants()))
    await doctor.call("room.admit", {"sid": patient.sid})
    await patient.wait_for(lambda: patient.got("room.admitted"))


@pytest.fixture
def recorder_server(media_server_factory, tmp_path):
    return media_server_factory(MEDIA_RECORDINGS_DIR=str(tmp_path / "recordings"))


def people(server, room):
    cid = room.consultation_id
    doctor = MediaClient(server.url, lambda: server.token(cid, room.doctor_user_id, "doctor"))
    patient = MediaClient(server.url, lambda: server.token(cid, room.patient_user_id, "patient"))
    return doctor, patient


def test_records_the_call_with_both_consents(app, recorder_server, make_room, tmp_path):
    room = make_room(kind="centre_request", status="in_progress")
    consent(app, room.patient_user_id, room.consultation_id)
    consent(app, room.doctor_user_id, room.consultation_id)
    doctor, patient = people(recorder_server, room)

    async def scenario():
        await call_in(recorder_server, doctor, patient)
        pubs = [
            await pc.publish(answerer(doctor, "relay.publish"), 60),
            await pc.publish(answerer(patient, "relay.publish"), 180),
        ]
        await asyncio.sleep(0.5)  # media flowing before the start
        patient_tries = await patient.call("record.start", {})
        start = await doctor.call("record.start", {}, timeout=20)
        began = time.monotonic()
        await patient.wait_for(
            lambda: patient.got("record.state") and patient.got("record.state")[-1]["recording"]
        )
        during = await patient.call("relay.state", {})
        twice = await doctor.call("record.start", {})
        await asyncio.sleep(SECONDS - (time.monotonic() - began))
        stop = await doctor.call("record.stop", {}, timeout=30)
        await patient.wait_for(lambda: patient.got("record.state")[-1]["recording"] is False)
        for conn in pubs:
            await conn.close()
        await doctor.close()
        await patient.close()
        return patient_tries, start, during, twice, stop

    patient_tries, start, during, twice, stop = run(scenario(), timeout=90)
    assert patient_tries == {"ok": False, "error": "forbidden"}
    assert start == {"ok": True}
    assert during["recording"] is True
    assert twice == {"ok": False, "error": "already_recording"}
    assert stop["ok"] and stop["recording_id"]

    [row] = recordings(app, room.consultation_id)
    assert str(row.public_id) == stop["recording_id"]
    path = rec.path_for_key(tmp_path / "recordings", row.storage_key)
    data = path.read_bytes()
    assert row.size_bytes == len(data) > 0
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert row.content_type == "video/webm"
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert abs(row.duration_seconds - SECONDS) < TOLERANCE, row.duration_seconds
    # No temp file left beside it.
    assert [p.name for p in path.parent.iterdir()] == [row.storage_key]

    with av.open(str(path)) as container:
        assert abs(container.duration / 1_000_000 - SECONDS) < TOLERANCE
        kinds = sorted(s.type for s in container.streams)
        # both participants' video; one audio stream, everybody's voice mixed (a player plays
        # one audio track)
        assert kinds == ["audio", "video", "video"]
        frames = [f for f in container.decode(video=0)]
        # a moving picture, not a still (30 fps sent; a loaded machine may encode fewer)
        assert len(frames) > SECONDS * 5
        last = frames[-1]
        assert last.time is not None and abs(last.time - SECONDS) < TOLERANCE
        # The first video stream (the one a browser plays) is the patient's (grey 180).
        assert abs(pc.mean_luma(last) - (180 - 16) * 255 / 219) < 12
        container.seek(0)
        samples = sum(f.samples for f in container.decode(audio=0))
        assert abs(samples / 48000 - SECONDS) < TOLERANCE, samples / 48000


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(("patient",), id="patient-only"),
        pytest.param(("doctor",), id="doctor-only"),
        pytest.param(("patient", "doctor-withdrawn"), id="doctor-withdrew"),
        pytest.param(("patient-other-consultation", "doctor"), id="patient-for-another"),
    ],
)
def test_refused_without_both_consents(app, recorder_server, make_room, tmp_path, given):
    room = make_room(kind="centre_request", status="in_progress")
    other = make_room(kind="centre_request", status="in_progress")
    for who in given:
        if who == "patient":
            consent(app, room.patient_user_id, room.consultation_id)
        elif who == "doctor":
            consent(app, room.doctor_user_id, room.consultation_id)
        elif who == "doctor-withdrawn":
            consent(app, room.doctor_user_id, room.consultation_id, withdrawn=True)
        elif who == "patient-other-consultation":
            consent(app, room.patient_user_id, other.consultation_id)
    doctor, patient = people(recorder_server, room)

    async def scenario():
        await call_in(recorder_server, doctor, patient)
        publisher = await pc.publish(answerer(doctor, "relay.publish"), 60, audio=False)
        ack = await doctor.call("record.start", {})
        await patient.quiet(0.3)
        await publisher.close()
        await doctor.close()
        await patient.close()
        return ack

    assert run(scenario(), timeout=60) == {"ok": False, "error": "consent_missing"}
    assert not any(p.get("recording") for p in patient.got("record.state"))
    assert recordings(app, room.consultation_id) == []
    root = tmp_path / "recordings"
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


@pytest.mark.parametrize("hooked", [True, False], ids=["forwarded", "aiortc-not-hooked"])
def test_a_new_publisher_starts_a_new_file(app, make_room, tmp_path, monkeypatch, hooked):
    """Directly on the hub: the recorder rolls over to a new file when someone publishes. The
    video is muxed as the publishers encoded it: nothing in the server decodes it. On an
    aiortc the relay cannot hook, the recorder encodes the decoded video instead."""
    from aiortc.codecs.vpx import Vp8Decoder
    from sqlalchemy.orm import sessionmaker

    from media_server.peers import forwarding

    if not hooked:
        monkeypatch.setattr(forwarding, "DECODER_QUEUE", "_RTCRtpReceiver__no_such_queue")

    from app.extensions import db

    room = make_room(kind="centre_request", status="in_progress")
    consent(app, room.patient_user_id, room.consultation_id)
    consent(app, room.doctor_user_id, room.consultation_id)
    with app.app_context():
        factory = sessionmaker(db.engine)
    decoded: list[int] = []
    decode = Vp8Decoder.decode
    monkeypatch.setattr(
        Vp8Decoder, "decode", lambda self, frame: (decoded.append(1), decode(self, frame))[1]
    )
    encoded_lanes: list[bool] = []

    def video_frames(hub: RelayHub) -> list[int]:
        """Frames written so far per video lane of the room's current file."""
        recording = hub.recordings.get("c:r")
        recorder = recording.recorder if recording else None
        if recorder is None:
            return []
        return [lane.frames for lane in recorder._lanes if lane is not recorder._mix]

    async def until(condition: Callable[[], bool], what: str) -> None:
        # Waits on the state, not the clock: on a loaded machine a peer takes seconds to connect.
        for _ in range(400):
            if condition():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"never happened: {what}")

    async def scenario():
        hub = RelayHub(recordings_dir=str(tmp_path), session_factory=factory)
        first = await pc.publish(lambda sdp: hub.publish("d", "c:r", sdp), 60, audio=False)
        await hub.start_recording("c:r", room.consultation_id, by_sid="d")
        await until(lambda: sum(video_frames(hub)) >= 10, "the first file got frames")
        second = await pc.publish(lambda sdp: hub.publish("p", "c:r", sdp), 180, audio=False)
        await until(
            lambda: (
                len(hub.recordings["c:r"].saved) == 1
                and len(video_frames(hub)) == 2
                and min(video_frames(hub)) >= 10
            ),
            "the roll-over saved the first file and the second records both",
        )
        recorder = hub.recordings["c:r"].recorder
        encoded_lanes.extend(lane.encoded for lane in recorder._lanes if lane is not recorder._mix)
        saved = await hub.stop_recording("c:r")
        await first.close()
        await second.close()
        await hub.close()
        return saved

    saved = run(scenario(), timeout=60)
    assert len(saved) == 2
    rows = recordings(app, room.consultation_id)
    assert sorted(str(r.public_id) for r in rows) == sorted(str(s.public_id) for s in saved)
    streams = []
    for s in saved:
        with av.open(str(rec.path_for_key(tmp_path, s.storage_key))) as container:
            streams.append(len(container.streams.video))
    assert streams == [1, 2]  # the second file has both participants
    assert encoded_lanes == [hooked, hooked]
    assert (decoded == []) is hooked


@pytest.mark.no_db
def test_nothing_published_leaves_no_file(tmp_path):
    """A recorder stopped before any frame removes its temp file and writes no row."""

    async def scenario():
        recorder = rec.Recorder(tmp_path, [])
        await recorder.start()
        return await recorder.stop(), recorder

    path, recorder = run(scenario())
    assert path is None
    assert not any(p.is_file() for p in Path(tmp_path).rglob("*"))
    assert uuid.UUID(hex=recorder.key)


@pytest.mark.no_db
def test_audio_mix_sums_and_clips():
    from array import array

    a = array("h", [1000, -1000, 30000, -30000]).tobytes()
    b = array("h", [500, 500, 10000, -10000]).tobytes()
    assert array("h", rec.mix_pcm([a, b], len(a))).tolist() == [1500, -500, 32767, -32768]
    assert rec.mix_pcm([], 8) == bytes(8)  # nobody spoke: silence
    assert rec.mix_pcm([a], len(a)) == a


def test_withdrawn_consent_stops_the_recording(app, make_room, tmp_path):
    """Withdrawn in the web app during the call: the recording stops by itself, the room hears
    why, and what was recorded until then is kept."""
    from sqlalchemy import update
    from sqlalchemy.orm import sessionmaker

    from app.extensions import db
    from models import Consent, utcnow

    room = make_room(kind="centre_request", status="in_progress")
    consent(app, room.patient_user_id, room.consultation_id)
    consent(app, room.doctor_user_id, room.consultation_id)
    with app.app_context():
        factory = sessionmaker(db.engine)
    heard: list[tuple[str, dict]] = []

    async def notify(room_name: str, event: str, payload: dict) -> None:
        heard.append((event, payload))

    def withdraw() -> None:
        with app.app_context():
            db.session.execute(
                update(Consent)
                .where(Consent.user_id == room.patient_user_id)
                .values(withdrawn_at=utcnow())
            )
            db.session.commit()

    async def scenario():
        hub = RelayHub(
            recordings_dir=str(tmp_path),
            session_factory=factory,
            notify=notify,
            consent_recheck_seconds=0.2,
        )
        publisher = await pc.publish(lambda sdp: hub.publish("d", "c:w", sdp), 60, audio=False)
        await asyncio.sleep(0.3)
        await hub.start_recording("c:w", room.consultation_id, by_sid="d")
        await asyncio.sleep(1.0)
        still = hub.is_recording("c:w")
        await asyncio.to_thread(withdraw)
        stopped = await pc.wait_for(
            lambda: (
                not hub.is_recording("c:w")
                and any(e == "record.state" and not p["recording"] for e, p in heard)
            ),
            timeout=10,
        )
        await publisher.close()
        await hub.close()
        return still, stopped

    still, stopped = run(scenario(), timeout=60)
    assert still and stopped
    states = [p for e, p in heard if e == "record.state"]
    assert states == [{"recording": True}, {"recording": False, "reason": "consent_withdrawn"}]
    assert len(recordings(app, room.consultation_id)) == 1  # the part before is kept
