"""Property-based fuzz (hypothesis) of everything a peer on the robot's network can hand the node: raw and
compressed images, joint states, instructions, and what the model gives back. Properties: a converter either
returns what its caller expects or raises its own typed error (never another exception); a callback never raises;
a published command is always finite and within the limits."""

from __future__ import annotations

import math
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm.model.tokenizer import ByteTokenizer, InstructionTooLong, count_instruction_tokens
from robovlm.runtime.frame_check import FrameCheck
from robovlm.runtime.safety import SafetyFilter, SafetyLimits
from robovlm_node.convert import (
    ImageConversionError,
    JointStateError,
    check_image_size,
    frame_at_size,
    joint_state_vector,
    make_twist,
    rgb_to_compressed,
)
from tests.ros_harness import VMAX, activate, node_params

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "16UC1",
    "32FC1",
    "yuv422",
    "bayer_rggb8",
    "",
    "RGB8",
    "jpeg",
]
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "16UC1": 2, "32FC1": 4}
MAX_PIXELS = 1 << 20
SIZE = 56


@st.composite
def raw_images(draw) -> Image:
    """Headers that agree or disagree with their data: any size, encoding, row step, data length, endianness."""
    h, w = draw(st.integers(0, 48)), draw(st.integers(0, 48))
    enc = draw(st.sampled_from(ENCODINGS) | st.text(max_size=10))
    ch = CHANNELS.get(enc, 3)
    consistent = draw(st.sampled_from([True, True, False]))  # two in three: a header that matches its data
    step = w * ch if consistent else draw(st.integers(0, 300))
    n = step * h if consistent else draw(st.integers(0, 4000))
    data = draw(st.binary(min_size=n, max_size=n))
    big = draw(st.booleans())
    if draw(st.integers(0, 20)) == 0:  # now and then a header that claims a huge frame
        h, w = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    return Image(height=h, width=w, encoding=enc, is_bigendian=int(big), step=min(step, 2**32 - 1), data=data)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)  # noqa: E731

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


_JPEG = rgb_to_compressed(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).data.tobytes()
_PNG = rgb_to_compressed(
    np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8), fmt="png"
).data.tobytes()


@st.composite
def compressed_images(draw) -> CompressedImage:
    """Valid JPEG/PNG, cut short, with bytes flipped, random bytes, or a header claiming a huge image."""
    kind = draw(st.sampled_from(["jpeg", "png", "random", "bomb"]))
    if kind == "random":
        data = draw(st.binary(max_size=2000))
    elif kind == "bomb":
        data = _png_header(draw(st.integers(1, 200_000)), draw(st.integers(1, 200_000)))
    else:
        data = bytearray(_JPEG if kind == "jpeg" else _PNG)
        for _ in range(draw(st.sampled_from([0, 0, 1, 8]))):  # intact half of the time
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        data = bytes(data)
    fmt = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff", "PNG"]) | st.text(max_size=8))
    return CompressedImage(format=fmt, data=data)


def _convert(msg) -> np.ndarray | None:
    """What the node does with a frame: the header check in the callback, then decoding at the model's size."""
    try:
        check_image_size(msg, MAX_PIXELS)
        return frame_at_size(msg, SIZE)
    except ImageConversionError:
        return None


@FUZZ
@given(raw_images())
def test_raw_images_convert_or_raise_their_own_error(msg):
    rgb = _convert(msg)
    if rgb is not None:
        assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
        FrameCheck().content_fault(rgb)  # never raises on a converted frame


@FUZZ
@given(compressed_images())
def test_compressed_images_convert_or_raise_their_own_error(msg):
    rgb = _convert(msg)
    if rgb is not None:
        assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8


NAMES = st.sampled_from(["a", "b", "c", "joint_0", "", "a "]) | st.text(max_size=6)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@FUZZ
@given(st.lists(NAMES, max_size=6), st.lists(FLOATS, max_size=7), st.lists(NAMES, min_size=1, max_size=3))
def test_joint_states_give_finite_named_positions_or_their_own_error(names, positions, wanted):
    try:
        vec = joint_state_vector(JointState(name=names, position=positions), wanted)
    except JointStateError:
        return
    assert vec.shape == (len(wanted),) and np.all(np.isfinite(vec))
    assert len(set(names)) == len(names), "a joint named twice must be refused"
    for name, value in zip(wanted, vec):
        assert value == np.float32(positions[names.index(name)])


@FUZZ
@given(st.text(max_size=2000) | st.binary(max_size=600).map(lambda b: b.decode("utf-8", errors="replace")))
def test_instructions_are_counted_or_refused(text):
    try:
        n = count_instruction_tokens(ByteTokenizer(), text, 128)
    except InstructionTooLong:
        return
    assert 0 <= n <= 128


@FUZZ
@given(st.lists(FLOATS, min_size=2, max_size=2) | st.none(), st.floats(0, 1e6), st.booleans())
def test_the_safety_filter_never_lets_a_non_finite_or_unbounded_command_out(action, now, active):
    safety = SafetyFilter(SafetyLimits(max_velocity=[0.3, 0.2], max_accel=[1.0, 1.0]))
    for t in (now, now + 0.05, now + 0.1):
        decision = safety.apply(
            None if action is None else np.asarray(action), now=t, active=active, input_ages={"head": 0.0}
        )
        assert np.all(np.isfinite(decision.command)) and np.all(np.abs(decision.command) <= [0.3, 0.2])


@FUZZ
@given(st.lists(FLOATS, min_size=1, max_size=3))
def test_twists_are_always_finite(values):
    fields = ["linear.x", "linear.y", "angular.z"][: len(values)]
    twist = make_twist(np.asarray(values), fields, stamped=False)
    assert all(math.isfinite(v) for v in (twist.linear.x, twist.linear.y, twist.angular.z))


@pytest.mark.dds
def test_callbacks_of_a_running_node_never_raise_and_commands_stay_bounded(checkpoint, harness_factory):
    """The node's own callbacks, called with fuzzed messages while its loops drive on good inputs."""
    h = harness_factory(node_params(checkpoint))
    activate(h)
    h.start_feeding()
    assert h.wait_for(lambda: any(abs(v[0]) > 0 for _, v in h.commands()), 15)
    node = h.node

    def stamped(msg):
        msg.header.stamp = h.stamp()
        return msg

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        raw_images(),
        compressed_images(),
        st.lists(NAMES, max_size=7),
        st.lists(FLOATS, max_size=7),
        st.text(max_size=300),
        st.sampled_from(["head", "hand"]),
    )
    def fuzz(raw, jpeg, names, positions, text, which):
        node.inputs.on_camera(which, stamped(raw))
        node.inputs.on_camera(which, stamped(jpeg))  # the callback takes either type
        node.inputs.on_joint_state(stamped(JointState(name=names, position=positions)))
        node.inputs.set_instruction(text, source="topic")

    fuzz()
    node.inputs.set_instruction("go around the box to the cup", source="topic")
    time.sleep(1.0)
    assert node.output is not None and node.output.is_open(), "the node must stay active"
    faults = node.status.faults
    assert faults.get("control_error", 0) == 0 and faults.get("inference_error", 0) == 0, faults
    values = np.array([v for _, v in h.commands()])
    assert np.all(np.isfinite(values)) and np.all(np.abs(values) <= VMAX + 1e-9)
    t = time.monotonic()
    assert h.wait_for(lambda: any(abs(v[0]) > 0 for _, v in h.commands(since=t)), 15), "the node must drive again"
