"""Multi-object tracking: ByteTrack (Zhang et al., ECCV 2022) with a batched Kalman filter.

Every detection box, down to a low score, takes part: high-score boxes are associated first
with all live tracks (including recently lost ones), then low-score boxes with the tracks
still unmatched.  This keeps ids through partial occlusion, where a vehicle's score drops.
The Kalman filter (state cx, cy, aspect, height and their velocities) runs on all tracks at
once in numpy; assignment is scipy's linear_sum_assignment on an IoU cost.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from common.config import StrictModel
from rsu.detections import Detections


class TrackerConfig(StrictModel):
    enabled: bool = Field(True, description="track road users across frames")
    low_threshold: float = Field(
        0.1,
        ge=0,
        le=1,
        description="lowest score a box may have to keep a track alive; boxes above the "
        "detector's (per-class) confidence start tracks and are matched first",
    )
    match_iou: float = Field(0.2, gt=0, le=1, description="minimum IoU, first association")
    low_match_iou: float = Field(0.5, gt=0, le=1, description="minimum IoU, second association")
    new_track_iou: float = Field(0.3, gt=0, le=1, description="minimum IoU to confirm a new track")
    lost_buffer_s: float = Field(1.0, gt=0, description="how long a lost track can come back")


_STD_POSITION = 1.0 / 20
_STD_VELOCITY = 1.0 / 160
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_DIAG8 = (np.arange(8), np.arange(8))
_DIAG4 = (np.arange(4), np.arange(4))
# Noise standard deviations (ByteTrack's), as scale x box height + constant, per state
# element (cx, cy, aspect, h and their velocities): one broadcast instead of eight arrays.
_SP, _SV = _STD_POSITION, _STD_VELOCITY
_INIT_SCALE = np.array([2 * _SP, 2 * _SP, 0, 2 * _SP, 10 * _SV, 10 * _SV, 0, 10 * _SV])
_INIT_CONST = np.array([0, 0, 1e-2, 0, 0, 0, 1e-5, 0])
_PROCESS_SCALE = np.array([_SP, _SP, 0, _SP, _SV, _SV, 0, _SV])
_PROCESS_CONST = np.array([0, 0, 1e-2, 0, 0, 0, 1e-5, 0])
_MEASURE_SCALE = np.array([_SP, _SP, 0, _SP])
_MEASURE_CONST = np.array([0, 0, 1e-1, 0])


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    out = np.empty((len(boxes), 4))
    out[:, :2] = (boxes[:, :2] + boxes[:, 2:]) / 2
    out[:, 3] = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    out[:, 2] = (boxes[:, 2] - boxes[:, 0]) / out[:, 3]
    return out


def xyah_to_xyxy(state: np.ndarray) -> np.ndarray:
    w = state[:, 2] * state[:, 3]
    h = state[:, 3]
    return np.stack(
        (state[:, 0] - w / 2, state[:, 1] - h / 2, state[:, 0] + w / 2, state[:, 1] + h / 2), 1
    )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    # Column by column: (N, M) arrays throughout, no (N, M, 2) corners and products over
    # them (19 against 54 us for 30 x 30 boxes).
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 2:3], a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    width = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    height = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    np.maximum(width, 0, out=width)
    np.maximum(height, 0, out=height)
    inter = width * height
    union = (ax2 - ax1) * (ay2 - ay1) + ((bx2 - bx1) * (by2 - by1) + 1e-9) - inter
    return inter / union


def _assign(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching, keeping only pairs below ``max_cost``."""
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < max_cost
    return rows[keep], cols[keep]


