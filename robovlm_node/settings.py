"""Settings: the node's validated parameters as its parts use them.

Plain data with no ROS import, so the parts that take it (inputs, engine supervision) are built and tested without
rclpy; ``parameters.validate_settings`` makes it from the parameter table, the one place each parameter is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from robovlm.runtime.safety import SafetyLimits


@dataclass
class Settings:
    """Validated parameters, as the node uses them (limits expanded to one value per action field)."""

    model_path: str
    device: str
    engine: str
    dtype: str
    onnx_tensorrt: bool
    onnx_cache_dir: str
    server_url: str
    server_token_file: str
    server_timeout_s: float
    jpeg_quality: int
    engine_process: bool
    instruction: str
    engine_threads: int
    engine_step_timeout_s: float
    engine_max_restarts: int
    engine_restart_window_s: float
    max_image_pixels: int
    min_image_side_px: int
    min_image_contrast: float
    max_saturated_fraction: float
    max_frozen_s: float
    use_receive_time: bool
    max_stamp_lead_s: float
    clock_stall_timeout_s: float
    instruction_topic: str
    control_rate_hz: float
    head_camera_topic: str
    head_camera_compressed: bool
    hand_camera_topic: str
    hand_camera_compressed: bool
    require_hand_camera: bool
    joint_states_topic: str
    state_joints: list[str]
    cmd_vel_topic: str
    stamped: bool
    frame_id: str
    action_fields: list[str]
    max_velocity: list[float]
    max_accel: list[float]
    input_timeout_s: float
    chunk_timeout_s: float
    chunk_mode: str
    ensemble_decay: float
    control_rt_priority: int
    require_enable: bool
    enable_topic: str
    enable_timeout_s: float
    enable_joy_topic: str
    enable_joy_button: int
    disabled_output: str
    output_mode: str
    operator_cmd_topic: str
    operator_cmd_stamped: bool
    agreement_window_s: float
    takeover_joy_button: int
    takeover_timeout_s: float
    takeover_forward: bool
    record_dir: str
    record_max_gb: float
    record_full_frames: bool
    visualization_rate_hz: float
    executed_window_s: float
    autostart: bool

    def safety_limits(self) -> SafetyLimits:
        """The safety filter's limits (velocity and acceleration per action field, input and chunk timeouts)."""
        return SafetyLimits(
            max_velocity=self.max_velocity,
            max_accel=self.max_accel,
            input_timeout_s=self.input_timeout_s,
            chunk_timeout_s=self.chunk_timeout_s,
        )
