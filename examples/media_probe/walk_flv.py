"""Walk an FLV file tag by tag, splitting H.264 frames into NAL units, without copying.

    python examples/media_probe/walk_flv.py input.flv [--limit 20]

The file is mmap'd and wrapped in a Memory; every tag body and NAL unit is a
zero-copy view of the page cache (``Reader.take``).
"""

from __future__ import annotations

import argparse
import mmap

from membuf.media import flv
from membuf.memory import Memory

NAL_NAMES = {1: "slice", 5: "IDR", 6: "SEI", 7: "SPS", 8: "PPS", 9: "AUD"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--limit", type=int, default=20, help="tags to print")
    args = p.parse_args()
    with open(args.file, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    r = Memory(mm).reader()
    header = flv.read_header(r)
    print(f"FLV v{header.version} audio={header.has_audio} video={header.has_video}")
    length_size = 4
    for i in range(args.limit):
        if not len(r):
            break
        tag = flv.read_tag(r)  # raises NeedMore on a truncated file, MalformedError on garbage
        head = tag.body.reader().peek(min(5, len(tag.body)))
        if tag.type == flv.VIDEO:
            kind, key, codec = flv.classify_video(head)
            line = f"video {codec} {kind}{' key' if key else ''}"
            if codec == "h264" and kind == flv.CONFIG:
                length_size = flv.nalu_length_size(tag.body, codec)
            elif codec == "h264" and kind == flv.FRAME:
                body = tag.body.reader()
                body.skip(5)  # frame type/codec, packet type, composition time
                nalus = flv.split_nalus(body, length_size)  # zero-copy Memories
                names = [NAL_NAMES.get(n.reader().peek_byte() & 0x1F, "?") for n in nalus]
                line += f" NALUs {names} ({sum(len(n) for n in nalus)} bytes)"
        elif tag.type == flv.AUDIO:
            kind, codec = flv.classify_audio(head)
            line = f"audio {codec} {kind}"
        else:
            line = "script data"
        print(f"{i:4} {tag.timestamp:>7} ms {len(tag.body):>7} B  {line}")


if __name__ == "__main__":
    main()
