"""The find stage: motion (MOG2) on synthetic scenes, and detector ONNXs of every accepted layout, made here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.runtime.find import (DetectorConfig, DetectorFinder, DetectorRunner, MotionConfig, MotionFinder, make_finder,
                                    nms, plan_layout, split_at_waists)
from toolchain.runtime.geometry import Box

pytest.importorskip("cv2")

# ------------------------------------------------------------------------------------------ motion

W, H = 640, 352
ROAD = np.array([100, 100, 104], np.float32)


def _background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ROAD + rng.normal(0, 6, (H, W, 1)).astype(np.float32)  # fixed texture: the road's grain


class Rectangles:
    """Vehicles as rectangles crossing a noisy static road, each with a shadow under it (darker, same hue)."""

    def __init__(self, vehicles: list[tuple[int, int, int, int, int, tuple[int, int, int]]], shadow: int = 8) -> None:
        self.vehicles = vehicles  # (x at frame 0, y, width, height, speed px/frame, colour)
        self.shadow = shadow
        self.background = _background()
        self.rng = np.random.default_rng(1)

    def truth(self, i: int) -> list[Box]:
        boxes = []
        for x, y, w, h, speed, _ in self.vehicles:
            x1, x2 = max(0, x + speed * i), min(W, x + speed * i + w)
            if x1 < x2:
                boxes.append(Box(x1=x1, y1=y, x2=x2, y2=y + h))
        return boxes

    def frame(self, i: int, brighter: float = 0.0) -> np.ndarray:
        img = self.background.copy()
        for (x, y, w, h, speed, colour), box in zip(self.vehicles, self.truth(i)):
            x1, x2 = int(box.x1), int(box.x2)
            img[y + h : y + h + self.shadow, x1:x2] *= 0.6
            img[y : y + h, x1:x2] = colour
        img += self.rng.normal(0, 2, (H, W, 1)).astype(np.float32) + brighter
        return np.clip(img, 0, 255).astype(np.uint8)


# Both enter from the frame's edges, after the road alone was seen for a while (a vehicle seen in the first frames
# is learnt as background: where it was, the road shows as a ghost for a while).
TWO_LANES = [(-200, 100, 80, 30, 6, (220, 200, 60)), (W + 100, 220, 90, 34, -5, (30, 30, 30))]


def test_motion_finds_one_box_per_vehicle_in_full_frame_pixels_without_its_shadow() -> None:
    scene = Rectangles(TWO_LANES)
    finder = MotionFinder()  # 640 px wide: found on a 320 px frame, boxes mapped back
    for i in range(110):
        boxes = finder.find(scene.frame(i))
        if i < 40:  # not yet whole in the frame
            continue
        truth = scene.truth(i)
        assert len(boxes) == len(truth), (i, boxes, truth)
        for expected in truth:
            got = max(boxes, key=expected.iou)
            # One working pixel is two frame pixels: edges agree to that, and the shadow below is not boxed.
            assert abs(got.x1 - expected.x1) <= 3 and abs(got.x2 - expected.x2) <= 3, (i, got, expected)
            assert abs(got.y1 - expected.y1) <= 3 and abs(got.y2 - expected.y2) <= 3, (i, got, expected)
            assert got.score == 1.0 and got.class_id == -1
    assert any(b.x2 > 400 for b in boxes)  # full-frame coordinates, not the 320 px working frame's


def test_motion_reports_nothing_on_a_static_scene_nor_during_warm_up() -> None:
    scene = Rectangles([])
    finder = MotionFinder()
    assert all(finder.find(scene.frame(i)) == [] for i in range(60))
    moving = Rectangles(TWO_LANES)
    finder = MotionFinder(MotionConfig(warm_up=30))
    found = [finder.find(moving.frame(i)) for i in range(34)]
    assert found[:30] == [[]] * 30 and all(found[30:])  # the yellow car entered at frame 20


def test_a_shadow_alone_is_not_motion() -> None:
    scene = Rectangles(TWO_LANES, shadow=20)
    finder = MotionFinder()
    for i in range(60):
        boxes = finder.find(scene.frame(i))
    assert len(boxes) == 2 and all(b.height <= 36 for b in boxes)  # the vehicles (30 and 34 px high), not their shadows


def test_a_change_of_the_whole_picture_is_not_a_vehicle() -> None:
    scene = Rectangles(TWO_LANES)
    finder = MotionFinder()
    for i in range(50):
        finder.find(scene.frame(i))
    assert len(finder.find(scene.frame(50))) == 2 and finder.find(scene.frame(51, brighter=60)) == []  # one region over max_area: light or a shaking camera


def test_motion_at_native_size_and_on_grey_frames() -> None:
    scene = Rectangles(TWO_LANES)
    finder = MotionFinder(MotionConfig(scale_width=1000))  # never upscaled: works on the 640 px frame
    grey = MotionFinder()
    for i in range(60):
        frame = scene.frame(i)
        boxes = finder.find(frame)
        grey_boxes = grey.find(frame.mean(axis=2).astype(np.uint8))
    for expected in scene.truth(59):
        got = max(boxes, key=expected.iou)
        assert np.allclose((got.x1, got.y1, got.x2, got.y2), (expected.x1, expected.y1, expected.x2, expected.y2), atol=1)
    assert len(grey_boxes) == 2
    finder.close()
    with pytest.raises(UsageError, match="closed"):
        finder.find(scene.frame(40))
    with pytest.raises(BadInputError):
        grey.find(np.zeros((4, 4, 4), np.uint8))


def test_colour_tells_a_dark_red_car_from_a_shadow_where_grey_cannot() -> None:
    # Dark red on grey asphalt is darker by the share a shadow darkens (about 0.6): on grey frames MOG2 takes it
    # for a shadow; on colour frames its hue differs from the road's, so it is foreground.
    scene = Rectangles([(-200, 150, 80, 30, 6, (150, 20, 25))], shadow=0)
    colour, grey = MotionFinder(), MotionFinder(MotionConfig(colour=False))
    for i in range(50):
        frame = scene.frame(i)
        found = colour.find(frame), grey.find(frame)
    assert [len(f) for f in found] == [1, 0]  # in whole since frame 34


def _camouflaged(renderer, vehicle) -> bool:  # noqa: ANN001
    """A neutral grey vehicle from half as bright as the road to as bright: a shadow or the road itself to any
    background subtraction (the renderer draws some trucks so)."""
    colour = np.asarray(vehicle.colour)
    road = renderer.background[renderer.lane_edges[vehicle.lane] + 3].mean(axis=0)
    ratio = colour @ (0.299, 0.587, 0.114) / (road @ (0.299, 0.587, 0.114))
    return bool(np.ptp(colour) < 20 and 0.5 <= ratio <= 1.15)


@pytest.mark.parametrize(("width", "height", "fps", "seed"), [(640, 352, 30, 5), (320, 240, 15, 1), (640, 352, 30, 0)],
                         ids=["640x352-4-lanes-each-way", "320x240-2-lanes-each-way", "640x352-3-lanes-each-way"])
def test_motion_on_synthetic_traffic_finds_each_vehicle_once(width: int, height: int, fps: float, seed: int) -> None:
    from toolchain.runtime.scene import SceneRenderer

    renderer = SceneRenderer(width, height, fps, seed=seed)
    finder = MotionFinder()
    whole = once = boxes_seen = joined = 0
    for i in range(160):
        boxes = finder.find(renderer.frame(i))
        if i < 40 or i % 4:
            continue
        truth = [box for _, box in renderer.boxes(i)]
        boxes_seen += len(boxes)
        for vehicle, box in renderer.boxes(i):
            if _camouflaged(renderer, vehicle) or box.x1 <= 0 or box.x2 >= width:
                continue
            whole += 1
            once += sum(b.iou(box) >= 0.5 for b in boxes) == 1
        for b in boxes:
            centre = b.anchor()
            # Every box is on a vehicle (a camouflaged truck's cab and wheels may be found on their own).
            assert any(t.x1 - 4 <= centre[0] <= t.x2 + 4 and t.y1 - 4 <= centre[1] <= t.y2 + 4 for t in truth), (i, b)
            joined += sum(_overlap(b, t) > 0.3 * t.area for t in truth) > 1
    assert whole > 50 and once / whole >= 0.97, (once, whole)
    assert joined <= 0.01 * boxes_seen, (joined, boxes_seen)  # vehicles in adjacent lanes stay apart


def test_vehicles_in_adjacent_lanes_joined_by_h264_blur_are_split_apart(tmp_path: Path) -> None:
    """Once H.264 has blurred the few pixels between vehicles side by side (4 lanes each way, 640x352), MOG2's
    mask joins them; the waist split parts them again. Without it (waist 0) the same frames join many more."""
    import av

    from toolchain.runtime.scene import SceneRenderer

    renderer = SceneRenderer(640, 352, 15, seed=5)
    clip = tmp_path / "road.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 640, 352, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}  # as `synth video` encodes
        for i in range(90):
            frame = av.VideoFrame.from_ndarray(renderer.frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    joined = {0.0: 0, MotionConfig().waist: 0}
    seen = dict.fromkeys(joined, 0)
    for waist in joined:
        finder = MotionFinder(MotionConfig(waist=waist))
        with av.open(str(clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                boxes = finder.find(frame.to_ndarray(format="rgb24"))
                if i < 30:
                    continue
                truth = [box for _, box in renderer.boxes(i)]
                seen[waist] += len(boxes)
                joined[waist] += sum(sum(_overlap(b, t) > 0.3 * t.area for t in truth) > 1 for b in boxes)
    split = MotionConfig().waist
    assert joined[0.0] >= 0.1 * seen[0.0], (joined, seen)  # the merges are there to split
    # What is left joined: mostly a vehicle's box reaching over a neighbour's by a few pixels of blur.
    assert joined[split] * 2 <= joined[0.0] and joined[split] <= 0.1 * seen[split], (joined, seen)


def test_a_region_is_cut_at_a_sparse_broken_waist_and_nowhere_else() -> None:
    region = np.zeros((30, 40), bool)
    region[0:12, 2:38] = True    # a truck in one lane
    region[12:15, 5:7] = region[12:15, 20:22] = True  # the blurred join: specks
    region[15:28, 0:30] = True   # a car beside it
    parts = split_at_waists(region, 100, 50, (0.45, 0.15), 5)
    assert sorted(parts) == [(100, 65, 30, 13, 390), (102, 50, 36, 12, 432)]
    # A vehicle's narrow windscreen is one solid stretch: no waist.
    solid = region.copy()
    solid[12:15] = False
    solid[12:15, 10:22] = True
    assert split_at_waists(solid, 0, 0, (0.45, 0.15), 5) == [(0, 0, 40, 30, int(solid.sum()))]
    # Columns too (lanes side by side across the picture), and never a part thinner than min_part.
    assert len(split_at_waists(region.T.copy(), 0, 0, (0.45, 0.15), 5)) == 2
    assert split_at_waists(region, 0, 0, (0.45, 0.15), 16) == [(0, 0, 40, 30, int(region.sum()))]
    with pytest.raises(UsageError):
        MotionConfig(waist=1.0)


def test_the_finders_labelling_gives_opencvs_default_components() -> None:
    """The finder labels its mask with Grana's algorithm (cheaper with stats); the regions, their numbering and
    their stats are those of OpenCV's default labelling, so the boxes and their order do not change."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    finder = MotionFinder()
    for _ in range(20):
        mask = np.zeros((176, 320), np.uint8)
        for _ in range(rng.integers(1, 25)):  # vehicles, touching and nested, and specks
            x, y = rng.integers(0, 310), rng.integers(0, 170)
            mask[y:y + rng.integers(1, 40), x:x + rng.integers(1, 60)] = 255
        mask[rng.random(mask.shape) < 0.02] = 255
        count, labels, stats, centroids = finder._components(mask)
        default = cv2.connectedComponentsWithStats(mask, connectivity=8)
        assert count == default[0] > 1
        assert np.array_equal(labels, default[1]) and np.array_equal(stats, default[2])