class _Tracks:
    """Struct-of-arrays of tracks; index i is one track in every array."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.mean = np.zeros((0, 8))
        self.cov = np.zeros((0, 8, 8))
        self.confirmed = np.zeros(0, bool)
        self.lost_since = np.zeros(0, np.int64)  # frame it was lost at; -1 while tracked

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, mask: np.ndarray) -> None:
        self.ids, self.mean, self.cov = self.ids[mask], self.mean[mask], self.cov[mask]
        self.confirmed, self.lost_since = self.confirmed[mask], self.lost_since[mask]

    def add(self, ids: np.ndarray, boxes: np.ndarray, confirmed: bool) -> None:
        measurement = xyxy_to_xyah(boxes)
        mean = np.concatenate((measurement, np.zeros_like(measurement)), axis=1)
        std = measurement[:, 3:4] * _INIT_SCALE + _INIT_CONST
        cov = np.zeros((len(ids), 8, 8))
        cov[:, _DIAG8[0], _DIAG8[1]] = std**2
        self.ids = np.concatenate((self.ids, ids))
        self.mean = np.concatenate((self.mean, mean))
        self.cov = np.concatenate((self.cov, cov))
        self.confirmed = np.concatenate((self.confirmed, np.full(len(ids), confirmed)))
        self.lost_since = np.concatenate((self.lost_since, np.full(len(ids), -1, np.int64)))

    def predict(self) -> None:
        if not len(self):
            return
        std = self.mean[:, 3:4] * _PROCESS_SCALE + _PROCESS_CONST
        # A lost track stops growing: freeze its height velocity, as ByteTrack does.
        self.mean[self.lost_since >= 0, 7] = 0
        self.mean = self.mean @ _F.T
        self.cov = _F @ self.cov @ _F.T
        self.cov[:, _DIAG8[0], _DIAG8[1]] += std**2

    def update(self, index: np.ndarray, boxes: np.ndarray) -> None:
        if not len(index):
            return
        z = xyxy_to_xyah(boxes)
        mean, cov = self.mean[index], self.cov[index]
        # The measurement is the first four state elements (H = [I 0]), so H P H' and P H'
        # are slices of P.
        s = cov[:, :4, :4].copy()
        s[:, _DIAG4[0], _DIAG4[1]] += (mean[:, 3:4] * _MEASURE_SCALE + _MEASURE_CONST) ** 2
        pht = cov[:, :, :4]  # (M, 8, 4)
        gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = z - mean[:, :4]
        self.mean[index] = mean + np.einsum("mij,mj->mi", gain, innovation)
        # P - K S K' = P - K (P H')'
        self.cov[index] = cov - gain @ pht.transpose(0, 2, 1)
        self.lost_since[index] = -1

    def boxes(self) -> np.ndarray:
        return xyah_to_xyxy(self.mean[:, :4])


class ByteTracker:
    """Assigns ``track_id`` to detections; returns only the tracked ones, in detection order.

    A track's class is the confidence-weighted vote of all its detections, so a vehicle the
    detector calls car in one frame and truck in the next is reported as one class.
    """

    def __init__(self, config: TrackerConfig, fps: float = 30.0) -> None:
        self.config = config
        self.buffer_frames = max(1, round(config.lost_buffer_s * fps))
        self.tracks = _Tracks()
        self.frame = 0
        self._next_id = 1
        self._votes: dict[int, dict[str, float]] = {}
        self._leader: dict[int, str] = {}  # each track's class with the most votes so far

    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def update(self, detections: Detections, is_high: np.ndarray) -> Detections:
        """``is_high``: which detections pass the detector's confidence (the rest are low)."""
        cfg = self.config
        self.frame += 1
        tracks = self.tracks
        tracks.predict()
        scores = detections.confidence
        high = np.flatnonzero(is_high)
        low = np.flatnonzero(~is_high & (scores >= cfg.low_threshold))
        det_track = np.full(len(detections), -1, np.int64)  # detection -> track index
        boxes = detections.xyxy.astype(np.float64)
        # IoU of every predicted track box with every detection, once; each association
        # below takes its rows and columns.
        iou_all = iou_matrix(tracks.boxes(), boxes)
        matched = np.zeros(len(tracks), bool)

        # 1. High-score boxes against confirmed tracks, tracked or lost.
        pool = np.flatnonzero(tracks.confirmed)
        iou = iou_all[np.ix_(pool, high)]
        cost = 1.0 - iou * scores[high][None, :]  # fuse the score, as ByteTrack does
        r, c = _assign(np.where(iou >= cfg.match_iou, cost, 1.0), 1.0)
        det_track[high[c]] = pool[r]
        matched[pool[r]] = True

        # 2. Low-score boxes against confirmed tracks still unmatched and not lost.
        pool = np.flatnonzero(tracks.confirmed & (tracks.lost_since < 0) & ~matched)
        iou = iou_all[np.ix_(pool, low)]
        r, c = _assign(1.0 - iou, 1.0 - cfg.low_match_iou)
        det_track[low[c]] = pool[r]
        matched[pool[r]] = True

        # 3. Unconfirmed (one-frame) tracks against the remaining high-score boxes.
        free_high = high[det_track[high] < 0]
        pool = np.flatnonzero(~tracks.confirmed)
        iou = iou_all[np.ix_(pool, free_high)]
        r, c = _assign(1.0 - iou, 1.0 - cfg.new_track_iou)
        det_track[free_high[c]] = pool[r]
        tracks.confirmed[pool[r]] = True
        matched[pool[r]] = True

        matched_dets = np.flatnonzero(det_track >= 0)
        tracks.update(det_track[matched_dets], boxes[matched_dets])

        # Unmatched: confirmed tracks become lost; unconfirmed ones are dropped.
        unmatched = ~matched
        newly_lost = unmatched & tracks.confirmed & (tracks.lost_since < 0)
        tracks.lost_since[newly_lost] = self.frame
        expired = unmatched & (
            ~tracks.confirmed
            | ((tracks.lost_since >= 0) & (self.frame - tracks.lost_since > self.buffer_frames))
        )
        track_ids = tracks.ids[det_track[matched_dets]]
        for track_id in tracks.ids[expired].tolist():
            self._votes.pop(track_id, None)
            self._leader.pop(track_id, None)
        tracks.keep(~expired)

        # 4. New tracks from high-score boxes nobody claimed; confirmed on the very first frame.
        new = high[det_track[high] < 0]
        new_ids = self._new_ids(len(new))
        tracks.add(new_ids, boxes[new], confirmed=self.frame == 1)

        self._vote(new_ids, detections, new)
        self._vote(track_ids, detections, matched_dets)
        out = detections.subset(matched_dets)
        out.track_id = track_ids
        if self.frame == 1 and len(new):
            first = detections.subset(new)
            first.track_id = new_ids
            out = first if not len(out) else Detections.concatenate([out, first])
        out.class_name = np.array(
            [self._leader[t] for t in out.track_id.tolist()],
            dtype=object,
        )
        return out

    def _vote(self, track_ids: np.ndarray, detections: Detections, rows: np.ndarray) -> None:
        leader = self._leader
        names = detections.class_name[rows].tolist()  # plain values: numpy's one by one are slow
        scores = detections.confidence[rows].tolist()
        for track_id, name, score in zip(track_ids.tolist(), names, scores, strict=True):
            votes = self._votes.setdefault(track_id, {})
            votes[name] = votes.get(name, 0.0) + score
            # The leader is the first class to reach the highest total (as max() over the
            # votes in the order the classes came): kept here instead of found per frame.
            best = leader.get(track_id)
            if best is None or votes[name] > votes[best]:
                leader[track_id] = name
            elif votes[name] == votes[best] and name != best:
                first = next(c for c in votes if c in (name, best))
                leader[track_id] = first
