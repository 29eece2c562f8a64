"""Descriptor queries that read the same on every protobuf runtime pycaffe supports (4.25-7.x).

protobuf 5.28 added ``FieldDescriptor.is_repeated``; protobuf 7 removed ``label``.
"""

__all__ = ["is_repeated"]


def is_repeated(field):
    """True for a repeated field, whatever the protobuf release."""
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return flag
    return field.label == field.LABEL_REPEATED
