"""Procedural, face-like images drawn with vectorised numpy (the embedded default dataset).

Each image is a composition of soft-edged shapes: a gradient background, shoulders, neck, hair, ears, a
skin-toned head with shading, a fringe, eyebrows, eyes (sclera, iris, pupil), nose, mouth and sometimes
glasses. Head position, size, roll, yaw, colours and expressions vary. Image ``i`` depends only on the seed
and ``i`` (parameters are row ``i`` of one uniform matrix), so a larger set extends a smaller one.
"""

from __future__ import annotations

import numpy as np

# Uniform parameters in [0, 1); each is mapped to its range in `_scale`.
PARAM_NAMES = (
    "bg_angle", "bg_r1", "bg_g1", "bg_b1", "bg_r2", "bg_g2", "bg_b2",
    "cx", "cy", "rx", "aspect", "roll", "yaw", "skin", "skin_jit", "light",
    "hair", "hair_jit", "hair_volume", "hairline", "fringe_wave", "fringe_phase", "long_hair",
    "shirt_r", "shirt_g", "shirt_b", "eye_v", "eye_gap", "eye_w", "eye_h", "iris", "gaze_u", "gaze_v",
    "brow_gap", "brow_tilt", "nose_len", "mouth_v", "mouth_w", "smile", "mouth_open", "lip",
    "glasses", "glasses_col", "blush",
)
N_PARAMS = len(PARAM_NAMES)

SKIN = np.array([[0.98, 0.85, 0.74], [0.94, 0.76, 0.62], [0.86, 0.65, 0.50],
                 [0.72, 0.52, 0.38], [0.55, 0.38, 0.26], [0.40, 0.27, 0.19]], np.float32)
HAIR = np.array([[0.08, 0.06, 0.05], [0.30, 0.19, 0.10], [0.55, 0.38, 0.20], [0.90, 0.78, 0.48],
                 [0.70, 0.30, 0.12], [0.75, 0.75, 0.75], [0.20, 0.25, 0.60], [0.60, 0.20, 0.45]], np.float32)
IRIS = np.array([[0.35, 0.20, 0.10], [0.20, 0.45, 0.75], [0.25, 0.50, 0.30], [0.45, 0.45, 0.50]], np.float32)
GLASSES = np.array([[0.05, 0.05, 0.05], [0.55, 0.35, 0.15], [0.70, 0.10, 0.15]], np.float32)


def draw_parameters(n: int, seed: int) -> np.ndarray:
    """The (n, N_PARAMS) uniform matrix of image parameters; row i depends only on `seed` and i."""
    return np.random.default_rng(seed).random((n, N_PARAMS), dtype=np.float64).astype(np.float32)


def _scale(u: np.ndarray) -> dict[str, np.ndarray]:
    """Map uniform rows (B, N_PARAMS) to named parameters of shape (B, 1, 1) (colours (B, 1, 1, 3))."""
    p = {name: u[:, i, None, None] for i, name in enumerate(PARAM_NAMES)}

    def rng(name: str, lo: float, hi: float) -> np.ndarray:
        return lo + (hi - lo) * p[name]

    def pick(table: np.ndarray, name: str) -> np.ndarray:
        idx = np.minimum((p[name][:, 0, 0] * len(table)).astype(int), len(table) - 1)
        return table[idx][:, None, None, :]

    rgb = lambda *names: np.stack([p[k] for k in names], axis=-1)  # noqa: E731
    out = {
        "bg_angle": rng("bg_angle", 0, 2 * np.pi), "bg1": 0.15 + 0.8 * rgb("bg_r1", "bg_g1", "bg_b1"),
        "bg2": 0.1 + 0.8 * rgb("bg_r2", "bg_g2", "bg_b2"), "cx": rng("cx", -0.12, 0.12),
        "cy": rng("cy", -0.12, 0.06), "rx": rng("rx", 0.33, 0.45), "aspect": rng("aspect", 1.15, 1.4),
        "roll": rng("roll", -0.3, 0.3), "yaw": rng("yaw", -0.22, 0.22), "light": rng("light", -1.0, 1.0),
        "skin": pick(SKIN, "skin") * (0.94 + 0.12 * p["skin_jit"][..., None]),
        "hair": pick(HAIR, "hair") * (0.85 + 0.3 * p["hair_jit"][..., None]),
        "hair_volume": rng("hair_volume", 1.05, 1.35), "hairline": rng("hairline", -0.75, -0.3),
        "fringe_wave": rng("fringe_wave", 0.0, 0.12), "fringe_phase": rng("fringe_phase", 0, 2 * np.pi),
        "long_hair": (p["long_hair"] < 0.45).astype(np.float32), "shirt": 0.1 + 0.8 * rgb("shirt_r", "shirt_g",
                                                                                            "shirt_b"),
        "eye_v": rng("eye_v", -0.18, 0.0), "eye_gap": rng("eye_gap", 0.30, 0.44), "eye_w": rng("eye_w", 0.12, 0.18),
        "eye_h": rng("eye_h", 0.35, 0.7), "iris": pick(IRIS, "iris"), "gaze_u": rng("gaze_u", -0.35, 0.35),
        "gaze_v": rng("gaze_v", -0.2, 0.2), "brow_gap": rng("brow_gap", 0.13, 0.22),
        "brow_tilt": rng("brow_tilt", -0.25, 0.25), "nose_len": rng("nose_len", 0.1, 0.2),
        "mouth_v": rng("mouth_v", 0.42, 0.56), "mouth_w": rng("mouth_w", 0.2, 0.36), "smile": rng("smile", -0.08, 0.2),
        "mouth_open": rng("mouth_open", 0.0, 1.0), "lip": 0.75 + 0.25 * p["lip"][..., None],
        "glasses": (p["glasses"] < 0.2).astype(np.float32), "glasses_col": pick(GLASSES, "glasses_col"),
        "blush": 0.35 * p["blush"],
    }
    return out


