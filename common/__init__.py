"""What the roadside units and the traffic center share: schemas, bus, config, data paths."""
