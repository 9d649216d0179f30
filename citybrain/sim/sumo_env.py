"""Set up SUMO's environment the way the ``eclipse-sumo`` wheel's ``sumo`` wrapper does."""

from __future__ import annotations

import os


class SumoUnavailableError(RuntimeError):
    """SUMO is not installed (``pip install -e '.[sim]'``)."""


def ensure_sumo_env() -> str:
    """Set ``SUMO_HOME``/``PROJ_DATA`` (when unset) and return ``SUMO_HOME``."""
    try:
        import sumo  # the eclipse-sumo wheel: importing it sets both variables
    except ImportError as exc:
        raise SumoUnavailableError(
            "SUMO is not installed: pip install -e '.[sim]' (eclipse-sumo, libsumo, sumolib)"
        ) from exc
    os.environ.setdefault("SUMO_HOME", sumo.SUMO_HOME)
    return os.environ["SUMO_HOME"]


def import_libsumo():
    """``libsumo``, imported without its start-up notices on stdout.

    libsumo prints a pyarrow version warning on stdout when pyarrow is installed; we do not
    use SUMO's Parquet output, so that notice is dropped, and anything else it prints goes
    to stderr: stdout is kept for the JSON lines of our commands.
    """
    import contextlib
    import io
    import sys

    ensure_sumo_env()
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        try:
            import libsumo
        except ImportError as exc:
            raise SumoUnavailableError("libsumo is not installed: pip install -e '.[sim]'") from exc
    for line in captured.getvalue().splitlines():
        if "pyarrow" not in line:
            print(line, file=sys.stderr)
    return libsumo


ensure_sumo_env()
