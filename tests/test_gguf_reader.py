"""llmret's bulk GGUF metadata reader against gguf's own reader, on files gguf's own writer makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from llmret.models.gguf import _bulk_reader, one_parse_per_file  # noqa: E402


def write_file(path: Path, endianess: gguf.GGUFEndian, nested: bool = True) -> Path:
    """A small GGUF file with every kind of metadata array the bulk path reads, and (``nested``) one it
    leaves to gguf's own walk, which transformers cannot read."""
    writer = gguf.GGUFWriter(path, arch="llama", endianess=endianess)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "", "héllo", "▁wörld", "🙂", "a" * 300])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 3.0, -0.125, 7.0])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1, 6, 1])
    writer.add_array("test.bools", [True, False, True])
    if nested:
        writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_string("general.name", "tiny")
    writer.add_uint32("llama.block_count", 2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_bulk_reader_makes_the_same_fields_as_gguf_reader(tmp_path, endianess) -> None:
    path = write_file(tmp_path / "tiny.gguf", endianess)
    expected, got = gguf.GGUFReader(path), _bulk_reader()(path)
    assert list(got.fields) == list(expected.fields)
    for name, field in expected.fields.items():
        mine = got.fields[name]
        assert (mine.offset, mine.data, mine.types) == (field.offset, field.data, field.types), name
        assert len(mine.parts) == len(field.parts), name
        for ours, theirs in zip(mine.parts, field.parts):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    assert got.fields["tokenizer.ggml.tokens"].contents()[3] == "▁wörld"
    assert got.fields["tokenizer.ggml.scores"].contents() == [0.0, -1.5, 2.25, 3.0, -0.125, 7.0]
    np.testing.assert_array_equal(got.tensors[0].data, expected.tensors[0].data)


def test_a_string_array_that_runs_past_the_end_is_refused(tmp_path) -> None:
    path = write_file(tmp_path / "tiny.gguf", gguf.GGUFEndian.LITTLE)
    data = bytearray(path.read_bytes())
    at = data.index(b"a" * 300) - 8  # the last token's length: make it point past the end of the file
    data[at:at + 8] = (len(data) * 2).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="tiny.gguf: the GGUF string array at byte .* runs past the end of the file"):
        _bulk_reader()(path)


def test_inside_the_context_transformers_metadata_is_parsed_once_and_each_caller_owns_its_copy(tmp_path) -> None:
    from transformers import modeling_gguf_pytorch_utils as loader

    path = write_file(tmp_path / "tiny.gguf", gguf.GGUFEndian.LITTLE, nested=False)
    reference = loader.load_gguf_checkpoint(path, return_tensors=False)
    with one_parse_per_file():
        assert gguf.GGUFReader(path) is gguf.GGUFReader(str(path))
        first = loader.load_gguf_checkpoint(path, return_tensors=False)
        first["tokenizer"]["tokens"].append("changed by the caller")
        second = loader.load_gguf_checkpoint(path, return_tensors=False)
    assert first["tokenizer"]["tokens"][:-1] == second["tokenizer"]["tokens"] == reference["tokenizer"]["tokens"]
    assert second == reference
    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader  # all restored on leaving
    assert loader.load_gguf_checkpoint.__module__ == loader.__name__
