"""goose-redis: Goose-style HTTP load tests, distributed through Redis."""

__version__ = "0.1.0"

from .cli import main  # noqa: E402
from .scenario import Scenario, Transaction  # noqa: E402
from .user import Response, User  # noqa: E402

__all__ = ["Response", "Scenario", "Transaction", "User", "main", "__version__"]
