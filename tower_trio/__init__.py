"""tower-trio: the control tower that turns lab events into protocol triggers.

Sources (watcher plugins and the HTTP API) send triggers over a trio memory
channel to one publisher task, which delivers them to RabbitMQ with
publisher confirms.
"""

from ._errors import ConfigError, JournalError, PluginError, PublishError, TowerError
from ._models import FieldError, InvalidTriggerError, Metadata, Plate, Trigger
from ._version import __version__

__all__ = [
    "ConfigError",
    "FieldError",
    "InvalidTriggerError",
    "JournalError",
    "Metadata",
    "Plate",
    "PluginError",
    "PublishError",
    "TowerError",
    "Trigger",
    "__version__",
]
