"""The Centrifuge protocol's protobuf codec (:data:`PROTOBUF`).

``client.proto`` is centrifugal/protocol's, unchanged; ``client_pb2.py`` and its
``.pyi`` are generated from it by ``scripts/gen-protobuf`` (grpcio-tools' protoc) and
run on the ``protobuf`` package's runtime. Never edit them by hand.
"""

from __future__ import annotations

from .codec import PROTOBUF, ProtobufCodec

__all__ = ["PROTOBUF", "ProtobufCodec"]
