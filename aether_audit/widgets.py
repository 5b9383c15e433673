"""The notebook widgets, public here: they live in ``aether_audit.present.widgets``.

Example:
    >>> from aether_audit.widgets import AuditDashboard
    >>> AuditDashboard.__module__
    'aether_audit.present.widgets'
"""

from .present.widgets import *  # noqa: F403 (this module is the public name of present.widgets)
from .present.widgets import __all__  # noqa: F401
