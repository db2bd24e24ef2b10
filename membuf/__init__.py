"""membuf: zero-copy buffers and streams for Python network and media pipelines."""

from .allocator import Allocator as Allocator
from .allocator import AllocatorStats as AllocatorStats
from .errors import FreeError as FreeError
from .errors import IncompleteReadError as IncompleteReadError
from .errors import MalformedError as MalformedError
from .errors import MembufError as MembufError
from .errors import MemoryLimitError as MemoryLimitError
from .errors import NeedMore as NeedMore

__version__ = "0.1.0"

__all__ = [
    "Allocator",
    "AllocatorStats",
    "FreeError",
    "IncompleteReadError",
    "MalformedError",
    "MembufError",
    "MemoryLimitError",
    "NeedMore",
]