def _overlap(a: Box, b: Box) -> float:
    w, h = min(a.x2, b.x2) - max(a.x1, b.x1), min(a.y2, b.y2) - max(a.y1, b.y1)
    return w * h if w > 0 and h > 0 else 0.0


def test_motion_config_is_checked_and_opencv_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError):
        MotionConfig(min_area=0.5, max_area=0.1)
    with pytest.raises(UsageError):
        MotionConfig(scale_width=4)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(MissingEnvironmentError, match="opencv-python-headless"):
        MotionFinder()


# ---------------------------------------------------------------------------------------- detector


def make_detector(path: Path, outputs: dict[str, np.ndarray], *, input_shape: tuple = (1, 3, 64, 64),
                  uint8: bool = False) -> Path:
    """An ONNX whose outputs are the given constants (plus zero times the input's mean, so the input is used)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    source = "images"
    if uint8:
        nodes.append(helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT))
        source = "as_float"
    nodes += [helper.make_node("ReduceMean", [source], ["mean"], keepdims=0),
              helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    infos = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        if value.dtype == np.float32:
            nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        else:
            nodes.append(helper.make_node("Cast", ["nothing"], [f"{name}_nothing"], to=TensorProto.INT64))
            nodes.append(helper.make_node("Add", [f"{name}_value", f"{name}_nothing"], [name]))
        elem = TensorProto.FLOAT if value.dtype == np.float32 else TensorProto.INT64
        infos.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
    image = helper.make_tensor_value_info("images", TensorProto.UINT8 if uint8 else TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph(nodes, "detector", [image], infos, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


# Rows in input pixels (64x64 input): cx, cy, w, h, then three class scores.
YOLO_ROWS = np.array([
    [20, 30, 10, 8, 0.0, 0.9, 0.0],    # A: class 1
    [21, 30, 10, 8, 0.0, 0.8, 0.0],    # a duplicate of A: suppressed
    [20, 30, 10, 8, 0.0, 0.0, 0.7],    # A's place, class 2: another class, kept
    [40, 40, 8, 8, 0.2, 0.0, 0.0],     # under the confidence threshold
    [50, 40, 8, 8, 0.6, 0.0, 0.0],     # C: class 0
    [30, 5, 10, 4, 0.95, 0.0, 0.0],    # wholly in the letterbox padding: nothing
    *[[0, 0, 0, 0, 0.0, 0.0, 0.0]] * 10,  # anchors that found nothing (a head has more anchors N than 4+C)
], np.float32)
# A 128x64 frame letterboxed into 64x64: scaled by 0.5, 16 px of padding above and below.
EXPECTED = [(1, 0.9, (15, 26, 25, 34)), (2, 0.7, (15, 26, 25, 34)), (0, 0.6, (46, 36, 54, 44))]
FRAME = np.zeros((64, 128, 3), np.uint8)


def _frame_box(x1: float, y1: float, x2: float, y2: float, *, scale: float = 0.5, left: float = 0.0,
               top: float = 16.0) -> tuple[float, ...]:
    return tuple((v - off) / scale for v, off in zip((x1, y1, x2, y2), (left, top, left, top)))


def _expected(rows: list[tuple[int, float, tuple[float, float, float, float]]] = EXPECTED) -> list[tuple]:
    out = []
    for cls, score, (x1, y1, x2, y2) in rows:
        out.append((cls, pytest.approx(score), pytest.approx(_frame_box(x1, y1, x2, y2))))
    return out


def _found(boxes: list[Box]) -> list[tuple]:
    return [(b.class_id, b.score, (b.x1, b.y1, b.x2, b.y2)) for b in boxes]


@pytest.mark.parametrize("transposed", [False, True], ids=["1x(4+C)xN", "1xNx(4+C)"])
def test_yolo_heads_are_decoded_suppressed_and_mapped_back_exactly(tmp_path: Path, transposed: bool) -> None:
    output = YOLO_ROWS[None] if transposed else YOLO_ROWS.T[None].copy()
    path = make_detector(tmp_path / "yolo.onnx", {"output0": output})
    with DetectorFinder(DetectorConfig(path=path)) as finder:
        assert _found(finder.find(FRAME)) == _expected()
    with make_finder(path, classes=(1, 0)) as finder:  # keep classes 0 and 1
        assert _found(finder.find(FRAME)) == _expected([EXPECTED[0], EXPECTED[2]])


def test_plain_resize_maps_back_per_axis(tmp_path: Path) -> None:
    path = make_detector(tmp_path / "yolo.onnx", {"output0": YOLO_ROWS.T[None].copy()})
    with DetectorFinder(DetectorConfig(path=path, letterbox=False)) as finder:
        feed, transform = finder.preprocess(FRAME)
        assert feed.shape == (1, 3, 64, 64) and feed.dtype == np.float32 and transform == (0.5, 1.0, 0.0, 0.0)
        found = _found(finder.find(FRAME))
    assert (1, pytest.approx(0.9), pytest.approx((30, 26, 50, 34))) in found  # x / 0.5, y / 1
    assert len(found) == 4  # nothing is padding now: the row at the top is a box


def test_letterbox_pads_with_grey_and_centres_the_frame(tmp_path: Path) -> None:
    path = make_detector(tmp_path / "yolo.onnx", {"output0": YOLO_ROWS.T[None].copy()})
    frame = np.full((64, 128, 3), 255, np.uint8)
    with DetectorFinder(DetectorConfig(path=path)) as finder:
        feed, transform = finder.preprocess(frame)
        assert transform == (0.5, 0.5, 0.0, 16.0)
        np.testing.assert_allclose(feed[0, :, :16], 114 / 255, rtol=1e-6)
        np.testing.assert_allclose(feed[0, :, 16:48], 1.0, rtol=1e-6)
        np.testing.assert_allclose(feed[0, :, 48:], 114 / 255, rtol=1e-6)
        finder._cv2 = None  # the numpy resize, for units without OpenCV
        feed_numpy, _ = finder.preprocess(frame)
        np.testing.assert_allclose(feed_numpy, feed, atol=1 / 255)


SSD_BOXES = np.array([[[10, 26, 20, 34], [11, 26, 21, 34], [46, 36, 54, 44], [0, 0, 5, 5]]], np.float32)  # input px


def test_ssd_boxes_and_class_scores_normalised(tmp_path: Path) -> None:
    scores = np.array([[[0.1, 0.9, 0.0], [0.0, 0.8, 0.1], [0.6, 0.0, 0.0], [0.1, 0.1, 0.1]]], np.float32)
    path = make_detector(tmp_path / "ssd.onnx", {"boxes": SSD_BOXES / 64, "scores": scores})
    with DetectorFinder(DetectorConfig(path=path)) as finder:
        assert _found(finder.find(FRAME)) == _expected([(1, 0.9, (10, 26, 20, 34)), (0, 0.6, (46, 36, 54, 44))])


def test_ssd_scores_classes_and_count_in_pixels_yxyx(tmp_path: Path) -> None:
    yxyx = SSD_BOXES[..., [1, 0, 3, 2]]
    # TensorFlow's order and names: boxes, classes, scores, num_detections; the last row is padding past the count.
    outputs = {"detection_boxes": yxyx, "detection_classes": np.array([[1, 1, 3, 7]], np.int64),
               "detection_scores": np.array([[0.9, 0.8, 0.6, 0.99]], np.float32),
               "num_detections": np.array([3.0], np.float32)}
    path = make_detector(tmp_path / "tf.onnx", outputs)
    with DetectorFinder(DetectorConfig(path=path, box_order="yxyx", box_units="pixels")) as finder:
        assert _found(finder.find(FRAME)) == _expected([(1, 0.9, (10, 26, 20, 34)), (3, 0.6, (46, 36, 54, 44))])
    with DetectorFinder(DetectorConfig(path=path, box_order="yxyx", classes=(3,))) as finder:  # units: auto
        assert _found(finder.find(FRAME)) == _expected([(3, 0.6, (46, 36, 54, 44))])


def test_ssd_one_class_scores_and_float_classes_told_apart_by_order(tmp_path: Path) -> None:
    two = make_detector(tmp_path / "two.onnx", {"out_a": SSD_BOXES, "out_b": np.array([[0.9, 0.8, 0.3, 0.1]], np.float32)})
    with DetectorFinder(DetectorConfig(path=two)) as finder:
        assert [b.class_id for b in finder.find(FRAME)] == [0, 0]  # one class; the duplicate suppressed
    three = make_detector(tmp_path / "three.onnx", {"b": SSD_BOXES, "s": np.array([[0.9, 0.8, 0.3, 0.1]], np.float32),
                                                    "c": np.array([[2, 2, 5, 5]], np.float32)})
    with DetectorFinder(DetectorConfig(path=three)) as finder:
        assert [(b.class_id, b.score) for b in finder.find(FRAME)] == [(2, pytest.approx(0.9)), (5, pytest.approx(0.3))]


def test_end2end_rows_need_the_layout_named(tmp_path: Path) -> None:
    rows = np.zeros((1, 8, 6), np.float32)  # padded with empty rows, as such exports are
    rows[0, :2] = [[10, 26, 20, 34, 0.9, 2], [46, 36, 54, 44, 0.6, 0]]
    path = make_detector(tmp_path / "e2e.onnx", {"output0": rows})
    with DetectorFinder(DetectorConfig(path=path, layout="end2end")) as finder:
        assert _found(finder.find(FRAME)) == _expected([(2, 0.9, (10, 26, 20, 34)), (0, 0.6, (46, 36, 54, 44))])
    assert plan_layout([rows], ["output0"]) == {"layout": "yolo", "transposed": True}  # what auto would read


@pytest.mark.parametrize("outputs", [
    {"logits": np.zeros((1, 10), np.float32)},                                      # a classifier
    {"output0": np.zeros((1, 3, 8400), np.float32)},                                # 4+C < 5
    {"protos": np.zeros((1, 32, 16, 16), np.float32), "x": np.zeros((1, 8), np.float32)},  # no boxes
    {"boxes": np.zeros((1, 5, 4), np.float32), "scores": np.zeros((1, 6, 3), np.float32)},  # N differs
])
def test_an_unknown_layout_says_which_are_accepted(tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    path = make_detector(tmp_path / "odd.onnx", outputs)
    with DetectorFinder(DetectorConfig(path=path)) as finder, pytest.raises(BadInputError, match="accepted: YOLOv8"):
        finder.find(FRAME)


def test_a_named_layout_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path = make_detector(tmp_path / "yolo.onnx", {"output0": YOLO_ROWS[None]})  # [1, 6, 7]
    for layout in ("ssd", "end2end"):
        with DetectorFinder(DetectorConfig(path=path, layout=layout)) as finder:
            with pytest.raises(BadInputError, match=f"as '{layout}'"):
                finder.find(FRAME)


def test_nhwc_uint8_and_dynamic_inputs(tmp_path: Path) -> None:
    nhwc = make_detector(tmp_path / "nhwc.onnx", {"output0": YOLO_ROWS.T[None].copy()}, input_shape=(1, 32, 64, 3),
                         uint8=True)
    with DetectorFinder(DetectorConfig(path=nhwc)) as finder:
        feed, transform = finder.preprocess(FRAME)  # 128x64 into 64 wide, 32 high: scale 0.5, no padding
        assert feed.shape == (1, 32, 64, 3) and feed.dtype == np.uint8 and transform == (0.5, 0.5, 0.0, 0.0)
        # Nothing is padding: the top row is a box; C falls below the frame (y 72..88 of 64) and is dropped.
        assert [b.class_id for b in finder.find(FRAME)] == [0, 1, 2]
    dynamic = make_detector(tmp_path / "dyn.onnx", {"output0": YOLO_ROWS.T[None].copy()},
                            input_shape=("batch", 3, "height", "width"))
    with DetectorFinder(DetectorConfig(path=dynamic, input_size=96)) as finder:
        assert finder.preprocess(FRAME)[0].shape == (1, 3, 96, 96)


def test_one_runner_serves_several_streams(tmp_path: Path) -> None:
    path = make_detector(tmp_path / "yolo.onnx", {"output0": YOLO_ROWS.T[None].copy()})
    with DetectorRunner(path) as runner:
        finders = [make_finder(DetectorConfig(path=path), runner=runner) for _ in range(2)]
        for finder in finders:
            assert _found(finder.find(FRAME)) == _expected()
            finder.close()
        assert runner.is_active  # the finders did not own it
    with pytest.raises(UsageError, match="activate"):
        DetectorFinder(DetectorConfig(path=path), runner=DetectorRunner(path))


def test_detector_files_and_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        make_finder(tmp_path / "missing.onnx")
    engine = tmp_path / "detector.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MissingEnvironmentError, match="TensorRT engine"):
        make_finder(engine)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BadInputError, match="could not load the detector"):
        make_finder(broken)
    for bad in ({"layout": "yolov5"}, {"confidence": 2.0}, {"device": "npu"}, {"box_order": "xywh"}):
        with pytest.raises(UsageError):
            DetectorConfig(path=broken, **bad)
    assert isinstance(make_finder(), MotionFinder) and isinstance(make_finder(MotionConfig(warm_up=0)), MotionFinder)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [0, 3, 4]  # IoU(0, 4) = 1/3: kept
    assert nms(boxes, scores, 0.45, np.array([0, 0, 1, 0, 0])).tolist() == [0, 2, 3, 4]
    assert nms(boxes, scores, 0.3).tolist() == [0, 3]
    assert nms(boxes, scores, 0.45, limit=2).tolist() == [0, 3]  # max_detections: stops early
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
