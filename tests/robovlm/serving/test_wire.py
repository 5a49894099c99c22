"""The step protocol: what travels, and that every malformed message is refused by name (never unpickled, never a
crash)."""

import msgpack
import numpy as np
import pytest

from robovlm.runtime.wire import (
    PROTOCOL,
    ModelShape,
    StepReply,
    StepRequest,
    WireError,
    read_token,
)

SHAPE = ModelShape(image_size=8, width=4, window_size=3, state_dim=2, uses_hand=True)


def _request(**kw) -> StepRequest:
    rng = np.random.default_rng(0)
    fields = {
        "instruction": "go to the cup",
        "head": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "hand": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "state": np.asarray([0.5, -1.0], np.float32),
        "window": rng.normal(size=(2, 4)).astype(np.float32),
        "model": "abc",
        "robot": "r1",
    }
    return StepRequest(**{**fields, **kw})


def test_a_step_request_round_trips_exactly_raw_and_approximately_as_jpeg():
    req = _request()
    back = StepRequest.decode(req.encode(), SHAPE)
    for name in ("head", "hand", "state", "window"):
        np.testing.assert_array_equal(getattr(back, name), getattr(req, name))
        assert getattr(back, name).flags.writeable  # torch takes them without a copy warning
    assert (back.instruction, back.model, back.robot) == ("go to the cup", "abc", "r1")
    flat = np.full((8, 8, 3), 120, np.uint8)
    jpeg = StepRequest.decode(_request(head=flat, hand=None).encode(jpeg_quality=90), SHAPE)
    assert jpeg.hand is None and np.abs(jpeg.head.astype(int) - 120).max() <= 2


def _mutated(**fields) -> bytes:
    msg = msgpack.unpackb(_request().encode(), raw=False)
    msg.update(fields)
    return msgpack.packb(msg, use_bin_type=True)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00garbage", "msgpack|map"),
        (msgpack.packb([1, 2, 3]), "map"),
        (_mutated(v=PROTOCOL + 1), "protocol version"),
        (_mutated(extra=1), "fields"),
        (_mutated(instruction=""), "instruction"),
        (_mutated(state=None), "state: the model takes 2"),
        (_mutated(head={"format": "raw", "image": {"dtype": "|u1", "shape": [16, 16, 3], "data": bytes(768)}}), "head"),
        (_mutated(head={"format": "png", "image": b""}), "head"),
        (_mutated(head={"format": "jpeg", "image": b"not a jpeg"}), "head"),
        (_mutated(window={"dtype": "<f4", "shape": [3, 4], "data": bytes(48)}), "at most 2"),
        (_mutated(window={"dtype": "<f4", "shape": [1, 4], "data": bytes(8)}), "bytes for"),
        (_mutated(window={"dtype": "<f8", "shape": [1, 4], "data": bytes(32)}), "dtype"),
        (_mutated(state={"dtype": "<f4", "shape": [2], "data": np.asarray([np.nan, 0], "<f4").tobytes()}), "finite"),
        (msgpack.packb(msgpack.ExtType(1, b"\x80\x04pickle")), "map"),  # no extension type is ever decoded
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong(data, match):
    with pytest.raises(WireError, match=match):
        StepRequest.decode(data, SHAPE)


def test_a_request_over_the_size_limit_is_refused_before_it_is_decoded():
    with pytest.raises(WireError, match="limit"):
        StepRequest.decode(_request().encode(), SHAPE, max_bytes=100)


def test_a_reply_round_trips():
    reply = StepReply(np.arange(4, dtype=np.float32), np.ones((3, 2), np.float32), "abc", {"server_ms": 1.5})
    back = StepReply.decode(reply.encode(), width=4, chunk_shape=(3, 2))
    np.testing.assert_array_equal(back.chunk, reply.chunk)
    assert back.timing == {"server_ms": 1.5}
    with pytest.raises(WireError, match="feature"):
        StepReply.decode(reply.encode(), width=5, chunk_shape=(3, 2))


def test_the_token_file_must_be_private_and_hold_one_token(tmp_path):
    f = tmp_path / "token"
    f.write_text("abc def\n")
    f.chmod(0o600)
    with pytest.raises(WireError, match="one token"):
        read_token(f)
    f.write_text("s3cret\n")
    assert read_token(f) == "s3cret"
    f.chmod(0o644)
    with pytest.raises(WireError, match="chmod 600"):
        read_token(f)
    with pytest.raises(WireError, match="cannot read"):
        read_token(tmp_path / "missing")


@pytest.mark.parametrize("kind", ["png_bomb", "big_jpeg", "small_jpeg"])
def test_a_compressed_frame_of_another_size_is_refused_from_its_header_before_decoding(kind, monkeypatch):
    """A 10000x10000 PNG (0.3 MB sent, 300 MB decoded), a JPEG larger and one smaller than the model's frames: all
    refused from the header, the decoder never called (the node checks camera messages with the same code)."""
    import cv2

    import robovlm.utils.images as images
    from tests.bombs import png_bomb

    def never(*args, **kwargs):
        raise AssertionError("decoded before its size was checked")

    side = {"big_jpeg": 4000, "small_jpeg": 4}.get(kind, 10000)
    data = (
        png_bomb(side) if kind == "png_bomb" else cv2.imencode(".jpg", np.zeros((side, side, 3), np.uint8))[1].tobytes()
    )
    monkeypatch.setattr(images, "decode_compressed_image", never)
    fmt = "PNG" if kind == "png_bomb" else "JPEG"
    with pytest.raises(
        WireError, match=f"head: {fmt} of {side}x{side} where the model takes a 8x8 JPEG; refused unread"
    ):
        StepRequest.decode(_mutated(head={"format": "jpeg", "image": data}), SHAPE)