def _soft(f: np.ndarray, radius_px: np.ndarray | float) -> np.ndarray:
    """Anti-aliased coverage of the implicit shape ``f <= 1`` (f ~ squared normalised radius)."""
    return np.clip((1.0 - f) * radius_px * 0.5 + 0.5, 0.0, 1.0)


Scalar = float | np.ndarray  # a number, or per-image values of shape (B, 1, 1)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: Scalar, cv: Scalar, ru: Scalar, rv: Scalar,
             px: Scalar) -> np.ndarray:
    """Coverage of the axis-aligned ellipse centred at (cu, cv) with radii (ru, rv) in (u, v) coordinates."""
    f = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2
    return _soft(f, np.minimum(ru, rv) * px)


def _over(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Composite `colour` with coverage `alpha` (B, R, R) over `img` (B, R, R, 3)."""
    delta = colour - img
    delta *= alpha[..., None]
    img += delta
    return img


class _Canvas:
    """Pixel grid in [-1, 1]^2 and the head-aligned coordinates (u, v): the head is the unit disc."""

    def __init__(self, q: dict[str, np.ndarray], resolution: int) -> None:
        t = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 - 1
        self.y, self.x = t[None, :, None], t[None, None, :]
        self.px = resolution / 2.0  # pixels per unit length
        dx, dy = self.x - q["cx"], self.y - q["cy"]
        cos, sin = np.cos(q["roll"]), np.sin(q["roll"])
        self.rx, self.ry = q["rx"], q["rx"] * q["aspect"]
        self.u = (cos * dx + sin * dy) / self.rx
        self.v = (-sin * dx + cos * dy) / self.ry
        self.fu = self.u - q["yaw"] * (1 - 0.5 * self.v**2)  # features shift with the head's yaw
        self.upx = self.rx * self.px  # pixels per unit of u


def _background_and_body(q: dict[str, np.ndarray], c: _Canvas) -> np.ndarray:
    w = 0.5 + 0.5 * (np.cos(q["bg_angle"]) * c.x + np.sin(q["bg_angle"]) * c.y) * np.float32(0.7071)
    img = (q["bg1"] * (1 - w[..., None]) + q["bg2"] * w[..., None]).astype(np.float32)
    long_hair = _soft(np.maximum(np.abs(c.u) / q["hair_volume"], np.abs(c.v - 1.05) / 1.15) ** 8, c.upx)
    long_hair *= q["long_hair"]
    img = _over(img, long_hair, q["hair"])
    shoulders = _ellipse(c.x, c.y, q["cx"] * 0.5, 1.2, 0.9, 0.55, c.px)
    img = _over(img, shoulders, q["shirt"])
    neck = _soft(np.maximum(np.abs(c.u) / 0.45, (c.v - 1.15) / 0.6 + 1) ** 8, c.upx) * (c.v > 0)
    img = _over(img, neck, q["skin"] * 0.8)
    return img


def _head(img: np.ndarray, q: dict[str, np.ndarray], c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    hv = q["hair_volume"]
    img = _over(img, _ellipse(c.u, c.v, 0, -0.12, hv, hv * 0.95, c.upx), q["hair"])
    ears = [_ellipse(c.u, c.v, side * 0.97, q["eye_v"] + 0.12, 0.16, 0.24, c.upx) for side in (-1.0, 1.0)]
    img = _over(img, np.maximum(*ears), q["skin"] * 0.9)
    head = _ellipse(c.u, c.v, 0, 0, 1.0, 1.0, c.upx)
    shade = 1.0 + 0.12 * q["light"] * c.u - 0.06 * c.v
    img = _over(img, head, q["skin"] * shade[..., None])
    blush = [_ellipse(c.fu, c.v, side * 0.5, 0.35, 0.18, 0.1, c.upx) for side in (-1.0, 1.0)]
    img = _over(img, np.maximum(*blush) * q["blush"], q["skin"] * np.float32([1.1, 0.7, 0.7]))
    wave = q["fringe_wave"] * np.sin(6.0 * c.u + q["fringe_phase"])
    inside = _ellipse(c.u, c.v, 0, 0, 1.04, 1.04, c.upx)  # slightly larger than the head: no seam at its rim
    fringe = np.clip((q["hairline"] + wave - c.v) * c.ry * c.px + 0.5, 0, 1) * inside
    return _over(img, fringe, q["hair"]), head


def _eye_masks(q: dict[str, np.ndarray], c: _Canvas, side: float) -> dict[str, np.ndarray]:
    """Coverage of one eye's brow, sclera, iris, pupil and glasses rim."""
    ew, eh = q["eye_w"], q["eye_w"] * q["eye_h"]
    eu, ev = side * q["eye_gap"], q["eye_v"]
    bv = ev - q["brow_gap"] - side * q["brow_tilt"] * (c.fu - eu)
    sclera = _ellipse(c.fu, c.v, eu, ev, ew, eh, c.upx)
    iu, iv = eu + q["gaze_u"] * ew * 0.5, ev + q["gaze_v"] * eh * 0.5
    frame = _ellipse(c.fu, c.v, eu, ev, ew * 1.6, ew * 1.25, c.upx)
    return {
        "brow": _ellipse(c.fu, c.v, eu, bv, ew * 1.25, 0.035, c.upx),
        "sclera": sclera,
        "iris": _ellipse(c.fu, c.v, iu, iv, eh * 0.95, eh * 0.95, c.upx) * sclera,
        "pupil": _ellipse(c.fu, c.v, iu, iv, eh * 0.45, eh * 0.45, c.upx) * sclera,
        "rim": np.clip(frame - _ellipse(c.fu, c.v, eu, ev, ew * 1.4, ew * 1.05, c.upx), 0, 1),
    }


def _eyes(img: np.ndarray, q: dict[str, np.ndarray], c: _Canvas) -> np.ndarray:
    left, right = _eye_masks(q, c, -1.0), _eye_masks(q, c, 1.0)
    both = {k: np.maximum(left[k], right[k]) for k in left}
    img = _over(img, both["brow"], q["hair"] * 0.7)
    img = _over(img, both["sclera"], np.float32([0.96, 0.96, 0.94]))
    img = _over(img, both["iris"], q["iris"])
    img = _over(img, both["pupil"], np.float32(0.03))
    bridge = _ellipse(c.fu, c.v, 0, q["eye_v"] - 0.02, q["eye_gap"] - q["eye_w"] * 1.5, 0.025, c.upx)
    return _over(img, np.maximum(both["rim"], bridge) * q["glasses"], q["glasses_col"])


def _nose_mouth(img: np.ndarray, q: dict[str, np.ndarray], c: _Canvas) -> np.ndarray:
    nose = _ellipse(c.fu, c.v, 0.02, 0.12 + q["nose_len"] * 0.5, 0.07, q["nose_len"], c.upx)
    img = _over(img, nose * 0.35, q["skin"] * 0.6)
    mw, mv = q["mouth_w"], q["mouth_v"]
    bent = c.v - mv + q["smile"] * ((c.fu / mw) ** 2 - 0.5)
    lips = _soft((c.fu / mw) ** 2 + (bent / (0.05 + 0.06 * q["mouth_open"])) ** 2, 0.05 * c.ry * c.px)
    img = _over(img, lips, q["skin"] * np.float32([0.95, 0.45, 0.45]) * q["lip"])
    inner_h = 0.008 + 0.05 * q["mouth_open"]
    inner = _soft((c.fu / (mw * 0.8)) ** 2 + (bent / inner_h) ** 2, inner_h * c.ry * c.px)
    return _over(img, inner, np.float32([0.25, 0.05, 0.07]))


def render_faces(params: np.ndarray, resolution: int) -> np.ndarray:
    """Render uint8 RGB images of shape (B, R, R, 3) from parameter rows (B, N_PARAMS)."""
    if params.ndim != 2 or params.shape[1] != N_PARAMS:
        raise ValueError(f"params must have shape (B, {N_PARAMS}), got {params.shape}")
    q = _scale(params.astype(np.float32))
    canvas = _Canvas(q, resolution)
    img = _background_and_body(q, canvas)
    img, _ = _head(img, q, canvas)
    img = _eyes(img, q, canvas)
    img = _nose_mouth(img, q, canvas)
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
