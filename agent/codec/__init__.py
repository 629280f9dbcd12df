"""The Python face of the C codecs (native/): ``decoder_for(protocol, **options)``.

A decoder is fed bytes as they arrive and returns the frames completed so
far. It keeps only the unconsumed tail of the stream; frames carry their
offset in the stream, their kind, request id, status and metadata (a dict of
str, decoded with the frame on request decoders and on first access on
response decoders). Frames are built in C (agent.codec._frames, calling the
codecs through the cffi module); ``ACCELERATED`` is False when that extension
was not built and the pure-Python reader (agent.codec.pyframes) is in use.
"""

from .errors import (  # noqa: F401  (the public exception tree)
    CodecError,
    FrameTooLarge,
    ProtocolError,
    RequestIdNotRewritable,
    SmugglingError,
    TooDeep,
    TooManyElements,
    TooManyHeaders,
    Unsupported,
)
from .decoder import (  # noqa: F401
    ACCELERATED, PROTOCOLS, REPLY_REASONS, Decoder, Frame, decoder_for, limits)
