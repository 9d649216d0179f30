"""Directional line-crossing counts from tracks.

A counting line is a directed segment p1 -> p2 in image pixels.  A track's anchor (the bottom
centre of its box) is on the line's left or right; moving from left to right is the
``positive`` direction (in image coordinates, y down: for a line drawn left-to-right across a
road, positive is *towards the camera*).

Robustness, each case tested in tests/test_lines.py:
- box flicker: a side only counts once the anchor is more than ``margin`` (a share of the box
  height) away from the line, and a crossing only counts once the new side has held for
  ``min_frames`` frames, so jitter around the line never counts;
- each track counts at most once per line and direction, so a vehicle stopped on the line,
  or turning back and forth, is never counted again and again;
- edge of frame: while a box touches the left, right or bottom edge of the frame, it is cut
  off and its bottom centre is not where the road user stands, so it neither sets nor changes
  the track's side (an articulated bus entering at the side, its box bottom dipping over a
  line, is not a crossing); a track first seen already past the line has no "before" side
  and is not counted; a crossing outside the segment's extent (beside the road) does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rsu.detections import Detections


@dataclass(frozen=True)
class LineSpec:
    id: str
    p1: tuple[float, float]
    p2: tuple[float, float]
    lane_id: str | None = None


@dataclass
class Crossing:
    line_id: str
    track_id: int
    category: str
    positive: bool
    lane_id: str | None  # the line's lane, else the last lane the track was seen in


@dataclass
class _TrackSide:
    side: int = 0  # -1 left, +1 right, 0 not yet known
    pending: int = 0  # side being confirmed
    pending_frames: int = 0
    counted: set[bool] = field(default_factory=set)  # directions already counted
    last_seen: int = 0
    lane: str | None = None  # the last lane the track was seen in


class LineCounter:
    def __init__(
        self,
        lines: list[LineSpec],
        margin: float = 0.1,
        min_frames: int = 2,
        forget_after_frames: int = 300,
        edge_px: float = 2.0,
        edge_share: float = 0.01,
    ) -> None:
        """A box is cut off when it comes within ``edge_px`` or ``edge_share`` of the frame's
        side (whichever is more) of the left, right or bottom edge: one percent of a 960-px
        frame is three model pixels at imgsz 320, about how far a detector's box edge
        wanders; two pixels would let a cut-off box pass for a whole one now and then."""
        self.lines = lines
        self.edge_px = edge_px
        self.edge_share = edge_share
        self.margin = margin
        self.min_frames = min_frames
        self.forget_after_frames = forget_after_frames
        p1 = np.array([line.p1 for line in lines], np.float64).reshape(-1, 2)
        p2 = np.array([line.p2 for line in lines], np.float64).reshape(-1, 2)
        self._p1 = p1
        self._dir = p2 - p1
        self._length = np.linalg.norm(self._dir, axis=1)
        self._state: list[dict[int, _TrackSide]] = [{} for _ in lines]
        self._frame = 0
        self.totals: dict[tuple[str, bool, str], int] = {}

    def update(
        self, detections: Detections, frame_size: tuple[int, int] | None = None
    ) -> list[Crossing]:
        """Feed one frame of tracked detections; returns the crossings completed in it.

        ``frame_size`` (width, height) lets boxes cut off by the frame edge be recognised.
        """
        self._frame += 1
        if not self.lines or detections.track_id is None or not len(detections):
            self._forget()
            return []
        anchors = detections.bottom_centres().astype(np.float64)  # (N, 2)
        heights = (detections.xyxy[:, 3] - detections.xyxy[:, 1]).astype(np.float64)
        rel = anchors[None, :, :] - self._p1[:, None, :]  # (L, N, 2)
        cross = self._dir[:, None, 0] * rel[..., 1] - self._dir[:, None, 1] * rel[..., 0]
        distance = cross / self._length[:, None]  # signed distance, > 0 on the right
        along = np.einsum("lnk,lk->ln", rel, self._dir) / (self._length[:, None] ** 2)
        band = self.margin * heights
        cut_off = np.zeros(len(detections), bool)
        if frame_size is not None:
            width, height = frame_size
            box = detections.xyxy
            ex = max(self.edge_px, self.edge_share * width)
            ey = max(self.edge_px, self.edge_share * height)
            cut_off = (box[:, 0] <= ex) | (box[:, 2] >= width - ex) | (box[:, 3] >= height - ey)
        crossings: list[Crossing] = []
        # Plain lists: the loop below reads single values, which numpy makes slow.
        tracks = detections.track_id.tolist()
        lanes = detections.lane_id or [None] * len(tracks)
        bands, cut, distances, alongs = (
            band.tolist(),
            cut_off.tolist(),
            distance.tolist(),
            along.tolist(),
        )
        for li, line in enumerate(self.lines):
            states = self._state[li]
            line_distance, line_along = distances[li], alongs[li]
            for n, track in enumerate(tracks):
                d, b = line_distance[n], bands[n]
                side = 1 if d > b else -1 if d < -b else 0
                state = states.get(track)
                if state is None:
                    state = states[track] = _TrackSide()
                state.last_seen = self._frame
                if lanes[n] is not None:
                    state.lane = lanes[n]
                if side == 0 or side == state.side or cut[n]:
                    state.pending_frames = 0
                    continue
                if state.side == 0:  # first confident side: where the track comes from
                    state.side = side
                    continue
                if side != state.pending:
                    state.pending, state.pending_frames = side, 0
                state.pending_frames += 1
                if state.pending_frames < self.min_frames:
                    continue
                state.side, state.pending_frames = side, 0
                positive = side > 0
                if positive in state.counted or not 0.0 <= line_along[n] <= 1.0:
                    continue
                state.counted.add(positive)
                category = str(detections.class_name[n])
                # A stop line is confirmed crossed once the vehicle is in the intersection,
                # in no lane: the lane it came from is what the count belongs to.
                lane = line.lane_id or state.lane
                crossings.append(Crossing(line.id, track, category, positive, lane))
                key = (line.id, positive, category)
                self.totals[key] = self.totals.get(key, 0) + 1
        self._forget()
        return crossings

    def _forget(self) -> None:
        """Drop the state of tracks not seen for a while (bounded memory on a live camera)."""
        if self._frame % 30:
            return
        horizon = self._frame - self.forget_after_frames
        for states in self._state:
            for track in [t for t, s in states.items() if s.last_seen < horizon]:
                del states[track]
