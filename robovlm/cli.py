"""``robovlm`` command line: info, init-checkpoint, import-robovlms-config, export, make-bag, inspect-bag, replay,
collect-sim, train, eval-sim, demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("robovlm")


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a count of episodes, steps, ...), refused with a usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _load_any(target: str, *, meta: bool):
    """A checkpoint directory (weights loaded) or a config file (architecture only, on the meta device if asked)."""
    import torch

    from .config import load_config
    from .model.policy import RoboVLM
    from .model.tokenizer import ByteTokenizer, load_tokenizer

    path = Path(target)
    if path.is_dir() and (path / "model.safetensors").exists():
        return RoboVLM.from_pretrained(path), f"checkpoint {path}", None
    cfg = load_config(path)
    tok_note = None
    try:
        tokenizer = load_tokenizer(cfg.backbone.tokenizer, cfg.backbone.path)
    except (FileNotFoundError, ValueError) as exc:
        tokenizer, tok_note = ByteTokenizer(), f"unknown (tokenizer not available: {exc})"
    if meta:
        with torch.device("meta"):
            model = RoboVLM(cfg, tokenizer=tokenizer, load_backbone_weights=False)
    else:
        model = RoboVLM(cfg, tokenizer=tokenizer)
    return model, f"config {path} (architecture only, weights not loaded)", tok_note


def module_parameter_counts(model) -> list[tuple[str, int, bool]]:
    """(name, parameters, trainable) per module, with the backbone split into its parts."""
    rows: list[tuple[str, int, bool]] = []
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    bb = model.backbone
    if bb.type == "kosmos2":
        parts = [
            ("backbone.vision_encoder", bb.model.vision_model),
            ("backbone.projector", bb.model.image_to_text_projection),
            ("backbone.language_model", bb.model.text_model),
        ]
    else:
        parts = [
            ("backbone.vision_encoder", bb.model.vision_tower),
            ("backbone.projector", bb.model.multi_modal_projector),
            ("backbone.language_model", bb.model.language_model),
        ]
    used_native = not model.config.use_vision_resampler
    for name, mod in parts:
        rows.append(
            (
                name + ("" if used_native or name != "backbone.projector" else " (unused: resampler on)"),
                count(mod),
                True,
            )
        )
    for name, mod in model.named_children():
        if name == "backbone":
            continue
        if name == "clip_norm":
            rows.append(("clip_norm.proj", count(mod.proj), True))
            rows.append(("clip_norm.text_encoder (frozen)", count(mod.text_encoder), False))
            continue
        rows.append((name, count(mod), True))
    for name, p in model.named_parameters(recurse=False):
        rows.append((name, p.numel(), True))
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    model, what, tok_note = _load_any(args.target, meta=True)
    cfg = model.config
    print(f"RoboVLM {what}")
    print(
        f"backbone: {cfg.backbone.type}; LM width {model.dim}; vision width {model.backbone.vision_width}; "
        f"image {cfg.image_size} px"
    )
    print(
        f"features: resampler={cfg.use_vision_resampler} hand_rgb={cfg.use_hand_rgb} state={cfg.use_state} "
        f"clip_norm={cfg.use_clip_norm} claw_matrix={cfg.use_claw_matrix} hierarchical={cfg.use_hierarchical} "
        f"advanced_attention={cfg.use_advanced_attention} head={cfg.act_head.type}"
    )
    print("\nparameters per module:")
    rows = module_parameter_counts(model)
    width = max(len(r[0]) for r in rows)
    for name, n, _ in rows:
        print(f"  {name:<{width}}  {n:>15,d}")
    print(f"  {'total':<{width}}  {sum(r[1] for r in rows):>15,d}")
    counts = model.token_counts(args.instruction)
    if tok_note:
        counts["instruction_tokens"] = tok_note
        counts["lm_sequence"] = f"{model.tokens_per_frame} + instruction tokens"
    print(f"\ntokens per stage (instruction: {args.instruction!r}):")
    print(f"  vision encoder: {counts['patch_tokens_per_camera']} patch tokens per camera")
    via = "resampler" if cfg.use_vision_resampler else "backbone projector"
    print(f"  after {via}: {counts['vision_tokens_per_camera']} tokens per camera x {counts['cameras']} camera(s)")
    print(f"  state: {counts['state_tokens']}, action (LRN): {counts['action_tokens']}")
    print(
        f"  per frame into the LM: {counts['frame_tokens']} (+ instruction {counts['instruction_tokens']}, "
        "computed once per instruction)"
    )
    print(f"  LM sequence per frame: {counts['lm_sequence']}")
    print(f"  policy head: window {cfg.window_size} -> chunk ({cfg.fwd_pred_next_n}, {cfg.action_dim})")
    return 0


def cmd_init_checkpoint(args: argparse.Namespace) -> int:
    import torch

    from .config import load_config
    from .model.policy import RoboVLM

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a directory; choose another output directory", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    cfg = load_config(args.config)
    model = RoboVLM(cfg, with_clip=False)
    model.save_pretrained(args.out_dir)
    print(f"wrote randomly initialised checkpoint (seed {args.seed}, UNTRAINED) to {args.out_dir}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .config import save_config
    from .config_import import ImportRefused, import_robovlms_config, load_robovlms_config

    src = load_robovlms_config(args.src)  # a ConfigError (unreadable, parent missing) is reported by main()
    try:
        cfg, report = import_robovlms_config(src, backbone_path=args.backbone_path, clip_path=args.clip_path)
    except ImportRefused as exc:
        print(exc.report.format())
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_config(cfg, args.dst)
    print(report.format())
    print(f"wrote {args.dst}")
    print(
        f"train it as RoboVLMs would: robovlm train {args.dst} --data DATA --out CHECKPOINT "
        + " ".join(report.train_flags)
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    report = export_checkpoint(
        args.checkpoint, args.out, dtype=args.dtype, opset=args.opset, parity_steps=args.parity_steps
    )
    print(
        f"wrote {Path(args.out) / 'onnx'} ({args.dtype}, opset {args.opset}); parity against torch "
        f"({report['provider']}):"
    )
    for name, diff in report["graphs_max_abs_diff"].items():
        print(f"  {name:<12} max abs diff {diff:.3g}")
    print(
        f"  end to end   max abs diff {report['end_to_end_max_abs_diff_physical']:.3g} (action chunk, physical "
        f"units, {report['end_to_end_steps']} steps)"
    )
    print(f"run it: robovlm_node --ros-args -p model_path:={args.out} -p engine:=onnxruntime")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(config_path=args.config, steps=args.steps, instruction=args.instruction, seed=args.seed)


def cmd_make_bag(args: argparse.Namespace) -> int:
    from .data.bag import episode_to_bag
    from .data.hdf5 import load_instructions, read_hdf5_episode

    static = None
    if args.static_joints:
        try:
            static = {k: float(v) for k, v in (item.split("=", 1) for item in args.static_joints.split(","))}
        except ValueError:
            print(
                f"error: --static-joints must look like name=0.1,other=0.2, got {args.static_joints!r}", file=sys.stderr
            )
            return 2
    ep = read_hdf5_episode(args.episode, load_instructions(args.instructions))
    counts = episode_to_bag(ep, args.out_bag, storage=args.storage, static_joints=static)
    print(
        f"episode {ep.name}: {len(ep)} frames at {1.0 / ep.frame_dt:.1f} Hz, scenario {ep.scenario}, "
        f"instruction {ep.instruction!r}"
    )
    for topic, n in counts.items():
        print(f"  {topic}: {n} messages")
    print(f"wrote {args.out_bag} ({args.storage})")
    return 0


def cmd_inspect_bag(args: argparse.Namespace) -> int:
    from .data.bag import bag_topics
    from .data.roles import ROLES, propose_mapping

    info = bag_topics(args.bag, timing=True)
    width = max([len(t) for t in info] + [5])
    print(f"{args.bag}: {len(info)} topics, {sum(i.count for i in info.values())} messages")
    print(f"  {'topic':<{width}}  {'type':<36} {'count':>7} {'rate':>9}")
    for topic, i in sorted(info.items()):
        print(f"  {topic:<{width}}  {i.msgtype:<36} {i.count:>7} {i.rate_hz:>6.1f} Hz")
    proposal = propose_mapping({t: (i.msgtype, i.count) for t, i in info.items()})
    print("\nproposed mapping (roles the bag lacks are left out):")
    for role in ROLES:
        print(f"  {role:<13} {proposal.get(role, '(none)')}")
    flags = " ".join(f"--topic {r}={proposal[r]}" for r in ROLES if r in proposal)
    print(f"\nflags: {flags}" if flags else "\nno topic fits any role")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    # The replay drives the ROS node, so it lives in the ROS layer (robovlm_node); imported only here.
    import yaml

    from robovlm_node.replay import ReplayError, replay

    from .data.roles import TopicMap

    params = {}
    for item in args.param or []:
        key, sep, value = item.partition(":=")
        if not sep or not key:
            print(f"error: -p takes NAME:=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[key] = yaml.safe_load(value)  # the same typing as ROS's own `-p name:=value`
    try:
        report = replay(
            args.bag,
            args.model,
            topics=TopicMap.from_flags(args.topic),
            rate=args.rate,
            out=args.out,
            instruction=args.instruction,
            params=params,
        )
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if report.inferences == 0:
        print("error: the model never ran (see the faults above)", file=sys.stderr)
        return 1
    return 0


def cmd_collect_sim(args: argparse.Namespace) -> int:
    from .sim.collect import collect

    r = collect(
        args.out,
        episodes_per_scenario=args.episodes_per_scenario,
        seed_offset=args.seed_offset,
        image_size=args.image_size,
        noise=args.noise,
        bags=args.bags,
    )
    print(
        f"wrote {r.episodes} expert episodes ({r.frames} frames) to {args.out}; expert failures skipped: {r.failures}"
    )
    return 0


def _joints(text: str | None) -> list[str] | None:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


def cmd_train(args: argparse.Namespace) -> int:
    from .data.roles import TopicMap
    from .train import TrainSettings, train

    extra = {"action_fields": tuple(f.strip() for f in args.action_fields.split(","))} if args.action_fields else {}
    if args.weight_decay is not None:
        extra["weight_decay"] = args.weight_decay
    extra.update(grad_accum=args.grad_accum, mixed_precision=args.mixed_precision, num_workers=args.num_workers)
    try:
        settings = TrainSettings(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            eval_every=args.eval_every,
            warmup_steps=args.warmup_steps,
            **extra,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    existed = out.exists()
    try:
        m = train(
            args.config,
            args.data,
            out,
            settings,
            resume=args.resume,
            device=args.device,
            topics=TopicMap.from_flags(args.topic),
            joint_names=_joints(args.joints),
        )
    except BaseException:  # bad data found mid-run (a damaged file), Ctrl-C: no empty output directory stays
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch: the main process reports
        return 0
    print(
        f"trained {m['steps']} steps in {m['train_seconds'] / 60:.1f} min on {m['train_episodes']} episodes; "
        f"final loss {m['final_loss']:.4f}"
    )
    if m["final_val_mae"]:
        print(
            "validation MAE (held-out episodes): "
            + ", ".join(
                f"{k} {v:.4f} {'rad/s' if k.startswith('angular') else 'm/s'}" for k, v in m["final_val_mae"].items()
            )
        )
    print(f"checkpoint, loss_curve.png and metrics.json in {args.out}")
    return 0


def cmd_eval_sim(args: argparse.Namespace) -> int:
    from .sim.evaluate import evaluate

    report = evaluate(
        args.checkpoint,
        episodes=args.episodes,
        seed_offset=args.seed_offset,
        ablate=args.ablate,
        chunk_mode=args.chunk_mode,
        device=args.device,
    )
    print(report.format())
    return 0


TOPIC_HELP = (
    "bag topic of a role (repeatable): head, hand, joint_states, cmd_vel, instruction; defaults are the "
    "node's topics (/head_camera/image_raw, ...); message types are read from the bag"
)


def build_parser() -> argparse.ArgumentParser:
    from .train_settings import TrainSettings

    p = argparse.ArgumentParser(prog="robovlm", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="parameters per module and tokens per stage of a config or checkpoint")
    s.add_argument("target", help="config JSON or checkpoint directory")
    s.add_argument("--instruction", default="go around the box to the cup")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("init-checkpoint", help="write a randomly initialised checkpoint (bring-up, tests)")
    s.add_argument("config")
    s.add_argument("out_dir")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_init_checkpoint)

    s = sub.add_parser("import-robovlms-config", help="translate an official RoboVLMs config")
    s.add_argument("src", metavar="IN.json")
    s.add_argument("dst", metavar="OUT.json")
    s.add_argument("--backbone-path", help="local directory of the backbone weights (overrides model_path)")
    s.add_argument("--clip-path", help="local directory of a CLIP text encoder (needed when use_clip_norm)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="add ONNX graphs of the streaming step to a checkpoint (engine onnxruntime)")
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write (may be CHECKPOINT)")
    s.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument(
        "--parity-steps", type=at_least(1), default=20, help="control steps compared with torch after export"
    )
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("make-bag", help="turn one HDF5 teleop episode into a rosbag2 for replay")
    s.add_argument("episode", metavar="EPISODE.h5")
    s.add_argument("out_bag", metavar="OUT_BAG")
    s.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    s.add_argument("--instructions", help="scenario id -> sentence JSON (default: models/instructions.json)")
    s.add_argument("--static-joints", help="fixed joint pose for episodes without joint data: name=value,...")
    s.set_defaults(func=cmd_make_bag)

    s = sub.add_parser("inspect-bag", help="topics, types, counts and rates of a rosbag2, and a proposed role mapping")
    s.add_argument("bag", metavar="BAG")
    s.set_defaults(func=cmd_inspect_bag)

    s = sub.add_parser("replay", help="play a rosbag2 into the node over DDS and report what it commanded")
    s.add_argument("bag", metavar="BAG")
    s.add_argument("--model", required=True, help="checkpoint directory")
    s.add_argument("--topic", action="append", metavar="ROLE=TOPIC", help=TOPIC_HELP)
    s.add_argument("--rate", type=float, default=1.0, help="playback rate")
    s.add_argument("--out", help="output bag directory for cmd_vel and /diagnostics")
    s.add_argument("--instruction", help="instruction (default: the bag's /instruction)")
    s.add_argument("-p", "--param", action="append", metavar="NAME:=VALUE", help="node parameter override")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("collect-sim", help="scripted-expert episodes from the simulator, in the user's HDF5 format")
    s.add_argument("out", help="output directory")
    s.add_argument("--episodes-per-scenario", type=at_least(1), default=10)
    s.add_argument("--seed-offset", type=at_least(0), default=0)
    s.add_argument("--image-size", type=at_least(14), default=56)
    s.add_argument("--noise", type=float, default=0.05, help="std of the noise added to executed commands, m/s")
    s.add_argument("--bags", action="store_true", help="also write each episode as an MCAP rosbag2")
    s.set_defaults(func=cmd_collect_sim)

    d = TrainSettings()
    s = sub.add_parser(
        "train",
        help="train a checkpoint on HDF5 episodes and rosbag2 recordings (one process, or "
        "several under torchrun / accelerate launch)",
    )
    s.add_argument("config")
    s.add_argument("--data", required=True, help="directory of *.h5 episodes and/or rosbag2 directories (or one)")
    s.add_argument("--out", required=True, help="checkpoint directory")
    s.add_argument("--topic", action="append", metavar="ROLE=TOPIC", help=TOPIC_HELP)
    s.add_argument("--joints", metavar="NAME,NAME", help="state joints by name, in order (default: the data's)")
    s.add_argument(
        "--action-fields",
        metavar="FIELD,FIELD",
        help=f"Twist fields the model predicts, in order (default: {','.join(d.action_fields)}; the "
        "config's action_dim must match)",
    )
    s.add_argument("--steps", type=at_least(1), default=d.steps)
    s.add_argument("--batch-size", type=at_least(1), default=d.batch_size)
    s.add_argument("--lr", type=float, default=d.lr)
    s.add_argument("--warmup-steps", type=at_least(0), default=d.warmup_steps)
    s.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default {d.weight_decay})")
    s.add_argument(
        "--grad-accum",
        type=at_least(1),
        default=d.grad_accum,
        help="micro-batches per optimizer step (--batch-size stays the global batch)",
    )
    s.add_argument(
        "--mixed-precision",
        default=d.mixed_precision,
        choices=["auto", "no", "bf16", "fp16"],
        help="auto: bf16 on CUDA, full precision on the CPU",
    )
    s.add_argument("--num-workers", type=at_least(0), default=d.num_workers, help="DataLoader worker processes")
    s.add_argument("--eval-every", type=at_least(1), default=d.eval_every)
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval-sim", help="closed-loop success rate in the simulator")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--episodes", type=at_least(1), default=40)
    s.add_argument("--seed-offset", type=at_least(0), default=100_000, help="first seed (training uses seeds from 0)")
    s.add_argument("--ablate", choices=["image", "instruction"])
    s.add_argument("--chunk-mode", default="ensemble", choices=["ensemble", "open_loop", "latest"])
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_eval_sim)

    s = sub.add_parser("demo", help="run the default model step by step on synthetic frames (untrained)")
    s.add_argument("--config", default=None, help="model config (default: models/configs/kosmos2_small.json)")
    s.add_argument("--steps", type=int, default=12)
    s.add_argument("--instruction", default="go around the box on the left to the cup")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from .config import ConfigError
    from .data.bag import BagError
    from .data.hdf5 import EpisodeError
    from .data.roles import RoleError
    from .export import ExportError
    from .model.backbone import BackboneError
    from .model.policy import CheckpointError
    from .resources import ResourceNotFound

    try:
        return args.func(args)
    except (
        ConfigError,
        CheckpointError,
        BackboneError,
        EpisodeError,
        BagError,
        RoleError,
        ResourceNotFound,
        ExportError,
        OSError,
    ) as exc:  # OSError: a file or directory the user named cannot be read or written
        if args.verbose:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The error as the user should read it: an OSError as 'reason: path', an error raised in a DataLoader worker
    (which torch re-raises with the worker's traceback in its text) as the original message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{exc.strerror}: {where}" if where else exc.strerror
    text = str(exc)
    if "Original Traceback" in text:  # torch.utils.data's ExceptionWrapper
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
