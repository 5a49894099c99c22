"""Package metadata and ament_python data files, in setup.py on purpose.

colcon reads this file (colcon-python-setup-py): metadata declared in pyproject.toml's ``[project]`` table breaks
it (``requires-python`` becomes a SpecifierSet that colcon cannot parse, colcon/colcon-python-setup-py#56), so the
metadata lives here, as in other ROS 2 Python packages, and ``python_requires`` is left out (Python >= 3.10).
The data files put what ROS 2 tools and our CLIs look for under ``share/robovlm``: the ament index marker,
package.xml, launch files, the parameter YAML and ``models/`` (configs, instructions, the demo checkpoint), in the
same layout as the source tree, so ``robovlm.utils.resources`` finds them in either place.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "robovlm"


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries for every file under ``folder``, keeping its layout under share/robovlm."""
    by_dir: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            by_dir.setdefault(f"share/{PACKAGE}/{path.parent.as_posix()}", []).append(path.as_posix())
    return sorted(by_dir.items())


ROS = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-sensor-msgs",
    "ros-geometry-msgs",
    "ros-nav-msgs",
    "ros-std-srvs",
    "ros-std-msgs",
    "ros-diagnostic-msgs",
    "ros-lifecycle-msgs",
    "ros-rosgraph-msgs",
    "ros-rcl-interfaces",
    "ros-builtin-interfaces",
    "ros-ament-index-python",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="RoboVLMs-style vision-language-action model and its ROS 2 inference node for a language-driven "
    "mobile robot",
    # resolve(): colcon --symlink-install runs a symlink of this file from its build directory
    long_description=(Path(__file__).resolve().parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    maintainer="RoboVLM team",
    maintainer_email="robovlm@example.com",
    packages=find_packages(include=["robovlm", "robovlm.*", "robovlm_node", "robovlm_node.*"]),
    zip_safe=False,
    install_requires=[
        "torch>=2.3",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "einops>=0.7",
        "numpy>=1.24",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=9.1",
        "pyyaml>=6",
        "h5py>=3.9",
        "rosbags>=0.10",
        "opencv-python-headless>=4.8",
        # engine:=onnxruntime and `robovlm export` (CPU execution provider; the gpu extra has CUDA and TensorRT)
        "onnxruntime>=1.17",
        "onnx-ir>=0.1",  # onnxruntime's int4 MatMulNBits quantizer imports it (robovlm export --quantize int4)
        "onnx>=1.15",
        # training on one or many devices (robovlm train; torchrun / accelerate launch), LoRA adapters
        "accelerate>=1.0",
        "peft>=0.13",
        # engine:=remote: the step protocol of `robovlm serve` (robovlm/runtime/wire.py)
        "msgpack>=1.0",
        # LeRobotDataset v3.0 in and out (robovlm/data/lerobot.py): parquet tables, AV1 / H.264 camera video
        "pyarrow>=15",
        "av>=14",
    ],
    extras_require={
        # ROS 2 (Kilted) core from PyPI wheels, for machines without a ROS install; on a ROS install the system
        # packages (package.xml) provide them instead.
        "ros": ROS,
        # The MuJoCo simulator (headless rendering needs Debian's libosmesa6; `make install` adds it).
        "sim": ["mujoco>=3.2"],
        # `robovlm serve`: the policy on Ray Serve for robots without a GPU (the robot needs only the base package)
        "serve": ["ray[serve]>=2.40"],
        # CUDA and TensorRT execution providers. onnxruntime-gpu installs the same `onnxruntime` module as the CPU
        # package: on a GPU machine remove the CPU one afterwards (docs/engines.md, "On a GPU computer").
        "gpu": ["onnxruntime-gpu>=1.17"],
        "dev": [
            # below 9.2: pytest 9.2 derives node ids from a structure xdist 3.8 does not update, so `--dist loadgroup`
            # silently stops grouping (pytest-dev/pytest-xdist#1386); tests/packaging/test_suite.py checks it
            "pytest>=8,<9.2",
            "pytest-xdist>=3.5",  # make test runs the suite on workers
            "pytest-cov>=6.2",  # and measures coverage (coverage's subprocess patch: coverage>=7.10)
            # a test that hangs fails with every thread's stack instead of running CI out of time
            "pytest-timeout>=2.3",
            "coverage>=7.10",
            "hypothesis>=6.100",
            "colcon-common-extensions>=0.3",
            "ruff>=0.6",
            "mypy>=1.10",
            "import-linter>=2.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "robovlm = robovlm.cli:main",
            "robovlm_node = robovlm_node.process:main",
            "robovlm_sim = robovlm_node.tools.sim_bridge:main",
        ],
        # commands of the ROS layer on the `robovlm` command line (robovlm.cli.ENTRY_POINT_GROUP)
        "robovlm.commands": ["replay = robovlm_node.tools.replay_command:register"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml"))),
        *tree("models"),
    ],
)
