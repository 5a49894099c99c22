import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm_node.convert import (
    ImageConversionError,
    JointStateError,
    compressed_to_rgb,
    image_to_rgb,
    joint_state_vector,
    make_twist,
    rgb_to_compressed,
    rgb_to_image,
)

RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 3


def _msg(arr, encoding, pad=0):
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    rows = arr.reshape(h, w * ch)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=w * ch + pad, data=rows.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
def test_known_images_in_every_encoding_honour_the_row_step(pad):
    np.testing.assert_array_equal(image_to_rgb(_msg(RGB, "rgb8", pad), use_bridge=False), RGB)
    np.testing.assert_array_equal(image_to_rgb(_msg(RGB[:, :, ::-1].copy(), "bgr8", pad), use_bridge=False), RGB)
    rgba = np.concatenate([RGB, np.full((4, 5, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(_msg(rgba, "rgba8", pad), use_bridge=False), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((4, 5, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(_msg(bgra, "bgra8", pad), use_bridge=False), RGB)
    mono = RGB[:, :, 0].copy()
    np.testing.assert_array_equal(
        image_to_rgb(_msg(mono, "mono8", pad), use_bridge=False), np.repeat(mono[..., None], 3, 2)
    )


def test_round_trip_through_our_own_messages():
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB), use_bridge=False), RGB)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB, encoding="bgr8"), use_bridge=False), RGB)
    png = rgb_to_compressed(RGB, fmt="png")
    np.testing.assert_array_equal(compressed_to_rgb(png, use_bridge=False), RGB)  # lossless
    big = np.zeros((32, 32, 3), np.uint8)
    big[:, :16] = (200, 20, 20)
    jpg = compressed_to_rgb(rgb_to_compressed(big), use_bridge=False)
    assert np.abs(jpg.astype(int) - big).mean() < 6  # lossy, but the same picture, in RGB order


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding"),
        (lambda m: setattr(m, "step", 5), "row step 5 is smaller"),
        (lambda m: setattr(m, "data", bytes(m.data)[:10]), "truncated image"),
        (lambda m: setattr(m, "height", 0), "empty image"),
    ],
)
def test_malformed_images_raise_with_the_reason(mutate, needle):
    m = rgb_to_image(RGB)
    mutate(m)
    with pytest.raises(ImageConversionError, match=needle):
        image_to_rgb(m, use_bridge=False)


def test_corrupt_or_unsupported_compressed_images():
    with pytest.raises(ImageConversionError, match="corrupt"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"), use_bridge=False)
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""), use_bridge=False)
    with pytest.raises(ImageConversionError, match="unsupported compressed format"):
        compressed_to_rgb(CompressedImage(format="16UC1; compressedDepth", data=b"x"), use_bridge=False)
    assert cv2 is not None


def test_joint_state_by_name_in_order():
    js = JointState(name=["b", "a", "c"], position=[2.0, 1.0, 3.0])
    np.testing.assert_array_equal(joint_state_vector(js, ["a", "c"]), [1.0, 3.0])
    with pytest.raises(JointStateError, match=r"lacks \['z'\]"):
        joint_state_vector(js, ["a", "z"])
    with pytest.raises(JointStateError, match="non-finite"):
        joint_state_vector(JointState(name=["a"], position=[float("nan")]), ["a"])
    with pytest.raises(JointStateError, match="2 names but 1 positions"):
        joint_state_vector(JointState(name=["a", "b"], position=[1.0]), ["a"])


def test_twist_fields():
    t = make_twist(np.array([0.1, -0.2]), ["linear.x", "angular.z"], stamped=False)
    assert (t.linear.x, t.linear.y, t.angular.z) == (0.1, 0.0, -0.2)
    ts = make_twist(np.array([0.3]), ["linear.y"], stamped=True, frame_id="base")
    assert ts.twist.linear.y == 0.3 and ts.header.frame_id == "base"
