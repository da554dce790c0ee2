"""Attendance speed and event latency: ``facespace attend`` (the library loop) on the ../shared videos.

For each video and each detection stride n (every n-th frame: 1, 3, 5) it runs
:func:`facespace.attendance.attend` with the Hamilton cast's gallery into a fresh log and records

* frames/s sustained: video frames consumed per second of processing (real time when it is at
  least the video's own frame rate), and analysed (detected + embedded) frames per second; also
  per second of this process's CPU time (all its threads), which a busy shared machine disturbs
  less than the wall clock;
* on the Hamilton clip, for each identification that logged an event (a new one, or the
  extension when a person reappears after a cut), the latency from the labelled start of the
  shot (``tests/fixtures/hamilton_attendance.json``) to the event, in video time and in processing
  time (wall clock from reading the track's first frame to the event's commit).

The machine is shared with other sessions: the load average is recorded before and after each run;
compare runs of one file as ratios. Writes ``benchmarks/results/attend.{json,md}``.

    python benchmarks/attend.py [--strides 1 3 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _paths import DATA, REPO, RESULTS
from _recognition_common import machine

LABELS = json.loads((REPO / "tests" / "fixtures" / "hamilton_attendance.json").read_text())
VIDEOS = {"hamilton": DATA / LABELS["video"], "street-1080p": DATA / "photos" / "facenet_pytorch" / "examples" / "video.mp4"}


def appearances() -> dict[str, list[tuple[int, int]]]:
    """The labelled shots (first, last frame) of each named person."""
    shots: dict[str, list[tuple[int, int]]] = {}
    for shot in LABELS["shots"]:
        for person in shot["people"]:
            if person["name"]:
                shots.setdefault(person["name"], []).append(tuple(shot["frames"]))
    return shots


def one_run(pipeline, identifier, video: Path, every: int, folder: Path) -> dict:
    from facespace.attendance import AttendanceLog, AttendSettings, FrameSource, attend, parse_source

    load_before = [round(x, 2) for x in os.getloadavg()]
    log_path = folder / f"{video.stem}-{every}.db"
    with AttendanceLog(log_path) as log:
        began, cpu_began = time.perf_counter(), time.process_time()
        summary = attend(pipeline, identifier, FrameSource(parse_source(str(video))), log, start=0.0,
                         settings=AttendSettings(every=every))
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        events = [e.to_dict() | {"first_s": round(e.first_seen, 3), "last_s": round(e.last_seen, 3)}
                  for e in log.events()]
    source = FrameSource(parse_source(str(video)))
    source.open()
    fps = source.fps
    source.release()
    return {"video": video.name, "every": every, "frames": summary.frames, "analysed": summary.sampled,
            "seconds": round(seconds, 2), "frames_per_s": round(summary.frames / seconds, 2),
            "analysed_per_s": round(summary.sampled / seconds, 2), "video_fps": round(fps, 2),
            "cpu_seconds": round(cpu, 2), "frames_per_cpu_s": round(summary.frames / cpu, 2),
            "real_time": summary.frames / seconds >= fps, "events": events,
            "anonymous_tracks": summary.anonymous, "identifications": [n.to_dict() for n in summary.notes],
            "latency": latencies(summary, fps, every) if video == VIDEOS["hamilton"] else None,
            "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}


def latencies(summary, fps: float, every: int) -> list[dict]:
    """For each identification that logged an event (new, or extended on a reappearance): the
    labelled shot its track began in, and the latency from that shot's first frame to the event,
    in video seconds and (from the track's first frame) in processing seconds."""
    out = []
    shots = appearances()
    for note in summary.notes:
        first = note.appeared * fps
        shot = next(((a, b) for a, b in shots.get(note.person, []) if a - every <= first <= b), None)
        if shot is None:
            out.append({"person": note.person, "new": note.new, "shot": None})
            continue
        out.append({"person": note.person, "new": note.new, "shot": list(shot),
                    "appeared_s": round(shot[0] / fps, 3), "identified_s": round(note.identified, 3),
                    "video_latency_s": round(note.identified - shot[0] / fps, 3),
                    "processing_latency_s": round(note.latency_s, 3)})
    return out


def cast_identifier(pipeline, folder: Path):
    from facespace.gallery import Gallery, Identifier

    with Gallery(folder / "cast.db") as g:
        for name, photo in LABELS["gallery"].items():
            g.enroll_images(pipeline, name, [DATA / photo])
        return Identifier.for_pipeline(g, pipeline)


def write_markdown(result: dict) -> None:
    m = result["machine"]
    lines = ["# Attendance: frames/s and event latency", "",
             f"`python benchmarks/attend.py`, {result['started']}. Machine: {m.get('cpu')}, {m.get('cpu_count')} "
             f"logical CPUs, torch threads {result['torch_threads']}; **shared with other sessions** (load average "
             "per run below), so compare within this file. Model "
             f"{result['model']}, MTCNN min face {result['min_face_size']} px, one frame at a time.", "",
             "| video | every | frames | analysed | s | frames/s | analysed/s | CPU s | frames/CPU-s | video fps | "
             "real time | events | anonymous | load before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        people = ", ".join(sorted({e["person"] for e in r["events"]})) or "-"
        lines.append(f"| {r['video']} | {r['every']} | {r['frames']} | {r['analysed']} | {r['seconds']} | "
                     f"{r['frames_per_s']} | {r['analysed_per_s']} | {r['cpu_seconds']} | {r['frames_per_cpu_s']} | "
                     f"{r['video_fps']} | "
                     f"{'yes' if r['real_time'] else 'no'} | {people} | {r['anonymous_tracks']} | "
                     f"{r['load_before'][0]} -> {r['load_after'][0]} |")
    lines += ["", "Latency from a person's labelled appearance (the first frame of the shot) to the event it "
              "logs (new, or extended when they reappear), Hamilton clip; processing latency is wall time from "
              "reading the track's first frame to the event's commit:", "",
              "| every | person | event | shot (frames) | appears at (s) | identified at (s) | video latency (s) | "
              "processing latency (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        for lat in r["latency"] or []:
            if lat["shot"] is None:
                lines.append(f"| {r['every']} | {lat['person']} | {'new' if lat['new'] else 'extended'} | "
                             "not in the labels | | | | |")
                continue
            lines.append(f"| {r['every']} | {lat['person']} | {'new' if lat['new'] else 'extended'} | "
                         f"{lat['shot'][0]}-{lat['shot'][1]} | {lat['appeared_s']} | {lat['identified_s']} | "
                         f"{lat['video_latency_s']} | {lat['processing_latency_s']} |")
    (RESULTS / "attend.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    import torch

    from facespace import FacePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = FacePipeline()
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "model": pipeline.model_name,
              "min_face_size": pipeline.detector_settings.min_face_size, "torch_threads": torch.get_num_threads(),
              "shared_machine": True, "runs": []}
    with tempfile.TemporaryDirectory(prefix="facespace-attend-bench-") as tmp:
        identifier = cast_identifier(pipeline, Path(tmp))
        for name, video in VIDEOS.items():
            for every in args.strides:
                run = one_run(pipeline, identifier, video, every, Path(tmp))
                print(name, every, run["frames_per_s"], "frames/s", run["frames_per_cpu_s"], "frames/CPU-s", run["latency"])
                result["runs"].append(run)
    result["machine"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "attend.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)
    print(f"wrote {RESULTS / 'attend.json'} and attend.md")


if __name__ == "__main__":
    main()
