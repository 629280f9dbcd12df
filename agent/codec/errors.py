"""One exception per nm_status code of native/codec.h."""


class CodecError(Exception):
    """A frame the codec refuses; the connection it came from is done."""

    status = -1

    def __init__(self, reason: str, offset: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class ProtocolError(CodecError):
    status = -1


class FrameTooLarge(CodecError):
    status = -2


class TooManyHeaders(CodecError):
    status = -3


class TooDeep(CodecError):
    status = -4


class TooManyElements(CodecError):
    status = -5


class Unsupported(CodecError):
    status = -6


class SmugglingError(ProtocolError):
    status = -7


class RequestIdNotRewritable(CodecError):
    status = -10


BY_STATUS = {cls.status: cls for cls in (
    ProtocolError, FrameTooLarge, TooManyHeaders, TooDeep, TooManyElements,
    Unsupported, SmugglingError, RequestIdNotRewritable)}


def error_for(status: int, reason: str, offset: int = 0) -> CodecError:
    return BY_STATUS.get(status, CodecError)(reason, offset)
