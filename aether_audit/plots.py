"""The audit's plots, public here: they live in ``aether_audit.present.plots``.

Example:
    >>> from aether_audit.plots import events_over_time
    >>> events_over_time.__module__
    'aether_audit.present.plots'
"""

from .present.plots import *  # noqa: F403 (this module is the public name of present.plots)
from .present.plots import __all__  # noqa: F401
