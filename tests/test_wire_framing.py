"""Server data frames (hub/wire/framing.py), read back by websockets' own parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from hub.wire.framing import encode_frame


def parse(data: bytes) -> tuple[Frame, bytes]:
    """The frame websockets' client reads from ``data``, and what is left over."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
    else:  # pragma: no cover - only if the frame is incomplete
        pytest.fail("incomplete frame")
    return frame, bytes(reader.buffer)


# Lengths at each edge of the three length encodings (7-bit, 16-bit, 64-bit).
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize(("text", "opcode"), [(True, Opcode.TEXT), (False, Opcode.BINARY)])
def test_encoded_frame_reads_back_as_one_final_unmasked_frame(
    size: int, text: bool, opcode: Opcode
) -> None:
    payload = bytes(n % 251 for n in range(size)) if not text else b"x" * size
    frame, rest = parse(encode_frame(payload, text))
    assert (frame.opcode, frame.fin, frame.data) == (opcode, True, payload)
    assert rest == b""


def test_encoded_frame_uses_the_shortest_length_form() -> None:
    assert len(encode_frame(b"x" * 125)) == 2 + 125
    assert len(encode_frame(b"x" * 126)) == 4 + 126
    assert len(encode_frame(b"x" * 65536)) == 10 + 65536
