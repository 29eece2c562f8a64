"""caffe.proto.text_strings: one UTF-8 check of quoted strings for both prototxt parsers."""
import pytest

from caffe.errors import ProtoError
from caffe.proto import caffe_pb2
from caffe.proto.text_strings import check_text_strings


def _check(text, msg=None):
    check_text_strings(text, msg or caffe_pb2.NetParameter(), "n.prototxt", ProtoError)


def test_invalid_utf8_escapes_are_refused_with_their_line():
    with pytest.raises(ProtoError, match=r"n.prototxt line 3: string \"x\\377\" is not UTF-8"):
        _check('name: "a"\nlayer { name: "b" }\nlayer { name: "x\\377" }\n')
    with pytest.raises(ProtoError, match="line 1"):
        _check("name: 'bad\\xff'")


def test_valid_text_passes():
    _check('name: "caf\\303\\251"  # a comment "\\377" is not a string\n')
    _check('name: "\\303" "\\251"\n')               # adjacent literals are one string
    _check('name: "tab\\t, quote \\" and octal \\101"\n')
    _check("name: 'plain'\n" * 1000)


def test_messages_with_bytes_fields_are_left_to_the_parser():
    _check('data: "\\377"\n', caffe_pb2.Datum())
