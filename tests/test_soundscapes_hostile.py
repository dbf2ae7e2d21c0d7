"""Hostile input to ``avtag soundscapes``: a crafted corpus manifest, corpus audio, sounds folder or option values
gets one line naming the file (and line) and the problem, never a traceback or a silently wrong result."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag import AvtagError
from avtag.data.corpus import CorpusError
from avtag.data.corpus.mixing import generate_corpus_soundscapes, load_items, split_groups
from avtag.data.corpus.vocabulary import VocabularyV2, read_corpus
from avtag.data.mixdown import event_stem
from avtag.data.recordings import RecordingsError, read_recordings
from avtag.data.soundscapes import PlacedEvent, SoundscapeConfig, SoundscapeError

SR = 16000
COLUMNS = "filename,label,audioset_label,duration_s,licence,source\n"


def _tone(i: int, channels: int = 1) -> np.ndarray:
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * (300 + 50 * i) * t) * np.exp(-t / 0.5)).astype(np.float32)
    return x if channels == 1 else np.stack([x, -0.5 * x], axis=1)


def _record(i: int, **change) -> dict:
    """A manifest record as ``avtag corpus build`` writes it: one 1 s Bark recording of its own group."""
    return {"id": f"id{i:04d}", "file": f"audio/p/id{i:04d}.flac", "package": "p", "registry": "npm", "version": "1",
            "path": f"s/{i}.wav", "classes": ["Bark"], "labels": ["Bark", "Dog", "Domestic animals, pets", "Animal"],
            "group": f"g{i}", "licence": "CC0-1.0", "licence_source": "x", "licence_kind": "public-domain",
            "share_alike": False, "training": True, "background": False, "constructed": False, "construction": None,
            "components": [], "component_groups": [], "duration_s": 1.0, "rms_dbfs": -10.0, "peak_dbfs": -3.0,
            "source_rate": SR, "channels": 1, "codec": "flac", "rule": 1, **change}


def _corpus(root: Path, records: list | None = None, n: int = 8) -> Path:
    """A corpus folder of ``n`` real FLAC recordings and a manifest of ``records`` (default: one per file)."""
    (root / "audio" / "p").mkdir(parents=True)
    for i in range(n):
        sf.write(root / "audio" / "p" / f"id{i:04d}.flac", _tone(i), SR, subtype="PCM_16")
    records = [_record(i) for i in range(n)] if records is None else records
    (root / "manifest.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return root


def _mix(corpus: Path, out: Path):
    cfg = replace(SoundscapeConfig(), min_recordings=2, test_fraction=0.2, lowpass_probability=0.0,
                  codec_probability=0.0, bed_probability=0.0)
    return generate_corpus_soundscapes(out, corpus, None, n_train=3, n_validation=2, n_test=2, seed=0, config=cfg)


@pytest.mark.parametrize("change, problem", [
    ({"labels": [5, 6]}, r"labels \[5, 6\] is not a list of names"),  # TypeError after the audio was written
    ({"labels": ["Bark", 5]}, r"labels \[\"Bark\", 5\] is not a list"),  # TypeError '<' in choose_vocabulary
    ({"labels": "Bark"}, r"labels \"Bark\" is not a list"),  # was split into the classes B, a, r, k
    ({"classes": []}, r"classes \[\] is not a non-empty list"),
    ({"labels": [None, "Dog"]}, r"labels \[null, \"Dog\"\] is not a list"),
    ({"component_groups": [3, "x"]}, r"component_groups \[3, \"x\"\] is not a list"),  # TypeError in join_groups
    ({"id": [1]}, r"id \[1\] is not a non-empty string"),  # unhashable
    ({"group": [1]}, r"group \[1\] is not a non-empty string"),  # unhashable
    ({"group": 7}, r"group 7 is not a non-empty string"),  # "none left for validation"
    ({"background": "no"}, r"background \"no\" is not true or false"),  # bool("no") is True
    ({"duration_s": "1e3"}, r"duration_s \"1e3\" is not a positive number"),
    ({"file": ""}, r"file \"\" is not a non-empty string"),
])
def test_manifest_fields_of_the_wrong_type_are_refused_naming_line_and_field(tmp_path, change, problem):
    corpus = _corpus(tmp_path / "c", [_record(i, **(change if i == 2 else {})) for i in range(8)])
    with pytest.raises(CorpusError, match=r"manifest\.jsonl:3: " + problem):
        read_corpus(corpus)


def test_a_manifest_record_that_is_not_an_object_is_refused(tmp_path):
    corpus = _corpus(tmp_path / "c", [_record(i) for i in range(8)] + ["null", json.dumps(_record(0, id="last"))])
    with pytest.raises(CorpusError, match=r"manifest\.jsonl:9: malformed record \(null, not a JSON object\)"):
        read_corpus(corpus)


def test_duplicate_ids_are_refused_naming_both_lines(tmp_path):
    """They merged silently, and the vocabulary then blamed the source groups."""
    corpus = _corpus(tmp_path / "c", [_record(i, id="same" if i in (1, 4) else f"id{i}") for i in range(8)])
    with pytest.raises(CorpusError, match=r"manifest\.jsonl:5: id 'same' is already used on line 2"):
        read_corpus(corpus)


@pytest.mark.parametrize("file", ["audio", "audio/p"])
def test_a_manifest_file_that_is_a_folder_is_called_a_folder(tmp_path, file):
    corpus = _corpus(tmp_path / "c", [_record(i, **({"file": file} if i == 3 else {})) for i in range(8)])
    with pytest.raises(CorpusError, match=r"manifest\.jsonl:4: .*audio.* is a folder, not an audio file"):
        read_corpus(corpus)


@pytest.mark.parametrize("content", [b"this is not a flac file at all" * 10, b""])
def test_an_undecodable_corpus_flac_is_named_before_anything_is_written(tmp_path, content):
    corpus = _corpus(tmp_path / "c")
    bad = corpus / "audio" / "p" / "id0003.flac"
    bad.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(SoundscapeError, match=rf"^{bad}: cannot decode as audio \(Format not recognised\)$"):
        _mix(corpus, out)
    assert not list(out.rglob("*.wav"))


def test_a_corrupt_wav_in_the_corpus_is_named_by_its_full_path(tmp_path):
    corpus = _corpus(tmp_path / "c", [_record(i, file=f"audio/p/id{i:04d}.wav") for i in range(8)])
    for i in range(8):
        (corpus / "audio" / "p" / f"id{i:04d}.wav").write_bytes(b"RIFF garbage" * 5)
    with pytest.raises(AvtagError, match=rf"^{corpus}/audio/p/id000\d\.wav: cannot decode"):
        _mix(corpus, tmp_path / "out")


def test_a_stereo_corpus_flac_is_mixed_down_to_mono(tmp_path):
    """A ValueError (broadcast) in mixdown.event_stem."""
    corpus = _corpus(tmp_path / "c")
    stereo = _tone(3, channels=2)
    sf.write(corpus / "audio" / "p" / "id0003.flac", stereo, SR, subtype="PCM_16")
    items = read_corpus(corpus)
    sources = load_items(items, SR)
    assert sources["id0003"].shape == (SR,)
    assert np.allclose(sources["id0003"], stereo.mean(axis=1), atol=1e-4)
    result = _mix(corpus, tmp_path / "out")
    assert result.clips == {"train": 3, "validation": 2, "test": 2}
    e = PlacedEvent("x", ("Bark",), 1.0, 1.5, 0.0, 10.0)
    assert np.array_equal(event_stem(stereo, e, SoundscapeConfig(), 1.0), event_stem(stereo.mean(axis=1), e,
                                                                                      SoundscapeConfig(), 1.0))


def test_split_groups_keys_groups_as_they_are():
    """``side[str(g)]`` against ``side.get(g)``: whole-number groups left no group for validation and test."""
    ids = [f"i{k}" for k in range(10)]
    vocab = VocabularyV2(("Bark",), {i: ("Bark",) for i in ids}, {i: k for k, i in enumerate(ids)}, {"Bark": 10})
    side = split_groups(vocab, 0.2, 0.2, 0)
    assert sorted(set(side.values())) == ["test", "train", "validation"]


def _cli(argv: list[str]):
    from avtag.commands import soundscapes

    parser = argparse.ArgumentParser()
    soundscapes.register(parser.add_subparsers())
    args = parser.parse_args(["soundscapes", *argv])
    return args.func(args)


@pytest.mark.parametrize("flags, problem", [
    (["--seed", "-1"], "--seed -1: must be >= 0"),  # ValueError from NumPy
    (["--sample-rate", "1000000000"], "--sample-rate 1000000000: too high"),  # 4 GB allocation
    (["--n-train", "0"], "--n-train 0: must be >= 1"),  # silently became 6000
    (["--n-validation", "0"], "--n-validation 0: must be >= 1"),
    (["--n-test", "0"], "--n-test 0: must be >= 1"),
])
@pytest.mark.parametrize("source", ["--corpus", "--sounds"])
def test_option_values_are_checked_and_zero_is_not_the_default(tmp_path, flags, problem, source):
    with pytest.raises(AvtagError, match=problem):
        _cli([str(tmp_path / "out"), source, str(tmp_path / "missing"), "--no-progress", *flags])


def test_counts_not_given_are_the_defaults_and_given_ones_are_kept(tmp_path, monkeypatch):
    import avtag.data.corpus.mixing as mixing

    seen = []

    def fake(out, corpus, sounds, n_train, n_validation, n_test, *rest, **kw):
        seen.append((n_train, n_validation, n_test))
        raise SoundscapeError("stop")

    monkeypatch.setattr(mixing, "generate_corpus_soundscapes", fake)
    for flags in ([], ["--n-train", "3", "--n-validation", "1", "--n-test", "2"]):
        with pytest.raises(SoundscapeError, match="stop"):
            _cli([str(tmp_path / "out"), "--corpus", str(tmp_path), "--no-sounds", *flags])
    assert seen == [(6000, 600, 1200), (3, 1, 2)]


def _sounds(root: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    """A sounds folder: four real WAV recordings and a sounds.csv of ``rows`` after the header."""
    root.mkdir()
    for i in range(4):
        sf.write(root / f"dog{i}.wav", _tone(i), SR, subtype="PCM_16")
    (root / "sounds.csv").write_text(COLUMNS + "".join(r + "\n" for r in rows), encoding=encoding)
    return root


GOOD = [f"dog{i}.wav,bark,Dog,1.0,CC0 - me,x/y@1:dog{i}.wav" for i in range(3)]


@pytest.mark.parametrize("row, problem", [
    ("dog3.wav,bark,Dog,abc,CC0 - me,x", r"sounds\.csv:5: duration_s 'abc' is not a positive number"),  # ValueError
    ("dog3.wav,bark,Dog,-5,CC0 - me,x", r"sounds\.csv:5: duration_s '-5' is not a positive number"),
    ("dog3.wav,bark", r"sounds\.csv:5: row is short \(2 of 6 columns\)"),  # "class None is not in the ontology"
    (".,bark,Dog,1.0,CC0 - me,x", r"sounds\.csv:5: '\.' is a folder, not a recording"),  # "listed but missing"
    (",bark,Dog,1.0,CC0 - me,x", r"sounds\.csv:5: filename is empty"),
])
def test_a_bad_sounds_row_is_named(tmp_path, row, problem):
    with pytest.raises(RecordingsError, match=problem):
        read_recordings(_sounds(tmp_path / "s", [*GOOD, row]))


def test_a_latin1_sounds_table_is_refused_in_one_line(tmp_path):
    """A UnicodeDecodeError."""
    folder = _sounds(tmp_path / "s", [*GOOD, "dog3.wav,aboiement é,Dog,1.0,CC0 - me,x"], encoding="latin-1")
    with pytest.raises(RecordingsError, match=r"sounds\.csv: not UTF-8 text"):
        read_recordings(folder)


def test_a_sounds_table_with_a_byte_order_mark_is_read(tmp_path):
    """It said 'expected columns ...' (the first column was named '\\ufefffilename')."""
    recs = read_recordings(_sounds(tmp_path / "s", GOOD, encoding="utf-8-sig"))
    assert [r.filename for r in recs] == ["dog0.wav", "dog1.wav", "dog2.wav"]
