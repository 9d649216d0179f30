"""Route planning: the road graph, time-dependent travel times, and the ALT router."""
