"""An LRCN-style image captioner: CNN image features, Embed + LSTM, greedy decoding.

    python examples/lrcn_captioner/captioner.py [--iters 1500] [--out lrcn_out]

LRCN (Donahue et al., Caffe's recurrent branch) feeds a CNN's image features to an LSTM
as its static input, beside the embedded previous word, and predicts the next word. Here
the images are 24 x 24 scenes of one or two coloured shapes, captioned left to right ("a
red square and a blue disc"), the CNN is small and learned end to end with the LSTM, and
the word ids go in and out in Caffe's time-major T x N layout: input_sentence starts with
<BOS>, target_sentence ends with <EOS> and is -1 (ignore_label) after it, cont_sentence is
0 at the first step. Decoding is greedy: start from <BOS>, take the most likely word, feed
it back, until <EOS>. Exact-match caption accuracy on new scenes is printed with examples.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402
from training import make_solver  # noqa: E402

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.1, 0.2, 0.9)}
SHAPES = ("square", "disc")
VOCAB = ["<EOS>", "a", "and"] + list(COLOURS) + list(SHAPES)     # <EOS> doubles as <BOS>
WORD = {w: i for i, w in enumerate(VOCAB)}
STEPS = 8                                                          # longest caption + <EOS>
SOLVER = ('type: "Adam" base_lr: 0.005 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed" '
          'clip_gradients: 5 display: 100 random_seed: 1701')


def scenes(n, seed=0, size=24):
    """(images N x 3 x size x size, captions as word lists)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.full((n, 3, size, size), 0.5, np.float32)
    captions = []
    for i in range(n):
        words = []
        for slot in range(rng.integers(1, 3)):
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            cx, cy, r = size // 4 + slot * size // 2 + rng.integers(-1, 2), \
                rng.integers(7, size - 7), rng.integers(3, 5)
            mask = ((abs(xx - cx) <= r) & (abs(yy - cy) <= r)) if shape == "square" else \
                ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
            images[i][:, mask] = np.array(COLOURS[colour], np.float32)[::-1, None]  # BGR
            words += (["and"] if slot else []) + ["a", colour, shape]
        captions.append(words)
    images += rng.normal(0, 0.03, images.shape).astype(np.float32)
    return images, captions


def sentences(captions):
    """input_sentence, cont_sentence, target_sentence: T x N each."""
    n = len(captions)
    inputs, targets = np.zeros((STEPS, n), np.float32), np.full((STEPS, n), -1, np.float32)
    cont = np.ones((STEPS, n), np.float32)
    cont[0] = 0
    for j, words in enumerate(captions):
        ids = [WORD[w] for w in words] + [WORD["<EOS>"]]
        targets[:len(ids), j] = ids
        inputs[1:len(ids), j] = ids[:-1]                       # step 0 reads <BOS> (= 0)
    return inputs, cont, targets


def lrcn(batch):
    n = caffe.NetSpec()
    n.image = L.Input(shape=dict(dim=[batch, 3, 24, 24]))
    n.input_sentence = L.Input(shape=dict(dim=[STEPS, batch]))
    n.cont_sentence = L.Input(shape=dict(dim=[STEPS, batch]))
    n.target_sentence = L.Input(shape=dict(dim=[STEPS, batch]))
    n.conv1 = L.Convolution(n.image, num_output=16, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=32, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"))
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc_image = L.InnerProduct(n.pool2, num_output=64, weight_filler=dict(type="xavier"))
    n.image_features = L.ReLU(n.fc_image)
    n.embedded_input = L.Embed(n.input_sentence, input_dim=len(VOCAB), num_output=32,
                               weight_filler=dict(type="uniform", min=-0.08, max=0.08))
    n.lstm = L.LSTM(n.embedded_input, n.cont_sentence, n.image_features,
                    recurrent_param=dict(num_output=96, weight_filler=dict(
                        type="uniform", min=-0.08, max=0.08), bias_filler=dict(type="constant")))
    n.predict = L.InnerProduct(n.lstm, num_output=len(VOCAB), axis=2,
                               weight_filler=dict(type="uniform", min=-0.08, max=0.08))
    n.loss = L.SoftmaxWithLoss(n.predict, n.target_sentence,
                               loss_param=dict(ignore_label=-1), softmax_param=dict(axis=2))
    n.probs = L.Softmax(n.predict, axis=2)
    return n.to_proto()


def greedy_captions(net, images):
    """Decode each image's caption word by word from <BOS>; returns word lists."""
    batch = net.blobs["image"].data.shape[0]
    result = []
    for start in range(0, len(images), batch):
        k = min(batch, len(images) - start)
        net.blobs["image"].data[:k] = images[start:start + k]
        words = np.zeros((STEPS, batch), np.float32)
        cont = np.ones((STEPS, batch), np.float32)
        cont[0] = 0
        done = np.zeros(batch, bool)
        for t in range(STEPS):
            net.blobs["input_sentence"].data[...] = words
            net.blobs["cont_sentence"].data[...] = cont
            net.forward()
            best = net.blobs["probs"].data[t].argmax(axis=1)
            done |= best == WORD["<EOS>"]
            if t + 1 < STEPS:
                words[t + 1] = np.where(done, 0, best)
            if done.all():
                break
        for j in range(k):
            ids = [int(w) for w in words[1:, j]]
            caption = []
            for i in ids:
                if i == WORD["<EOS>"]:
                    break
                caption.append(VOCAB[i])
            result.append(caption)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--out", default="lrcn_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = lrcn(args.batch)
    (out / "lrcn_train.prototxt").write_text(str(net))
    solver = make_solver(net, SOLVER, args.iters)
    counter = {"i": 0}

    def new_batch():
        counter["i"] += 1
        images, captions = scenes(args.batch, seed=1000 + counter["i"])
        inputs, cont, targets = sentences(captions)
        for name, value in (("image", images), ("input_sentence", inputs),
                            ("cont_sentence", cont), ("target_sentence", targets)):
            solver.net.blobs[name].data[...] = value
    solver.add_callback(new_batch, None)
    solver.solve()
    decoder = caffe.Net(net, caffe.TEST)
    decoder.share_with(solver.net)
    images, truth = scenes(args.test, seed=7)
    decoded = greedy_captions(decoder, images)
    exact = np.mean([d == t for d, t in zip(decoded, truth)])
    print(f"Greedy decoding, {args.test} new scenes after {args.iters} iterations: "
          f"{exact:.3f} of the captions exactly right")
    for d, t in list(zip(decoded, truth))[:4]:
        print(f"  decoded: {' '.join(d) or '(empty)':<32} truth: {' '.join(t)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
