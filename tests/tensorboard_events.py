"""Read scalars back from TensorBoard event files (TFRecord framing + Event protos), for tests."""
import struct
from pathlib import Path


def read_scalars(logdir):
    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out
