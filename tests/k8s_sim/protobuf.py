"""Just enough of the API's protobuf encoding to read the one protobuf request kubectl sends
that matters here: a SelfSubjectAccessReview (`kubectl auth can-i`). The envelope is the
magic `k8s\\0` then a `runtime.Unknown` (field 2: the raw object); the object's fields are
read by number from the generated.proto of authorization/v1."""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"
# ResourceAttributes field numbers (k8s.io/api/authorization/v1/generated.proto).
ATTRIBUTES = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes) -> dict[int, list[bytes | int]]:
    """A message's fields by number (varints as int, length-delimited as bytes)."""
    found: dict[int, list[bytes | int]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        found.setdefault(number, []).append(value)
    return found


def _message(parent: dict[int, list[bytes | int]], number: int) -> dict[int, list[bytes | int]]:
    value = (parent.get(number) or [b""])[0]
    return fields(value if isinstance(value, bytes) else b"")


def access_review(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf SelfSubjectAccessReview request."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf object")
    review = _message(fields(body[len(MAGIC) :]), 2)
    attributes = _message(_message(review, 2), 1)
    resource = {
        name: value.decode()
        for number, name in ATTRIBUTES.items()
        if isinstance(value := (attributes.get(number) or [b""])[0], bytes) and value
    }
    return {"spec": {"resourceAttributes": resource}}
