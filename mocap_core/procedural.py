"""A procedurally generated human walk, for demos and tests without mocap data.

:func:`procedural_walk` builds a kinematic skeleton with the Bandai-Namco joint names and
joint-frame conventions (so the Bandai-Namco mappings in :mod:`mocap_core.skeleton_mapping`
turn it into ``smpl22`` or ``coco17``), and animates a steady walk along a straight or
circular path: footprints are placed along the path, each stance foot stays planted (the
toe joint does not move while it bears weight; the heel rises about it before toe-off), the
swing foot travels on a lifted arc to the next footprint, the legs are solved by two-bone
inverse kinematics from the pelvis to the feet, and the pelvis bobs (highest in single
support), sways towards the stance leg, rotates and tilts; the thorax counter-rotates and
the arms swing opposite to the legs with some elbow flexion.

World frame: metres, y up, ground y = 0 (the toe joints touch it when the foot is flat),
the walker faces +z at heading 0 (left = +x), heading increases counter-clockwise seen from
above (towards +x).

Joint frames follow the Bandai-Namco skeleton where the face-marker offsets depend on them:
the head (and spine) frame has x up, y forward and z the body's left in a neutral upright
pose. Other joints have x along their bone (mirrored, -x, on the right side), as Bandai-Namco
does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mocap_core.kinematics import forward_kinematics
from mocap_core.rotations import axis_rotation_matrix

JOINT_NAMES: tuple[str, ...] = (
    "joint_Root", "Hips", "Spine", "Chest", "Neck", "Head",
    "Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L",
    "Shoulder_R", "UpperArm_R", "LowerArm_R", "Hand_R",
    "UpperLeg_L", "LowerLeg_L", "Foot_L", "Toes_L",
    "UpperLeg_R", "LowerLeg_R", "Foot_R", "Toes_R",
)  # fmt: skip
PARENTS: tuple[int, ...] = (
    -1,
    0,
    1,
    2,
    3,
    4,
    3,
    6,
    7,
    8,
    3,
    10,
    11,
    12,
    1,
    14,
    15,
    16,
    1,
    18,
    19,
    20,
)
_J = {name: i for i, name in enumerate(JOINT_NAMES)}

# Rest pose of a ~1.72 m adult, standing upright facing +z, world axes (x left, y up,
# z forward), metres, each joint relative to its parent. Legs straight: hip joint 0.895 m,
# ankle 0.075 m, toe joint (ball of the foot) on the ground.
_REST_RELATIVE: dict[str, tuple[float, float, float]] = {
    "joint_Root": (0.0, 0.0, 0.0),
    "Hips": (0.0, 0.955, 0.0),
    "Spine": (0.0, 0.11, -0.01),
    "Chest": (0.0, 0.12, -0.005),
    "Neck": (0.0, 0.23, 0.0),
    "Head": (0.0, 0.09, 0.015),
    "Shoulder_L": (0.035, 0.19, 0.0),
    "UpperArm_L": (0.14, 0.01, -0.01),
    "LowerArm_L": (0.025, -0.284, 0.0),
    "Hand_L": (0.015, -0.255, 0.0),
    "UpperLeg_L": (0.075, -0.06, 0.0),
    "LowerLeg_L": (0.0, -0.41, 0.0),
    "Foot_L": (0.0, -0.41, 0.0),
    "Toes_L": (0.0, -0.075, 0.135),
}
for _name in list(_REST_RELATIVE):
    if _name.endswith("_L"):
        _x, _y, _z = _REST_RELATIVE[_name]
        _REST_RELATIVE[_name[:-2] + "_R"] = (-_x, _y, _z)

#: Height of a planted (flat) foot's ankle joint above the ground at body scale 1, metres
#: (0.075; the Bandai-Namco skeleton's ankles stand at 0.115): the ankle-keypoint convention
#: of procedural motion, for the ground anchor's ``ankle_height_m``.
PLANTED_ANKLE_HEIGHT_M: float = round(
    sum(_REST_RELATIVE[name][1] for name in ("Hips", "UpperLeg_L", "LowerLeg_L", "Foot_L")), 6
)

_UP = np.array([0.0, 1.0, 0.0])
_STANCE_FRACTION = 0.6  # of the gait cycle, per foot
_ANKLE_UNDER_HIP = 0.2  # stance fraction at which the flat foot's ankle passes under the pelvis
_HEEL_OFF = 0.3  # cycle fraction where the heel starts to rise
_TOE_OFF_PITCH = np.deg2rad(55.0)  # foot plantarflexion at toe-off
_REACH = 0.995  # fraction of the straight leg the IK may use, so the knee never locks


@dataclass(frozen=True)
class ProceduralMotion:
    """A generated walk: BVH-like skeleton data and its forward kinematics.

    Attributes:
        joint_names: ``S = 22`` Bandai-Namco joint names.
        parents: ``(S,)`` int64 parent indices (``-1`` for ``joint_Root``).
        offsets: ``(S, 3)`` float64 metres, rest translation of each joint in its parent's
            frame (``Hips``: its standing height above ``joint_Root``).
        local_rotations: ``(T, S, 3, 3)`` float64, rotation relative to the parent.
        root_translation: ``(T, 3)`` float64 metres, ``joint_Root`` on the ground below the
            walker's path, world y-up.
        local_translations: ``(T, S, 3)`` float64 metres, per-frame translations in the
            parent frame (equal to ``offsets`` except for ``Hips``, which moves).
        translated_joints: ``(S,)`` bool, joints whose translation is per-frame (``Hips``).
        positions: ``(T, S, 3)`` float64 metres, world, y-up, ground y = 0.
        global_rotations: ``(T, S, 3, 3)`` float64 joint frames in the world.
        foot_contacts: ``(T, 2)`` bool, (left, right) foot in stance (planted) per frame.
        fps: frames per second.
        gait_cycle_s: duration of one gait cycle (two steps), seconds.
    """

    joint_names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    local_rotations: np.ndarray
    root_translation: np.ndarray
    local_translations: np.ndarray
    translated_joints: np.ndarray
    positions: np.ndarray
    global_rotations: np.ndarray
    foot_contacts: np.ndarray
    fps: float
    gait_cycle_s: float


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _yaw(angle: np.ndarray) -> np.ndarray:
    return axis_rotation_matrix("Y", angle)


def _forward(heading: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(heading), np.zeros_like(heading), np.cos(heading)], axis=-1)


def _left(heading: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(heading), np.zeros_like(heading), -np.sin(heading)], axis=-1)


def _rest_positions(body_scale: float) -> np.ndarray:
    rest = np.zeros((len(JOINT_NAMES), 3))
    for j, name in enumerate(JOINT_NAMES):
        parent = PARENTS[j]
        rest[j] = (rest[parent] if parent >= 0 else 0.0) + body_scale * np.array(
            _REST_RELATIVE[name]
        )
    return rest


def _bind_frames(rest: np.ndarray) -> np.ndarray:
    """(S, 3, 3) joint frames in the rest pose: x along the bone (-x on the right side)."""
    first_child = {}
    for j, parent in enumerate(PARENTS):
        if parent >= 0 and parent not in first_child:
            first_child[parent] = j
    frames = np.empty((len(JOINT_NAMES), 3, 3))
    for j, name in enumerate(JOINT_NAMES):
        if name == "joint_Root":
            frames[j] = np.eye(3)
            continue
        if j in first_child:
            bone = rest[first_child[j]] - rest[j]
        elif name == "Head":
            bone = _UP.copy()
        elif name.startswith("Hand"):
            bone = rest[j] - rest[PARENTS[j]]
        else:  # toes point forward
            bone = np.array([0.0, 0.0, 1.0])
        x_axis = bone / np.linalg.norm(bone)
        if name.endswith("_R"):
            x_axis = -x_axis
        hint = np.array([0.0, 0.0, 1.0]) if abs(x_axis[2]) < 0.9 else _UP
        y_axis = hint - (hint @ x_axis) * x_axis
        y_axis /= np.linalg.norm(y_axis)
        frames[j] = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=-1)
    return frames


def _frame_from_axes(down_axis: np.ndarray, forward_hint: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation taking rest -y to ``down_axis`` and rest +z towards ``forward_hint``."""
    y_axis = -down_axis / np.linalg.norm(down_axis, axis=-1, keepdims=True)
    z_axis = forward_hint - np.sum(forward_hint * y_axis, axis=-1, keepdims=True) * y_axis
    z_axis /= np.linalg.norm(z_axis, axis=-1, keepdims=True)
    x_axis = np.cross(y_axis, z_axis)
    return np.stack([x_axis, y_axis, z_axis], axis=-1)


