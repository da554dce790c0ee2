"""The attendance routes: the events ``facespace attend`` logs, as JSON or CSV, and its anonymous
tracks (thumbnail, enrolment into the server's gallery).

They need ``facespace serve --attendance LOG``; without it every one answers 404 ``no_attendance``.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..errors import ModelMismatchError
from .deps import AUTH, get_state
from .errors import ApiError
from .state import ServerState

router = APIRouter(tags=["attendance"], dependencies=AUTH)

_DAY = r"^\d{4}-\d{2}-\d{2}$"


def _events(state: ServerState, person: str | None, day: str | None, since_id: int | None) -> list:
    from ..attendance.log import AttendanceError, parse_day

    if day is not None:
        try:
            parse_day(day)
        except AttendanceError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
    return state.attendance().events(person=person or None, day=day, since_id=since_id)


@router.get("/api/attendance")
def events(person: str | None = Query(None, max_length=200), day: str | None = Query(None, pattern=_DAY),
           since_id: int | None = Query(None, ge=0), state: ServerState = Depends(get_state)) -> dict:
    """Attendance events in order (``since_id``: only those logged after that one, for live views)."""
    return {"events": [e.to_dict() for e in _events(state, person, day, since_id)]}


@router.get("/api/attendance.csv")
def events_csv(person: str | None = Query(None, max_length=200), day: str | None = Query(None, pattern=_DAY),
               since_id: int | None = Query(None, ge=0), state: ServerState = Depends(get_state)) -> Response:
    text = state.attendance().to_csv(_events(state, person, day, since_id))
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="attendance.csv"'})


@router.get("/api/attendance/tracks")
def tracks(state: ServerState = Depends(get_state)) -> dict:
    """The anonymous tracks not enrolled yet, each with the URL of its thumbnail."""
    return {"tracks": [{"id": t.id, "first_seen": d["first_seen"], "last_seen": d["last_seen"], "frames": t.frames,
                        "source": t.source, "thumbnail_url": f"/api/attendance/tracks/{t.id}/thumbnail"}
                       for t, d in ((t, t.to_dict()) for t in state.attendance().tracks())]}


@router.get("/api/attendance/tracks/{track_id}/thumbnail")
def thumbnail(track_id: int, state: ServerState = Depends(get_state)) -> Response:
    from ..attendance.log import UnknownTrackError

    try:
        data = state.attendance().thumbnail(track_id)
    except UnknownTrackError as exc:
        raise ApiError(404, "unknown_track", str(exc)) from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


class EnrolTrack(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)


@router.post("/api/attendance/tracks/{track_id}/enrol", status_code=201)
def enrol_track(track_id: int, body: EnrolTrack, state: ServerState = Depends(get_state)) -> dict:
    """Enrol an anonymous track's stored embeddings as ``name`` in the server's gallery."""
    from ..attendance.log import UnknownTrackError

    log = state.attendance()
    try:
        track = log.track_vectors(track_id)
    except UnknownTrackError as exc:
        raise ApiError(404, "unknown_track", str(exc)) from None
    pipeline = state.pipeline()
    if (track.model, track.preprocessing_id) != (pipeline.model_name, pipeline.preprocessing_id):
        raise ModelMismatchError(f"track {track_id} was embedded by model {track.model!r} [{track.preprocessing_id}]"
                                 f", this server runs {pipeline.model_name!r} [{pipeline.preprocessing_id}]")
    with state.gallery_lock:  # one enrolment of a track at a time: checked, stored and marked together
        enrolled = {t.id: t.enrolled for t in log.tracks(include_enrolled=True)}.get(track_id)
        if enrolled is not None:
            raise ApiError(409, "already_enrolled", f"track {track_id} is already enrolled as {enrolled!r}")
        gallery = state.gallery()
        stored = gallery.store_embeddings(body.name, track.vectors,
                                          [f"attendance track {track_id}"] * len(track.vectors),
                                          model=track.model, preprocessing_id=track.preprocessing_id)
        if gallery.thumbnail(body.name) is None:
            with contextlib.suppress(UnknownTrackError):  # a track without a thumbnail enrols without one
                gallery.put_thumbnail(body.name, log.thumbnail(track_id))
        log.mark_enrolled(track_id, body.name)
    return {"enrolled": body.name, "track": track_id, "added": stored.added, "duplicates": stored.duplicates}
