"""City traffic center: ingest of RSU streams, traffic state, and the traffic-center API."""
