"""Hand-written PyTorch eager equivalents of the benchmarked Caffe nets.

Plain, idiomatic torch.nn code: the layers each Caffe prototxt lists, in the same order, with
Caffe's pooling arithmetic (ceil_mode=True: Caffe rounds the pooled size up) and LRN settings.
Modules are registered in the prototxt's order so that `copy_weights` can pair each learned
Caffe layer with its module by position; the benchmark copies our weights in and checks that
both sides compute the same outputs, so the timings compare the same work.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.ip1 = nn.Linear(800, 500)
        self.relu1 = nn.ReLU(inplace=True)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x):
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.ip2(self.relu1(self.ip1(torch.flatten(x, 1))))


class Cifar10Quick(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
            nn.AvgPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
            nn.AvgPool2d(3, 2, ceil_mode=True))
        self.classifier = nn.Sequential(nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class CaffeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True))
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def conv_relu(cin, cout, kernel, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, **kw), nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.b1 = conv_relu(cin, c1, 1)
        self.b3 = nn.Sequential(conv_relu(cin, c3r, 1), conv_relu(c3r, c3, 3, padding=1))
        self.b5 = nn.Sequential(conv_relu(cin, c5r, 1), conv_relu(c5r, c5, 5, padding=2))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv_relu(cin, cp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            conv_relu(3, 64, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.LocalResponseNorm(5, 1e-4, 0.75),
            conv_relu(64, 64, 1), conv_relu(64, 192, 3, padding=1),
            nn.LocalResponseNorm(5, 1e-4, 0.75), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.blocks = nn.Sequential(
            Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
            Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
            Inception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
            Inception(832, 256, 160, 320, 32, 128, 128),
            Inception(832, 384, 192, 384, 48, 128, 128))
        self.head = nn.Sequential(nn.AvgPool2d(7, 1), nn.Dropout(0.4), nn.Flatten(),
                                  nn.Linear(1024, 1000))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class Bottleneck(nn.Module):
    """MSRA's ResNet block as in the Caffe release: the stride sits on the first 1x1."""

    def __init__(self, cin, mid, cout, stride):
        super().__init__()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.conv1 = nn.Conv2d(cin, mid, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True))
        blocks, cin = [], 64
        for mid, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, mid, mid * 4, stride if i == 0 else 1))
                cin = mid * 4
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(7, 1)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


MODELS = {"lenet": LeNet, "cifar10_quick": Cifar10Quick, "caffenet": CaffeNet,
          "googlenet": GoogLeNet, "resnet50": ResNet50}


def learned_modules(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]


@torch.no_grad()
def copy_weights(net, model):
    """Copy a caffe.Net's learned blobs into `model`, pairing layers and modules by order.

    A Caffe BatchNorm (mean sum, variance sum, factor) followed by its Scale (gamma, beta)
    fills one nn.BatchNorm2d. Returns, per torch parameter, the Caffe (lr_mult, decay_mult)
    so that the optimizer can use the same per-parameter settings as the Caffe solver.
    """
    layers = [(i, layer) for i, layer in enumerate(net._layers) if layer.blobs]
    modules = learned_modules(model)
    settings = {}

    def mults(i, j):
        pid = net.learnable_param_ids[net.param_id_vecs[i][j]]
        return net.params_lr[pid], net.params_weight_decay[pid]

    k = 0
    for module in modules:
        i, layer = layers[k]
        blobs = [b.data for b in layer.blobs]
        if isinstance(module, nn.BatchNorm2d):
            factor = float(blobs[2].reshape(-1)[0])
            factor = 0.0 if factor == 0 else 1.0 / factor
            module.running_mean.copy_(blobs[0].reshape(-1) * factor)
            module.running_var.copy_(blobs[1].reshape(-1) * factor)
            module.eps = layer.param.batch_norm_param.eps
            module.momentum = 1 - layer.param.batch_norm_param.moving_average_fraction
            k += 1
            i, layer = layers[k]
            if layer.type != "Scale":
                raise ValueError(f"BatchNorm without Scale at {net._layer_names[i]}")
        targets = [module.weight] + ([module.bias] if module.bias is not None else [])
        if len(targets) != len(layer.blobs):
            raise ValueError(f"{net._layer_names[i]}: {len(layer.blobs)} blobs, module "
                             f"{module} has {len(targets)} parameters")
        for j, (target, blob) in enumerate(zip(targets, layer.blobs)):
            if target.numel() != blob.count():
                raise ValueError(f"{net._layer_names[i]} blob {j}: {blob.shape} vs "
                                 f"{tuple(target.shape)} in {module}")
            target.copy_(blob.data.reshape(target.shape))
            settings[target] = mults(i, j)
        k += 1
    if k != len(layers):
        raise ValueError(f"{len(layers) - k} learned Caffe layers left without a module")
    return settings


def sgd(model, settings, base_lr, momentum, weight_decay):
    """torch.optim.SGD with one group per Caffe (lr_mult, decay_mult): Caffe's
    v = m v + lr (g + wd w); w -= v equals torch's b = m b + g + wd w; w -= lr b at fixed lr."""
    groups = {}
    for p in model.parameters():
        lr_mult, decay_mult = settings.get(p, (1.0, 1.0))
        groups.setdefault((lr_mult, decay_mult), []).append(p)
    return torch.optim.SGD([{"params": ps, "lr": base_lr * lr, "weight_decay": weight_decay * d}
                            for (lr, d), ps in groups.items()], lr=base_lr, momentum=momentum)


def softmax(x):
    return F.softmax(x, 1)
