"""Recordings as robot teams make them (issue 21): one long bag per sitting with resets between demonstrations,
episode markers in some and not in others, no instruction topic, instructions in a CSV and in ``custom_data``.
Cut into episodes by ``--split-episodes``, instructions found in their order of precedence, converted to HDF5 that
reads back to the same training windows."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from robovlm.cli import main
from robovlm.configs.model import load_config
from robovlm.data.bag import BagError, bag_instruction, iter_bag
from robovlm.data.bag_writer import recording_to_bag
from robovlm.data.convert import convert_bags
from robovlm.data.dataset import WindowDataset, compute_stats, load_episodes
from robovlm.data.errors import EpisodeError
from robovlm.data.hdf5 import read_hdf5_episode, write_hdf5_episode
from robovlm.data.instructions import EpisodeTexts, InstructionSources
from robovlm.data.recording import parse_split
from robovlm.data.roles import TopicMap, propose_mapping
from tests import ROOT

SPLIT = "topic:/episode_marker,idle:2"
CSV_ROWS = {"day#0": "go around the box on the left and stop at the cup", "day#1": "take the right way round"}
CUSTOM = "drive to the cup"


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """A day of recording: five demonstrations of different scenarios, 3 s resets between them, markers around the
    first and third only, no instruction topic, ``custom_data`` and a CSV of instructions for two episodes."""
    from robovlm.sim.collect import collect

    d = tmp_path_factory.mktemp("day")
    collect(d / "src", episodes_per_scenario=1, image_size=56, noise=0.05)
    sources = [read_hdf5_episode(p) for p in sorted((d / "src").glob("*.h5"))[:5]]
    recording_to_bag(
        sources,
        d / "bags" / "day",
        storage="mcap",
        reset_s=3.0,
        marker_topic="/episode_marker",
        marked={0, 2},
        instruction_topic=False,
        custom_data={"instruction": CUSTOM},
    )
    (d / "instructions.csv").write_text("episode,instruction\n" + "".join(f"{k},{v}\n" for k, v in CSV_ROWS.items()))
    return d, sources


def sources_of(d) -> InstructionSources:
    return InstructionSources(file=d / "instructions.csv")


def test_long_bag_is_cut_into_its_demonstrations(day):
    d, originals = day
    eps = load_episodes(d / "bags", sources_of(d), split=parse_split(SPLIT), use_hand=True)
    assert [e.name for e in eps] == [f"day#{k}" for k in range(5)]
    for ep, src in zip(eps, originals):  # exactly the demonstration: no reset frame, none of it lost
        assert len(ep) == len(src)
        np.testing.assert_allclose(ep.actions, src.actions, atol=1e-6)
    assert [e.instruction for e in eps] == [*CSV_ROWS.values(), CUSTOM, CUSTOM, CUSTOM]
    assert eps[0].instruction_source.startswith("file ") and eps[4].instruction_source == "metadata.yaml custom_data"


def test_every_boundary_source_finds_the_same_episodes(day, tmp_path):
    d, originals = day
    lengths = [len(e) for e in originals]
    idle = load_episodes(d / "bags", InstructionSources(text="x"), split=parse_split("idle:2"))
    assert [len(e) for e in idle] == lengths
    markers = load_episodes(d / "bags", InstructionSources(text="x"), split=parse_split("topic:/episode_marker"))
    assert [len(e) for e in markers] == [lengths[0], lengths[2]]  # markers only where they were recorded
    t, rows = 0.0, []
    for n in lengths:  # 10 Hz frames, 3 s resets
        rows.append(f"day,{t:.2f},{t + (n - 1) * 0.1 + 0.01:.2f}")
        t += n * 0.1 + 3.0
    (tmp_path / "times.csv").write_text("bag,start,end\n" + "\n".join(rows) + "\n")
    timed = load_episodes(d / "bags", InstructionSources(text="x"), split=parse_split(f"times:{tmp_path}/times.csv"))
    assert [len(e) for e in timed] == lengths


def test_cut_episodes_through_the_frame_cache_equal_eager(day):
    d, _ = day
    eager = load_episodes(d / "bags", sources_of(d), split=parse_split(SPLIT))
    lazy = load_episodes(d / "bags", sources_of(d), split=parse_split(SPLIT), lazy=True)
    assert [e.name for e in lazy] == [e.name for e in eager]
    for a, b in zip(eager, lazy):
        assert np.array_equal(np.asarray(a.images), np.asarray(b.images)) and a.instruction == b.instruction


def test_instruction_precedence_and_the_error_that_names_every_source(tmp_path):
    (tmp_path / "i.yaml").write_text("day#*: from a glob\nday#1: from the file\n")
    sources = InstructionSources(file=tmp_path / "i.yaml", text="from the flag")
    full = EpisodeTexts(
        episode="day#1",
        recording="day",
        scenario="1box_vert_left",
        topic="from the topic",
        topic_name="/instruction",
        custom_data="from custom_data",
        attribute="from the attribute",
    )
    assert sources.resolve(full).text == "from the topic"
    no_topic = EpisodeTexts(**{**full.__dict__, "topic": None})
    assert sources.resolve(no_topic).text == "from the file"  # exact name before the glob
    assert sources.resolve(EpisodeTexts(**{**no_topic.__dict__, "episode": "day#7"})).text == "from a glob"
    rest = EpisodeTexts(**{**no_topic.__dict__, "episode": "other#0", "recording": "other"})
    assert sources.resolve(rest).text == "from the flag"
    assert InstructionSources().resolve(rest).text == "from custom_data"
    no_custom = EpisodeTexts(**{**rest.__dict__, "custom_data": None})
    assert InstructionSources().resolve(no_custom).text == "from the attribute"
    mapped = InstructionSources().resolve(EpisodeTexts(**{**no_custom.__dict__, "attribute": None}))
    assert mapped.source == "models/instructions.json (1box_vert_left)"
    with pytest.raises(EpisodeError) as err:
        InstructionSources(file=tmp_path / "i.yaml").resolve(EpisodeTexts(episode="bag", recording="bag"))
    sources_named = (
        "instruction topic",
        "--instructions",
        "--instruction TEXT",
        "custom_data",
        "HDF5",
        "instructions.json",
    )
    assert all(s in str(err.value) for s in sources_named)


def test_a_bag_without_any_instruction_stops_training_naming_the_sources(day, tmp_path):
    d, originals = day
    recording_to_bag(originals[:2], tmp_path / "bare", reset_s=3.0, instruction_topic=False)
    with pytest.raises(EpisodeError, match="no instruction for episode 'bare#0'.*custom_data"):
        load_episodes(tmp_path / "bare", split=parse_split("idle:2"))


def test_hdf5_attribute_and_flag(tmp_path):
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    write_hdf5_episode(
        tmp_path / "e.h5",
        images_rgb=frames,
        actions=np.zeros((4, 3)),
        event_types=["start_action"] * 4,
        episode_name="kitchen_run",
        frame_dt=0.1,
        attrs={"instruction": "open the drawer"},
    )
    ep = read_hdf5_episode(tmp_path / "e.h5", InstructionSources())
    assert (ep.instruction, ep.instruction_source) == ("open the drawer", "HDF5 attribute")
    assert read_hdf5_episode(tmp_path / "e.h5", InstructionSources(text="stop")).instruction == "stop"


def test_convert_bags_reads_back_to_the_same_windows(day, tmp_path):
    d, _ = day
    manifest = convert_bags(
        d / "bags", tmp_path / "h5", split=parse_split(SPLIT), instructions=sources_of(d), image_size=56
    )
    assert [e["episode"] for e in manifest["episodes"]] == [f"day#{k}" for k in range(5)]
    first = manifest["episodes"][0]
    assert first["cut_by"] == "topic:/episode_marker" and first["start_s"] == 0.0 and first["instruction"]
    assert manifest["bags"][0]["frames_between_episodes"] > 0
    assert json.loads((tmp_path / "h5" / "manifest.json").read_text()) == manifest
    cfg = load_config(ROOT / "models" / "configs" / "demo.json")
    from_bag = load_episodes(d / "bags", sources_of(d), split=parse_split(SPLIT), use_state=True, image_size=56)
    from_h5 = load_episodes(tmp_path / "h5", use_state=True)  # no flags: the files carry their instructions
    assert [e.instruction for e in from_h5] == [e.instruction for e in from_bag]
    assert {e.instruction_source for e in from_h5} == {"HDF5 attribute"}
    stats = compute_stats(from_bag, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)
    a, b = WindowDataset(from_bag, cfg, stats), WindowDataset(from_h5, cfg, stats)
    assert len(a) == len(b)
    for i in range(0, len(a), 7):
        x, y = a[i], b[i]
        assert x["instructions"] == y["instructions"]
        assert all(torch.equal(x[k], y[k]) for k in x if k != "instructions"), i


def test_convert_leaves_nothing_when_an_episode_has_no_instruction(day, tmp_path):
    d, originals = day
    recording_to_bag(originals[:2], tmp_path / "src" / "bare", reset_s=3.0, instruction_topic=False)
    with pytest.raises(EpisodeError, match="no instruction"):
        convert_bags(tmp_path / "src", tmp_path / "out", split=parse_split("idle:2"))
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(EpisodeError, match="not an empty directory"):
        convert_bags(tmp_path / "src", tmp_path / "full", instructions=InstructionSources(text="go"))


def test_inspect_bag_lists_episodes_and_instruction_sources(day, capsys):
    d, _ = day
    args = ["inspect-bag", str(d / "bags" / "day"), "--split-episodes", SPLIT]
    assert main([*args, "--instructions", str(d / "instructions.csv")]) == 0
    out = capsys.readouterr().out
    assert "instruction   (none)" in out  # the marker topic is a String, but not an instruction
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("day#")]
    assert [r[0] for r in rows] == [f"day#{k}" for k in range(5)]
    assert [r[4] for r in rows] == ["topic:/episode_marker", "idle:2", "topic:/episode_marker", "idle:2", "idle:2"]
    assert "(metadata.yaml custom_data)" in out and "instructions.csv (day#1))" in out


def test_train_on_a_long_bag_holds_out_whole_episodes(day, tmp_path):
    d, _ = day
    args = ["train", str(ROOT / "models/configs/demo.json"), "--data", str(d / "bags"), "--out", str(tmp_path / "c")]
    flags = ["--split-episodes", SPLIT, "--instructions", str(d / "instructions.csv"), "--val-fraction", "0.4"]
    assert main([*args, *flags, "--steps", "2", "--eval-every", "2", "--allow-no-learning"]) == 0
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert (metrics["train_episodes"], metrics["val_episodes"]) == (3, 2)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("idle:0", "SECONDS > 0"),
        ("idle:soon", "SECONDS > 0"),
        ("pause:3", "unknown kind"),
        ("topic", "takes topic:NAME"),
        ("topic:/a,topic:/b", "one marker topic"),
        ("times:/no/such/file.csv", "cannot read"),
    ],
)
def test_bad_split_specs_are_refused_clearly(spec, message):
    with pytest.raises(EpisodeError, match=message):
        parse_split(spec)


def test_bad_times_and_instruction_files(tmp_path):
    (tmp_path / "t.csv").write_text("bag,start,end\nday,5,2\n")
    with pytest.raises(EpisodeError, match="start < end"):
        parse_split(f"times:{tmp_path}/t.csv")
    (tmp_path / "i.csv").write_text("name,text\nday,go\n")
    with pytest.raises(EpisodeError, match="columns 'episode' and 'instruction'"):
        InstructionSources(file=tmp_path / "i.csv")
    (tmp_path / "i.yaml").write_text("- not a mapping\n")
    with pytest.raises(EpisodeError, match="YAML must map"):
        InstructionSources(file=tmp_path / "i.yaml")


def rewrite_markers(src, dst, msgtype: str, value) -> None:
    """Copy the bag ``src`` to ``dst`` with every episode marker replaced by ``value(old_text)`` of ``msgtype``."""
    from rosbags.rosbag2 import Writer

    from robovlm.data.bag import TYPESTORE, deserialize, read_bag

    with Writer(dst, version=9) as w:
        conns = {}
        for m in read_bag(src):
            kind, data = m.msgtype, m.data
            if m.topic == "/episode_marker":
                kind = msgtype
                msg = TYPESTORE.types[msgtype](data=value(deserialize(m).data))
                data = bytes(TYPESTORE.serialize_cdr(msg, msgtype))
            if m.topic not in conns:
                conns[m.topic] = w.add_connection(m.topic, kind, typestore=TYPESTORE)
            w.write(conns[m.topic], m.timestamp_ns, data)


def test_bool_markers_cut_the_same_episodes(day, tmp_path):
    d, originals = day
    rewrite_markers(d / "bags" / "day", tmp_path / "day", "std_msgs/msg/Bool", lambda text: text == "start")
    split = parse_split("topic:episode_marker")  # a relative name is taken as absolute
    eps = load_episodes(tmp_path / "day", InstructionSources(text="x"), split=split)
    assert [len(e) for e in eps] == [len(originals[0]), len(originals[2])]


def test_markers_that_are_missing_or_malformed(day, tmp_path):
    d, originals = day
    with pytest.raises(BagError, match="no episode marker topic /start_stop"):
        load_episodes(d / "bags", InstructionSources(text="x"), split=parse_split("topic:/start_stop"))
    rewrite_markers(d / "bags" / "day", tmp_path / "odd", "std_msgs/msg/String", lambda text: "go!")
    with pytest.raises(EpisodeError, match="episode marker 'go!'"):
        load_episodes(tmp_path / "odd", InstructionSources(text="x"), split=parse_split("topic:/episode_marker"))
    with pytest.raises(BagError, match="markers are std_msgs/msg/Bool or std_msgs/msg/String"):
        load_episodes(d / "bags", InstructionSources(text="x"), split=parse_split("topic:/cmd_vel"))


def test_proposed_mapping_takes_a_string_topic_as_instruction_only_by_name():
    bag = {"/cam": ("sensor_msgs/msg/Image", 9), "/cmd_vel": ("geometry_msgs/msg/Twist", 9)}
    assert "instruction" not in propose_mapping({**bag, "/episode_marker": ("std_msgs/msg/String", 4)})
    named = propose_mapping({**bag, "/task_instruction": ("std_msgs/msg/String", 1)})
    assert named["instruction"] == "/task_instruction"


def test_a_whole_bag_instruction_for_replay(day, tmp_path):
    d, originals = day
    day_bag = d / "bags" / "day"
    assert list(iter_bag(day_bag, {"/instruction"})) == []  # no such topic: nothing (rosbags alone reads all)
    assert bag_instruction(day_bag, TopicMap(), InstructionSources()).source == "metadata.yaml custom_data"
    assert bag_instruction(day_bag, TopicMap(), InstructionSources(text="go")).source == "--instruction"
    said = [dataclasses.replace(originals[0], instruction="as recorded")]
    recording_to_bag(said, tmp_path / "spoken", custom_data={"instruction": CUSTOM})
    found = bag_instruction(tmp_path / "spoken", TopicMap(), InstructionSources(text="go"))
    assert (found.text, found.source) == ("as recorded", "topic /instruction")  # the recording's topic first
    recording_to_bag(originals[:1], tmp_path / "silent", instruction_topic=False)
    with pytest.raises(EpisodeError, match="no instruction for episode 'silent'"):
        bag_instruction(tmp_path / "silent", TopicMap(), InstructionSources())
