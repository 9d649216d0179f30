"""A share of the simulated vehicles take routes chosen at their departure (and en route).

Which vehicles: passenger cars whose id hashes below ``share`` (CRC-32), so two runs of a
scenario route the very same vehicles and their trip times compare one to one.

Who routes them:

- ``citybrain``: the project's router from the vehicle's first edge to its last, on
  free-flow edge and junction-crossing times plus each signal's movement delays as its
  cameras measure them (``MeasuredDelays``: queue and departures per lane, through the
  bus in the twin);
- ``sumo``: SUMO's own routing: the vehicle gets SUMO's rerouting device, which routes it
  at its scheduled departure on SUMO's smoothed travel times of every edge in the network
  (SUMO sees them all; citybrain sees what its cameras see);
- ``none``: nobody; the vehicles keep the scenario's routes (the reference both are
  measured against).

Both route when the vehicle is about to depart, and again every ``pre_period_s`` while it
waits to enter a full road (on arterial4x4 the wait averages minutes): citybrain with its
router, SUMO by ``vehicle.rerouteTraveltime`` on its travel times (SUMO's own
``--device.rerouting.pre-period`` has no effect on a device given through TraCI).

With ``period_s`` > 0 both also reroute en route, at most once per ``period_s``: SUMO by its
device's own period; citybrain when the vehicle has just entered an edge with room ahead to
change lanes for a new turn (at least ``LANE_CHANGE_ROOM_M``), from that edge to the
destination.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterator, Mapping

from citybrain.routing.graph import GraphError, RoadGraph
from citybrain.routing.router import NoRouteError, Router
from citybrain.routing.signal_delay import MeasuredDelays, movement_lanes
from citybrain.routing.travel_times import TravelTimes
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.observation import IntersectionObservation

ROUTERS = ("citybrain", "sumo", "none")
ROUTED_CLASSES = frozenset({"passenger"})  # the graph knows no lane permissions by class
MIN_GAIN_S = 5.0  # a new route must save this much, and this share, of the vehicle's own
MIN_GAIN_SHARE = 0.05
# Giving way at a junction without signals: the wait depends on the priority stream, which
# no camera watches, and vehicles sent there could queue unseen; the router takes it as long.
UNSEEN_YIELD_S = 30.0
LANE_CHANGE_ROOM_M = 60.0  # a new next turn may need two lane changes
# A car that cannot enter the network yet (its road is full) is routed again this often while
# it waits, by either router (SUMO's device means to, ``--device.rerouting.pre-period``): on
# an overloaded network the wait is minutes, and a route chosen at the scheduled departure
# is stale by the time the car drives it.
PRE_INSERTION_PERIOD_S = 60.0


def chosen(vehicle_id: str, share: float) -> bool:
    return zlib.crc32(vehicle_id.encode()) % 10_000 < share * 10_000


class Rerouter:
    def __init__(
        self,
        by: str,
        share: float,
        graph: RoadGraph,
        intersections: Mapping[str, SignalIntersection],
        lane_edge: Mapping[str, str],
        lane_length_m: Mapping[str, float],
        lane_speed_mps: Mapping[str, float],
        *,
        tau_s: float = 120.0,
        period_s: float = 0.0,
        pre_period_s: float = PRE_INSERTION_PERIOD_S,
    ) -> None:
        if by not in ROUTERS:
            raise ValueError(f"reroute_by must be one of {', '.join(ROUTERS)}, not {by!r}")
        if not 0 < share <= 1:
            raise ValueError(f"reroute share must be in (0, 1], got {share}")
        if period_s < 0:
            raise ValueError(f"reroute period must be >= 0, got {period_s}")
        if pre_period_s < 0:
            raise ValueError(f"reroute pre-period must be >= 0, got {pre_period_s}")
        self.period_s = period_s
        self.pre_period_s = pre_period_s
        self.by = by
        self.share = share
        self.graph = graph
        self.free = TravelTimes.free_flow(graph)
        known = set(graph.edge_ids)
        self.lanes_of = {
            m: lanes for m, lanes in movement_lanes(intersections.values(), lane_edge).items()
            if m[0] in known and m[1] in known
        }  # fmt: skip
        self.router = Router(graph, self.free, landmarks=8)
        self._yield_movements = [
            (graph.edge_ids[e], graph.edge_ids[f]) for e, f in graph.yield_turns
        ]
        lanes = {lane for ls in self.lanes_of.values() for lane in ls}
        self.delays = MeasuredDelays(tau_s, {lane: lane_length_m[lane] for lane in lanes},
                                     {lane: lane_speed_mps[lane] for lane in lanes})  # fmt: skip
        self.original: dict[str, tuple[str, ...]] = {}  # chosen vehicle -> route as loaded
        self._due: list[tuple[float, str]] = []  # (scheduled departure, vehicle)
        # routed cars not yet in the network: (when to route again, vehicle)
        self._waiting: list[tuple[float, str]] = []
        self.en_route_changes = 0  # citybrain: routes changed after departure (SUMO's: unknown)
        self.waiting_changes = 0  # routes changed while the car waited to enter
        self.failed = 0  # no route, or SUMO refused it: the vehicle keeps its own
        # citybrain en route: vehicle -> (edge it was last seen on, when last routed)
        self._driving: dict[str, tuple[str, float]] = {}
        self._changed: set[str] = set()  # cars leaving on another route than the scenario's

    @property
    def changed(self) -> int:
        return len(self._changed)

    def sumo_args(self) -> list[str]:
        """Options SUMO needs at start for this way of routing."""
        if self.by == "sumo" and self.period_s > 0:
            return ["--device.rerouting.period", f"{self.period_s:g}"]
        return []

    def observe(self, now_s: float, observations: Mapping[str, IntersectionObservation]) -> None:
        """Fold this step's camera observations into the measured delays."""
        if self.by == "citybrain":
            self.delays.update(now_s, observations)

    def before_step(self, sumo, now_s: float, step_s: float) -> None:
        """Take note of the vehicles SUMO loaded; route those departing in the next step."""
        for vid in sumo.simulation.getLoadedIDList():
            if not chosen(vid, self.share):
                continue
            if sumo.vehicle.getVehicleClass(vid) not in ROUTED_CLASSES:
                continue
            self.original[vid] = tuple(sumo.vehicle.getRoute(vid))
            if self.by == "sumo":
                sumo.vehicle.setParameter(vid, "has.rerouting.device", "true")
                if self.pre_period_s > 0:
                    # The device routes the car at its scheduled departure but, given
                    # through TraCI, not again while it waits (measured: its pre-period
                    # changed no trip).  So SUMO is asked to (rerouteTraveltime: on its
                    # travel times of the moment; measured, it takes detours around queues).
                    scheduled = now_s - sumo.vehicle.getDepartDelay(vid)
                    heapq.heappush(self._waiting, (scheduled + self.pre_period_s, vid))
            if self.by != "citybrain":
                continue
            # Before departure SUMO reports the departure delay as now - scheduled departure.
            heapq.heappush(self._due, (now_s - sumo.vehicle.getDepartDelay(vid), vid))
        if self.by == "sumo":
            self._sumo_waiting(sumo, now_s)
            return
        horizon = now_s + step_s
        departing = bool(self._due) and self._due[0][0] <= horizon
        waiting = bool(self._waiting) and self._waiting[0][0] <= now_s
        if not departing and not waiting:
            return
        self._update_times()
        while self._due and self._due[0][0] <= horizon:
            _, vid = heapq.heappop(self._due)
            self._route(sumo, vid, now_s)
            if self.pre_period_s > 0:
                heapq.heappush(self._waiting, (now_s + self.pre_period_s, vid))
        if waiting:
            for vid in self._still_waiting(sumo, now_s):  # routed on what is seen now
                self._route(sumo, vid, now_s, tuple(sumo.vehicle.getRoute(vid)))

    def _sumo_waiting(self, sumo, now_s: float) -> None:
        """SUMO's cars still waiting to enter: routed again by SUMO on its travel times."""
        if not self._waiting or self._waiting[0][0] > now_s:
            return
        for vid in self._still_waiting(sumo, now_s):
            before = tuple(sumo.vehicle.getRoute(vid))
            try:
                sumo.vehicle.rerouteTraveltime(vid)
            except sumo.TraCIException:
                self.failed += 1
                continue
            if tuple(sumo.vehicle.getRoute(vid)) != before:
                self.waiting_changes += 1

    def _still_waiting(self, sumo, now_s: float) -> Iterator[str]:
        """The cars due to be routed again that have still not entered the network; each
        is due again ``pre_period_s`` later.  Those that entered are dropped."""
        pending = set(sumo.simulation.getPendingVehicles())
        while self._waiting and self._waiting[0][0] <= now_s:
            _, vid = heapq.heappop(self._waiting)
            if vid in pending:
                heapq.heappush(self._waiting, (now_s + self.pre_period_s, vid))
                yield vid

    def _update_times(self) -> None:
        delays = self.delays.movement_delays(self.lanes_of)
        for m in self._yield_movements:
            delays[m] = delays.get(m, 0.0) + UNSEEN_YIELD_S
        self.router.update(self.free.with_turn_delays(delays))

    def _route(
        self,
        sumo,
        vid: str,
        now_s: float,
        current: tuple[str, ...] | None = None,
        keep: tuple[str, ...] = (),
    ) -> None:
        """Give ``vid`` the fastest route from the first edge of ``current`` (default: its
        route as loaded) if that saves enough time over ``current``; ``keep``: the edges it
        drives before ``current`` starts."""
        old = self.original[vid] if current is None else current
        try:
            best = self.router.route_between_edges(old[0], old[-1], now_s)[0]
            try:
                keep_s = self.router.evaluate(old, now_s).travel_time_s
            except (NoRouteError, GraphError):  # its own route leaves the graph
                keep_s = float("inf")
            # A navigation system proposes another route only when it saves real time:
            # ties and near-ties would trade a known route for lane changes and turns.
            if best.edges != old and best.travel_time_s < keep_s - max(
                MIN_GAIN_S, MIN_GAIN_SHARE * keep_s
            ):
                sumo.vehicle.setRoute(vid, list(keep + best.edges))
                if keep:
                    self.en_route_changes += 1
                    return
                if current is not None:
                    self.waiting_changes += 1
                if best.edges != self.original[vid]:
                    self._changed.add(vid)
                else:  # routed back onto its own route while waiting to enter
                    self._changed.discard(vid)
        except (NoRouteError, GraphError, sumo.TraCIException):
            self.failed += 1

    def after_step(self, sumo, now_s: float) -> None:
        """Count SUMO's changed routes at departure; reroute citybrain's cars en route."""
        if self.by == "sumo":
            for vid in sumo.simulation.getDepartedIDList():
                if vid in self.original and tuple(sumo.vehicle.getRoute(vid)) != self.original[vid]:
                    self._changed.add(vid)
        if self.by != "citybrain" or self.period_s <= 0:
            return
        for vid in sumo.simulation.getDepartedIDList():
            if vid in self.original:
                self._driving[vid] = (self.original[vid][0], now_s)
        for vid in sumo.simulation.getArrivedIDList():
            self._driving.pop(vid, None)
        due = []
        for vid, (edge, routed_s) in self._driving.items():
            road = sumo.vehicle.getRoadID(vid)
            if road == edge or road.startswith(":"):
                continue  # same edge, or inside a junction
            self._driving[vid] = (road, routed_s)
            if now_s - routed_s < self.period_s:
                continue
            room = sumo.lane.getLength(sumo.vehicle.getLaneID(vid)) - sumo.vehicle.getLanePosition(
                vid
            )
            if room >= LANE_CHANGE_ROOM_M:
                due.append(vid)
        if not due:
            return
        self._update_times()
        for vid in due:
            route = sumo.vehicle.getRoute(vid)
            rest = tuple(route[sumo.vehicle.getRouteIndex(vid) :])
            if len(rest) > 2:
                # The next turn stays: the car may already be in its lane, and changing
                # lanes in a queue is what blocks it.  The rest is planned anew.
                self._route(sumo, vid, now_s, rest[1:], keep=rest[:1])
            self._driving[vid] = (rest[0] if rest else "", now_s)
