"""The permutohedral lattice (Adams, Baek and Davis 2010) as Krähenbühl's dense CRF code builds
it (PSPNet / DeepLab's caffe/util/permutohedral.cpp): Gaussian filtering of N values over
d-dimensional features in O(N d^2), by splatting onto the lattice's vertices, blurring along
its d + 1 axes with [1/2, 1, 1/2] and slicing back. float32 and the fork's order of operations
throughout, so that results agree with the fork's to rounding.
"""
import numpy as np

F32 = np.float32


class Permutohedral:
    """lattice = Permutohedral(features); lattice.compute(values) -> filtered values.

    features: (N, d) float32; values: (N, V) float32.
    """

    def __init__(self, features):
        f = np.ascontiguousarray(features, F32)
        self.n, d = f.shape
        self.d = d
        # The fork's SSE code elevates points four at a time, the last block padded with
        # zero features, and those points' vertices join the lattice (and the blur).
        f = np.concatenate([f, np.zeros(((-self.n) % 4, d), F32)])
        n = len(f)
        # In double, then rounded to float, as the fork's SSE code computes them.
        inv_std = float(F32(np.sqrt(2.0 / 3.0) * (d + 1)))
        scale = np.array([1.0 / np.sqrt((i + 2) * (i + 1)) * inv_std for i in range(d)], F32)
        # Elevate onto the hyperplane (y = E p, Adams et al. p. 5)
        elevated = np.empty((n, d + 1), F32)
        sm = np.zeros(n, F32)
        for j in range(d, 0, -1):
            cf = f[:, j - 1] * scale[j - 1]
            elevated[:, j] = sm - F32(j) * cf
            sm = sm + cf
        elevated[:, 0] = sm
        # The closest remainder-0 point, by rounding to nearest (even, as SSE does)
        inv = F32(1) / F32(d + 1)
        v = np.rint(inv * elevated).astype(F32)
        rem0 = v * F32(d + 1)
        total = v.sum(axis=1, dtype=F32)
        # The simplex: rank of each coordinate's distance to its remainder-0 point
        rank = np.zeros((n, d + 1), F32)
        diff = elevated - rem0
        for i in range(d):
            for j in range(i + 1, d + 1):
                c = (diff[:, i] < diff[:, j]).astype(F32)
                rank[:, i] += c
                rank[:, j] += F32(1) - c
        rank += total[:, None]
        add = np.where(rank < 0, F32(d + 1), F32(0))
        sub = np.where(rank >= d + 1, F32(d + 1), F32(0))
        rank += add - sub
        rem0 += add - sub
        # Barycentric coordinates (p. 10)
        bary = np.zeros((n, d + 2), F32)
        rows = np.arange(n)
        for i in range(d + 1):
            w = (elevated[:, i] - rem0[:, i]) * inv
            p = d - rank[:, i].astype(np.int64)
            np.add.at(bary, (rows, p), w)
            np.subtract.at(bary, (rows, p + 1), w)
        bary[:, 0] += F32(1) + bary[:, d + 1]
        # The simplex's d + 1 vertices: keys (first d coordinates) and weights
        canonical = np.array([[r if j <= d - r else r - (d + 1) for j in range(d + 1)]
                              for r in range(d + 1)], np.int64)
        ranks = rank.astype(np.int64)[:, :d]
        keys = rem0.astype(np.int64)[:, None, :d] + canonical[:, ranks].transpose(1, 0, 2)
        self.weights = bary[:self.n, :d + 1]                 # (N, d + 1)
        flat, offsets = self._index(keys.reshape(-1, d))
        self.offsets = offsets.reshape(n, d + 1)[:self.n]
        self.m = len(flat)
        # Blur neighbours along each axis j: key - 1 everywhere but key_j + d (and + 1 /
        # key_j - d); for j = d only the +-1 shifts. -1 when absent.
        self.neighbours = []
        for j in range(d + 1):
            n1, n2 = flat - 1, flat + 1
            if j < d:
                n1[:, j] = flat[:, j] + d
                n2[:, j] = flat[:, j] - d
            self.neighbours.append((self._find(n1), self._find(n2)))

    def _index(self, keys):
        """Unique keys in order of first appearance, and each key's index."""
        self._lo = keys.min(axis=0) - d_pad(self.d)
        self._radix = keys.max(axis=0) + d_pad(self.d) - self._lo + 1
        codes = self._code(keys)
        uniq, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")        # lattice ids by first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self._codes, self._ids = uniq, rank
        return keys[first[order]], rank[inverse.reshape(-1)]

    def _code(self, keys):
        code = np.zeros(len(keys), np.int64)
        for k in range(keys.shape[1]):
            code = code * self._radix[k] + (keys[:, k] - self._lo[k])
        return code

    def _find(self, keys):
        inside = np.all((keys >= self._lo) & (keys < self._lo + self._radix), axis=1)
        codes = self._code(np.where(inside[:, None], keys, self._lo))
        pos = np.searchsorted(self._codes, codes).clip(0, len(self._codes) - 1)
        found = inside & (self._codes[pos] == codes)
        return np.where(found, self._ids[pos], -1)

    def compute(self, values, reverse=False):
        """The filtered (N, V) values; reverse blurs the axes in the opposite order, which
        makes it the transpose (CRF-RNN's backward). float64 values are filtered in float64
        (for gradient checks), anything else in float32 as the fork."""
        dtype = np.float64 if np.asarray(values).dtype == np.float64 else F32
        values = np.ascontiguousarray(values, dtype)
        weights = self.weights.astype(dtype)
        v = values.shape[1]
        lattice = np.zeros((self.m + 2, v), dtype)    # row 0: the absent neighbour
        for j in range(self.d + 1):                  # splat, in the fork's order per vertex
            np.add.at(lattice, self.offsets[:, j] + 1, weights[:, j, None] * values)
        half = dtype(0.5)
        for n1, n2 in (self.neighbours[::-1] if reverse else self.neighbours):   # blur
            new = lattice.copy()
            new[1:self.m + 1] = lattice[1:self.m + 1] + half * (lattice[n1 + 1] + lattice[n2 + 1])
            lattice = new
        alpha = F32(1) / (F32(1) + F32(2) ** F32(-self.d))
        out = np.zeros((self.n, v), dtype)
        for j in range(self.d + 1):                  # slice
            out += (weights[:, j, None] * dtype(alpha)) * lattice[self.offsets[:, j] + 1]
        return out


def d_pad(d):
    """Room around the keys' range for the neighbours' shifts (+-d)."""
    return d + 1
