import h5py
import numpy as np
import pytest

from robovlm.data.bag import BagError, deserialize, read_bag
from robovlm.data.bag_writer import episode_to_bag
from robovlm.data.errors import EpisodeError
from robovlm.data.hdf5 import read_hdf5_episode, write_hdf5_episode
from robovlm.data.instructions import load_instructions

N = 12


def _write(path, n=N, **kw):
    rng = np.random.default_rng(1)
    args = dict(
        images_rgb=rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8),
        actions=np.stack([np.linspace(0, 0.3, n), np.full(n, -0.1), np.zeros(n)], 1),
        event_types=["episode_start"] + ["start_action"] * (n - 1),
        episode_name="20251120_2box_hori_right_007",
        frame_dt=0.1,
    )
    args.update(kw)
    write_hdf5_episode(path, **args)
    return args


def test_reads_the_users_format_with_instruction_from_the_mapping(tmp_path):
    args = _write(tmp_path / "e.h5")
    ep = read_hdf5_episode(tmp_path / "e.h5", load_instructions())
    assert ep.scenario == "2box_hori_right" and "two wide boxes on the right" in ep.instruction
    np.testing.assert_array_equal(ep.images, args["images_rgb"])  # stored BGR, read back as RGB
    with h5py.File(tmp_path / "e.h5") as f:
        np.testing.assert_array_equal(f["images"][0], args["images_rgb"][0][..., ::-1])
    assert ep.frame_dt == pytest.approx(0.1) and len(ep) == N and ep.event_types[0] == "episode_start"
    assert len(load_instructions()) == 8


@pytest.mark.parametrize(
    "corrupt, needle",
    [
        (lambda f: f.__delitem__("actions"), "missing dataset 'actions'"),
        (lambda f: (f.__delitem__("actions"), f.create_dataset("actions", data=np.zeros((N, 2)))), r"must be \(N, 3\)"),
        (lambda f: (f.__delitem__("images"), f.create_dataset("images", data=np.zeros((N, 4, 4), np.uint8))), "images"),
        (lambda f: (f.__delitem__("actions"), f.create_dataset("actions", data=np.zeros((N - 1, 3)))), "must match"),
        (lambda f: f.attrs.__setitem__("num_frames", 99), "num_frames=99"),
        (lambda f: f.attrs.__setitem__("total_duration", 0.0), "total_duration"),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(tmp_path, corrupt, needle):
    path = tmp_path / "bad.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        corrupt(f)
    with pytest.raises(EpisodeError, match=needle) as info:
        read_hdf5_episode(path)
    assert "bad.h5" in str(info.value)


def test_empty_and_non_hdf5_files(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((0, 4, 4, 3), np.uint8))
        f.create_dataset("actions", data=np.zeros((0, 3), np.float32))
        f.create_dataset("action_event_types", data=np.array([], dtype=h5py.string_dtype()))
    with pytest.raises(EpisodeError, match="empty episode"):
        read_hdf5_episode(path)
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(EpisodeError, match="not a readable HDF5"):
        read_hdf5_episode(tmp_path / "x.h5")


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_episode_to_bag_and_back(tmp_path, storage):
    args = _write(
        tmp_path / "e.h5",
        joint_positions=np.arange(N * 2, dtype=np.float32).reshape(N, 2),
        joint_names=["mast", "wrist"],
    )
    ep = read_hdf5_episode(tmp_path / "e.h5", load_instructions())
    counts = episode_to_bag(ep, tmp_path / "bag", storage=storage)
    assert counts == {"/instruction": 1, "/head_camera/image_raw": N, "/cmd_vel": N, "/joint_states": N}
    msgs = read_bag(tmp_path / "bag")
    images = [m for m in msgs if m.topic == "/head_camera/image_raw"]
    img = deserialize(images[3])
    assert img.encoding == "bgr8" and img.step == 32 * 3
    np.testing.assert_array_equal(np.asarray(img.data).reshape(24, 32, 3)[..., ::-1], args["images_rgb"][3])
    assert images[3].timestamp_ns - images[2].timestamp_ns == 100_000_000
    twist = deserialize([m for m in msgs if m.topic == "/cmd_vel"][N - 1])
    assert twist.linear.x == pytest.approx(0.3) and twist.linear.y == pytest.approx(-0.1)
    js = deserialize([m for m in msgs if m.topic == "/joint_states"][5])
    assert list(js.name) == ["mast", "wrist"] and list(js.position) == [10.0, 11.0]
    with pytest.raises(BagError, match="already exists"):
        episode_to_bag(ep, tmp_path / "bag")


def test_static_joints_and_unreadable_bag(tmp_path):
    _write(tmp_path / "e.h5")
    ep = read_hdf5_episode(tmp_path / "e.h5")
    counts = episode_to_bag(ep, tmp_path / "bag", static_joints={"mast": 0.5})
    assert counts["/joint_states"] == N and "/instruction" not in counts  # no mapping given: no instruction
    with pytest.raises(BagError, match="bag not found"):
        read_bag(tmp_path / "nope")
