"""Test-as-data harness for the codecs: every vector is fed whole, split at
every byte boundary, and in random multi-splits; all must agree."""

import random

from agent.codec import decoder_for


def summarize(frame):
    """What a vector's expectation compares: kind, id, status, metadata, bounds."""
    return {
        "kind": frame.kind,
        "request_id": frame.request_id,
        "status": frame.status,
        "metadata": dict(frame.metadata),
        "offset": frame.offset,
        "length": frame.length,
    }


def decode_chunks(protocol, chunks, **options):
    dec = decoder_for(protocol, **options)
    out = []
    for chunk in chunks:
        out.extend(summarize(f) for f in dec.feed(chunk))
    return out, dec


def splits(data, rounds=20, seed=1234):
    """Whole; every two-way split; random multi-way splits."""
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    rng = random.Random(seed)
    for _ in range(rounds):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8)))) \
            if len(data) > 1 else []
        pieces, last = [], 0
        for c in cuts:
            pieces.append(data[last:c])
            last = c
        pieces.append(data[last:])
        yield pieces


def check_vector(protocol, data, expected=None, max_every_split=65536, **options):
    """Decode data in every split; all results equal (and equal `expected`,
    a list of dicts compared on the keys they name). Returns the frames."""
    whole, dec = decode_chunks(protocol, [data], **options)
    assert dec.buffered == 0 or expected is None or len(expected) == len(whole)
    if expected is not None:
        assert len(whole) == len(expected), (whole, expected)
        for got, want in zip(whole, expected):
            for key, value in want.items():
                if key == "metadata":
                    for mk, mv in value.items():
                        assert got["metadata"].get(mk) == mv, (mk, got["metadata"], value)
                else:
                    assert got[key] == value, (key, got, want)
    if len(data) <= max_every_split:
        for pieces in splits(data):
            got, _ = decode_chunks(protocol, pieces, **options)
            assert got == whole, f"split at {[len(p) for p in pieces]} differs"
    return whole
