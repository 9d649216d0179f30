"""Traffic simulation with SUMO: scenarios, RSU-like sensing and the controller harness.

Import ``citybrain.sim.sumo_env`` before ``libsumo``: it sets ``SUMO_HOME`` and
``PROJ_DATA`` as the ``eclipse-sumo`` package's own wrapper does, without which results of
the same seed shift between runs.
"""
