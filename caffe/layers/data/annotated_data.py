"""SSD's AnnotatedData layer: images and their boxes from an LMDB/LevelDB of AnnotatedDatum
records (made by `create_annoset`), with the fork's augmentations.

Per image, in the fork's order: photometric distortion (distort_param), zoom out
(expand_param), a random patch from the batch samplers (annotated_data_param.batch_sampler),
resize (resize_param, WARP), mirror, mean and scale. Boxes follow every geometric step; a
crop keeps the boxes whose centre it contains (emit_constraint CENTER) or that it overlaps
enough (MIN_OVERLAP). The random draws are our own (the fork's RNG is not reproduced).
top[0]: (N, C, H, W); top[1]: (1, 1, B, 8) rows (item, label, instance, xmin, ymin, xmax,
ymax, difficult), or one row of -1 when the batch holds no box.
"""
import numpy as np
import torch

from ...data.db import datum_to_array, open_db
from ...errors import DataError
from ...layer import Layer, register_layer
from ...proto import caffe_pb2

_EMIT = caffe_pb2.EmitConstraint


def _iou(a, b):
    iw = np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])
    ih = np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter, area(a), area(b)


def _satisfies(patch, boxes, c):
    """BatchSampler's constraint: some box meets every bound that is set."""
    if not len(boxes):
        return True
    inter, pa, ba = _iou(patch, boxes)
    tests = {"jaccard_overlap": inter / (pa + ba - inter), "sample_coverage": inter / pa,
             "object_coverage": inter / np.maximum(ba, 1e-12)}
    ok = np.ones(len(boxes), bool)
    for name, value in tests.items():
        if c.HasField(f"min_{name}"):
            ok &= value >= getattr(c, f"min_{name}")
        if c.HasField(f"max_{name}"):
            ok &= value <= getattr(c, f"max_{name}")
    return bool(ok.any())


