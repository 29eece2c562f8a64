"""check_inference: a net's compiled inference program against its layer-by-layer forward."""
import numpy as np


def relative_difference(ours, reference):
    """max |ours - reference| / max(1, max |reference|) (inf where the shapes differ)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        return float("inf")
    if not reference.size:
        return 0.0
    return float(np.abs(ours - reference).max() / max(1.0, np.abs(reference).max()))


def check_inference(net, inputs=None, rtol=1e-4, blob_rtol=1e-3, seed=0):
    """Run `net` forward layer by layer (Net.optimize = False) and as its inference program
    (caffe.net_inference) on the same inputs; return {blob name: relative difference}.

    `inputs` maps input blob names to arrays (default: uniform in [-1, 1) from `seed`).
    Raises AssertionError where the program does not apply to the net, where an output
    differs by more than `rtol`, or any other blob by more than `blob_rtol` (relative to
    max(1, its largest magnitude)). The net's optimize setting is restored.
    """
    from ..net_inference import why_not
    reason = why_not(net, 0, len(net.layers) - 1)
    assert reason is None, f"the inference program does not run this net: {reason}"
    rng = np.random.default_rng(seed)
    if inputs is None:
        inputs = {n: rng.uniform(-1, 1, net.blobs[n].data.shape).astype(np.float32)
                  for n in net.inputs}
    optimize = net.optimize
    try:
        runs = []
        for on in (False, True):
            net.optimize = on
            for name, value in inputs.items():
                net.blobs[name].data[...] = value
            net.forward()
            runs.append({name: blob.data.copy() for name, blob in net.blobs.items()})
    finally:
        net.optimize = optimize
    plain, fast = runs
    diffs = {name: relative_difference(fast[name], plain[name]) for name in plain}
    for name, d in diffs.items():
        limit = rtol if name in net.outputs else blob_rtol
        assert d <= limit, (f"net '{net.name}': blob '{name}' differs by {d:.2e} between "
                            f"the inference program and the layer-by-layer forward "
                            f"(limit {limit:g})")
    return diffs
