"""membuf: zero-copy buffers and streams for Python network and media pipelines."""

from . import codecs as codecs
from .allocator import Allocator as Allocator
from .allocator import AllocatorStats as AllocatorStats
from .errors import BufferLimitError as BufferLimitError
from .errors import FreeError as FreeError
from .errors import IncompleteReadError as IncompleteReadError
from .errors import MalformedError as MalformedError
from .errors import MembufError as MembufError
from .errors import MemoryLimitError as MemoryLimitError
from .errors import NeedMore as NeedMore
from .errors import UseAfterFreeError as UseAfterFreeError
from .memory import Memory as Memory
from .memory import RecyclableMemory as RecyclableMemory
from .reader import COMPILED as COMPILED
from .reader import Reader as Reader
from .stream import Connection as Connection
from .stream import StreamOptions as StreamOptions
from .stream import StreamReader as StreamReader
from .stream import StreamStats as StreamStats
from .stream import open_tcp as open_tcp
from .stream import send_memory as send_memory
from .stream import serve_tcp as serve_tcp
from .stream import start_server as start_server
from .writer import Writer as Writer

__version__ = "0.1.0"

__all__ = [
    "COMPILED",
    "Allocator",
    "AllocatorStats",
    "BufferLimitError",
    "Connection",
    "FreeError",
    "IncompleteReadError",
    "MalformedError",
    "MembufError",
    "MemoryLimitError",
    "UseAfterFreeError",
    "Writer",
    "Memory",
    "NeedMore",
    "Reader",
    "RecyclableMemory",
    "StreamOptions",
    "StreamReader",
    "StreamStats",
    "codecs",
    "open_tcp",
    "send_memory",
    "serve_tcp",
    "start_server",
]