def _project(boxes, patch, emit):
    """Boxes kept by a crop to `patch` (normalised), in the patch's coordinates; mask."""
    if not len(boxes):
        return boxes, np.zeros(0, bool)
    if emit.emit_type == _EMIT.CENTER:
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        keep = (cx >= patch[0]) & (cx <= patch[2]) & (cy >= patch[1]) & (cy <= patch[3])
    else:
        inter, _, ba = _iou(patch, boxes)
        keep = inter / np.maximum(ba, 1e-12) >= emit.emit_overlap
    w, h = patch[2] - patch[0], patch[3] - patch[1]
    out = (boxes - [patch[0], patch[1], patch[0], patch[1]]) / [w, h, w, h]
    out = np.clip(out, 0, 1)
    keep &= (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out, keep


@register_layer
class AnnotatedDataLayer(Layer):
    """Batches of AnnotatedDatum images and their box rows (see the module docstring)."""

    type = "AnnotatedData"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param
        try:
            self.db = open_db(p.data_param.source, p.data_param.backend)
        except DataError as e:
            self.fail(str(e))
        self.records = None
        self.rng = np.random.default_rng(None if p.phase == caffe_pb2.TRAIN else 0)
        t = p.transform_param
        self.mean = np.array(list(t.mean_value) or [0.0], np.float32)
        if t.HasField("mean_file"):
            self.fail("mean_file is not supported here; give mean_value")
        if t.HasField("resize_param") and t.resize_param.resize_mode != t.resize_param.WARP:
            self.fail("only resize_mode WARP is supported")
        self.forward(bottom, top)    # shapes the tops, as the fork's first prefetch does
        self.records = None

    def reshape(self, bottom, top):
        """Shaped by forward."""

    def allow_force_backward(self, bottom_index):
        return False

    def _next(self):
        for _ in range(2):
            if self.records is None:
                self.records = self.db.cursor()
            record = next(self.records, None)
            if record is not None:
                return record
            self.records = None
        raise DataError(f"layer '{self.name}': database '{self.param.data_param.source}' is empty")

    def _read(self):
        key, value = self._next()
        record = caffe_pb2.AnnotatedDatum()
        record.ParseFromString(value)
        img = datum_to_array(record.datum, key, color=True).astype(np.float32)
        rows = [(g.group_label, a.instance_id, a.bbox.xmin, a.bbox.ymin, a.bbox.xmax,
                 a.bbox.ymax, a.bbox.difficult)
                for g in record.annotation_group for a in g.annotation]
        rows = np.array(rows, np.float64).reshape(-1, 7)
        return img, rows

    def _distort(self, img):
        d, r = self.param.transform_param.distort_param, self.rng
        if r.random() < d.brightness_prob:
            img = img + r.uniform(-d.brightness_delta, d.brightness_delta)
        if r.random() < d.contrast_prob:
            img = img * r.uniform(d.contrast_lower, d.contrast_upper)
        if r.random() < d.saturation_prob:
            grey = img.mean(0, keepdims=True)
            img = grey + (img - grey) * r.uniform(d.saturation_lower, d.saturation_upper)
        if r.random() < d.random_order_prob:
            img = img[r.permutation(img.shape[0])]
        return np.clip(img, 0, 255)

    def _expand(self, img, rows):
        e = self.param.transform_param.expand_param
        if self.rng.random() >= e.prob or e.max_expand_ratio <= 1:
            return img, rows
        ratio = self.rng.uniform(1, e.max_expand_ratio)
        c, h, w = img.shape
        H, W = int(h * ratio), int(w * ratio)
        top, left = int(self.rng.uniform(0, H - h)), int(self.rng.uniform(0, W - w))
        canvas = np.empty((c, H, W), np.float32)
        canvas[...] = self.mean.reshape(-1, 1, 1) if self.mean.size == c else self.mean[0]
        canvas[:, top:top + h, left:left + w] = img
        rows = rows.copy()
        rows[:, 2:6] = (rows[:, 2:6] * [w, h, w, h] + [left, top, left, top]) / [W, H, W, H]
        return canvas, rows

    def _sample(self, rows):
        """A patch (normalised box) from the batch samplers, or None."""
        found = []
        for s in self.param.annotated_data_param.batch_sampler:
            if s.use_original_image is False:
                continue
            got = 0
            for _ in range(s.max_trials):
                if s.HasField("max_sample") and got >= s.max_sample:
                    break
                m = s.sampler
                scale = self.rng.uniform(m.min_scale, m.max_scale)
                ratio = self.rng.uniform(max(m.min_aspect_ratio, scale ** 2),
                                         min(m.max_aspect_ratio, 1 / scale ** 2))
                w, h = scale * np.sqrt(ratio), scale / np.sqrt(ratio)
                x, y = self.rng.uniform(0, 1 - w), self.rng.uniform(0, 1 - h)
                patch = np.array([x, y, x + w, y + h])
                if _satisfies(patch, rows[:, 2:6], s.sample_constraint):
                    found.append(patch)
                    got += 1
        return found[self.rng.integers(len(found))] if found else None

    def _crop(self, img, rows, patch):
        _, h, w = img.shape
        x0, y0 = int(patch[0] * w), int(patch[1] * h)
        x1, y1 = max(int(patch[2] * w), x0 + 1), max(int(patch[3] * h), y0 + 1)
        boxes, keep = _project(rows[:, 2:6], patch, self.param.transform_param.emit_constraint)
        rows = np.concatenate([rows[:, :2], boxes, rows[:, 6:]], 1)[keep]
        return img[:, y0:y1, x0:x1], rows

    def _resize(self, img):
        r = self.param.transform_param.resize_param
        if not self.param.transform_param.HasField("resize_param") or \
                (img.shape[1], img.shape[2]) == (r.height, r.width):
            return img
        x = torch.from_numpy(np.ascontiguousarray(img))[None]
        x = torch.nn.functional.interpolate(x, size=(r.height, r.width), mode="bilinear",
                                            align_corners=False)
        return x[0].numpy()

    def _one(self):
        t, train = self.param.transform_param, self.phase == caffe_pb2.TRAIN
        img, rows = self._read()
        if train and t.HasField("distort_param"):
            img = self._distort(img)
        if train and t.HasField("expand_param"):
            img, rows = self._expand(img, rows)
        if train and len(self.param.annotated_data_param.batch_sampler):
            patch = self._sample(rows)
            if patch is not None:
                img, rows = self._crop(img, rows, patch)
        img = self._resize(img)
        if t.mirror and self.rng.integers(2):
            img = img[:, :, ::-1]
            rows = rows.copy()
            rows[:, [2, 4]] = 1 - rows[:, [4, 2]]
        mean = self.mean.reshape(-1, 1, 1) if self.mean.size == img.shape[0] else self.mean[0]
        return (img - mean) * t.scale, rows

    def forward(self, bottom, top):
        n = self.param.data_param.batch_size
        images, labels = [], []
        for item in range(n):
            img, rows = self._one()
            images.append(img)
            labels += [[item, *r[:2], *r[2:6], r[6]] for r in rows.tolist()]
        if len({i.shape for i in images}) > 1:
            raise DataError(f"layer '{self.name}': images of different sizes "
                            f"{sorted({i.shape for i in images})}; set resize_param")
        data = np.stack(images)
        top[0].reshape(data.shape)
        top[0].data[...] = torch.from_numpy(data).to(top[0].dtype)
        if len(top) > 1:
            label = np.array(labels or [[-1] * 8], np.float32).reshape(1, 1, -1, 8)
            top[1].reshape(label.shape)
            top[1].data[...] = torch.from_numpy(label).to(top[1].dtype)
