"""ggml tensor types: how many bytes a row of each type takes, as llama.cpp lays them out.

Vendored from `gguf.constants.GGML_QUANT_SIZES` (gguf 0.19.0, llama.cpp's own Python package, MIT), which
mirrors `ggml_type_traits` in ggml/src/ggml.c: `{type id: (elements per block, bytes per block)}`. Kept
here so reading a header needs no numpy.
"""

from __future__ import annotations

GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20), 6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 40), 10: ("q2_k", 256, 84), 11: ("q3_k", 256, 110),
    12: ("q4_k", 256, 144), 13: ("q5_k", 256, 176), 14: ("q6_k", 256, 210), 15: ("q8_k", 256, 292),
    16: ("iq2_xxs", 256, 66), 17: ("iq2_xs", 256, 74), 18: ("iq3_xxs", 256, 98), 19: ("iq1_s", 256, 50),
    20: ("iq4_nl", 32, 18), 21: ("iq3_s", 256, 110), 22: ("iq2_s", 256, 82), 23: ("iq4_xs", 256, 136),
    24: ("i8", 1, 1), 25: ("i16", 1, 2), 26: ("i32", 1, 4), 27: ("i64", 1, 8), 28: ("f64", 1, 8),
    29: ("iq1_m", 256, 56), 30: ("bf16", 1, 2), 34: ("tq1_0", 256, 54), 35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17), 40: ("nvfp4", 64, 36), 41: ("q1_0", 128, 18),
}  # fmt: skip

BY_NAME: dict[str, int] = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}


def row_size(type_id: int, elements: int) -> int:
    """Bytes of `elements` values of one type (`ggml_row_size`): whole blocks of the type."""
    _, block, size = GGML_TYPES[type_id]
    return elements // block * size
