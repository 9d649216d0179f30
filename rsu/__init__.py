"""Roadside unit: camera frames in, perceived road users out over the bus."""
