"""Signal timing: the intersection model, safety rules, planners and the controller.

Layers, inside out:

- ``intersection``: links (movements), which of them conflict, the green phases.
- ``safety``: the timing rules (min green, yellow, all-red, pedestrian clearance) and the
  checks every plan and every phase change passes.
- ``head``: the signal head state machine; planners only *ask* for a phase, the head
  decides when the change is allowed and inserts yellow and all-red.
- ``webster``, ``maxpressure``, ``adaptive``, ``coordination``: the planners.
- ``observation``: what a planner may see (RSU-like per-lane figures) and its freshness.
"""
