"""Attendance from a camera or a video: who was seen when (see :mod:`.runner`, :mod:`.log`)."""

from .log import AttendanceError, AttendanceLog, Event, UnknownTrackError, iso_time
from .runner import AttendSettings, RunSummary, attend
from .sources import FrameSource, Reconnect, Source, parse_source

__all__ = ["AttendanceError", "AttendanceLog", "AttendSettings", "Event", "FrameSource", "Reconnect", "RunSummary",
           "Source", "UnknownTrackError", "attend", "iso_time", "parse_source"]