def _two_bone_ik(
    hip: np.ndarray, ankle: np.ndarray, pole: np.ndarray, thigh: float, shin: float
) -> np.ndarray:
    """(T, 3) knee positions placing the ankle at ``ankle`` with the knee towards ``pole``."""
    to_ankle = ankle - hip
    distance = np.linalg.norm(to_ankle, axis=-1)
    direction = to_ankle / distance[:, None]
    reach = np.clip(distance, abs(thigh - shin) + 1e-6, _REACH * (thigh + shin))
    cos_hip = (thigh**2 + reach**2 - shin**2) / (2.0 * thigh * reach)
    sin_hip = np.sqrt(np.clip(1.0 - cos_hip**2, 0.0, None))
    side = pole - np.sum(pole * direction, axis=-1, keepdims=True) * direction
    side /= np.linalg.norm(side, axis=-1, keepdims=True)
    return hip + thigh * (cos_hip[:, None] * direction + sin_hip[:, None] * side)


def procedural_walk(
    num_frames: int,
    fps: float = 30.0,
    speed_m_s: float = 1.2,
    turn_deg_per_s: float = 0.0,
    seed: int = 0,
    *,
    initial_heading_deg: float = 0.0,
    start_xz: tuple[float, float] = (0.0, 0.0),
    body_scale: float = 1.0,
) -> ProceduralMotion:
    """Generate a steady walk with planted feet on the ground plane y = 0.

    Args:
        num_frames: ``T >= 1`` frames.
        fps: frame rate, > 0.
        speed_m_s: walking speed along the path, in (0, 2] m/s.
        turn_deg_per_s: heading change rate (positive turns left, towards +x when starting
            at heading 0); 0 walks straight.
        seed: seeds the small per-walker variations (gait phase at frame 0, cadence, step
            width, toe-out, bob, sway, arm swing); equal seeds give identical output.
        initial_heading_deg: heading at frame 0 (0 = facing +z).
        start_xz: ground position (x, z) of the path at frame 0, metres.
        body_scale: uniform scale of the skeleton (1 = a ~1.72 m adult), in [0.5, 1.5].

    Returns:
        :class:`ProceduralMotion`, positions ``(T, 22, 3)`` float64 metres, y-up.
    """
    if not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 0.0 < speed_m_s <= 2.0:
        raise ValueError(f"speed_m_s must lie in (0, 2] m/s for a walk, got {speed_m_s}")
    if not 0.5 <= body_scale <= 1.5:
        raise ValueError(f"body_scale must lie in [0.5, 1.5], got {body_scale}")
    if not np.isfinite(turn_deg_per_s):
        raise ValueError(f"turn_deg_per_s must be finite, got {turn_deg_per_s}")

    rng = np.random.default_rng(seed)
    phase0 = rng.uniform(0.0, 1.0)
    # Step frequency grows with speed (about 1.8 steps/s at 1.2 m/s), scaled with leg length.
    step_hz = (1.35 + 0.4 * speed_m_s) * rng.uniform(0.95, 1.05) / np.sqrt(body_scale)
    cycle = 2.0 / step_hz
    half_width = body_scale * rng.uniform(0.065, 0.085)
    toe_out = np.deg2rad(rng.uniform(3.0, 8.0))
    bob = body_scale * rng.uniform(0.015, 0.025)
    sway = body_scale * rng.uniform(0.015, 0.03)
    arm_swing = np.deg2rad(rng.uniform(0.8, 1.2) * (10.0 + 10.0 * min(speed_m_s, 1.6) / 1.2))

    heading0 = np.deg2rad(initial_heading_deg)
    turn_rate = np.deg2rad(turn_deg_per_s)
    start = np.array([start_xz[0], 0.0, start_xz[1]], dtype=np.float64)
    t0 = -phase0 * cycle  # time of a left heel strike

    def heading(t: np.ndarray) -> np.ndarray:
        return heading0 + turn_rate * t

    def path(t: np.ndarray) -> np.ndarray:
        if abs(turn_rate) < 1e-9:
            return start + speed_m_s * t[..., None] * _forward(np.full_like(t, heading0))
        radius = speed_m_s / turn_rate
        x = radius * (np.cos(heading0) - np.cos(heading(t)))
        z = radius * (np.sin(heading(t)) - np.sin(heading0))
        return start + np.stack([x, np.zeros_like(t), z], axis=-1)

    rest = _rest_positions(body_scale)
    bind = _bind_frames(rest)
    thigh = np.linalg.norm(rest[_J["LowerLeg_L"]] - rest[_J["UpperLeg_L"]])
    shin = np.linalg.norm(rest[_J["Foot_L"]] - rest[_J["LowerLeg_L"]])
    ankle_height = rest[_J["Foot_L"], 1]
    toe_from_ankle = rest[_J["Toes_L"]] - rest[_J["Foot_L"]]  # (0, -h, forward) both sides
    hips_rest_height = rest[_J["Hips"], 1]

    def pelvis_rotation(t: np.ndarray) -> np.ndarray:
        phase = (t - t0) / cycle
        # Left hip forward at left heel strike (yaw < 0 moves +x backwards); the swing side
        # drops in single support (roll about the forward axis).
        yaw = heading(t) - np.deg2rad(4.0) * np.cos(2 * np.pi * phase)
        roll = np.deg2rad(3.0) * np.cos(2 * np.pi * (phase - 0.3))
        return _yaw(yaw) @ axis_rotation_matrix("Z", roll)

    def pelvis_ground(t: np.ndarray) -> np.ndarray:
        phase = (t - t0) / cycle
        return path(t) + sway * np.cos(2 * np.pi * (phase - 0.3))[..., None] * _left(heading(t))

    def foot_state(t: np.ndarray, side: int) -> dict[str, np.ndarray]:
        """Toe position, foot yaw, foot and toe pitch, and contact for one foot (+1 left)."""
        delay = 0.0 if side > 0 else 0.5
        cycles = (t - t0) / cycle - delay
        index = np.floor(cycles)
        phase = cycles - index

        def footprint(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t_flat = t0 + (n + delay + _ANKLE_UNDER_HIP) * cycle
            h = heading(t_flat)
            yaw = h + side * toe_out
            ankle = path(t_flat) + side * half_width * _left(h) + ankle_height * _UP
            toe = ankle + np.einsum("tij,j->ti", _yaw(yaw), toe_from_ankle)
            return toe, yaw

        toe_now, yaw_now = footprint(index)
        toe_next, yaw_next = footprint(index + 1)
        stance = phase < _STANCE_FRACTION
        swing_u = np.clip((phase - _STANCE_FRACTION) / (1.0 - _STANCE_FRACTION), 0.0, 1.0)
        blend = _smoothstep(swing_u)
        toe = np.where(stance[:, None], toe_now, toe_now + (toe_next - toe_now) * blend[:, None])
        lift = body_scale * 0.05 * np.sin(np.pi * swing_u) ** 2
        toe[:, 1] += np.where(stance, 0.0, lift)
        yaw = np.where(stance, yaw_now, yaw_now + (yaw_next - yaw_now) * blend)
        heel_rise = _smoothstep((phase - _HEEL_OFF) / (_STANCE_FRACTION - _HEEL_OFF))
        pitch = np.where(
            stance, _TOE_OFF_PITCH * heel_rise, _TOE_OFF_PITCH * (1.0 - _smoothstep(swing_u / 0.6))
        )
        # Toes stay flat on the ground through stance and join the foot early in swing.
        toe_pitch = np.where(stance, 0.0, pitch * _smoothstep(swing_u / 0.3))
        return {"toe": toe, "yaw": yaw, "pitch": pitch, "toe_pitch": toe_pitch, "stance": stance}

    def foot_frames(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foot rotation, toe rotation (anatomical, rest = identity) and ankle position."""
        foot_rot = _yaw(state["yaw"]) @ axis_rotation_matrix("X", state["pitch"])
        toe_rot = _yaw(state["yaw"]) @ axis_rotation_matrix("X", state["toe_pitch"])
        ankle = state["toe"] - np.einsum("tij,j->ti", foot_rot, toe_from_ankle)
        return foot_rot, toe_rot, ankle

    def allowed_hips_height(t: np.ndarray) -> np.ndarray:
        """Highest Hips height per time at which every planted leg still reaches its foot."""
        limit = np.full(t.shape, np.inf)
        rot = pelvis_rotation(t)
        ground = pelvis_ground(t)
        for side, hip_name in ((1, "UpperLeg_L"), (-1, "UpperLeg_R")):
            state = foot_state(t, side)
            _, _, ankle = foot_frames(state)
            hip_offset = np.einsum("tij,j->ti", rot, rest[_J[hip_name]] - rest[_J["Hips"]])
            horizontal = np.linalg.norm((ground + hip_offset - ankle)[:, [0, 2]], axis=-1)
            reach = _REACH * (thigh + shin) * 0.999
            vertical = np.sqrt(np.clip(reach**2 - horizontal**2, 0.0, None))
            leg_limit = ankle[:, 1] + vertical - hip_offset[:, 1]
            limit = np.where(state["stance"], np.minimum(limit, leg_limit), limit)
        return limit

    def nominal_hips_height(t: np.ndarray) -> np.ndarray:
        phase = (t - t0) / cycle
        # Highest in mid single support (cycle fractions 0.3 and 0.8), lowest in double support.
        return hips_rest_height - 0.005 + bob * (np.cos(4 * np.pi * (phase - 0.3)) - 1.0)

    times = np.arange(num_frames, dtype=np.float64) / fps
    # Lower the whole bob curve (never reshape it) until the planted legs reach the feet
    # everywhere; checked on the clip's frames and densely over one gait cycle.
    check_times = np.concatenate([times, times[0] + np.linspace(0.0, cycle, 200)])
    drop = min(
        0.0, float(np.min(allowed_hips_height(check_times) - nominal_hips_height(check_times)))
    )
    hips_height = nominal_hips_height(times) + drop

    phase = (times - t0) / cycle
    world_heading = heading(times)
    root_pos = path(times)
    hips_pos = pelvis_ground(times) + hips_height[:, None] * _UP
    pelvis_rot = pelvis_rotation(times)
    lean = axis_rotation_matrix("X", np.full(num_frames, np.deg2rad(3.0)))
    spine_rot = _yaw(world_heading) @ lean
    chest_rot = _yaw(world_heading + np.deg2rad(3.0) * np.cos(2 * np.pi * phase)) @ lean
    head_rot = _yaw(world_heading)

    anatomical = np.broadcast_to(np.eye(3), (num_frames, len(JOINT_NAMES), 3, 3)).copy()
    anatomical[:, _J["joint_Root"]] = _yaw(world_heading)
    anatomical[:, _J["Hips"]] = pelvis_rot
    anatomical[:, _J["Spine"]] = spine_rot
    anatomical[:, _J["Chest"]] = chest_rot
    anatomical[:, _J["Neck"]] = spine_rot
    anatomical[:, _J["Head"]] = head_rot

    contacts = np.zeros((num_frames, 2), dtype=bool)
    for column, (side, suffix) in enumerate(((1, "_L"), (-1, "_R"))):
        # Arms: the left arm swings forward while the left leg is back (positive = flexion).
        leg_phase = phase - (0.0 if side > 0 else 0.5)
        shoulder_flexion = -arm_swing * np.cos(2 * np.pi * leg_phase)
        elbow_flexion = np.deg2rad(12.0) + 0.6 * np.clip(shoulder_flexion, 0.0, None)
        upper_arm = chest_rot @ axis_rotation_matrix("X", -shoulder_flexion)
        anatomical[:, _J["Shoulder" + suffix]] = chest_rot
        anatomical[:, _J["UpperArm" + suffix]] = upper_arm
        anatomical[:, _J["LowerArm" + suffix]] = upper_arm @ axis_rotation_matrix(
            "X", -elbow_flexion
        )
        anatomical[:, _J["Hand" + suffix]] = anatomical[:, _J["LowerArm" + suffix]]

        state = foot_state(times, side)
        contacts[:, column] = state["stance"]
        foot_rot, toe_rot, ankle = foot_frames(state)
        hip = hips_pos + np.einsum(
            "tij,j->ti", pelvis_rot, rest[_J["UpperLeg" + suffix]] - rest[_J["Hips"]]
        )
        pole = _forward(state["yaw"])
        knee = _two_bone_ik(hip, ankle, pole, thigh, shin)
        anatomical[:, _J["UpperLeg" + suffix]] = _frame_from_axes(knee - hip, pole)
        anatomical[:, _J["LowerLeg" + suffix]] = _frame_from_axes(ankle - knee, pole)
        anatomical[:, _J["Foot" + suffix]] = foot_rot
        anatomical[:, _J["Toes" + suffix]] = toe_rot

    # Joint frames = anatomical rotation of the segment applied to its rest (bind) frame;
    # offsets are the rest bones seen from the parent's bind frame, so that
    # p_child - p_joint = anatomical_joint @ (rest_child - rest_joint).
    global_frames = anatomical @ bind
    parents = np.asarray(PARENTS, dtype=np.int64)
    offsets = np.zeros((len(JOINT_NAMES), 3))
    for j, parent in enumerate(PARENTS):
        if parent >= 0:
            offsets[j] = bind[parent].T @ (rest[j] - rest[parent])
    local_rotations = global_frames.copy()
    local_rotations[:, 1:] = (
        np.swapaxes(global_frames[:, parents[1:]], -1, -2) @ global_frames[:, 1:]
    )

    translated = np.zeros(len(JOINT_NAMES), dtype=bool)
    translated[_J["Hips"]] = True
    local_translations = np.broadcast_to(offsets, (num_frames, len(JOINT_NAMES), 3)).copy()
    root_frame = global_frames[:, _J["joint_Root"]]
    local_translations[:, _J["Hips"]] = np.einsum("tji,tj->ti", root_frame, hips_pos - root_pos)

    positions, global_rotations = forward_kinematics(
        parents,
        offsets,
        local_rotations,
        root_pos,
        local_translations,
        translated_joints=translated,
    )
    return ProceduralMotion(
        joint_names=JOINT_NAMES,
        parents=parents,
        offsets=offsets,
        local_rotations=local_rotations,
        root_translation=root_pos,
        local_translations=local_translations,
        translated_joints=translated,
        positions=positions,
        global_rotations=global_rotations,
        foot_contacts=contacts,
        fps=float(fps),
        gait_cycle_s=float(cycle),
    )
