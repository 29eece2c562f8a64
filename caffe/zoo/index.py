"""The models `caffe zoo` knows by name: BVLC's reference models and a few popular others.

Each entry is the front matter of a BVLC model folder's readme.md (name, caffemodel,
caffemodel_url, sha1, license, caffe_commit as BVLC published them), plus where the
deploy definition lives (`prototxt_url`) and that file's sha1, measured on the file at the
pinned commit. An entry without a published `sha1` downloads, but is reported unverified.
"""

BVLC_COMMIT = "9b891540183ddc834a02b2bd81b31afae71b2153"   # BVLC/caffe master, frozen
_BVLC_RAW = f"https://raw.githubusercontent.com/BVLC/caffe/{BVLC_COMMIT}/models"
_BVLC_DL = "http://dl.caffe.berkeleyvision.org"


def _bvlc(folder, name, sha1, prototxt_sha1, caffe_commit, license, summary):
    return folder, {
        "name": name,
        "caffemodel": f"{folder}.caffemodel",
        "caffemodel_url": f"{_BVLC_DL}/{folder}.caffemodel",
        "license": license,
        "sha1": sha1,
        "caffe_commit": caffe_commit,
        "prototxt": "deploy.prototxt",
        "prototxt_url": f"{_BVLC_RAW}/{folder}/deploy.prototxt",
        "prototxt_sha1": prototxt_sha1,
        "summary": summary,
    }


MODELS = dict([
    _bvlc("bvlc_reference_caffenet", "BAIR/BVLC CaffeNet Model",
          "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46", "6a40fd8b77233afee8fd525ce59bb4ccaae78d58",
          "709dc15af4a06bebda027c1eb2b3f3e3375d5077", "unrestricted",
          "AlexNet's variant trained on ILSVRC 2012 with pooling before normalization; "
          "57.4% top-1, 80.4% top-5 (centre crop)."),
    _bvlc("bvlc_alexnet", "BAIR/BVLC AlexNet Model",
          "9116a64c0fbe4459d18f4bb6b56d647b63920377", "cb77655eb4db32c9c47699c6050926f9e0fc476a",
          "709dc15af4a06bebda027c1eb2b3f3e3375d5077", "unrestricted",
          "AlexNet as in Krizhevsky et al. 2012, trained on ILSVRC 2012; 57.1% top-1, "
          "80.2% top-5 (centre crop)."),
    _bvlc("bvlc_googlenet", "BAIR/BVLC GoogleNet Model",
          "405fc5acd08a3bb12de8ee5e23a96bec22f08204", "7060345c8012294baa60eeb5901d2d3fd89d75fc",
          "bc614d1bd91896e3faceaf40b23b72dab47d44f5", "unrestricted",
          "GoogLeNet (Szegedy et al. 2014) trained on ILSVRC 2012 with the quick solver; "
          "68.7% top-1, 88.9% top-5 (centre crop)."),
    _bvlc("bvlc_reference_rcnn_ilsvrc13", "BAIR/BVLC Reference RCNN ILSVRC13 Model",
          "bdd8abb885819cba5e2fe1eb36235f2319477e64", "db44bb283fee1fc06c72b788cd86b54a5d94a45f",
          "a7e397abbda52c0b90323c23ab95bdeabee90a98", "unrestricted",
          "R-CNN's ILSVRC 2013 detector with its SVMs as an fc-rcnn layer: 200 scores per "
          "window (see caffe.Detector)."),
    _bvlc("finetune_flickr_style", "Finetuning CaffeNet on Flickr Style",
          "b61b5cef7d771b53b0c488e78d35ccadc073e9cf", "2d688d4bac31f2fa30915dd406f52d3446013982",
          "737ea5e936821b5c69f9c3952d72693ae5843370", "non-commercial",
          "CaffeNet fine-tuned to 20 Flickr photo styles; 39.2% accuracy after 100,000 "
          "iterations."),
    ("resnet_50", {
        "name": "ResNet-50 (Deep Residual Learning for Image Recognition)",
        "caffemodel": "ResNet-50-model.caffemodel",
        "caffemodel_url": "https://deepdetect.com/models/resnet/ResNet-50-model.caffemodel",
        "license": "MIT (see https://github.com/KaimingHe/deep-residual-networks)",
        "sha1": "b7c79ccc21ad0479cddc0dd78b1d20c4d722908d",
        "prototxt": "ResNet-50-deploy.prototxt",
        "prototxt_url": "https://raw.githubusercontent.com/KaimingHe/deep-residual-networks/"
                        "master/prototxt/ResNet-50-deploy.prototxt",
        "summary": "He et al. 2015's 50-layer residual net on ILSVRC 2012 (the authors' "
                   "weights, mirrored by DeepDetect; the authors host them on OneDrive).",
    }),
    ("vgg_ilsvrc_16_layers", {
        "name": "VGG ILSVRC 16 layers (Very Deep Convolutional Networks)",
        "caffemodel": "VGG_ILSVRC_16_layers.caffemodel",
        "caffemodel_url": "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
                          "VGG_ILSVRC_16_layers.caffemodel",
        "license": "see http://www.robots.ox.ac.uk/~vgg/research/very_deep/",
        "gist_id": "211839e770f7b538e2d8",
        "prototxt": "VGG_ILSVRC_16_layers_deploy.prototxt",
        "prototxt_url": "https://gist.githubusercontent.com/ksimonyan/211839e770f7b538e2d8/raw/"
                        "VGG_ILSVRC_16_layers_deploy.prototxt",
        "summary": "Simonyan and Zisserman's configuration D (V1 prototxt, upgraded on "
                   "load); subtract the BGR mean pixel [103.939, 116.779, 123.68].",
    }),
])
