"""Tiny random configs of the real model classes, and batches for them."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from robovlm.configs.model import RoboVLMConfig


def _domain_id() -> int:
    """A DDS domain of this test process's own, in 1..100 (the IDs whose ports are safe on Linux).

    Under pytest-xdist every worker is a child of the session's process: the parent's pid picks a block of
    ``PYTEST_XDIST_WORKER_COUNT`` domains and the worker its place in it, so the workers of one session never share a
    domain (a pid modulo alone did, now and then). A plain run takes one domain from its own pid."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker is None:
        return 1 + os.getpid() % 100
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    blocks = max(1, 100 // count)
    return 1 + (os.getppid() % blocks) * count + int(worker.removeprefix("gw")) % count


# Each test process gets its own DDS domain and never discovers anything beyond this machine.
os.environ["ROS_DOMAIN_ID"] = str(_domain_id())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# No test reaches the network: Hugging Face Hub lookups use the local cache only (set before anything imports it).
os.environ["HF_HUB_OFFLINE"] = "1"
if "PYTEST_XDIST_WORKER" in os.environ:
    # Workers share the machine's cores: one torch thread each (two threads on this suite's tiny models spent twice
    # the CPU for the same wall time, measured on the learning test), inherited by the processes tests start.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"
    torch.set_num_threads(1)

# The longest tests and groups start first, so that no worker begins one of them when the others are done
# (measured with `pytest --durations`; docs/development.md).
START_FIRST = (
    "tests/robovlm/training/test_learns.py",
    "tests/robovlm/serving/test_serve.py",
    "tests/robovlm/serving/test_serve_lifecycle.py",
    "tests/robovlm_node/test_node_remote.py",
    "tests/robovlm_node/tools/test_flywheel.py",
    "tests/packaging/test_readme.py",
    "tests/robovlm/training/test_train.py",
    "tests/robovlm/export/test_onnx.py",
    "tests/packaging/test_colcon.py",
    "tests/robovlm/training/test_distributed.py",
)


def pytest_collection_modifyitems(config, items):
    """START_FIRST's files first. (Tests that must not run beside each other are an ``xdist_group`` in their own
    module: the serving tests, each with a local Ray, and the colcon builds of the one source tree.)"""

    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return START_FIRST.index(path) if path in START_FIRST else len(START_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the rest stays the collection's


IMAGE = 56  # 4x4 patches of 14 px: fast, same code path as 224 px

KOSMOS_TINY = {
    "text_config": {
        "embed_dim": 32,
        "layers": 2,
        "attention_heads": 4,
        "ffn_dim": 64,
        "vocab_size": 300,
        "max_position_embeddings": 256,
    },
    "vision_config": {
        "hidden_size": 24,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE,
        "patch_size": 14,
    },
    "latent_query_num": 8,
}
PALIGEMMA_TINY = {
    "text_config": {
        "model_type": "gemma",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "intermediate_size": 64,
        "vocab_size": 300,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 24,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE,
        "patch_size": 14,
        "projection_dim": 32,
    },
    "projection_dim": 32,
}


# Every optional input and fusion module on: what the export and the server's batched step must all handle.
ALL_FUSION = {
    "use_hand_rgb": True,
    "use_state": True,
    "use_claw_matrix": True,
    "use_hierarchical": True,
    "use_advanced_attention": True,
    "use_instruction_film": True,
}


def tiny_config(kind: str = "kosmos2", **overrides) -> RoboVLMConfig:
    """A tiny config of ``kind`` (kosmos2 | paligemma); dict overrides merge into sections, ``backbone`` replaces."""
    data = {
        "backbone": {
            "type": kind,
            "tokenizer": "bytes",
            "config": copy.deepcopy(KOSMOS_TINY if kind == "kosmos2" else PALIGEMMA_TINY),
        },
        "image_size": IMAGE,
        "vision_resampler": {"vis_dim": 24, "depth": 2, "dim_head": 8, "heads": 2, "num_latents": 4},
        "act_head": {"type": "lstm", "hidden_size": 32, "num_layers": 2},
        "fusion": {"heads": 4, "num_subgoals": 2},
        "state_dim": 6,
        "window_size": 4,
        "fwd_pred_next_n": 3,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "backbone":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RoboVLMConfig.from_dict(data)


def make_batch(
    cfg: RoboVLMConfig, b: int = 2, t: int | None = None, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict:
    g = torch.Generator().manual_seed(seed)
    t = t or cfg.window_size
    s = cfg.image_size
    return {
        "head_images": torch.randn(b, t, 3, s, s, generator=g, dtype=dtype),
        "hand_images": torch.randn(b, t, 3, s, s, generator=g, dtype=dtype),
        "hand_valid": torch.ones(b, t, dtype=torch.bool),
        "states": torch.randn(b, t, cfg.state_dim, generator=g, dtype=dtype),
        "instructions": ["go left around the box to the cup", "go right"][:b] + ["stop"] * max(0, b - 2),
        "actions": torch.rand(b, t, cfg.fwd_pred_next_n, cfg.action_dim, generator=g, dtype=dtype) * 2 - 1,
        "action_mask": torch.ones(b, t, cfg.fwd_pred_next_n, dtype=torch.bool),
    }


@pytest.fixture(autouse=True, scope="session")
def _frame_cache(tmp_path_factory):
    """Bags decoded by lazy training go to a cache of the test session, not the user's ~/.cache."""
    old = os.environ.get("ROBOVLM_CACHE")
    os.environ["ROBOVLM_CACHE"] = str(tmp_path_factory.mktemp("robovlm_cache"))
    yield
    if old is None:
        os.environ.pop("ROBOVLM_CACHE", None)
    else:
        os.environ["ROBOVLM_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """Build and run in float64, so equalities between two computations are checked beyond float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


# ---------------------------------------------------------------------------------------------- node checkpoints
def _node_stats():
    from robovlm.data.stats import NormStats

    return NormStats(
        state_mean=[0.0] * 6,
        state_std=[1.0] * 6,
        action_low=[-5.0, -5.0],
        action_high=[5.0, 5.0],
        joint_names=[f"joint_{i}" for i in range(6)],
        action_dt=0.1,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint whose linear.x saturates, so the velocity clamp and the acceleration limit are exercised."""
    from robovlm.model.policy import RoboVLM

    torch.manual_seed(0)
    model = RoboVLM(tiny_config(window_size=4, fwd_pred_next_n=4))
    with torch.no_grad():
        model.head.out.mlp[-1].bias.zero_()
        model.head.out.mlp[-1].bias[0::2] = 3.0
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path, stats=_node_stats())
    return str(path)


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    from robovlm.model.policy import RoboVLM

    model = RoboVLM(tiny_config(window_size=4, fwd_pred_next_n=4))
    with torch.no_grad():
        model.head.out.mlp[-1].bias.fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan")
    model.save_pretrained(path, stats=_node_stats())
    return str(path)


@pytest.fixture
def harness_factory():
    """Make ``tests.ros_harness.Harness`` instances; every one is closed after the test."""
    from .ros_harness import Harness

    made = []

    def make(params):
        h = Harness(params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# ------------------------------------------------------------------------------------------ time per marker
MARKER_ORDER = ("docker", "colcon", "dds", "slow")
_marker_time: dict[str, list[float]] = {}


def pytest_runtest_logreport(report):
    """Sum each test's setup, call and teardown under its first marker of MARKER_ORDER (or "rest"); with xdist this
    runs in the controlling process, which receives every worker's reports."""
    group = next((m for m in MARKER_ORDER if m in report.keywords), "rest")
    entry = _marker_time.setdefault(group, [0.0, 0])
    entry[0] += report.duration
    entry[1] += report.when == "call"


def pytest_terminal_summary(terminalreporter):
    if not _marker_time:
        return
    terminalreporter.section("time per marker (test time summed over workers)")
    for group in (*MARKER_ORDER, "rest"):
        seconds, count = _marker_time.get(group, (0.0, 0))
        terminalreporter.write_line(f"{group:<8} {count:4d} tests {seconds / 60:6.1f} min")
