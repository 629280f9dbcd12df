"""The datapath API's one error: a bad argument or a datapath that is not there."""


class DatapathError(RuntimeError):
    pass
